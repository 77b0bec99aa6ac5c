"""Sentence-pair and language-modelling datasets over the token arrays, length-bucketed batches,
and padding."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from lmlab.config import pair_token_limit
from lmlab.data.tokenizer import BOS, EOS, PAD, TokenArray


class PairDataset(Dataset):
    """Pairs ``(source ids + EOS, target ids)`` of one split in ``prepared_dir``.

    ``lengths()`` is what a batch of the pair costs per example: the longer side plus its end token
    for an encoder-decoder, the whole ``source EOS BOS target`` sequence for a decoder-only model.
    """

    def __init__(self, prepared_dir: str | Path, split: str, max_source_len: int | None = None,
                 decoder_only: bool = False):
        prepared_dir = Path(prepared_dir)
        self.src = TokenArray(prepared_dir / f"{split}.source")
        self.tgt = TokenArray(prepared_dir / f"{split}.target")
        if len(self.src) != len(self.tgt):
            raise ValueError(f"{prepared_dir}/{split}: {len(self.src)} sources but {len(self.tgt)} targets")
        self.max_source_len, self.decoder_only = max_source_len, decoder_only

    def __len__(self) -> int:
        return len(self.src)

    def lengths(self) -> np.ndarray:
        if self.decoder_only:
            return self.src.lengths + self.tgt.lengths + 2
        return np.maximum(self.src.lengths, self.tgt.lengths) + 1

    def positions(self, max_len: int) -> np.ndarray:
        """The positions each pair needs in a model of ``max_len`` positions (the source cut as
        ``__getitem__`` cuts it): the target and its ``<s>``, or the whole decoder-only sequence."""
        if self.decoder_only:
            src = self.src.lengths if self.max_source_len is None else \
                np.minimum(self.src.lengths, self.max_source_len - 1)
            return src + self.tgt.lengths + 2
        return self.tgt.lengths + 1

    def check_fits(self, max_len: int, where: str) -> None:
        """Refuse pairs a model of ``max_len`` positions cannot read whole: an encoder-decoder would
        fail at the first such batch, a decoder-only model would lose the target's end."""
        if not len(self):
            raise ValueError(f"{where} has no pairs: rerun the prepare stage with data that has some")
        need = self.positions(max_len)
        over = int(np.count_nonzero(need > max_len))
        if over:
            arch = "decoder-only" if self.decoder_only else "encoder-decoder"
            raise ValueError(f"{where}: {over} of {len(self)} pairs need more than model.max_len={max_len} "
                             f"positions (up to {int(need.max())}): set tokenizer.max_tokens<="
                             f"{pair_token_limit(arch, max_len)} and rerun prepare, or raise model.max_len")

    def __getitem__(self, i: int):
        src = self.src[i]
        if self.max_source_len is not None:
            src = src[: self.max_source_len - 1]
        return np.append(src, EOS), self.tgt[i]


class TextDataset(Dataset):
    """Language modelling: the lines of one split in ``prepared_dir`` (``{split}.text``) read as
    one stream, EOS after every line, cut into blocks of ``block + 1`` tokens (a block's inputs and
    its next-token labels share all but one token), one starting every ``stride`` tokens (default
    ``block``: side by side, each token predicted once; 1: a block at every position, so that a
    shuffled epoch draws windows at any offset, as nanoGPT's random batches do). The tail shorter
    than a block is left out.

    Example: lines [5 6] [7], block 2 -> stream 5 6 EOS 7 EOS -> blocks [5 6 EOS], [EOS 7 EOS];
    with stride 1 also [6 EOS 7] between them.
    """

    def __init__(self, prepared_dir: str | Path, split: str, block: int, stride: int | None = None):
        stride = block if stride is None else stride
        if block < 1:
            raise ValueError(f"trainer.block_size={block} must be >= 1")
        if not 1 <= stride <= block:
            raise ValueError(f"trainer.block_stride={stride} must be in [1, trainer.block_size={block}]")
        text = TokenArray(Path(prepared_dir) / f"{split}.text")
        self.stream = np.insert(np.asarray(text.ids), text.offsets[1:], EOS)  # (tokens + lines,)
        self.block, self.stride = block, stride
        self.n = max(0, (len(self.stream) - 1 - block) // stride + 1)
        if self.n == 0:
            raise ValueError(f"{prepared_dir}/{split}.text holds {len(self.stream)} tokens: fewer "
                             f"than one block of trainer.block_size={block} + 1")

    def __len__(self) -> int:
        return self.n

    def lengths(self) -> np.ndarray:
        return np.full(self.n, self.block, dtype=np.int64)

    def __getitem__(self, i: int) -> np.ndarray:
        start = i * self.stride
        return self.stream[start: start + self.block + 1].astype(np.int64)


def collate_blocks(items):
    """Language-modelling blocks (``TextDataset``) -> (ids, labels): every position predicts the
    next token, the same (ids, labels) layout as ``collate_lm_pairs``."""
    blocks = torch.as_tensor(np.stack(items))
    return blocks[:, :-1], blocks[:, 1:]


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


def collate_lm_pairs(items, max_len: int):
    """Decoder-only teacher forcing on ``source EOS BOS target EOS``: the model reads the sequence
    without its last token and predicts the next one, scored on the target and its EOS only
    (labels are PAD over the prompt). Sequences are cut to ``max_len`` tokens.

    Example: source [7 8], target [9] -> sequence 7 8 EOS BOS 9 EOS;
    ids 7 8 EOS BOS 9, labels PAD PAD PAD 9 EOS.
    """
    ids, labels = [], []
    for src, tgt in items:  # src already ends in EOS
        seq = np.concatenate([src, [BOS], tgt, [EOS]])[: max_len + 1]
        lab = seq[1:].copy()
        lab[: len(src)] = PAD
        ids.append(seq[:-1])
        labels.append(lab)
    return pad_batch(ids)[0], pad_batch(labels)[0]


def collate_for(decoder_only: bool, max_len: int):
    """The collate function of an architecture: (src, src_pad, tgt_in, tgt_out) or (ids, labels)."""
    return partial(collate_lm_pairs, max_len=max_len) if decoder_only else collate_pairs


def input_tokens(batch) -> int:
    """Token positions the model reads in a batch, padding included."""
    return batch[0].numel() + batch[2].numel() if len(batch) == 4 else batch[0].numel()


class BucketBatchSampler(Sampler):
    """Batches of similar-length examples, so little compute goes to padding.

    Each epoch shuffles the indices (seeded by ``seed`` and the epoch), sorts them by length inside
    windows of ``window`` batches, cuts batches, and shuffles the batches. A batch holds
    ``batch_size`` examples or, with ``max_tokens``, as many as fit ``max_tokens`` padded token
    positions (fairseq's ``--max-tokens``; ``batch_size`` then caps the examples, None for no cap).
    Under data parallelism each rank takes every ``world_size``-th batch.
    """

    def __init__(self, lengths, batch_size: int | None, seed: int, shuffle: bool = True,
                 window: int = 50, rank: int = 0, world_size: int = 1, start_batch: int = 0,
                 max_tokens: int | None = None):
        self.lengths = np.asarray(lengths)
        if batch_size is None and max_tokens is None:
            raise ValueError("give a batch size, a token budget (max_tokens), or both")
        if max_tokens is not None and int(self.lengths.max(initial=0)) > max_tokens:
            raise ValueError(f"trainer.max_tokens={max_tokens} is smaller than the longest example "
                             f"({int(self.lengths.max())} tokens)")
        self.batch_size, self.max_tokens, self.seed = batch_size, max_tokens, seed
        self.shuffle, self.window = shuffle, window
        self.rank, self.world_size = rank, world_size
        # Resuming after `start_batch` batches of this rank: the order of every epoch depends only
        # on (seed, epoch), so skipping what was consumed replays exactly the uninterrupted run.
        # (No set_epoch on purpose: the sampler counts its own epochs.)
        self.epoch, self.skip = 0, 0
        if shuffle and max_tokens is None:
            self.epoch, self.skip = divmod(start_batch, len(self))
        elif shuffle:  # token budgets give every epoch its own number of batches
            while start_batch >= (n := len(self._rank_batches(self.epoch))):
                start_batch -= n
                self.epoch += 1
            self.skip = start_batch

    def _cut(self, order: np.ndarray) -> list[np.ndarray]:
        """Consecutive batches of ``order`` (indices sorted by length)."""
        if self.max_tokens is None:
            return [order[i:i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        cap = self.batch_size or len(order)
        batches, start, longest = [], 0, 0
        for i, length in enumerate(self.lengths[order].tolist()):
            longest = max(longest, length)
            if i > start and ((i - start + 1) * longest > self.max_tokens or i - start == cap):
                batches.append(order[start:i])
                start, longest = i, length
        if start < len(order):
            batches.append(order[start:])
        return batches

    def _batches(self, epoch: int) -> list[np.ndarray]:
        n = len(self.lengths)
        if not self.shuffle:
            return self._cut(np.argsort(self.lengths, kind="stable"))
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(n)
        span = (self.batch_size or max(1, self.max_tokens // max(1, int(np.median(self.lengths))))) * self.window
        batches = []
        for start in range(0, n, span):
            win = order[start:start + span]
            batches += self._cut(win[np.argsort(self.lengths[win], kind="stable")])
        return [batches[i] for i in rng.permutation(len(batches))]

    def _rank_batches(self, epoch: int) -> list[np.ndarray]:
        batches = self._batches(epoch)
        if self.world_size > 1:
            # Training ranks must take equal numbers of steps (every step all-reduces gradients),
            # so the last few batches are dropped; evaluation keeps them all, unevenly spread.
            usable = len(batches) - len(batches) % self.world_size if self.shuffle else len(batches)
            batches = batches[self.rank:usable:self.world_size]
        return batches

    def __iter__(self):
        batches = self._rank_batches(self.epoch)
        if self.shuffle:
            batches, self.skip = batches[self.skip:], 0
            self.epoch += 1  # the next pass over the data gets a new order
        return iter([b.tolist() for b in batches])

    def __len__(self) -> int:
        if self.max_tokens is not None:
            # Each epoch has its own count. Without a length, Lightning runs an epoch until the
            # sampler is exhausted instead of stopping at the first epoch's count.
            raise TypeError("a token-budget batch sampler has no fixed length")
        n = -(-len(self.lengths) // self.batch_size)
        if self.world_size == 1:
            return n
        return n // self.world_size if self.shuffle else len(range(self.rank, n, self.world_size))
