"""Weights & Biases bookkeeping outside the Lightning trainer (the evaluate stage)."""

from __future__ import annotations

import os

from .config import Config


def log_evaluation(cfg: Config, train_summary: dict, metrics: dict, records: list[dict]) -> str | None:
    """Add test metrics and a table of example generations to the training run; returns its id.

    The run id comes from the model file, so this works in a fresh process (and in a DVC stage
    that runs long after training). The mode is set explicitly: offline never waits on the network.
    """
    info = train_summary.get("wandb")
    if cfg.logger.kind != "wandb" or not info or cfg.logger.mode == "disabled":
        return None
    os.environ.setdefault("WANDB_SILENT", "true")
    import wandb

    run = wandb.init(project=info["project"], entity=cfg.logger.entity, id=info["id"], resume="allow",
                     mode=cfg.logger.mode, dir=cfg.logger.save_dir, job_type="evaluate",
                     settings=wandb.Settings(silent=True))
    run.summary.update({f"test/{k}": v for k, v in metrics.items()})
    table = wandb.Table(columns=["id", "source", "reference", "hypothesis"])
    for rec in records[: max(cfg.evaluate.report_examples, 1) * 4]:
        table.add_data(rec["id"], rec["source"], rec["reference"], rec["hypothesis"])
    run.log({"test/generations": table})
    run.finish()
    return info["id"]
