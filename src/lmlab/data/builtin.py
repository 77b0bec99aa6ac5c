"""The registry of lmlab's built-in corpora: ``data.corpus`` -> the generator that makes it.

It names each generator as ``"module:function"`` and imports nothing of lmlab, so the config can
check ``data.corpus`` and ``data.task`` against it without importing the loaders (which import the
config: the registry is what keeps the two from importing each other).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Builtin:
    """A generator of lmlab's: ``"module:function"``, called as ``function(seed=, n_train=,
    n_valid=, n_test=)`` and returning ``{"train", "validation", "test"} -> [examples]``."""

    task: str
    generator: str

    def generate(self, seed: int, n_train: int, n_valid: int, n_test: int) -> dict[str, list]:
        module, function = self.generator.split(":")
        fn: Callable[..., dict] = getattr(importlib.import_module(module), function)
        return fn(seed=seed, n_train=n_train, n_valid=n_valid, n_test=n_test)


# data.corpus -> generator; the task must match data.task (config.DataConfig checks it)
BUILTIN_CORPORA: dict[str, Builtin] = {
    "synthetic": Builtin("translation", "lmlab.data.corpus:generate_corpus"),
    "summaries": Builtin("summarization", "lmlab.data.summaries:generate_summaries"),
    "synthetic_hard": Builtin("translation", "lmlab.data.corpus:generate_hard_corpus"),
    "lm_text": Builtin("language_modeling", "lmlab.data.corpus:generate_lm_text"),
    "lm_text_both": Builtin("language_modeling", "lmlab.data.corpus:generate_bilingual_text"),
}
