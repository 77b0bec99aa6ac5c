"""Search policies: given one step's log-probabilities, propose the candidates to keep.

A policy (a ``SearchPolicy``) only ranks; everything stateful (the KV cache, EOS, finished hypotheses, length
normalisation, n-best lists, the length cap) lives in ``loop.generate``, so every strategy returns
the same ``Hypothesis`` records. A policy has ``beam_size``, ``n_best``, ``length_penalty`` and one
method::

    step(step, lprobs (B, beam, V), scores (B, beam)) -> cand_scores, cand_tokens, cand_beams  # (B, K)

``scores`` are the running sums of token log-probs of the live beams, ``cand_scores`` the sums
after appending ``cand_tokens[b, k]`` to beam ``cand_beams[b, k]``, in the policy's order of
preference (the loop keeps the first ``beam_size`` that do not end in EOS, so a policy proposes
enough non-EOS candidates to refill the beam; with one beam, a single candidate will do, since an
EOS among the first ``beam_size`` finishes the example).

The policies trust their arguments: ``lmlab.config.DecodingConfig.check`` validates the settings
(and ``build_policy`` builds a policy from a checked config).
"""

from __future__ import annotations

import math

import torch


class SearchPolicy:
    """What the loop reads of every policy: how many beams it keeps (``beam_size``), how many
    finished hypotheses it returns (``n_best``), how it normalises their scores by length
    (``length_penalty``), when an example is done (``early_stopping``), and ``step``, which ranks
    a step's candidates (module docstring)."""

    def __init__(self, beam_size: int, length_penalty: float = 1.0, n_best: int = 1,
                 early_stopping: str = "fairseq"):
        self.beam_size = beam_size
        self.n_best = n_best
        self.length_penalty = float(length_penalty)
        self.early_stopping = early_stopping

    def step(self, step: int, lprobs: torch.Tensor, scores: torch.Tensor):
        raise NotImplementedError


class BeamSearch(SearchPolicy):
    """Beam search with fairseq's conventions.

    Ranking: live beams compete on the raw sum of log-probs; a finished hypothesis is scored

        score = sum of token log-probs / length ** length_penalty

    where ``length`` counts the generated tokens *including* EOS (a hypothesis cut by the length cap
    has no EOS and counts its tokens only). ``length_penalty=0`` ranks by the raw sum, which favours
    short outputs; 1 is the per-token average; above 1 favours longer outputs still.

    Early stopping (``early_stopping``, carried out by the loop): ``"fairseq"`` (the default) ends
    an example as soon as it has ``beam_size`` finished hypotheses, even if a live beam might still
    reach a better normalised score; ``"never"`` goes on until no live beam can. The ``n_best`` best
    finished hypotheses, by ``score``, are returned.
    """

    def __init__(self, beam_size: int = 4, length_penalty: float = 1.0, n_best: int = 1,
                 early_stopping: str = "fairseq"):
        super().__init__(beam_size, length_penalty, n_best, early_stopping)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(beam_size={self.beam_size}, length_penalty="
                f"{self.length_penalty}, n_best={self.n_best}, early_stopping={self.early_stopping!r})")

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


class Greedy(SearchPolicy):
    """One beam: take the most likely token at every step. Scores follow ``BeamSearch``'s
    convention, so greedy and beam outputs can be compared."""

    def __init__(self, length_penalty: float = 1.0):
        super().__init__(beam_size=1, length_penalty=length_penalty)

    def __repr__(self) -> str:
        return f"Greedy(length_penalty={self.length_penalty})"

    def step(self, step: int, lprobs: torch.Tensor, scores: torch.Tensor):
        # one beam: no step-0 masking, no flattening, and one candidate (an EOS finishes the
        # example); ties go to the lowest token id, as in argmax
        lp = lprobs[:, 0]
        token = first_argmax(lp)[:, None]  # (B, 1)
        return lp.gather(1, token) + scores, token, torch.zeros_like(token)


def first_argmax(x: torch.Tensor, block: int = 128) -> torch.Tensor:
    """``x.argmax(dim=1)`` of a (B, V) tensor, ties to the lowest index, computed blockwise.

    On CPU, ``argmax`` over a long row is not vectorised and took 3.5x (6,000 columns) to 7x
    (50,257) longer than this: the block maxima (``amax``, vectorised), the first block holding the
    row maximum, and ``argmax`` inside that block only. The columns past the last whole block are
    checked apart and win only when strictly larger, so the lowest index still wins a tie."""
    B, V = x.shape
    n = V // block
    if n < 2:
        return x.argmax(dim=1)
    blocks = x[:, :n * block].unflatten(1, (n, block))  # (B, n, block)
    best = blocks.amax(dim=2).argmax(dim=1)  # (B,) first block holding the maximum
    index = best * block + blocks[torch.arange(B, device=x.device), best].argmax(dim=1)
    if n * block < V:
        tail_value, tail_index = x[:, n * block:].max(dim=1)
        beats = tail_value > x.gather(1, index[:, None]).squeeze(1)
        index = torch.where(beats, n * block + tail_index, index)
    return index


class Sampling(SearchPolicy):
    """Ancestral sampling, one continuation per example. The next token is drawn from the step's
    distribution after temperature, then top-k, top-p (nucleus: the smallest set of most likely
    tokens whose probability reaches ``top_p``) and min-p (tokens at least ``min_p`` times as likely
    as the most likely one) truncation, in Hugging Face's order. The most likely token always
    survives truncation. Hypothesis scores are the loop's log-probs of the drawn tokens (before
    temperature), so they compare with greedy and beam scores.

    Draws come from the policy's own ``torch.Generator`` seeded with ``seed``: the same policy
    settings, model and batches give the same samples, on any run.
    """

    def __init__(self, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
                 min_p: float = 0.0, seed: int = 0, length_penalty: float = 1.0):
        super().__init__(beam_size=1, length_penalty=length_penalty)
        self.temperature, self.top_k, self.top_p, self.min_p = temperature, top_k, top_p, min_p
        self.seed = seed
        self._generator: torch.Generator | None = None

    def __repr__(self) -> str:
        return (f"Sampling(temperature={self.temperature}, top_k={self.top_k}, top_p={self.top_p}, "
                f"min_p={self.min_p}, seed={self.seed})")

    def _rng(self, device: torch.device) -> torch.Generator:
        if self._generator is None or self._generator.device != device:
            self._generator = torch.Generator(device=device).manual_seed(self.seed)
        return self._generator

    def step(self, step: int, lprobs: torch.Tensor, scores: torch.Tensor):
        lp = lprobs[:, 0]  # (B, V)
        # Shifted so the most likely token sits at 0: a tiny temperature cannot overflow to -inf.
        # A row with no possible token (all -inf) draws anything; its -inf score ends it.
        alive = lp.isfinite().any(dim=-1, keepdim=True)
        shifted = torch.where(alive, lp - lp.amax(dim=-1, keepdim=True), torch.zeros_like(lp))
        logits = truncate(shifted / self.temperature, self.top_k, self.top_p, self.min_p)
        drawn = torch.multinomial(logits.softmax(dim=-1), 1, generator=self._rng(lp.device))  # (B, 1)
        # one candidate is enough with one beam: a drawn EOS finishes the example
        return lp.gather(1, drawn) + scores, drawn, torch.zeros_like(drawn)


def truncate(logits: torch.Tensor, top_k: int = 0, top_p: float = 1.0, min_p: float = 0.0) -> torch.Tensor:
    """``logits`` (B, V) with the tokens that top-k, then top-p, then min-p remove set to -inf."""
    if 0 < top_k < logits.size(-1):
        kth = logits.topk(top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, -math.inf)
    if top_p < 1.0:
        logits = _nucleus(logits, top_p)
    if min_p > 0.0:
        probs = logits.softmax(dim=-1)
        logits = logits.masked_fill(probs < min_p * probs.max(dim=-1, keepdim=True).values, -math.inf)
    return logits


NUCLEUS_POOL = 64  # tokens ranked first by topk before falling back to sorting the vocabulary


def _nucleus(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """Keep the smallest set of most likely tokens whose probability reaches ``top_p``.

    Sorting the whole vocabulary every step is the costly part, and a row's nucleus usually lies
    among its first few tokens: rank the top ``NUCLEUS_POOL`` with ``topk`` and sort the whole
    vocabulary only for the rows whose nucleus reaches beyond them. Both paths read the same
    probabilities and keep the same tokens (up to the order of exactly tied logits)."""
    probs_all = logits.softmax(dim=-1)
    if logits.size(-1) <= NUCLEUS_POOL:
        return _nucleus_sorted(logits, probs_all, top_p)
    order = logits.topk(NUCLEUS_POOL, dim=-1).indices  # (B, pool), most likely first
    probs = probs_all.gather(1, order)
    before = probs.cumsum(dim=-1) - probs  # probability mass of the tokens ranked above
    keep = torch.zeros_like(logits, dtype=torch.bool).scatter(1, order, before < top_p)
    out = logits.masked_fill(~keep, -math.inf)
    beyond = (before[:, -1] + probs[:, -1] < top_p).nonzero().squeeze(1)  # rows the pool does not cover
    if beyond.numel():
        out[beyond] = _nucleus_sorted(logits[beyond], probs_all[beyond], top_p)
    return out


def _nucleus_sorted(logits: torch.Tensor, probs_all: torch.Tensor, top_p: float) -> torch.Tensor:
    order = logits.argsort(dim=-1, descending=True)
    probs = probs_all.gather(1, order)
    before = probs.cumsum(dim=-1) - probs
    drop = before >= top_p  # in sorted order; the first token never (before = 0 < top_p)
    remove = torch.zeros_like(drop).scatter(1, order, drop)
    return logits.masked_fill(remove, -math.inf)
