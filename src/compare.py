"""The sweep report (`make compare`): every DVC experiment as a model × decoding-strategy pivot.

    dvc exp run --queue -S 'model=tiny,small' -S 'decoding=greedy,beam'
    dvc queue start && dvc queue status            # wait until every experiment is done
    python src/compare.py                           # reports/sweep.md, reports/sweep.csv, reports/compare/*.png

It reads `dvc exp show --json` (the experiments of HEAD; `--all-commits` for every commit's), and
from each experiment's commit its validation curve (git) and its generations (DVC's cache, for the
significance tests). Not a DVC stage: it reads the experiments that DVC's own runs produce.
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess

from lmlab.cli import report_error
from lmlab.config import ConfigError
from lmlab.evaluate.metrics import bleu_tokenizer_for, parse_generations
from lmlab.report.compare import VAL_CURVE_FILE, collect, write_comparison
from lmlab.report.report import parse_curve


def exp_show(all_commits: bool) -> list[dict]:
    cmd = ["dvc", "exp", "show", "--json", *(["--all-commits"] if all_commits else [])]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise ValueError(f"`{' '.join(cmd)}` failed: {proc.stderr.strip().splitlines()[-1:]}")
    return json.loads(proc.stdout)


def read_generations(result) -> list[dict]:
    import dvc.api

    with dvc.api.open(result.generations, rev=result.rev, encoding="utf-8") as f:
        return parse_generations(f, f"{result.generations}@{result.exp}")


def read_curve(result):
    proc = subprocess.run(["git", "show", f"{result.rev}:{VAL_CURVE_FILE}"], capture_output=True, text=True)
    return parse_curve(proc.stdout, f"{VAL_CURVE_FILE}@{result.exp}") if proc.returncode == 0 else None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="reports/sweep.md", metavar="PATH")
    parser.add_argument("--csv", default="reports/sweep.csv", metavar="PATH")
    parser.add_argument("--figures-dir", default="reports/compare", metavar="PATH")
    parser.add_argument("--all-commits", action="store_true", help="the experiments of every commit, not only HEAD's")
    parser.add_argument("--exp", nargs="+", metavar="NAME", help="only these experiments (names or revs)")
    parser.add_argument("--bootstrap-samples", type=int, default=1000, metavar="N")
    args = parser.parse_args(argv)
    logging.getLogger("sacrebleu").setLevel(logging.ERROR)  # its tokenized-period hint, once per test
    try:
        results = collect(exp_show(args.all_commits), only=args.exp)
        # BLEU's tokenizer as the evaluate stage chose it, when every experiment agrees on it
        target = {r.params.get("data.target_lang") for r in results}
        asked = {r.params.get("evaluate.bleu_tokenize", "auto") for r in results}
        bleu_tokenize = bleu_tokenizer_for(target.pop() if len(target) == 1 else None,
                                           asked.pop() if len(asked) == 1 else "auto")
        write_comparison(results, args.out, args.csv, args.figures_dir, read_generations=read_generations,
                         read_curve=read_curve, bleu_tokenize=bleu_tokenize, n_samples=args.bootstrap_samples)
    except (ConfigError, OSError, ValueError) as err:
        return report_error(err)
    print(f"wrote {args.out}, {args.csv} and {args.figures_dir}/: {len(results)} results from "
          f"{len({r.exp for r in results})} experiments")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
