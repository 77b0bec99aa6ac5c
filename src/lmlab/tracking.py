"""Weights & Biases bookkeeping: how a training run is named, grouped and tagged (the Lightning
logger of ``training.make_logger``), and the evaluate stages' results added to that same run.

One W&B run per training. Its config is the resolved ``Config``; its summary gets the parameter
count and training throughput (``training``), then one ``test/<strategy>/<metric>`` per metric and
a table of example generations per decoding strategy (``log_evaluation``, once per evaluate
stage). The runs of one sweep share a group: ``logger.group``, else ``dvc-<baseline commit>`` under
``dvc exp run``, else the sweep directory of a Hydra multirun.
"""

from __future__ import annotations

import os
from pathlib import Path

from .config import Config

STEP_METRIC = "trainer/global_step"  # what Lightning's WandbLogger logs beside every metric
EXAMPLES_PER_REPORT_EXAMPLE = 4  # table rows per evaluate.report_examples (the report shows fewer)


def strategy_name(cfg: Config, sweep_key: str | None = None) -> str:
    """The name a decoding strategy's results go under: ``sweep_key`` for ``sweep.<sweep_key>``;
    for the main ``decoding``, its ``name`` (the preset's: greedy, beam, topp, ...), or ``decoding``
    when a sweep entry of that name holds other settings (so neither overwrites the other's results)."""
    if sweep_key is not None:
        return sweep_key
    name = cfg.decoding.name
    return "decoding" if name in cfg.sweep and cfg.sweep[name] != cfg.decoding else name


def run_tags(cfg: Config) -> list[str]:
    """``model=tiny``, ``arch=encoder-decoder``, ``decoding=greedy``, then ``sweep=<key>`` for
    every sweep entry: the strategies whose results the evaluate stages will add."""
    return [f"model={cfg.model.name}", f"arch={cfg.model.arch}", f"decoding={strategy_name(cfg)}",
            *(f"sweep={key}" for key in cfg.sweep)]


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


def train_summary(model_path: str | Path) -> dict:
    """The training summary stored in a model file; ``{}`` for a Lightning checkpoint or no file
    (a sweep strategy is scored without the model). The weights are memory-mapped, not read."""
    import torch

    path = Path(model_path)
    if not path.is_file():
        return {}
    payload = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    return payload.get("summary", {}) if isinstance(payload, dict) else {}


def log_evaluation(cfg: Config, model_path: str | Path, generations_path: str | Path, metrics: dict,
                   strategy: str | None = None) -> dict | None:
    """Add one strategy's results to the W&B run of the training that made ``model_path``: each
    metric as ``test/<name>/<metric>`` in the run summary and the first examples as the table
    ``test/<name>/generations`` (id, source, reference, hypothesis and the example's own score),
    where ``<name>`` is ``strategy_name(cfg, strategy)``. Returns the run's ``{"id", "dir", "mode"}``,
    or None when nothing was logged (another logger, W&B disabled, no model file or one trained
    without a W&B run, or a process other than rank 0).

    The run id comes from the model file, so this works in a fresh process (a DVC stage that runs
    long after training). The resumed run keeps its job_type ("train"), tags and group: W&B
    replaces them with whatever a resuming ``wandb.init`` passes, and offline it cannot read them
    back to extend them. Both the metrics and the table go to the summary, not the history: an
    offline resume does not know the run's last ``_step``, so history rows it writes could collide
    with training's when synced.
    """
    from lightning_fabric.utilities.rank_zero import rank_zero_only

    if cfg.logger.kind != "wandb" or cfg.logger.mode == "disabled" or rank_zero_only.rank != 0:
        return None
    info = train_summary(model_path).get("wandb")
    if not info:
        return None
    from . import scoring

    os.environ.setdefault("WANDB_SILENT", "true")
    import wandb

    name = strategy_name(cfg, strategy)
    records = scoring.read_generations(generations_path)[: max(cfg.evaluate.report_examples, 1)
                                                         * EXAMPLES_PER_REPORT_EXAMPLE]
    column, scores = scoring.example_scores(
        records, task=cfg.data.task, rouge_stemmer=cfg.evaluate.rouge_stemmer,
        bleu_tokenize=scoring.bleu_tokenizer_for(cfg.data.target_lang, cfg.evaluate.bleu_tokenize))
    table = wandb.Table(columns=["id", "source", "reference", "hypothesis", column])
    for rec, value in zip(records, scores):
        table.add_data(rec["id"], rec["source"], rec["reference"], rec["hypothesis"], value)

    run = wandb.init(project=info["project"], entity=info.get("entity", cfg.logger.entity), id=info["id"],
                     resume="allow", mode=cfg.logger.mode, dir=wandb_dir(cfg.logger.save_dir),
                     settings=wandb.Settings(silent=True))
    run.summary.update({f"test/{name}/{key}": value for key, value in metrics.items()})
    run.summary[f"test/{name}/generations"] = table
    logged = {"id": run.id, "dir": str(run.dir), "mode": cfg.logger.mode}
    run.finish()
    return logged
