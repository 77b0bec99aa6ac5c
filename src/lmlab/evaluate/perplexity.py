"""Test perplexity: the references' cross-entropy under the model, batched as in training."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from lmlab.data.batching import BucketBatchSampler, PairDataset, TextDataset, collate_blocks, collate_for
from lmlab.model.loss import loss_sums


def perplexity(model, prepared_dir: str | Path, split: str, batch_size: int,
               block: int | None = None) -> dict:
    """Token-level cross-entropy of the references under the model (teacher forcing, no smoothing),
    batched and truncated as in training; with ``block`` (language modelling), of the split's text
    stream in consecutive blocks of that many tokens."""
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
