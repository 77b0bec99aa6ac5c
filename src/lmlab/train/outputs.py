"""Where a training run writes, from either door, and the hand-over of that place to the other
ranks of a distributed run.

* DVC (``--params``): the stage's own paths (``--out-dir data/model``, ...).
* Hydra: each run or sweep job writes everything (model, curves, checkpoints, a relative
  ``logger.save_dir`` such as W&B's) to its own Hydra output directory, unless ``--out-dir``
  names another.
* Plain ``--out-dir outputs/{time}``: a new ``outputs/<date>/<time>`` folder.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from lmlab.cli import run_stamp
from lmlab.config import Config, ConfigError
from lmlab.train.fit import train

DEFAULT_OUT = "outputs/{time}"
RUN_DIR_ENV = "LMLAB_RUN_DIR"


def run_training(cfg: Config, prepared_dir: str, out_dir: str, curves_dir: str, ckpt_dir: str,
                 job=None) -> tuple[dict, str]:
    """Resolve the run's directories (``{time}``, ``{out_dir}``, a Hydra ``job``'s own folder) and
    train. Returns (summary, the output directory); the summary is empty on ranks other than 0."""
    run_name = None
    if job is not None:  # the Hydra door: this job's directory replaces outputs/{time}
        out_dir, cfg, run_name = hydra_job_outputs(cfg, out_dir, curves_dir, ckpt_dir, job)
    # Under DDP, Lightning starts the other ranks by running the script again; they find the
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
    return summary, out_dir


def hydra_job_outputs(cfg: Config, out_dir: str, curves_dir: str, ckpt_dir: str, job):
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
