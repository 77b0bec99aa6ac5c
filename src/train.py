"""Stage `train`: train the Transformer with Lightning on the prepared data.

    python src/train.py model=tiny trainer.max_steps=20     # Hydra overrides, output in outputs/<time>
    python src/train.py --params params.yaml --out-dir data/model --curves-dir reports/train   # DVC
"""

import time

from lmlab.cli import stage_main
from lmlab.training import train

DEFAULT_OUT = "outputs/{time}"


def run(cfg, prepared_dir, out_dir, curves_dir):
    stamp = time.strftime("%Y-%m-%d_%H-%M-%S")
    out_dir = out_dir.format(time=stamp)
    curves_dir = curves_dir.format(out_dir=out_dir)
    summary = train(cfg, prepared_dir, out_dir, curves_dir)
    if summary:
        print(f"wrote {out_dir}/model.pt: {summary['n_parameters']:,} parameters, step "
              f"{summary['global_step']}, best val/loss {summary['best_val_loss']:.4f}, "
              f"{summary['train_seconds']:.0f} s")
        if "wandb" in summary and summary["wandb"]["mode"] == "offline":
            print(f"W&B run saved offline; upload with: wandb sync {summary['wandb']['dir'].rsplit('/files', 1)[0]}")


def main(argv=None) -> int:
    paths = {"prepared_dir": "data/prepared", "out_dir": DEFAULT_OUT, "curves_dir": "{out_dir}/curves"}
    return stage_main(__doc__, paths, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
