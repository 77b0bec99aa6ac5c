"""Stage `evaluate` (named score.py: a file called evaluate.py would shadow the `evaluate`
package whenever src/ is on sys.path): BLEU, chrF, ROUGE and test perplexity into reports/metrics.json."""

from lmlab.cli import stage_main
from lmlab.evaluation import evaluate


def run(cfg, generations, model, prepared_dir, metrics):
    m = evaluate(cfg, generations, model, prepared_dir, metrics)
    print(f"wrote {metrics}: BLEU {m['bleu']:.2f}, chrF {m['chrf']:.2f}, ROUGE-L {m['rougeL']:.2f}, "
          f"perplexity {m['perplexity']:.3f}")


def main(argv=None) -> int:
    paths = {"generations": "reports/generations.jsonl", "model": "data/model/model.pt",
             "prepared_dir": "data/prepared", "metrics": "reports/metrics.json"}
    return stage_main(__doc__, paths, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
