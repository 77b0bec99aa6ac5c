"""Tokenization at scale: lmlab's prepare path against raw ``tokenizers`` ``encode_batch``, same run.

For each corpus size in ``--scales`` (multiples of ``--n-train`` training pairs, 20,000 for the
built-in corpus, with validation and test at 1/20 of that each), lmlab's built-in corpus is
generated (``lmlab.data.corpus.generate_corpus``) into raw one-sentence-per-line files. Then, each in a
fresh child process:

* lmlab: the prepare stage's two library calls, ``train_tokenizers`` (the training split, streamed)
  and ``encode_corpus`` (every split and side, streamed in chunks, ids written straight to disk as
  token arrays): what ``python src/prepare.py`` does. Its tokens/s times ``encode_corpus`` only;
* raw: the same tokenizer (the ``tokenizer.json`` that lmlab's run wrote), the same files read
  into memory, and ``Tokenizer.encode_batch`` on each file plus reading every encoding's ids, all
  kept in Python lists (that is the baseline's own business; lmlab's side writes to disk).

Both sides encode the same lines to the same tokens (checked). Peak memory is the child's RSS
high-water mark (``VmHWM``), the whole process from start-up (Python, numpy, tokenizers) to exit;
with ``--workers`` > 1 the largest worker's high-water mark is added once per worker (an upper
bound: forked workers share pages with their parent). The two sides alternate ``--repeats`` times
per scale, taking turns to go first; tokens/s uses the median time and memory the largest peak.

    python bench/tokenize_scale.py [--scales 1,10] [--n-train 20000] [--repeats 3] [--kind bpe]
        [--vocab 6000] [--workers 1] [--chunk-size 4096] [--threads N] [--keep DIR] [--record PATH]

``--threads`` sets the tokenizers library's threads (RAYON_NUM_THREADS) on both sides; 1 turns
its parallelism off. The last line printed is one JSON object: ``throughput_ratio`` = lmlab tokens/s
÷ raw tokens/s at the largest scale, ``mem_growth`` = lmlab's peak memory at the largest scale ÷
at the smallest, and per scale ``x<scale>_tokens``, ``x<scale>_tokens_per_s``,
``x<scale>_raw_tokens_per_s``, ``x<scale>_ratio``, ``x<scale>_peak_mib``, ``x<scale>_raw_peak_mib``,
``x<scale>_train_s``. Every child run (both sides, every repeat, every scale) goes to the record, by
default ``reports/bench/tokenize_scale_cpu.json`` (``--record ''``: none).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import benchlib

from lmlab.data.rawfiles import SIDES, SPLITS

SRC = Path(__file__).resolve().parents[1] / "src"  # the children import this checkout's lmlab


def peak_mib() -> float:
    """This process's RSS high-water mark (VmHWM), in MiB."""
    with open("/proc/self/status") as f:
        hwm_kib = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    return hwm_kib / 1024


def write_corpus(raw_dir: Path, n_train: int, seed: int) -> int:
    """The built-in corpus with ``n_train`` training pairs as raw files; returns the line count."""
    from lmlab.data.corpus import generate_corpus

    n_other = max(1, n_train // 20)
    corpus = generate_corpus(seed=seed, n_train=n_train, n_valid=n_other, n_test=n_other)
    raw_dir.mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        for i, side in enumerate(SIDES):
            (raw_dir / f"{split}.{side}").write_text("".join(p[i] + "\n" for p in corpus[split]),
                                                     encoding="utf-8")
    return sum(len(corpus[s]) for s in SPLITS)


# --- the two children ---------------------------------------------------------------------------

def child_lmlab(args) -> dict:
    from lmlab.config import TokenizerConfig
    from lmlab.data.prepare import encode_corpus, raw_sides, train_tokenizers

    tc = TokenizerConfig(kind=args.kind, vocab_size=args.vocab, workers=args.workers,
                         chunk_size=args.chunk_size)
    tc.check()
    start = time.perf_counter()
    tokset = train_tokenizers(tc, args.raw, raw_sides(args.raw, "train"))
    trained = time.perf_counter()
    stats = encode_corpus(tokset, tc, args.raw, args.out)
    seconds = time.perf_counter() - trained
    tokens = sum(stats[s][f"{side}_tokens"] for s in SPLITS for side in SIDES)
    dropped = sum(n for s in SPLITS for k, n in stats[s].items() if k.startswith("dropped_"))
    if dropped:
        raise SystemExit(f"the filters dropped {dropped} pairs: the two sides would not encode the same text")
    peak = peak_mib()
    if args.workers > 1:
        import resource

        peak += args.workers * resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"seconds": seconds, "train_seconds": trained - start, "tokens": tokens, "peak_mib": peak}


def child_raw(args) -> dict:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(Path(args.out) / "tokenizer.json"))
    texts = [(Path(args.raw) / f"{s}.{side}").read_text(encoding="utf-8").splitlines()
             for s in SPLITS for side in SIDES]
    start = time.perf_counter()
    ids = [[e.ids for e in tok.encode_batch(lines, add_special_tokens=False)] for lines in texts]
    seconds = time.perf_counter() - start
    tokens = sum(len(x) for per_file in ids for x in per_file)
    return {"seconds": seconds, "tokens": tokens, "peak_mib": peak_mib()}


def run_child(which: str, raw: Path, out: Path, args) -> dict:
    env = dict(os.environ, PYTHONPATH=str(SRC))
    if args.threads:
        env["RAYON_NUM_THREADS"] = str(args.threads)
        if args.threads == 1:
            env["TOKENIZERS_PARALLELISM"] = "false"
    cmd = [sys.executable, __file__, "--child", which, "--raw", str(raw), "--out", str(out),
           "--kind", args.kind, "--vocab", str(args.vocab), "--workers", str(args.workers),
           "--chunk-size", str(args.chunk_size)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"{which} child failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --- the comparison -----------------------------------------------------------------------------

def bench_scale(scale: int, root: Path, args, record: dict, all_runs: list[dict]) -> None:
    raw, out = root / f"x{scale}" / "raw", root / f"x{scale}" / "prepared"
    lines = write_corpus(raw, args.n_train * scale, args.seed)
    runs: dict[str, list[dict]] = {"lmlab": [], "raw": []}
    for i in range(args.repeats):
        # the sides take turns to go first; lmlab must be first once, as it writes the tokenizer
        # that raw loads
        for side in ("lmlab", "raw") if i % 2 == 0 else ("raw", "lmlab"):
            result = run_child(side, raw, out, args)
            runs[side].append(result)
            all_runs.append(dict({"scale": scale, "pairs": lines, "side": side, "repeat": i}, **result,
                                 tokens_per_s=result["tokens"] / result["seconds"]))
    tokens = {r["tokens"] for side in runs.values() for r in side}
    if len(tokens) != 1:
        raise SystemExit(f"x{scale}: lmlab and raw encode_batch counted different tokens: {sorted(tokens)}")
    (n_tok,) = tokens
    tps = {k: n_tok / benchlib.median(r["seconds"] for r in v) for k, v in runs.items()}
    peak = {k: max(r["peak_mib"] for r in v) for k, v in runs.items()}
    key = f"x{scale}"
    record.update({
        f"{key}_pairs": lines, f"{key}_tokens": n_tok,
        f"{key}_tokens_per_s": round(tps["lmlab"], 1), f"{key}_raw_tokens_per_s": round(tps["raw"], 1),
        f"{key}_ratio": round(tps["lmlab"] / tps["raw"], 4),
        f"{key}_peak_mib": round(peak["lmlab"], 1), f"{key}_raw_peak_mib": round(peak["raw"], 1),
        f"{key}_train_s": round(benchlib.median(r["train_seconds"] for r in runs["lmlab"]), 2),
    })
    print(f"  {key:>5} {lines:>10,} {n_tok:>11,} {tps['lmlab']:>12,.0f} {tps['raw']:>10,.0f} "
          f"{tps['lmlab'] / tps['raw']:>6.3f} {peak['lmlab']:>10.1f} {peak['raw']:>8.1f} "
          f"{record[f'{key}_train_s']:>8.2f}", flush=True)


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", default="1,10", help="comma-separated multiples of --n-train")
    parser.add_argument("--n-train", type=int, default=20000, help="training pairs at scale 1")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--kind", default="bpe", help="tokenizer.kind: bpe, byte_bpe or char")
    parser.add_argument("--vocab", type=int, default=6000)
    parser.add_argument("--workers", type=int, default=1, help="tokenizer.workers of lmlab's side")
    parser.add_argument("--chunk-size", type=int, default=4096, help="tokenizer.chunk_size")
    parser.add_argument("--threads", type=int, default=None, help="tokenizers threads, both sides")
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--keep", metavar="DIR", help="generate the corpora here and keep them")
    benchlib.add_record_option(parser, "tokenize_scale")
    parser.add_argument("--child", choices=("lmlab", "raw"), help=argparse.SUPPRESS)
    parser.add_argument("--raw", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.record = benchlib.record_path(args.record, "tokenize_scale", "cpu")
    args.scales = [int(s) for s in args.scales.split(",") if s.strip()]
    for key in ("n_train", "repeats", "vocab", "chunk_size"):
        if getattr(args, key) < 1:
            parser.error(f"--{key.replace('_', '-')}={getattr(args, key)} must be >= 1")
    if not args.scales or min(args.scales) < 1:
        parser.error("--scales must be positive integers")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.child:
        result = (child_lmlab if args.child == "lmlab" else child_raw)(args)
        print(json.dumps(result))
        return result
    import tokenizers

    meta = benchlib.meta(argv, ("tokenizers", "lmlab"))
    runs: list[dict] = []
    record = {"kind": args.kind, "vocab": args.vocab, "workers": args.workers,
              "chunk_size": args.chunk_size, "threads": args.threads or os.cpu_count(),
              "repeats": args.repeats, "n_train": args.n_train, "tokenizers": tokenizers.__version__}
    print(f"lmlab prepare (train_tokenizers + encode_corpus to disk) vs raw encode_batch (lists in memory): "
          f"{args.kind}, vocab {args.vocab}, workers {args.workers}, chunks of {args.chunk_size} lines, "
          f"{record['threads']} tokenizers threads, median time / largest peak of {args.repeats}")
    print(f"  {'scale':>5} {'pairs':>10} {'tokens':>11} {'lmlab tok/s':>12} {'raw tok/s':>10} "
          f"{'ratio':>6} {'lmlab MiB':>10} {'raw MiB':>8} {'train s':>8}")
    with tempfile.TemporaryDirectory(prefix="tokenize_scale.") as tmp:
        root = Path(args.keep) if args.keep else Path(tmp)
        for scale in args.scales:
            bench_scale(scale, root, args, record, runs)
    small, large = f"x{min(args.scales)}", f"x{max(args.scales)}"
    record["throughput_ratio"] = record[f"{large}_ratio"]
    record["mem_growth"] = round(record[f"{large}_peak_mib"] / record[f"{small}_peak_mib"], 4)
    print(f"throughput_ratio {record['throughput_ratio']:.3f} ({large}), mem_growth "
          f"{record['mem_growth']:.3f} ({large} ÷ {small} lmlab peak)")
    return benchlib.finish(args.record, record, runs, meta)


if __name__ == "__main__":
    main()
