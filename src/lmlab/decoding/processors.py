"""Rules the loop applies to every step's log-probabilities before the policy sees them.

Each processor is called as ``processor(lprobs (R, V), history (R, t)) -> lprobs`` where row ``r``
of ``history`` holds the tokens generated so far for row ``r`` (no BOS, no prompt). Like fairseq's
``no_repeat_ngram_size`` and Hugging Face's beam search, they act on log-probabilities and do not
renormalise, so a hypothesis's score is the sum of the processed log-probs it took.
"""

from __future__ import annotations

import math

import torch


class RepetitionPenalty:
    """CTRL's penalty (Keskar et al., 2019) on tokens already generated: their log-probability is
    multiplied by ``penalty`` (> 1 discourages repeats; log-probs are <= 0, so the product is lower)."""

    def __init__(self, penalty: float):
        self.penalty = penalty

    def __call__(self, lprobs: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        if history.size(1) == 0:
            return lprobs
        seen = lprobs.gather(1, history)
        return lprobs.scatter(1, history, seen * self.penalty)


class NoRepeatNgram:
    """Bans every token that would complete an n-gram already present in the generated tokens."""

    def __init__(self, n: int):
        self.n = n

    def __call__(self, lprobs: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        n, t = self.n, history.size(1)
        if t < n:  # no complete n-gram yet
            return lprobs
        windows = history.unfold(1, n, 1)  # (R, W, n): every n-gram so far
        prefix = history[:, t - n + 1:] if n > 1 else history[:, :0]  # (R, n-1): the last n-1 tokens
        match = (windows[:, :, :-1] == prefix[:, None, :]).all(dim=-1)  # (R, W)
        banned = torch.zeros_like(lprobs)
        banned.scatter_reduce_(1, windows[:, :, -1], match.to(lprobs.dtype), reduce="amax")
        return lprobs.masked_fill(banned.bool(), -math.inf)


def build_processors(repetition_penalty: float = 1.0, no_repeat_ngram_size: int = 0) -> list:
    """The processors for ``decoding.*`` settings that are switched on, in the order applied."""
    out = []
    if repetition_penalty != 1.0:
        out.append(RepetitionPenalty(repetition_penalty))
    if no_repeat_ngram_size > 0:
        out.append(NoRepeatNgram(no_repeat_ngram_size))
    return out
