"""Stage `train`: train the Transformer with Lightning on the prepared data.

    python src/train.py model=tiny trainer.max_steps=20     # Hydra overrides, output in outputs/<time>
    python src/train.py --params params.yaml --out-dir data/model --curves-dir reports/train \
        --ckpt-dir data/checkpoints                          # DVC (checkpoints outside DVC's outs,
                                                             # so a rerun after a crash resumes)
"""

import os
import time

from lmlab.cli import stage_main
from lmlab.tracking import sync_hint
from lmlab.training import train

DEFAULT_OUT = "outputs/{time}"
RUN_DIR_ENV = "LMLAB_RUN_DIR"


def run_stamp(environ) -> str:
    """The ``{time}`` of a new output directory: the same on every rank of one SLURM job step."""
    if "SLURM_JOB_ID" in environ and int(environ.get("SLURM_NTASKS", "1")) > 1:
        return f"slurm-{environ['SLURM_JOB_ID']}.{environ.get('SLURM_STEP_ID', '0')}"
    return time.strftime("%Y-%m-%d_%H-%M-%S")


def run(cfg, prepared_dir, out_dir, curves_dir, ckpt_dir):
    # Under DDP, Lightning starts the other ranks by running this script again; they find the
    # directory rank 0 chose in the environment, so all ranks share one output directory.
    # Under SLURM (srun starts every rank itself), the job and step ids name the directory instead.
    inherited = os.environ.get(RUN_DIR_ENV)
    if "{time}" in out_dir:
        out_dir = inherited or out_dir.format(time=run_stamp(os.environ))
    curves_dir = curves_dir.format(out_dir=out_dir)
    ckpt_dir = ckpt_dir.format(out_dir=out_dir)
    os.environ[RUN_DIR_ENV] = out_dir
    try:
        summary = train(cfg, prepared_dir, out_dir, curves_dir, ckpt_dir)
    finally:
        if inherited is None:
            os.environ.pop(RUN_DIR_ENV, None)
    if summary:
        print(f"wrote {out_dir}/model.pt: {summary['n_parameters']:,} parameters, step "
              f"{summary['global_step']}, best val/loss {summary['best_val_loss']:.4f}, "
              f"{summary['train_seconds']:.0f} s")
        if "wandb" in summary and summary["wandb"]["mode"] == "offline":
            print(sync_hint(summary["wandb"]["dir"]))


def main(argv=None) -> int:
    paths = {"prepared_dir": "data/prepared", "out_dir": DEFAULT_OUT, "curves_dir": "{out_dir}/curves",
             "ckpt_dir": "{out_dir}/checkpoints"}
    return stage_main(__doc__, paths, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
