"""Sentence-pair datasets over the token arrays, length-bucketed batches, and padding."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from .tokenization import BOS, EOS, PAD, TokenArray


class PairDataset(Dataset):
    """Pairs ``(source ids + EOS, target ids)`` of one split in ``prepared_dir``."""

    def __init__(self, prepared_dir: str | Path, split: str, max_source_len: int | None = None):
        prepared_dir = Path(prepared_dir)
        self.src = TokenArray(prepared_dir / f"{split}.source")
        self.tgt = TokenArray(prepared_dir / f"{split}.target")
        if len(self.src) != len(self.tgt):
            raise ValueError(f"{prepared_dir}/{split}: {len(self.src)} sources but {len(self.tgt)} targets")
        self.max_source_len = max_source_len

    def __len__(self) -> int:
        return len(self.src)

    def lengths(self) -> np.ndarray:
        return np.maximum(self.src.lengths, self.tgt.lengths) + 1

    def __getitem__(self, i: int):
        src = self.src[i]
        if self.max_source_len is not None:
            src = src[: self.max_source_len - 1]
        return np.append(src, EOS), self.tgt[i]


def pad_batch(seqs, pad: int = PAD) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad to the longest sequence: ids (B, T) and a padding mask (B, T), True at padding."""
    T = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), T), pad, dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.as_tensor(s, dtype=torch.long)
    return ids, ids.eq(pad)


def collate_pairs(items):
    """Teacher forcing: the decoder reads ``<s> y1 .. yn`` and must predict ``y1 .. yn </s>``."""
    src, src_pad = pad_batch([s for s, _ in items])
    tgt_in, _ = pad_batch([np.concatenate([[BOS], t]) for _, t in items])
    tgt_out, _ = pad_batch([np.concatenate([t, [EOS]]) for _, t in items])
    return src, src_pad, tgt_in, tgt_out


class BucketBatchSampler(Sampler):
    """Batches of similar-length pairs, so little compute goes to padding.

    Each epoch shuffles the indices (seeded by ``seed`` and the epoch), sorts them by length inside
    windows of ``batch_size * window`` examples, cuts batches, and shuffles the batches. Under data
    parallelism each rank takes every ``world_size``-th batch.
    """

    def __init__(self, lengths, batch_size: int, seed: int, shuffle: bool = True, window: int = 50,
                 rank: int = 0, world_size: int = 1, start_batch: int = 0):
        self.lengths = np.asarray(lengths)
        self.batch_size, self.seed, self.shuffle, self.window = batch_size, seed, shuffle, window
        self.rank, self.world_size = rank, world_size
        # Resuming after `start_batch` batches of this rank: the order of every epoch depends only
        # on (seed, epoch), so skipping what was consumed replays exactly the uninterrupted run.
        # (No set_epoch on purpose: the sampler counts its own epochs.)
        self.epoch, self.skip = divmod(start_batch, len(self)) if shuffle else (0, 0)

    def _batches(self) -> list[np.ndarray]:
        n = len(self.lengths)
        if not self.shuffle:
            order = np.argsort(self.lengths, kind="stable")
            return [order[i:i + self.batch_size] for i in range(0, n, self.batch_size)]
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(n)
        span = self.batch_size * self.window
        batches = []
        for start in range(0, n, span):
            win = order[start:start + span]
            win = win[np.argsort(self.lengths[win], kind="stable")]
            batches += [win[i:i + self.batch_size] for i in range(0, len(win), self.batch_size)]
        return [batches[i] for i in rng.permutation(len(batches))]

    def __iter__(self):
        batches = self._batches()
        if self.world_size > 1:
            # Training ranks must take equal numbers of steps (every step all-reduces gradients),
            # so the last few batches are dropped; evaluation keeps them all, unevenly spread.
            usable = len(batches) - len(batches) % self.world_size if self.shuffle else len(batches)
            batches = batches[self.rank:usable:self.world_size]
        if self.shuffle:
            batches, self.skip = batches[self.skip:], 0
            self.epoch += 1  # the next pass over the data gets a new order
        return iter([b.tolist() for b in batches])

    def __len__(self) -> int:
        n = -(-len(self.lengths) // self.batch_size)
        if self.world_size == 1:
            return n
        return n // self.world_size if self.shuffle else len(range(self.rank, n, self.world_size))
