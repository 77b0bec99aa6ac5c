"""Decoding: the loop (``generate``) and the search policies it runs.

    policy = build_policy("beam", beam_size=4, length_penalty=1.0, n_best=1)
    nbest_lists = generate(model, src, src_pad, policy, bos_id=BOS, eos_id=EOS, pad_id=PAD,
                           max_new_tokens=64)
"""

from __future__ import annotations

from .loop import Hypothesis, generate, normalised
from .search import BeamSearch, Greedy

__all__ = ["BeamSearch", "Greedy", "Hypothesis", "build_policy", "generate", "normalised"]

_SETTINGS = {"greedy": ("beam_size", "length_penalty", "n_best"),
             "beam": ("beam_size", "length_penalty", "n_best")}


def build_policy(name: str, **kwargs) -> BeamSearch:
    """``"greedy"`` or ``"beam"`` with ``decoding.*`` settings; bad values raise ``ValueError``
    naming the key, e.g. ``decoding.beam_size=0 must be an integer >= 1``."""
    if name not in _SETTINGS:
        raise ValueError(f"decoding.strategy={name!r} must be one of {sorted(_SETTINGS)}")
    unknown = sorted(set(kwargs) - set(_SETTINGS[name]))
    if unknown:
        raise ValueError(f"decoding.{unknown[0]} is not a setting of decoding.strategy={name!r} "
                         f"(settings: {', '.join(_SETTINGS[name])})")
    if name == "greedy":
        for key in ("beam_size", "n_best"):
            if kwargs.get(key, 1) != 1:
                raise ValueError(f"decoding.{key}={kwargs[key]!r} needs decoding.strategy=beam "
                                 "(greedy keeps one hypothesis)")
        return Greedy(length_penalty=kwargs.get("length_penalty", 1.0))
    return BeamSearch(**kwargs)
