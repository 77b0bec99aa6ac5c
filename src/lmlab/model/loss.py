"""The training objectives, shared by training (train and validation loss) and evaluation (test
perplexity), so both compute the same number: next-token prediction (causal LM, translation) and
BERT's masked language modelling, whose corruption of the input (``mask_tokens``) lives here too."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F

from lmlab.data.tokenizer import SPECIAL_TOKENS


def loss_sums(model, batch, smoothing: float = 0.0):
    """(summed token cross-entropy, number of scored tokens) of a batch made by
    ``data.batching.collate_for`` or ``collate_blocks`` (for an encoder-only model, ``mask_tokens``'
    (inputs, labels)). Padding (``model.cfg.pad_id``) is never scored, nor is any position whose
    label is padding; ``smoothing`` is label smoothing (0 gives the true negative log-likelihood)."""
    return summed_loss(*logits_and_labels(model, batch), model.cfg.pad_id, smoothing)


def summed_loss(logits: torch.Tensor, labels: torch.Tensor, pad: int, smoothing: float = 0.0):
    """(summed cross-entropy of ``logits`` (..., V) against ``labels`` (...), number of labels
    that are not ``pad``)."""
    loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), labels.reshape(-1), ignore_index=pad,
                           label_smoothing=smoothing, reduction="sum")
    return loss, labels.ne(pad).sum()


def logits_and_labels(model, batch) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's logits (B, T, V) for ``batch`` and the labels (B, T) they are scored against;
    for an encoder-only model, those of the masked positions only, (N, V) and (N,)."""
    if len(batch) == 4:  # encoder-decoder
        src, src_pad, tgt_in, labels = batch
        return model(src, src_pad, tgt_in), labels
    ids, labels = batch
    if model.cfg.arch == "encoder-only":  # masked: labels are padding except at the chosen positions
        pad = ids.eq(model.cfg.pad_id)
        chosen = labels.ne(model.cfg.pad_id)
        return model.mlm(ids, pad if pad.any() else None, chosen), labels[chosen]
    # decoder-only: source and target in one sequence, or a block of the text stream
    return model.lm(ids), labels


@dataclass(frozen=True)
class MaskRule:
    """BERT's masking (Devlin et al., 2019, section 3.1), with Hugging Face's key names: a share
    ``mlm_probability`` of the positions is chosen for prediction; of those, ``mask_replace_prob``
    become ``<mask>``, ``random_replace_prob`` a random ordinary token, and the rest stay."""

    mlm_probability: float = 0.15
    mask_replace_prob: float = 0.8
    random_replace_prob: float = 0.1

    @classmethod
    def of(cls, trainer) -> MaskRule:
        """The rule of a config's ``trainer`` section (the dataclass, or a mapping of it)."""
        values = trainer if isinstance(trainer, Mapping) else vars(trainer)
        return cls(**{f.name: values[f.name] for f in fields(cls)})


N_SPECIAL = len(SPECIAL_TOKENS)  # ids below this are <pad>, <unk>, <s>, </s>: never a random draw


def mask_tokens(ids: torch.Tensor, rule: MaskRule, mask_id: int, generator: torch.Generator,
                pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT's corruption of ``ids`` (B, T): (inputs, labels). Counts are exact per row: of a row's
    n non-padding positions, k = round(mlm_probability × n) (at least 1) are chosen, uniformly;
    round(mask_replace_prob × k) of them become ``mask_id``, round(random_replace_prob × k) a token
    drawn uniformly from the ordinary ids (``N_SPECIAL`` up to ``mask_id``, excluded), the rest stay
    as they are. ``labels`` holds the original token at the k chosen positions and ``pad_id``
    elsewhere, so that the loss counts the chosen positions only. Every draw comes from
    ``generator``, on its own device (a CPU generator gives the same masks whatever device ``ids``
    are on): the same generator state, the same masks."""
    real = ids.ne(pad_id)
    n = real.sum(1, keepdim=True)  # (B, 1)
    k = torch.clamp(torch.floor(rule.mlm_probability * n + 0.5), min=1).minimum(n)
    n_mask = torch.floor(rule.mask_replace_prob * k + 0.5)
    n_random = torch.minimum(torch.floor(rule.random_replace_prob * k + 0.5), k - n_mask)
    # a uniformly random order of each row's real positions (padding last): rank r < k is chosen,
    # and the rank says what becomes of it
    draw = generator.device
    scores = torch.rand(ids.shape, generator=generator, device=draw).to(ids.device).masked_fill(~real, 2.0)
    rank = scores.argsort(dim=1).argsort(dim=1)
    chosen = rank < k
    to_mask = rank < n_mask
    to_random = chosen & ~to_mask & (rank < n_mask + n_random)
    random_ids = torch.randint(N_SPECIAL, mask_id, ids.shape, generator=generator, device=draw).to(ids.device)
    inputs = torch.where(to_mask, torch.full_like(ids, mask_id), ids)
    inputs = torch.where(to_random, random_ids, inputs)
    labels = torch.where(chosen, ids, torch.full_like(ids, pad_id))
    return inputs, labels


def masked_batch(model, batch, rule: MaskRule, generator: torch.Generator):
    """``batch`` as ``model`` is scored on it: an encoder-only model's block tokens (the batch's
    first tensor) corrupted by ``rule`` (``mask_tokens``); any other model's batch as it is."""
    if model.cfg.arch != "encoder-only":
        return batch
    return mask_tokens(batch[0], rule, model.mask_id, generator, model.cfg.pad_id)


EVAL_MASK_SEED = 20190524  # validation and test masks: the same positions for every run


def eval_generator(batch_index: int) -> torch.Generator:
    """The generator of an evaluation batch's masks, on the CPU: batch ``batch_index`` of a split
    is masked the same way by every run, whatever its seed or device (given the same batches)."""
    return torch.Generator().manual_seed(EVAL_MASK_SEED + batch_index)
