"""Does a larger model do better? Train two presets on the built-in translation task with headroom
(``data=synthetic_hard``; ``--data synthetic`` for the easy one) with the same recipe and the same
number of steps, each at the learning rate and warm-up its width calls for, through lmlab's real
training run (``lmlab.train.fit.train``, the logger, checkpoints and callbacks ``dvc repro``
uses), and compare their best validation loss.

    python bench/size_scaling.py                                  # tiny against small, 800 steps
    python bench/size_scaling.py --steps 1500 --seeds 1234,1235   # longer, two seeds

The last line is a JSON object; ``small_vs_tiny_val_loss_ratio`` (in general
``<second>_vs_<first>_val_loss_ratio``) is the second preset's validation loss ÷ the first's, the
median over the seeds: below 1 when the larger model learns more in the same steps. Each seed
trains both presets, the order alternating from seed to seed; every run goes to the record
(``reports/bench/size_scaling_cpu.json``). What it cannot show: a ratio at one step budget says
nothing of either model's best learning rate (the rule is one setting, not a tuned one), of the
gap at other budgets, nor of which is better for the same time.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import benchlib
from train_throughput import QUIET, prepare_data, run_config

from lmlab.train.fit import train


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--presets", default="tiny,small", help="two conf/model presets, the smaller first")
    p.add_argument("--data", default="synthetic_hard",
                   help="a built-in translation preset (default synthetic_hard, the one with headroom)")
    p.add_argument("--steps", type=int, default=800, help="training steps of every run (default 800)")
    p.add_argument("--seeds", default="1234", help="comma-separated run seeds (default 1234)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--n-train", type=int, default=None, help="training pairs (default: the config's)")
    p.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                   help="a config override for every run (repeatable)")
    benchlib.add_record_option(p, "size_scaling")
    args = p.parse_args(argv)
    args.presets = args.presets.split(",")
    if len(args.presets) != 2:
        p.error("--presets takes two presets")
    args.seeds = [int(s) for s in args.seeds.split(",")]
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    meta = benchlib.meta(argv, ("torch", "pytorch-lightning", "lmlab"))
    small, large = args.presets
    runs = []
    with benchlib.training_session(args.threads, QUIET, ()), warnings.catch_warnings(), \
            tempfile.TemporaryDirectory(prefix="size_scaling.") as tmp:
        warnings.filterwarnings("ignore", ".*LeafSpec.*")
        root = Path(tmp)
        prepared = prepare_data(root / "data", args.n_train, args.override, args.data)
        for i, seed in enumerate(args.seeds):
            for preset in (args.presets if i % 2 == 0 else args.presets[::-1]):
                # validation every 50 steps and at the end: the best of those is the figure
                cfg = run_config(preset, "cpu", args.steps, root, args.n_train, seed,
                                 [*args.override, f"trainer.val_check_interval={min(50, args.steps)}"], args.data)
                out = root / "runs" / f"{preset}-{seed}"
                start = time.perf_counter()
                summary = train(cfg, prepared, out, out / "curves", out / "checkpoints")
                run = {"preset": preset, "seed": seed, "steps": summary["global_step"],
                       "n_parameters": summary["n_parameters"], "best_val_loss": summary["best_val_loss"],
                       "lr": cfg.trainer.lr, "warmup_steps": cfg.trainer.warmup_steps,
                       "seconds": round(time.perf_counter() - start, 1),
                       "val_curve": (out / "curves" / "val_loss.tsv").read_text().splitlines()[1:]}
                runs.append(run)
                print(f"{preset} seed {seed}: best val/loss {run['best_val_loss']:.4f} after {run['steps']} steps "
                      f"({run['n_parameters']:,} parameters, {run['seconds']:.0f} s)", flush=True)
    best = {(r["preset"], r["seed"]): r["best_val_loss"] for r in runs}
    loss = {p: benchlib.median(best[p, s] for s in args.seeds) for p in args.presets}
    ratios = [best[large, s] / best[small, s] for s in args.seeds]
    result = {"data": args.data, "steps": args.steps, "seeds": args.seeds, f"{small}_val_loss": round(loss[small], 4),
              f"{large}_val_loss": round(loss[large], 4),
              f"{large}_vs_{small}_val_loss_ratio": round(benchlib.median(ratios), 4)}
    return benchlib.finish(benchlib.record_path(args.record, "size_scaling", "cpu"), result, runs, meta)


if __name__ == "__main__":
    main()
