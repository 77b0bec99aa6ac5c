"""Stage `generate`: decode the test split with the configured strategy into a JSONL file.

    python src/generate.py --params params.yaml                       # decoding (stage generate)
    python src/generate.py --params params.yaml --strategy topp \
        --out reports/sweep/topp/generations.jsonl                     # sweep.topp (sweep-generate)
"""

from lmlab.cli import stage_main
from lmlab.translation import generate_split


def run(cfg, model, prepared_dir, raw_dir, out, strategy=None):
    speed = generate_split(cfg, model, prepared_dir, raw_dir, out)
    which = f"sweep.{strategy}: {cfg.decoding.strategy}" if strategy else cfg.decoding.strategy
    print(f"wrote {out}: {speed['sentences']} sentences, {speed['sentences_per_second']} sent/s, "
          f"{speed['tokens_per_second']} tok/s ({which})")


def main(argv=None) -> int:
    paths = {"model": "data/model/model.pt", "prepared_dir": "data/prepared", "raw_dir": "data/raw",
             "out": "reports/generations.jsonl"}
    return stage_main(__doc__, paths, run, argv, strategy=True)


if __name__ == "__main__":
    raise SystemExit(main())
