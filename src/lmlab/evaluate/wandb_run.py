"""The evaluate stages' results in the W&B run of the training that made the model."""

from __future__ import annotations

import json
import os
from pathlib import Path

from lmlab.cli import global_rank
from lmlab.config import Config
from lmlab.evaluate.metrics import bleu_tokenizer_for, example_scores, read_generations
from lmlab.files import atomic_write_text
from lmlab.model.checkpoint import read_summary
from lmlab.tracking import run_tags, strategy_name, wandb_dir

EXAMPLES_PER_REPORT_EXAMPLE = 4  # table rows per evaluate.report_examples (the report shows fewer)
SCORED_FILE = "lmlab-scored.json"  # beside a training's W&B run files: the strategies scored into it


def log_evaluation(cfg: Config, model_path: str | Path, generations_path: str | Path, metrics: dict,
                   strategy: str | None = None) -> dict | None:
    """Add one strategy's results to the W&B run of the training that made ``model_path``: each
    metric as ``test/<name>/<metric>`` in the run summary and the first examples as the table
    ``test/<name>/generations`` (id, source, reference, hypothesis and the example's own score),
    where ``<name>`` is ``strategy_name(cfg, strategy)``. Returns the run's ``{"id", "dir", "mode"}``,
    or None when nothing was logged (another logger, W&B disabled, no model file or one trained
    without a W&B run, or a process other than rank 0).

    The run id comes from the model file, so this works in a fresh process (a DVC stage that runs
    long after training). The resumed run keeps its job_type ("train") and group; its tags become
    the model's and one ``decoding=<name>`` per strategy scored so far (W&B replaces tags with
    whatever a resuming ``wandb.init`` passes, so the list is kept in a file beside the training's
    run files), and ``scored_strategies`` in the summary lists them too. Both the metrics and the
    table go to the summary, not the history: an offline resume does not know the run's last
    ``_step``, so history rows it writes could collide with training's when synced.
    """
    if cfg.logger.kind != "wandb" or cfg.logger.mode == "disabled" or global_rank() != 0:
        return None
    info = read_summary(model_path).get("wandb")
    if not info:
        return None
    os.environ.setdefault("WANDB_SILENT", "true")
    import wandb

    name = strategy_name(cfg, strategy)
    records = read_generations(generations_path)[: max(cfg.evaluate.report_examples, 1)
                                                 * EXAMPLES_PER_REPORT_EXAMPLE]
    column, scores = example_scores(
        records, task=cfg.data.task, rouge_stemmer=cfg.evaluate.rouge_stemmer,
        bleu_tokenize=bleu_tokenizer_for(cfg.data.target_lang, cfg.evaluate.bleu_tokenize))
    table = wandb.Table(columns=["id", "source", "reference", "hypothesis", column])
    for rec, value in zip(records, scores):
        table.add_data(rec["id"], rec["source"], rec["reference"], rec["hypothesis"], value)

    # the strategies scored into this run so far, kept beside the training's run files: an offline
    # resume cannot read the run's tags back, and tags passed to it replace the old ones
    ledger = Path(info["dir"]).parent / SCORED_FILE
    scored = json.loads(ledger.read_text()) if ledger.is_file() else []
    scored += [] if name in scored else [name]
    run = wandb.init(project=info["project"], entity=info.get("entity", cfg.logger.entity), id=info["id"],
                     resume="allow", mode=cfg.logger.mode, dir=wandb_dir(cfg.logger.save_dir),
                     tags=run_tags(cfg, scored), settings=wandb.Settings(silent=True))
    run.summary.update({f"test/{name}/{key}": value for key, value in metrics.items()})
    run.summary[f"test/{name}/generations"] = table
    run.summary["scored_strategies"] = scored
    logged = {"id": run.id, "dir": str(run.dir), "mode": cfg.logger.mode}
    run.finish()
    if ledger.parent.is_dir():
        atomic_write_text(ledger, json.dumps(scored) + "\n")
    return logged
