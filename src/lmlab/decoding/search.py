"""Search policies: given one step's log-probabilities, propose the candidates to keep.

A policy only ranks; everything stateful (the KV cache, EOS, finished hypotheses, length
normalisation, n-best lists, the length cap) lives in ``loop.generate``, so every strategy returns
the same ``Hypothesis`` records. A policy has ``beam_size``, ``n_best``, ``length_penalty`` and one
method::

    step(step, lprobs (B, beam, V), scores (B, beam)) -> cand_scores, cand_tokens, cand_beams  # (B, K)

``scores`` are the running sums of token log-probs of the live beams, ``cand_scores`` the sums
after appending ``cand_tokens[b, k]`` to beam ``cand_beams[b, k]``, best first.
"""

from __future__ import annotations

import math

import torch


def _check(ok: bool, key: str, value, rule: str) -> None:
    if not ok:
        raise ValueError(f"decoding.{key}={value!r} {rule}")


class BeamSearch:
    """Beam search with fairseq's conventions.

    Ranking: live beams compete on the raw sum of log-probs; a finished hypothesis is scored

        score = sum of token log-probs / length ** length_penalty

    where ``length`` counts the generated tokens *including* EOS (a hypothesis cut by the length cap
    has no EOS and counts its tokens only). ``length_penalty=0`` ranks by the raw sum, which favours
    short outputs; 1 is the per-token average; above 1 favours longer outputs still.

    Early stopping: an example is done as soon as it has ``beam_size`` finished hypotheses (fairseq's
    default), even if a live beam might still reach a better normalised score. The ``n_best`` best of
    them, by ``score``, are returned.
    """

    def __init__(self, beam_size: int = 4, length_penalty: float = 1.0, n_best: int = 1):
        _check(isinstance(beam_size, int) and not isinstance(beam_size, bool) and beam_size >= 1,
               "beam_size", beam_size, "must be an integer >= 1")
        _check(isinstance(n_best, int) and not isinstance(n_best, bool) and 1 <= n_best <= beam_size,
               "n_best", n_best, f"must be between 1 and decoding.beam_size={beam_size}")
        _check(isinstance(length_penalty, (int, float)) and math.isfinite(length_penalty),
               "length_penalty", length_penalty, "must be a finite number")
        self.beam_size = beam_size
        self.n_best = n_best
        self.length_penalty = float(length_penalty)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(beam_size={self.beam_size}, "
                f"length_penalty={self.length_penalty}, n_best={self.n_best})")

    def step(self, step: int, lprobs: torch.Tensor, scores: torch.Tensor):
        B, beam, V = lprobs.shape
        if step == 0:
            # every beam of an example holds the same prefix (just BOS): expanding them all would
            # propose each continuation `beam` times, so only beam 0 may grow
            lprobs = lprobs.clone()
            lprobs[:, 1:] = -math.inf
        total = (lprobs + scores[:, :, None]).view(B, beam * V)  # (B, beam*V)
        # Why 2 x beam candidates: a candidate ending in EOS leaves the beam (it becomes a finished
        # hypothesis), and each beam has one EOS continuation, so at most `beam` of the candidates are
        # EOS. With beam=2 the top 2 could be ["a b EOS", "a c EOS"], which would leave nothing to
        # continue; the top 4 always hold at least 2 non-EOS candidates, so the beam stays full.
        cand_scores, flat = total.topk(min(2 * beam, beam * V), dim=1)  # (B, K)
        return cand_scores, flat % V, torch.div(flat, V, rounding_mode="floor")


class Greedy(BeamSearch):
    """Beam search with a beam of one: take the most likely token at every step. Scores follow
    ``BeamSearch``'s convention, so greedy and beam outputs can be compared."""

    def __init__(self, length_penalty: float = 1.0):
        super().__init__(beam_size=1, length_penalty=length_penalty, n_best=1)

    def __repr__(self) -> str:
        return f"Greedy(length_penalty={self.length_penalty})"

    def step(self, step: int, lprobs: torch.Tensor, scores: torch.Tensor):
        # one beam: no step-0 masking and no flattening; the runner-up token is the second
        # candidate, which the loop keeps alive in case the best one is EOS
        cand_scores, cand_tokens = (lprobs[:, 0] + scores).topk(2, dim=1)  # (B, 2)
        return cand_scores, cand_tokens, torch.zeros_like(cand_tokens)
