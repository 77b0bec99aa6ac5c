"""Stage `prepare`: train the tokenizer on the training split, encode every split to token arrays."""

import sys

from lmlab.cli import stage_main
from lmlab.data.prepare import prepare, unknown_token_warnings

DROPPED = {"dropped_too_long": "too long", "dropped_too_short": "too short",
           "dropped_ratio": "over max_ratio"}


def describe(split: str, stats: dict) -> str:
    """``train 20000 pairs (0 too long)``, with the drops of the filters that are on, and lines of text."""
    parts = []
    if "pairs" in stats:
        drops = [f"{stats[key]} {words}" for key, words in DROPPED.items() if key in stats]
        parts.append(f"{stats['pairs']} pairs ({', '.join(drops)})")
    if "lines" in stats:
        parts.append(f"{stats['lines']} lines of text")
    return f"{split} " + " + ".join(parts)


def run(cfg, raw_dir, out_dir):
    stats = prepare(cfg, raw_dir, out_dir)
    for line in unknown_token_warnings(stats):
        print(line, file=sys.stderr)
    print(f"wrote {out_dir}: vocabulary {stats['vocab_size']}, "
          + ", ".join(describe(s, stats[s]) for s in ("train", "validation", "test")))


def main(argv=None) -> int:
    return stage_main(__doc__, {"raw_dir": "data/raw", "out_dir": "data/prepared"}, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
