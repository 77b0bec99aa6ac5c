"""Stage `evaluate`: the scores of a generations file, plus test perplexity for the main strategy."""

from __future__ import annotations

from pathlib import Path

from lmlab.config import Config
from lmlab.evaluate import metrics as m
from lmlab.files import atomic_write_json


def evaluate(cfg: Config, generations_path: str | Path, model_path: str | Path,
             prepared_dir: str | Path, metrics_path: str | Path,
             baseline_path: str | Path | None = None) -> dict:
    """Score the generations file and write the flat metrics JSON.

    The main strategy (no ``baseline_path``) adds test perplexity. A sweep strategy is instead
    tested against the baseline's generations (paired bootstrap): its perplexity would be the same
    model's. The stage script then adds the metrics to the training's W&B run
    (``wandb_run.log_evaluation``).
    """
    e, task = cfg.evaluate, cfg.data.task
    if baseline_path is None:  # the model is checked against the data before any scoring
        from lmlab.model.checkpoint import check_data_tokenizer, load_model

        model, _, payload = load_model(model_path)
        check_data_tokenizer(payload, model_path, prepared_dir)
    records = m.read_generations(generations_path)
    bleu_tokenize = m.bleu_tokenizer_for(cfg.data.target_lang, e.bleu_tokenize)
    metrics = m.score(records, task=task, bleu_tokenize=bleu_tokenize, rouge_stemmer=e.rouge_stemmer)
    if baseline_path is not None:
        if task == "translation":  # sacreBLEU's paired test covers BLEU and chrF
            baseline = m.read_generations(baseline_path)
            metrics.update(m.paired_bootstrap(baseline, records, bleu_tokenize=bleu_tokenize,
                                              n_samples=e.bootstrap_samples))
    else:
        from lmlab.evaluate.perplexity import perplexity
        from lmlab.model.loss import MaskRule

        block = cfg.trainer.block_size if task == "language_modeling" else None
        metrics.update(perplexity(model, prepared_dir, "test", e.batch_size, block, MaskRule.of(cfg.trainer)))
    atomic_write_json(metrics_path, metrics)
    return metrics
