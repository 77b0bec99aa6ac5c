"""Stage `prepare`: train the BPE tokenizer on the training split, encode every split to token arrays."""

from lmlab.cli import stage_main
from lmlab.encoding import prepare


def run(cfg, raw_dir, out_dir):
    stats = prepare(cfg, raw_dir, out_dir)
    print(f"wrote {out_dir}: vocabulary {stats['vocab_size']}, "
          + ", ".join(f"{s} {stats[s]['pairs']} pairs ({stats[s]['dropped_too_long']} too long)"
                      for s in ("train", "validation", "test")))


def main(argv=None) -> int:
    return stage_main(__doc__, {"raw_dir": "data/raw", "out_dir": "data/prepared"}, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
