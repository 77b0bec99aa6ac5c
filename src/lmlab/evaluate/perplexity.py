"""Test perplexity: the references' cross-entropy under the model, batched as in training."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from lmlab.data.batching import BucketBatchSampler, PairDataset, TextDataset, collate_blocks, collate_for
from lmlab.model.loss import MaskRule, eval_generator, logits_and_labels, masked_batch, summed_loss


def perplexity(model, prepared_dir: str | Path, split: str, batch_size: int,
               block: int | None = None, rule: MaskRule | None = None) -> dict:
    """Token-level cross-entropy of the references under the model (teacher forcing, no smoothing),
    batched and truncated as in training; with ``block`` (language modelling), of the split's text
    stream in consecutive blocks of that many tokens. An encoder-only model is scored on the
    positions that ``rule`` (BERT's, by default) masks in each block, batch ``i`` masked from
    ``eval_generator(i)``: the same positions for every run with the same block and batch sizes.
    It also gets ``masked_accuracy`` (the share of those positions whose most likely token is the
    right one, ×100) and ``masked_tokens``."""
    m = model.cfg
    decoder_only = m.arch == "decoder-only"
    if block:
        data, collate = TextDataset(prepared_dir, split, block), collate_blocks
    else:
        data = PairDataset(prepared_dir, split, m.max_len // 2 if decoder_only else m.max_len, decoder_only)
        collate = collate_for(decoder_only, m.max_len)
    sampler = BucketBatchSampler(np.minimum(data.lengths(), m.max_len + 1), batch_size, seed=0, shuffle=False)
    nll, n_tok, n_right = 0.0, 0, 0
    with torch.inference_mode():
        for i, batch in enumerate(DataLoader(data, batch_sampler=sampler, collate_fn=collate)):
            if len(batch) == 4:  # encoder-decoder: the target side is cut to the model's positions
                src, src_pad, tgt_in, tgt_out = batch
                batch = (src, src_pad, tgt_in[:, : m.max_len], tgt_out[:, : m.max_len])
            batch = masked_batch(model, batch, rule or MaskRule(), eval_generator(i))
            logits, labels = logits_and_labels(model, batch)
            loss, count = summed_loss(logits, labels, m.pad_id)
            nll, n_tok = nll + loss.item(), n_tok + int(count)
            if m.arch == "encoder-only":  # logits and labels of the masked positions only
                n_right += int((logits.argmax(-1) == labels).sum())
    loss = nll / max(n_tok, 1)
    out = {"loss": round(loss, 6), "perplexity": round(math.exp(loss), 4)}
    if m.arch == "encoder-only":
        out |= {"masked_accuracy": round(100 * n_right / max(n_tok, 1), 4), "masked_tokens": n_tok}
    return out
