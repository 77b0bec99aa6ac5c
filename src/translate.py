"""Generate from any trained lmlab model, without its training config: the model file (or a
Lightning checkpoint of lmlab's training) carries the architecture and the tokenizer.

    python src/translate.py --model data/model/model.pt --prompt "the cat sleeps ."
    echo "the cat sleeps ." | python src/translate.py --model data/checkpoints/last.ckpt \\
        decoding=beam decoding.n_best=3                 # one prompt per line from stdin
    python src/translate.py --model data/model/model.pt decoding=topp decoding.temperature=0.7

A model trained for translation or summarization decodes each prompt as a source; a language model
(data.task=language_modeling) continues each prompt instead. Each prompt prints its output (with
``n_best`` > 1, one ``score<TAB>hypothesis`` line per hypothesis, best first, then a blank line).
Only ``decoding.*`` and ``seed`` of the overrides matter here.
"""

import sys

from lmlab.cli import stage_main


def read_prompts(stream) -> list[str]:
    """One prompt per line of a binary stream, which must be UTF-8."""
    data = stream.read()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"stdin is not UTF-8 text (byte {err.start}: {err.reason})") from None
    # lines end at \n only (str.splitlines would also split at form feeds and U+2028)
    return [line.removesuffix("\r") for line in text.removesuffix("\n").split("\n")] if text else []


def run(cfg, model, prompt):
    from lmlab.decoding.driver import continue_texts, translate_texts
    from lmlab.model.checkpoint import load_model, model_task

    loaded, tokenizer, payload = load_model(model)
    task = model_task(payload)
    if task is None and loaded.cfg.arch == "decoder-only":
        raise ValueError(f"{model} does not say whether it is a language model or a translation "
                         "model (a checkpoint from an older lmlab): use the model.pt its training exported")
    if prompt:
        texts = [prompt]
    else:
        if sys.stdin.isatty():
            print("reading prompts from stdin, one per line (Ctrl-D ends)", file=sys.stderr)
        texts = read_prompts(sys.stdin.buffer)
    decode = continue_texts if task == "language_modeling" else translate_texts
    for rec in decode(loaded, tokenizer, texts, cfg):
        if "nbest" in rec:
            print("\n".join(f"{score:.4f}\t{hyp}" for score, hyp in zip(rec["nbest_scores"], rec["nbest"])))
            print()
        else:
            print(rec["hypothesis"])


def main(argv=None) -> int:
    return stage_main(__doc__, {"model": "data/model/model.pt", "prompt": ""}, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
