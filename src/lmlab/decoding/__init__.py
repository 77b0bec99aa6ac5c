"""Decoding: the loop (``generate``), the search policies it runs and the processors it applies.

    cfg = build_config(compose(["decoding=beam"]))       # validated decoding.* settings
    policy, processors = build_policy(cfg.decoding, seed=cfg.seed)
    nbest_lists = generate(model, src, src_pad, policy, bos_id=BOS, eos_id=EOS, pad_id=PAD,
                           max_new_tokens=64, processors=processors)
"""

from __future__ import annotations

from .loop import Hypothesis, generate, normalised
from .processors import NoRepeatNgram, RepetitionPenalty, build_processors
from .search import BeamSearch, Greedy, Sampling, SearchPolicy, truncate

__all__ = ["BeamSearch", "Greedy", "Hypothesis", "NoRepeatNgram", "RepetitionPenalty", "Sampling",
           "SearchPolicy", "build_policy", "build_processors", "generate", "normalised", "truncate"]


def build_policy(d, seed: int = 0):
    """(policy, processors) for a ``DecodingConfig`` ``d``; ``d.check()`` runs first, so a bad key
    or combination raises ``ConfigError`` naming it. Sampling draws from ``d.seed``, else ``seed``."""
    d.check()
    if d.strategy == "greedy":
        policy = Greedy(length_penalty=d.length_penalty)
    elif d.strategy == "beam":
        policy = BeamSearch(d.beam_size, d.length_penalty, d.n_best, d.early_stopping)
    else:
        policy = Sampling(d.temperature, d.top_k, d.top_p, d.min_p,
                          seed=d.seed if d.seed is not None else seed, length_penalty=d.length_penalty)
    return policy, build_processors(d.repetition_penalty, d.no_repeat_ngram_size)
