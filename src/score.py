"""Stage `evaluate` (named score.py: a file called evaluate.py would shadow the `evaluate`
package whenever src/ is on sys.path): the task's metrics (translation: BLEU, chrF, TER, ROUGE;
summarization: ROUGE beside the lead baseline's) and test perplexity into reports/metrics.json;
with logger=wandb, also into the training's W&B run as test/<strategy>/<metric>, with a table of
example generations.

    python src/score.py --params params.yaml                           # decoding (stage evaluate)
    python src/score.py --params params.yaml --strategy topp --generations reports/sweep/topp/generations.jsonl \
        --baseline reports/generations.jsonl --metrics reports/sweep/topp/metrics.json   # sweep-evaluate
"""

from lmlab.cli import stage_main
from lmlab.evaluate.driver import evaluate
from lmlab.evaluate.metrics import summary_line
from lmlab.evaluate.wandb_run import log_evaluation
from lmlab.tracking import strategy_name, sync_hint


def run(cfg, generations, model, prepared_dir, metrics, baseline, strategy=None):
    m = evaluate(cfg, generations, model, prepared_dir, metrics, baseline or None)
    line = summary_line(m, cfg.data.task)
    if "perplexity" in m:
        line += f", perplexity {m['perplexity']:.3f}"
    if "bleu_delta" in m:
        line += (f"; against {baseline}: BLEU {m['bleu_delta']:+.2f} (p = {m['bleu_p_value']:.4f}), "
                 f"chrF {m['chrf_delta']:+.2f} (p = {m['chrf_p_value']:.4f})")
    print(f"wrote {metrics}: {line}")
    logged = log_evaluation(cfg, model, generations, m, strategy)
    if logged:
        print(f"W&B run {logged['id']}: test/{strategy_name(cfg, strategy)}/* in its summary")
        if logged["mode"] == "offline":
            print(sync_hint(logged["dir"]))
    elif cfg.logger.kind == "wandb" and cfg.logger.mode != "disabled":
        print(f"W&B: nothing logged ({model} is missing or its training logged no W&B run)")


def main(argv=None) -> int:
    paths = {"generations": "reports/generations.jsonl", "model": "data/model/model.pt",
             "prepared_dir": "data/prepared", "metrics": "reports/metrics.json",
             "baseline": ""}  # generations to test against (paired bootstrap); "" for none
    return stage_main(__doc__, paths, run, argv, strategy=True)


if __name__ == "__main__":
    raise SystemExit(main())
