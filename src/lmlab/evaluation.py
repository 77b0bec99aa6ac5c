"""Stage `evaluate`: scores of the generations file plus test perplexity."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from .config import Config
from .files import atomic_write_json


def perplexity(model, prepared_dir: str | Path, split: str, batch_size: int,
               block: int | None = None) -> dict:
    """Token-level cross-entropy of the references under the model (teacher forcing, no smoothing),
    batched and truncated as in training; with ``block`` (language modelling), of the split's text
    stream in consecutive blocks of that many tokens."""
    import numpy as np
    from torch.utils.data import DataLoader

    from .batching import BucketBatchSampler, PairDataset, TextDataset, collate_blocks, collate_for
    from .training import loss_sums

    m = model.cfg
    decoder_only = m.arch == "decoder-only"
    if block:
        data, collate = TextDataset(prepared_dir, split, block), collate_blocks
    else:
        data = PairDataset(prepared_dir, split, m.max_len // 2 if decoder_only else m.max_len, decoder_only)
        collate = collate_for(decoder_only, m.max_len)
    sampler = BucketBatchSampler(np.minimum(data.lengths(), m.max_len + 1), batch_size, seed=0, shuffle=False)
    nll, n_tok = 0.0, 0
    with torch.inference_mode():
        for batch in DataLoader(data, batch_sampler=sampler, collate_fn=collate):
            if len(batch) == 4:  # encoder-decoder: the target side is cut to the model's positions
                src, src_pad, tgt_in, tgt_out = batch
                batch = (src, src_pad, tgt_in[:, : m.max_len], tgt_out[:, : m.max_len])
            loss, count = loss_sums(model, batch)
            nll, n_tok = nll + loss.item(), n_tok + int(count)
    loss = nll / max(n_tok, 1)
    return {"loss": round(loss, 6), "perplexity": round(math.exp(loss), 4)}


def evaluate(cfg: Config, generations_path: str | Path, model_path: str | Path,
             prepared_dir: str | Path, metrics_path: str | Path,
             baseline_path: str | Path | None = None) -> dict:
    """Score the generations file and write the flat metrics JSON.

    The main strategy (no ``baseline_path``) adds test perplexity. A sweep strategy is instead
    tested against the baseline's generations (paired bootstrap): its perplexity would be the same
    model's. The stage then adds the metrics to the training's W&B run (``tracking.log_evaluation``).
    """
    from . import scoring

    records = scoring.read_generations(generations_path)
    e, task = cfg.evaluate, cfg.data.task
    bleu_tokenize = scoring.bleu_tokenizer_for(cfg.data.target_lang, e.bleu_tokenize)
    metrics = scoring.score(records, task=task, bleu_tokenize=bleu_tokenize, rouge_stemmer=e.rouge_stemmer)
    if baseline_path is not None:
        if task == "translation":  # sacreBLEU's paired test covers BLEU and chrF
            baseline = scoring.read_generations(baseline_path)
            metrics.update(scoring.paired_bootstrap(baseline, records, bleu_tokenize=bleu_tokenize,
                                                    n_samples=e.bootstrap_samples))
    else:
        from .training import load_model

        model, _, _ = load_model(model_path)
        block = cfg.trainer.block_size if task == "language_modeling" else None
        metrics.update(perplexity(model, prepared_dir, "test", e.batch_size, block))
    atomic_write_json(metrics_path, metrics)
    return metrics
