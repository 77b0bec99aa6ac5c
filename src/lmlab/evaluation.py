"""Stage `evaluate`: scores of the generations file plus test perplexity."""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F

from .config import Config
from .files import atomic_write_json
from .tokenization import PAD


def perplexity(model, prepared_dir: str | Path, split: str, batch_size: int) -> dict:
    """Token-level cross-entropy of the references under the model (teacher forcing, no smoothing)."""
    from torch.utils.data import DataLoader

    from .batching import BucketBatchSampler, PairDataset, collate_pairs

    data = PairDataset(prepared_dir, split, model.cfg.max_len)
    sampler = BucketBatchSampler(data.lengths(), batch_size, seed=0, shuffle=False)
    nll, n_tok = 0.0, 0
    with torch.inference_mode():
        for src, src_pad, tgt_in, tgt_out in DataLoader(data, batch_sampler=sampler, collate_fn=collate_pairs):
            tgt_in, tgt_out = tgt_in[:, : model.cfg.max_len], tgt_out[:, : model.cfg.max_len]
            logits = model(src, src_pad, tgt_in)
            nll += F.cross_entropy(logits.flatten(0, 1), tgt_out.flatten(), ignore_index=PAD,
                                   reduction="sum").item()
            n_tok += int(tgt_out.ne(PAD).sum())
    loss = nll / max(n_tok, 1)
    return {"loss": round(loss, 6), "perplexity": round(math.exp(loss), 4)}


def evaluate(cfg: Config, generations_path: str | Path, model_path: str | Path,
             prepared_dir: str | Path, metrics_path: str | Path) -> dict:
    """Score the generations file, add test perplexity, write the flat metrics JSON."""
    from . import scoring
    from .training import load_model

    records = scoring.read_generations(generations_path)
    e = cfg.evaluate
    metrics = scoring.score(records, bleu_tokenize=e.bleu_tokenize, rouge_stemmer=e.rouge_stemmer)
    model, _, payload = load_model(model_path)
    metrics.update(perplexity(model, prepared_dir, "test", e.batch_size))
    atomic_write_json(metrics_path, metrics)
    from .tracking import log_evaluation

    log_evaluation(cfg, payload.get("summary", {}), metrics, records)
    return metrics


