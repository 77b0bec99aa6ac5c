"""Stage `train`: train the Transformer with Lightning on the prepared data.

    python src/train.py model=tiny trainer.max_steps=20     # Hydra: output in outputs/<date>/<time>
    python src/train.py -m model=tiny,small                  # a Hydra sweep: multirun/<date>/<time>/<job>
    python src/train.py -m model=tiny,small hydra/launcher=slurm   # ... as a SLURM job array
    python src/train.py --params params.yaml --out-dir data/model --curves-dir reports/train \\
        --ckpt-dir data/checkpoints                          # DVC (checkpoints outside DVC's outs,
                                                             # so a rerun after a crash resumes)

From Hydra, each run or sweep job writes everything (model, curves, checkpoints, a relative
logger.save_dir such as W&B's) to its own Hydra output directory, unless --out-dir names another.
"""

from lmlab.cli import stage_main
from lmlab.tracking import sync_hint
from lmlab.train.hardware import check_machine
from lmlab.train.outputs import DEFAULT_OUT, run_training


def run(cfg, prepared_dir, out_dir, curves_dir, ckpt_dir, job=None):
    summary, out_dir = run_training(cfg, prepared_dir, out_dir, curves_dir, ckpt_dir, job)
    if summary:
        print(f"wrote {out_dir}/model.pt: {summary['n_parameters']:,} parameters, step "
              f"{summary['global_step']}, best val/loss {summary['best_val_loss']:.4f}, "
              f"{summary['train_seconds']:.0f} s")
        if "wandb" in summary and summary["wandb"]["mode"] == "offline":
            print(sync_hint(summary["wandb"]["dir"]))


def main(argv=None) -> int:
    paths = {"prepared_dir": "data/prepared", "out_dir": DEFAULT_OUT, "curves_dir": "{out_dir}/curves",
             "ckpt_dir": "{out_dir}/checkpoints"}
    # the trainer config against this machine, before Hydra makes the run's folder
    return stage_main(__doc__, paths, run, argv, hydra_app=True, check=lambda cfg: check_machine(cfg.trainer))


if __name__ == "__main__":
    raise SystemExit(main())
