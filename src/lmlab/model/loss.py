"""The training objective, shared by training (train and validation loss) and evaluation
(test perplexity), so both compute the same number."""

from __future__ import annotations

import torch.nn.functional as F


def loss_sums(model, batch, smoothing: float = 0.0):
    """(summed token cross-entropy, number of scored tokens) of a batch made by
    ``data.batching.collate_for`` or ``collate_blocks``. Padding (``model.cfg.pad_id``) is never
    scored; ``smoothing`` is label smoothing (0 gives the true negative log-likelihood)."""
    pad = model.cfg.pad_id
    if len(batch) == 4:  # encoder-decoder
        src, src_pad, tgt_in, labels = batch
        logits = model(src, src_pad, tgt_in)  # (B, T, V)
    else:  # decoder-only: source and target in one sequence, or a block of the text stream
        ids, labels = batch
        logits = model.lm(ids)  # (B, T, V)
    loss = F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=pad,
                           label_smoothing=smoothing, reduction="sum")
    return loss, labels.ne(pad).sum()
