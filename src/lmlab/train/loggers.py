"""The experiment logger of a training run (``logger.kind``): W&B, CSV or none."""

from __future__ import annotations

import os

from lmlab.config import Config
from lmlab.tracking import provenance, run_group, run_tags, wandb_dir


def make_logger(cfg: Config, run_name: str, run_id: str | None = None):
    """The Lightning logger for ``cfg.logger`` (``False`` for none). ``run_id`` continues an
    existing W&B run (a resumed training); its group and tags are ``tracking``'s."""
    lc = cfg.logger
    if lc.kind == "none":
        return False
    if lc.kind == "csv":
        from pytorch_lightning.loggers import CSVLogger

        return CSVLogger(save_dir=lc.save_dir, name="csv", version=run_name)
    from pytorch_lightning.loggers import WandbLogger

    # Chosen before wandb.init: offline never touches the network.
    os.environ.setdefault("WANDB_SILENT", "true")
    return WandbLogger(project=lc.project, entity=lc.entity, mode=lc.mode, save_dir=wandb_dir(lc.save_dir),
                       name=run_name, job_type="train", config=cfg.to_dict() | {"provenance": provenance()}, id=run_id,
                       resume="allow" if run_id else None, group=run_group(cfg), tags=run_tags(cfg))
