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

import dataclasses
import os
from pathlib import Path

from lmlab.cli import run_stamp, stage_main
from lmlab.config import ConfigError
from lmlab.files import atomic_write_json
from lmlab.tracking import sync_hint
from lmlab.training import train

DEFAULT_OUT = "outputs/{time}"
RUN_DIR_ENV = "LMLAB_RUN_DIR"


def run(cfg, prepared_dir, out_dir, curves_dir, ckpt_dir, job=None):
    run_name = None
    if job is not None:  # the Hydra door: this job's directory replaces outputs/{time}
        out_dir, cfg, run_name = hydra_job_outputs(cfg, out_dir, curves_dir, ckpt_dir, job)
    # Under DDP, Lightning starts the other ranks by running this script again; they find the
    # directory rank 0 chose in the environment, so all ranks share one output directory.
    # Under SLURM (srun starts every rank itself), the job and step ids name the directory instead.
    # (From Hydra, Lightning passes the other ranks rank 0's hydra.run.dir instead.)
    inherited = os.environ.get(RUN_DIR_ENV)
    if "{time}" in out_dir:
        out_dir = inherited or out_dir.format(time=run_stamp(os.environ))
    curves_dir = curves_dir.format(out_dir=out_dir)
    ckpt_dir = ckpt_dir.format(out_dir=out_dir)
    os.environ[RUN_DIR_ENV] = out_dir
    try:
        summary = train(cfg, prepared_dir, out_dir, curves_dir, ckpt_dir, run_name=run_name)
    finally:
        if inherited is None:
            os.environ.pop(RUN_DIR_ENV, None)
    if summary:
        # a DVC metric beside the curves: parameters, training time and throughput per experiment
        atomic_write_json(Path(curves_dir) / "summary.json", {k: v for k, v in summary.items() if k != "wandb"})
        print(f"wrote {out_dir}/model.pt: {summary['n_parameters']:,} parameters, step "
              f"{summary['global_step']}, best val/loss {summary['best_val_loss']:.4f}, "
              f"{summary['train_seconds']:.0f} s")
        if "wandb" in summary and summary["wandb"]["mode"] == "offline":
            print(sync_hint(summary["wandb"]["dir"]))


def hydra_job_outputs(cfg, out_dir, curves_dir, ckpt_dir, job):
    """(output directory, config, W&B/CSV run name) of a Hydra job: the job's own directory
    (``hydra.runtime.output_dir``) unless --out-dir names one, with a relative logger.save_dir
    taken inside it."""
    from hydra.types import RunMode

    tc = cfg.trainer
    if job.mode == RunMode.MULTIRUN:
        for option, value, own in (("--out-dir", out_dir, out_dir == DEFAULT_OUT),
                                   ("--curves-dir", curves_dir, "{out_dir}" in curves_dir),
                                   ("--ckpt-dir", ckpt_dir, "{out_dir}" in ckpt_dir)):
            if not own:
                raise ConfigError(f"{option} {value} in a sweep would give every job the same "
                                  "directory: leave it out (each job writes to its own)")
        # Lightning starts a run's other DDP ranks by rerunning this command line, and that
        # would be the whole sweep again (-m and all). Not refused: ranks that srun starts
        # (hydra/launcher=slurm), and ddp_spawn, which starts its ranks from within this process.
        many = tc.devices == -1 or tc.devices * tc.num_nodes > 1
        if many and tc.strategy != "ddp_spawn" and int(os.environ.get("SLURM_NTASKS", "1")) == 1:
            raise ConfigError(f"trainer.devices={tc.devices} with trainer.strategy={tc.strategy} in a "
                              "sweep: Lightning would rerun the whole sweep for each extra rank; "
                              "sweep with hydra/launcher=slurm (srun starts the ranks), or "
                              "train one run per command")
    if out_dir != DEFAULT_OUT:
        return out_dir, cfg, None
    job_dir = Path(os.path.relpath(job.runtime.output_dir))  # Hydra's is absolute
    if job_dir.parts[:1] == ("..",):
        job_dir = Path(job.runtime.output_dir)
    save_dir = job_dir / cfg.logger.save_dir  # an absolute save_dir stays as it is
    cfg = dataclasses.replace(cfg, logger=dataclasses.replace(cfg.logger, save_dir=str(save_dir)))
    # outputs/2025-01-31/12-00-00 -> 2025-01-31_12-00-00; multirun/2025-01-31/12-00-00/3 -> ..._3
    run_name = "_".join(job_dir.parts[1:]) if not job_dir.is_absolute() else job_dir.name
    return str(job_dir), cfg, run_name or None


def main(argv=None) -> int:
    paths = {"prepared_dir": "data/prepared", "out_dir": DEFAULT_OUT, "curves_dir": "{out_dir}/curves",
             "ckpt_dir": "{out_dir}/checkpoints"}
    return stage_main(__doc__, paths, run, argv, hydra_app=True)


if __name__ == "__main__":
    raise SystemExit(main())
