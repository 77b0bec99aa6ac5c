"""The LightningDataModule: the prepared token ids in training and validation batches."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch

from lmlab.data.batching import BucketBatchSampler, PairDataset, TextDataset, collate_blocks, collate_for


class TokenDataModule(pl.LightningDataModule):
    """Training and validation pairs in length-bucketed batches, or with ``block`` (language
    modelling) blocks of the text stream, the training ones starting every ``stride`` tokens. The
    samplers are built once the trainer knows this process's rank, so under DDP each rank reads its
    own share of batches."""

    def __init__(self, prepared_dir, batch_size: int | None, seed: int, max_len: int,
                 decoder_only: bool = False, max_tokens: int | None = None, num_workers: int = 0,
                 accumulate: int = 1, block: int | None = None, stride: int | None = None):
        super().__init__()
        self.prepared_dir, self.batch_size, self.seed = Path(prepared_dir), batch_size, seed
        self.max_len, self.decoder_only, self.max_tokens = max_len, decoder_only, max_tokens
        self.num_workers, self.accumulate, self.block, self.stride = num_workers, accumulate, block, stride
        self.collate = collate_blocks if block else collate_for(decoder_only, max_len)
        self.train_set = self.val_set = None

    def dataset(self, split: str):
        if self.block:
            # training blocks start every `stride` tokens; validation's lie side by side
            return TextDataset(self.prepared_dir, split, self.block, self.stride if split == "train" else None)
        # a decoder-only model reads source and target together: half the length for the source
        max_src = self.max_len // 2 if self.decoder_only else self.max_len
        return PairDataset(self.prepared_dir, split, max_src, self.decoder_only)

    def setup(self, stage=None):
        # once: train() reads the training set's size before fit, and a language-modelling set
        # builds its whole token stream
        if self.train_set is None:
            self.train_set, self.val_set = self.dataset("train"), self.dataset("validation")
            if not self.block:  # before any step: a pair that cannot fit fails the run at once
                for split, data in (("train", self.train_set), ("validation", self.val_set)):
                    data.check_fits(self.max_len, f"{self.prepared_dir}/{split}")

    def loader(self, data, shuffle: bool, rank: int = 0, world_size: int = 1, start_batch: int = 0):
        """The batches of ``data`` that rank ``rank`` of ``world_size`` reads, from batch
        ``start_batch`` on (a resumed run skips what it has trained on)."""
        from torch.utils.data import DataLoader

        lengths = np.minimum(data.lengths(), self.max_len + 1)
        sampler = BucketBatchSampler(lengths, self.batch_size, seed=self.seed, shuffle=shuffle,
                                     rank=rank, world_size=world_size, start_batch=start_batch,
                                     max_tokens=self.max_tokens)
        # A generator of its own: each iter() of a DataLoader draws a seed from the generator it
        # is given, which must not be the global one that dropout uses (resume would drift).
        return DataLoader(data, batch_sampler=sampler, collate_fn=self.collate,
                          num_workers=self.num_workers, persistent_workers=self.num_workers > 0,
                          generator=torch.Generator().manual_seed(self.seed))

    def _loader(self, data, shuffle: bool):
        # On resume the trainer has restored global_step (optimizer steps) by now.
        consumed = self.trainer.global_step * self.accumulate if shuffle else 0
        return self.loader(data, shuffle, self.trainer.global_rank, self.trainer.world_size, consumed)

    def train_dataloader(self):
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self):
        return self._loader(self.val_set, shuffle=False)
