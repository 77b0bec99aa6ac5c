"""Stage `init`: record which pre-trained model a fine-tuning starts from (init_from) and the hash
of its bytes in data/init/init.json, so that DVC reruns prepare and train when that model changes."""

from lmlab.cli import stage_main
from lmlab.model.warmstart import record_init


def run(cfg, out_dir):
    info = record_init(cfg.init_from, out_dir)
    print(f"wrote {out_dir}: " + (f"init_from {info['init_from']} (sha256 {info['sha256'][:12]}…)"
                                  if cfg.init_from else "no init_from: training starts from scratch"))


def main(argv=None) -> int:
    return stage_main(__doc__, {"out_dir": "data/init"}, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
