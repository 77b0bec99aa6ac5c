"""Weights & Biases bookkeeping shared by the stages: how a training run is named, grouped and
tagged (the Lightning logger of ``train.loggers.make_logger``), and the names that the evaluate
stages' results take in that same run (``evaluate.wandb_run.log_evaluation``).

One W&B run per training. Its config is the resolved ``Config`` and its ``provenance`` (DVC
experiment, git commit, params.yaml hash); its summary gets the parameter count and training
throughput (``train.fit``), then one ``test/<strategy>/<metric>`` per metric and a table of example
generations per decoding strategy (``log_evaluation``, once per evaluate stage), which also adds
the strategy to the run's tags and its ``scored_strategies`` summary field. The runs of one sweep
share a group: ``logger.group``, else ``dvc-<baseline commit>`` under ``dvc exp run``, else the
sweep directory of a Hydra multirun.
"""

from __future__ import annotations

import os
from pathlib import Path

from lmlab.config import Config

STEP_METRIC = "trainer/global_step"  # what Lightning's WandbLogger logs beside every metric


def strategy_name(cfg: Config, sweep_key: str | None = None) -> str:
    """The name a decoding strategy's results go under: ``sweep_key`` for ``sweep.<sweep_key>``;
    for the main ``decoding``, its ``name`` (the preset's: greedy, beam, topp, ...), or ``decoding``
    when a sweep entry of that name holds other settings (so neither overwrites the other's results)."""
    if sweep_key is not None:
        return sweep_key
    name = cfg.decoding.name
    return "decoding" if name in cfg.sweep and cfg.sweep[name] != cfg.decoding else name


def run_tags(cfg: Config, scored: list[str] = ()) -> list[str]:
    """``model=tiny``, ``arch=encoder-decoder``, then ``decoding=<name>`` for every strategy
    scored into the run so far (``scored``, in the order they were; none at training)."""
    return [f"model={cfg.model.name}", f"arch={cfg.model.arch}", *(f"decoding={name}" for name in scored)]


def provenance(environ=os.environ, cwd: str | Path | None = None) -> dict:
    """What a run's W&B config records beside the resolved config, to group and filter runs by:
    the DVC experiment's name (DVC_EXP_NAME), the git commit of the code (the experiment's baseline
    under ``dvc exp run``, else HEAD of the repository) and the SHA-256 of the repository's
    ``params.yaml`` (the parameters DVC ran; None without one). A value that cannot be had is None."""
    import hashlib

    root = Path(environ.get("DVC_ROOT") or cwd or os.getcwd())
    params = root / "params.yaml"
    return {"dvc_experiment": environ.get("DVC_EXP_NAME"),
            "git_commit": environ.get("DVC_EXP_BASELINE_REV") or _git_head(root),
            "params_sha256": hashlib.sha256(params.read_bytes()).hexdigest() if params.is_file() else None}


def _git_head(root: Path) -> str | None:
    import subprocess

    try:
        proc = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def run_group(cfg: Config, environ=os.environ) -> str | None:
    """The W&B group of a training run: ``logger.group`` when set; else, inside ``dvc exp run``
    (DVC sets DVC_EXP_BASELINE_REV, the full commit the experiment starts from, for every stage
    command), ``dvc-`` and that commit's first 7 characters, so the experiments of one baseline
    group together; else the sweep directory of a Hydra multirun; else none."""
    if cfg.logger.group:
        return cfg.logger.group
    baseline = environ.get("DVC_EXP_BASELINE_REV")
    if baseline:
        return f"dvc-{baseline[:7]}"
    return _hydra_sweep_dir()


def display_name(out_dir: Path, environ=os.environ) -> str:
    """The run's display name: the DVC experiment's name (DVC_EXP_NAME), else the output folder's."""
    return environ.get("DVC_EXP_NAME") or Path(out_dir).name


def _hydra_sweep_dir() -> str | None:
    """``hydra.sweep.dir`` when this process is a job of a Hydra multirun (``src/train.py -m``)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return None
    hydra = HydraConfig.get()
    if hydra.mode != RunMode.MULTIRUN:
        return None
    return str(hydra.sweep.dir)


def define_step_axis(run) -> None:
    """Plot every ``train/*`` and ``val/*`` metric against the optimizer step, not W&B's own
    ``_step`` (one per log call, so validation rows would shift the training curve)."""
    run.define_metric(STEP_METRIC)
    for pattern in ("train/*", "val/*"):
        run.define_metric(pattern, step_metric=STEP_METRIC, step_sync=True)


def wandb_dir(save_dir: str | Path) -> str:
    """``logger.save_dir`` made absolute and created, for ``wandb.init(dir=...)``. Relative, it
    would be read twice: the run folder against this process's working directory, the .wandb log
    against that of the W&B service, which outlives a ``chdir`` (a notebook, a test session)."""
    path = Path(save_dir).resolve()
    path.mkdir(parents=True, exist_ok=True)
    return str(path)


def sync_hint(files_dir: str | Path) -> str:
    """The line that tells how to upload an offline run, from its ``run.dir`` (``.../files``)."""
    return f"W&B run saved offline; upload with: wandb sync {Path(files_dir).parent}"
