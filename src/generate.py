"""Stage `generate`: decode the test split with the configured strategy into a JSONL file.

    python src/generate.py --params params.yaml                       # decoding (stage generate)
    python src/generate.py --params params.yaml --strategy topp \
        --out reports/sweep/topp/generations.jsonl --speed reports/sweep/topp/decode.json
                                                                       # sweep.topp (sweep-generate)
"""

from lmlab.cli import stage_main
from lmlab.decoding.driver import generate_split
from lmlab.files import atomic_outputs, write_json


def run(cfg, model, prepared_dir, raw_dir, out, speed, strategy=None):
    # the two files are published together, the generations last (lmlab.files.atomic_outputs)
    with atomic_outputs() as staged:
        speed_tmp = staged.file(speed)
        stats = generate_split(cfg, model, prepared_dir, raw_dir, staged.file(out))
        # the decoding speed, a DVC metric: `dvc exp show` and the sweep report (make compare) read it
        write_json(speed_tmp, {"strategy": cfg.decoding.name, **stats})
    print(f"wrote {out}: {stats['sentences']} sentences, {stats['sentences_per_second']} sent/s, "
          f"{stats['tokens_per_second']} tok/s ({cfg.decoding.name})")


def main(argv=None) -> int:
    paths = {"model": "data/model/model.pt", "prepared_dir": "data/prepared", "raw_dir": "data/raw",
             "out": "reports/generations.jsonl", "speed": "reports/decode.json"}
    return stage_main(__doc__, paths, run, argv, strategy=True)


if __name__ == "__main__":
    raise SystemExit(main())
