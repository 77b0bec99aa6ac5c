"""How much does pre-training buy? Pre-train once, then fine-tune on the built-in translation task
for N steps, against training from scratch for the same N steps, at several N.

    python bench/pretrain_gain.py --out runs/pretrain_gain                  # 100, 300, 1500 steps
    python bench/pretrain_gain.py --out runs/pg --budgets 50,100 --pretrain-steps 100

Every run goes through the stage scripts ``dvc repro`` runs (download, prepare, train, generate,
score), each in a folder of ``--out``: ``pre`` (``pretrain/overrides.txt``'s settings: ``gpt-tiny``
on ``data=lm_text_both``, whose sentences never occur in the translation test set), ``ft<N>``
(``init_from`` the pre-trained model) and ``sc<N>`` (from scratch, its own tokenizer). A run whose ``metrics.json``
is there is not run again, so an interrupted bench continues. Both sides of a budget share
everything but the start: ``model=gpt-tiny`` (decoder-only translation), the width rule's learning
rate, and a warm-up of N/10 steps; the pre-trained side also encodes with the pre-trained
tokenizer (trained on the pre-training text, both languages), the scratch side trains its own on
the translation pairs.

A third side, ``st<N>``, starts afresh on the pre-trained tokenizer (``init_weights=false``): it
reads the same tokens as the fine-tuning, so it isolates what the pre-trained weights bring.

The last line is a JSON object: per budget each side's BLEU, chrF, best validation loss, test
loss per token and per test sentence (the tokenizers cut the text differently, so only the
latter compares across them), and ``bleu_gain`` (pre-trained − scratch on the same tokenizer).
``--figure`` draws BLEU and the loss per sentence against the budget, one line per side. What it
cannot show: the gain at other pre-training budgets, sizes or learning rates, or on real text.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("download", "prepare", "train", "generate", "score")


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, type=Path, help="folder of the runs (kept: a rerun continues)")
    p.add_argument("--budgets", default="100,300,1500", help="fine-tuning steps, comma-separated")
    p.add_argument("--pretrain-steps", type=int, default=None,
                   help="pre-training steps (default: pretrain/overrides.txt's)")
    p.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                   help="a config override for every run (repeatable)")
    p.add_argument("--figure", type=Path, default=None, help="write the figure (PNG) here")
    args = p.parse_args(argv)
    args.budgets = [int(b) for b in args.budgets.split(",")]
    return args


def stage_args(stage: str, run: Path) -> list[str]:
    """The paths a stage script reads and writes inside ``run``, as dvc.yaml wires them."""
    return {"download": ["--raw-dir", run / "raw"],
            "prepare": ["--raw-dir", run / "raw", "--out-dir", run / "prepared"],
            "train": ["--prepared-dir", run / "prepared", "--out-dir", run / "model", "--curves-dir", run / "curves",
                      "--ckpt-dir", run / "ckpt"],
            "generate": ["--model", run / "model/model.pt", "--prepared-dir", run / "prepared", "--raw-dir", run / "raw",
                         "--out", run / "gen.jsonl", "--speed", run / "decode.json"],
            "score": ["--generations", run / "gen.jsonl", "--model", run / "model/model.pt",
                      "--prepared-dir", run / "prepared", "--metrics", run / "metrics.json"]}[stage]


def run_pipeline(run: Path, overrides: list[str], stages=STAGES) -> None:
    """The stage scripts on ``overrides``, in ``run``; skipped when the last output is there."""
    last = run / ("metrics.json" if "score" in stages else "model/model.pt")
    if last.is_file():
        print(f"{run.name}: done before, kept", flush=True)
        return
    env = {**os.environ, "WANDB_MODE": os.environ.get("WANDB_MODE", "disabled")}
    with open(run.with_suffix(".log"), "w") as log:
        for stage in stages:
            cmd = [sys.executable, str(ROOT / "src" / f"{stage}.py"), *overrides, "logger=none",
                   *map(str, stage_args(stage, run))]
            if subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env).returncode:
                raise SystemExit(f"error: {run.name}: the {stage} stage failed; see {run.with_suffix('.log')}")
    print(f"{run.name}: done", flush=True)


def side(run: Path) -> dict:
    """A run's scores. The loss per token depends on the tokenizer (the pre-trained one cuts the
    text finer), so the test loss is also given per test sentence: ``nats_per_sentence``."""
    metrics = json.loads((run / "metrics.json").read_text())
    summary = json.loads((run / "model/run.json").read_text())
    test = json.loads((run / "prepared/stats.json").read_text())["test"]
    scored = test["target_tokens"] + test["pairs"]  # each target and its </s>
    return {"bleu": metrics["bleu"], "chrf": metrics["chrf"], "best_val_loss": round(summary["best_val_loss"], 4),
            "test_loss": metrics["loss"], "nats_per_sentence": round(metrics["loss"] * scored / test["pairs"], 2),
            "train_seconds": summary["train_seconds"]}


def draw(result: dict, path: Path) -> None:
    from lmlab.report.report import new_axes, save_figure

    budgets = sorted(int(b) for b in result["budgets"])
    sides = (("pretrained", "o-", "fine-tuned from the pre-trained model"),
             ("scratch_same_tokenizer", "s--", "from scratch, pre-trained tokenizer"),
             ("scratch", "^:", "from scratch, its own tokenizer"))
    for key, label, name in (("bleu", "test BLEU", "bleu"), ("nats_per_sentence", "test loss per sentence (nats)", "loss")):
        fig, ax = new_axes(f"Pre-trained against from scratch: {label}", "fine-tuning steps (log scale)", label)
        for start, style, legend in sides:
            ax.plot(budgets, [result["budgets"][str(b)][start][key] for b in budgets], style, label=legend)
        ax.set_xscale("log")
        ax.set_xticks(budgets, [str(b) for b in budgets])
        ax.legend()
        save_figure(fig, ax, path.with_name(f"{path.stem}_{name}{path.suffix}"))


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    pre = (ROOT / "pretrain/overrides.txt").read_text().split()
    if args.pretrain_steps is not None:
        pre.append(f"trainer.max_steps={args.pretrain_steps}")
    run_pipeline(args.out / "pre", [*pre, *args.override], STAGES[:3])
    init = args.out / "pre/model/model.pt"
    result: dict = {"pretrain": pre, "budgets": {}}
    for n in args.budgets:
        common = ["model=gpt-tiny", f"trainer.max_steps={n}", f"trainer.warmup_steps={n // 10}",
                  f"trainer.val_check_interval={min(n, 250)}", *args.override]
        run_pipeline(args.out / f"ft{n}", [*common, f"init_from={init}"])
        run_pipeline(args.out / f"st{n}", [*common, f"init_from={init}", "init_weights=false"])
        run_pipeline(args.out / f"sc{n}", common)
        ft, st, sc = (side(args.out / f"{k}{n}") for k in ("ft", "st", "sc"))
        result["budgets"][str(n)] = {"pretrained": ft, "scratch_same_tokenizer": st, "scratch": sc,
                                     "bleu_gain": round(ft["bleu"] - st["bleu"], 2)}
    if args.figure is not None:
        draw(result, args.figure)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
