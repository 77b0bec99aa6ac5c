"""Stage `download`: write the train/validation/test splits of the configured dataset to data/raw/."""

from lmlab.cli import stage_main
from lmlab.data.download import download


def run(cfg, raw_dir):
    counts = download(cfg, raw_dir)
    print(f"wrote {raw_dir}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))


def main(argv=None) -> int:
    return stage_main(__doc__, {"raw_dir": "data/raw"}, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
