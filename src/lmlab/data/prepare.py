"""Stage `prepare`: tokenizer training and encoding of every split, streamed in bounded memory.

A raw split is parallel (``{split}.source`` + ``{split}.target``, one example per line) or plain
text for language modelling (``{split}.text``), or both. The tokenizer is trained on the sides of
the training split only, read as streams. Each side is then encoded ``tokenizer.chunk_size`` lines
at a time, in this process (on the tokenizers library's own threads) or across
``tokenizer.workers`` processes, and its ids and offsets go straight to disk
(:class:`~lmlab.data.tokenizer.IdsWriter`), so memory holds a few chunks, whatever the corpus size.

The two sides of a parallel split are read and encoded chunk by chunk together, because the
filters need both lengths. In train and validation a pair is dropped when a side is longer than
``max_tokens``, when a side is shorter than ``min_tokens``, or when the longer side has more than
``max_ratio`` times the tokens of the shorter one (an empty side against a non-empty one fails any
ratio); stats.json counts each drop under the first of these it fails. The test split is kept
whole, so that generations line up with the references, and ``.text`` lines are never filtered.
"""

from __future__ import annotations

import multiprocessing
import os
from collections import deque
from collections.abc import Iterable, Iterator
from contextlib import ExitStack
from itertools import chain, islice
from pathlib import Path

import numpy as np

from lmlab.config import Config, TokenizerConfig
from lmlab.data.rawfiles import SIDES, SPLITS, TEXT_SIDE, iter_lines, raw_path
from lmlab.data.tokenizer import UNK, IdsWriter, TokenizerSet, ids_dtype, tokenizer_hash, train_tokenizer
from lmlab.files import atomic_dir, write_json

RAW_SIDES = (*SIDES, TEXT_SIDE)


def raw_sides(raw_dir: str | Path, split: str) -> tuple[str, ...]:
    """The sides of ``split`` present in ``raw_dir``: source and target, text, or all three."""
    present = tuple(side for side in RAW_SIDES if raw_path(raw_dir, split, side).is_file())
    if ("source" in present) != ("target" in present):
        missing = raw_path(raw_dir, split, "target" if "source" in present else "source")
        raise FileNotFoundError(f"{missing} not found: a parallel split needs both .source and .target "
                                "(run the download stage, `dvc repro download`)")
    if not present:
        raise FileNotFoundError(f"{raw_path(raw_dir, split, 'source')} (or .text) not found: "
                                "run the download stage (`dvc repro download`)")
    return present


def train_tokenizers(tc: TokenizerConfig, raw_dir: str | Path, sides: Iterable[str]) -> TokenizerSet:
    """Tokenizer(s) trained on the training split only, streamed from disk: one vocabulary for all
    ``sides`` (``tokenizer.joint``) or one per side."""
    paths = {side: raw_path(raw_dir, "train", side) for side in sides}

    def train(files):
        lines = chain.from_iterable(iter_lines(p) for p in files)
        return train_tokenizer(lines, tc.kind, tc.vocab_size, tc.min_frequency)

    if tc.joint or len(paths) == 1:
        return TokenizerSet(train(paths.values()))
    return TokenizerSet({side: train([path]) for side, path in paths.items()})


_WORKER: tuple[TokenizerSet, np.dtype] | None = None


def _start_worker(tokenizer_json: str, dtype) -> None:
    global _WORKER
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # the processes are the parallelism
    _WORKER = (TokenizerSet.from_json(tokenizer_json), dtype)


def _encode_task(task: list[tuple[str, list[str]]], tokset: TokenizerSet | None = None,
                 dtype=None) -> list[tuple[np.ndarray, np.ndarray]]:
    """(ids, lengths) of each (side, lines) of a task: the same lines of each side of a split."""
    if tokset is None:
        tokset, dtype = _WORKER
    return [tokset.encode_arrays(lines, side, dtype) for side, lines in task]


class ChunkEncoder:
    """Encodes tasks in order, in this process (``workers`` 0 or 1) or across ``workers`` processes.

    ``Pool.imap`` would read its whole input ahead of the workers; here at most two tasks per
    worker are in flight, so the text held in memory stays a few chunks.

    Workers are forked (spawned where there is no fork), so a script that calls ``prepare`` needs
    no ``if __name__ == "__main__"`` guard. The tokenizers library turns its thread pool off in a
    forked child, which is what makes the fork safe, and warns unless TOKENIZERS_PARALLELISM is
    set: it is set for the fork, and the workers encode on one thread each.
    """

    def __init__(self, tokset: TokenizerSet, workers: int, dtype):
        self.tokset, self.dtype, self.workers = tokset, dtype, workers
        self.pool = None
        if workers > 1:
            method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
            before = os.environ.get("TOKENIZERS_PARALLELISM")
            os.environ["TOKENIZERS_PARALLELISM"] = "false"
            try:
                self.pool = multiprocessing.get_context(method).Pool(
                    workers, _start_worker, (tokset.to_json(), dtype))
            finally:
                if before is None:
                    del os.environ["TOKENIZERS_PARALLELISM"]
                else:
                    os.environ["TOKENIZERS_PARALLELISM"] = before

    def map(self, tasks: Iterable) -> Iterator[list[tuple[np.ndarray, np.ndarray]]]:
        if self.pool is None:
            for task in tasks:
                yield _encode_task(task, self.tokset, self.dtype)
            return
        pending: deque = deque()
        for task in tasks:
            pending.append(self.pool.apply_async(_encode_task, (task,)))
            if len(pending) >= 2 * self.workers:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()

    def __enter__(self) -> ChunkEncoder:
        return self

    def __exit__(self, exc_type, *_) -> None:
        if self.pool is not None:
            if exc_type is None:
                self.pool.close()
            else:
                self.pool.terminate()
            self.pool.join()


def _line_chunks(paths: list[Path], size: int) -> Iterator[list[list[str]]]:
    """The same ``size`` lines of each file at a time; the files must have as many lines."""
    streams = [iter_lines(p) for p in paths]
    done = 0
    while True:
        chunk = [list(islice(s, size)) for s in streams]
        if len({len(c) for c in chunk}) > 1:
            counts = [done + len(c) + sum(1 for _ in s) for c, s in zip(chunk, streams)]
            raise ValueError(f"{paths[0]} has {counts[0]} lines but {paths[1]} has {counts[1]}")
        if not chunk[0]:
            return
        done += len(chunk[0])
        yield chunk


def filter_keys(tc: TokenizerConfig) -> list[str]:
    """The drop counters of stats.json: too-long always, the optional filters when they are on."""
    return ["dropped_too_long"] + (["dropped_too_short"] if tc.min_tokens is not None else []) \
        + (["dropped_ratio"] if tc.max_ratio is not None else [])


def pair_filter(tc: TokenizerConfig, src_len: np.ndarray, tgt_len: np.ndarray) -> tuple[np.ndarray, dict]:
    """Which pairs survive the filters, and how many each filter dropped (a pair counts under the
    first filter it fails: too long, too short, ratio)."""
    longer, shorter = np.maximum(src_len, tgt_len), np.minimum(src_len, tgt_len)
    fails = {"dropped_too_long": None if tc.max_tokens is None else longer > tc.max_tokens,
             "dropped_too_short": None if tc.min_tokens is None else shorter < tc.min_tokens,
             "dropped_ratio": None if tc.max_ratio is None else longer > tc.max_ratio * shorter}
    keep, dropped = np.ones(len(longer), dtype=bool), {}
    for key in filter_keys(tc):
        hit = np.zeros_like(keep) if fails[key] is None else keep & fails[key]
        dropped[key] = int(hit.sum())
        keep &= ~hit
    return keep, dropped


def encode_sides(encoder: ChunkEncoder, tc: TokenizerConfig, raw_dir: str | Path, split: str,
                 sides: tuple[str, ...], out_dir: Path, outputs: ExitStack) -> dict:
    """Encode the raw files of ``split``'s ``sides`` (the two of a pair, or text) to token arrays in
    ``out_dir`` (``encode_corpus``'s temporary folder, published whole); the writers join
    ``outputs``, which closes them (and deletes their partial files after an error)."""
    writers = {}
    for side in sides:
        name = f"{split}.{side}"
        writers[side] = outputs.enter_context(IdsWriter(out_dir / f"{name}.ids.npy", out_dir / f"{name}.offsets.npy",
                                                        encoder.tokset.get_vocab_size()))
    pairs = sides == SIDES
    # the test split stays whole, so that generations line up with the references
    filtered = pairs and split != "test"
    dropped = dict.fromkeys(filter_keys(tc), 0) if pairs else {}
    files = [raw_path(raw_dir, split, side) for side in sides]
    tasks = (list(zip(sides, chunk)) for chunk in _line_chunks(files, tc.chunk_size))
    unknown = dict.fromkeys(sides, 0)
    for encoded in encoder.map(tasks):
        if filtered:
            keep, counts = pair_filter(tc, encoded[0][1], encoded[1][1])
            dropped = {key: dropped[key] + counts[key] for key in dropped}
            if not keep.all():
                encoded = [(ids[np.repeat(keep, lengths)], lengths[keep]) for ids, lengths in encoded]
        for side, (ids, lengths) in zip(sides, encoded):
            writers[side].append(ids, lengths)
            unknown[side] += int(np.count_nonzero(ids == UNK))
    if filtered:
        check_kept(split, len(writers["source"]), dropped)
    counts = {side: writers[side].finish() for side in sides}
    stats = {"pairs": counts["source"], **dropped} if pairs else {"lines": counts[TEXT_SIDE]}
    for side in sides:
        n = writers[side].n_ids
        stats |= {f"{side}_tokens": n, f"{side}_unk_rate": round(unknown[side] / max(n, 1), 6)}
    return stats


MIN_KEPT = 0.01  # a filtered split that keeps less than this share of its pairs is refused


def check_kept(split: str, kept: int, dropped: dict) -> None:
    """Refuse a split the filters emptied, or nearly (under ``MIN_KEPT`` of its pairs left): the
    error names each filter key that dropped pairs and how many."""
    total = kept + sum(dropped.values())
    if total and kept >= max(1, MIN_KEPT * total):
        return
    keys = {"dropped_too_long": "tokenizer.max_tokens", "dropped_too_short": "tokenizer.min_tokens",
            "dropped_ratio": "tokenizer.max_ratio"}
    culprits = ", ".join(f"{keys[k]} dropped {n}" for k, n in dropped.items() if n)
    raise ValueError(f"prepare: the filters leave {kept} of the {total} {split} pairs ({culprits or 'no pairs read'}): "
                     "relax those keys")


UNK_WARN_RATE = 0.01  # above this share of <unk> tokens in a split's side, prepare warns


def unknown_token_warnings(stats: dict) -> list[str]:
    """One line for each split side whose ``<unk>`` rate is above ``UNK_WARN_RATE`` (characters or
    subwords the vocabulary lacks: they decode to nothing, so scores would quietly suffer)."""
    lines = []
    for split in SPLITS:
        for key, rate in stats.get(split, {}).items():
            if key.endswith("_unk_rate") and rate > UNK_WARN_RATE:
                side = key.removesuffix("_unk_rate")
                lines.append(f"warning: {rate:.1%} of the {split}.{side} tokens are <unk> (above "
                             f"{UNK_WARN_RATE:.0%}): raise tokenizer.vocab_size, lower tokenizer.min_frequency "
                             "or use tokenizer=byte_bpe, which has no <unk>")
    return lines


def encode_corpus(tokset: TokenizerSet, tc: TokenizerConfig, raw_dir: str | Path,
                  out_dir: str | Path) -> dict:
    """Encode every split of ``raw_dir`` with ``tokset``; write the token arrays, tokenizer.json and
    stats.json to a temporary folder that replaces ``out_dir`` whole once all are written
    (``lmlab.files.atomic_dir``): a failure or a kill leaves the old ``out_dir`` as it was."""
    stats: dict = {"vocab_size": tokset.get_vocab_size()}
    stats |= {f"{side}_vocab_size": n for side, n in tokset.vocab_sizes().items()}
    dtype = ids_dtype(tokset.get_vocab_size())
    layout = {split: raw_sides(raw_dir, split) for split in SPLITS}
    with atomic_dir(out_dir) as tmp:
        with ExitStack() as outputs, ChunkEncoder(tokset, tc.workers, dtype) as encoder:
            for split, sides in layout.items():
                stats[split] = {}
                for group in (SIDES, (TEXT_SIDE,)):
                    if group[0] in sides:
                        stats[split] |= encode_sides(encoder, tc, raw_dir, split, group, tmp, outputs)
        tokenizer_json = tokset.to_json()
        stats["tokenizer_sha256"] = tokenizer_hash(tokenizer_json)
        (tmp / "tokenizer.json").write_text(tokenizer_json, encoding="utf-8")
        write_json(tmp / "stats.json", stats)
    return stats


def prepare(cfg: Config, raw_dir: str | Path, out_dir: str | Path) -> dict:
    """Train the tokenizer on the training split (or, with ``init_from``, take the pre-trained
    model's) and encode every split to token arrays."""
    layout = {split: raw_sides(raw_dir, split) for split in SPLITS}  # all there before any work
    if cfg.init_from:
        tokset = pretrained_tokenizer(cfg)
    else:
        tokset = train_tokenizers(cfg.tokenizer, raw_dir, layout["train"])
    return encode_corpus(tokset, cfg.tokenizer, raw_dir, out_dir)


# the keys that say which tokenizer is trained: a fine-tuning that sets them otherwise than the
# pre-trained model did asks for another tokenizer than the one it must use
TOKENIZER_KEYS = ("kind", "joint", "vocab_size", "min_frequency")


def pretrained_tokenizer(cfg: Config) -> TokenizerSet:
    """The tokenizer of ``cfg.init_from`` (``lmlab.model.warmstart``). Where the file records the
    config it was trained with, a ``tokenizer`` key of ``TOKENIZER_KEYS`` that differs from it is
    refused with one line naming the key and both values."""
    from lmlab.model.warmstart import read_init

    _, _, tokenizer_json, payload = read_init(cfg.init_from)
    theirs = (payload.get("config") or {}).get("tokenizer") or {}
    for key in TOKENIZER_KEYS:
        if key in theirs and theirs[key] != getattr(cfg.tokenizer, key):
            raise ValueError(f"tokenizer.{key}={getattr(cfg.tokenizer, key)!r} conflicts with init_from="
                             f"{cfg.init_from!r}, whose tokenizer was trained with tokenizer.{key}={theirs[key]!r}: "
                             f"fine-tuning reuses that tokenizer, so set tokenizer.{key}={theirs[key]!r}")
    return TokenizerSet.from_json(tokenizer_json)
