"""Generate from any trained lmlab model, without its training config: the model file (or a
Lightning checkpoint of lmlab's training) carries the architecture and the tokenizer.

    python src/translate.py --model data/model/model.pt --prompt "the cat sleeps ."
    echo "the cat sleeps ." | python src/translate.py --model data/checkpoints/last.ckpt \\
        decoding=beam decoding.n_best=3                 # one prompt per line from stdin
    python src/translate.py --model data/model/model.pt decoding=topp decoding.temperature=0.7

Each prompt prints its hypothesis (with ``n_best`` > 1, one ``score<TAB>hypothesis`` line per
hypothesis, best first, then a blank line). Only ``decoding.*`` and ``seed`` of the overrides
matter here.
"""

import sys

from lmlab.cli import stage_main


def run(cfg, model, prompt):
    from lmlab.decoding.driver import translate_texts
    from lmlab.model.checkpoint import load_model

    loaded, tokenizer, _ = load_model(model)
    if prompt:
        texts = [prompt]
    else:
        if sys.stdin.isatty():
            print("reading prompts from stdin, one per line (Ctrl-D ends)", file=sys.stderr)
        texts = [line.rstrip("\n") for line in sys.stdin]
    for rec in translate_texts(loaded, tokenizer, texts, cfg):
        if "nbest" in rec:
            print("\n".join(f"{score:.4f}\t{hyp}" for score, hyp in zip(rec["nbest_scores"], rec["nbest"])))
            print()
        else:
            print(rec["hypothesis"])


def main(argv=None) -> int:
    return stage_main(__doc__, {"model": "data/model/model.pt", "prompt": ""}, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
