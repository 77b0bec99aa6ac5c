"""Subword tokenizer (BPE from Hugging Face ``tokenizers``) and compact token-id arrays on disk.

A split is stored as two ``.npy`` files per side: ``ids`` (every sentence's ids concatenated, uint16
while the vocabulary fits, else uint32) and ``offsets`` (int64, n+1 entries: sentence i is
``ids[offsets[i]:offsets[i+1]]``). Both are memory-mapped on load, and encoding streams the text in
chunks, so neither side needs the corpus in memory as Python lists.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

PAD, UNK, BOS, EOS = 0, 1, 2, 3
SPECIAL_TOKENS = ["<pad>", "<unk>", "<s>", "</s>"]


def train_bpe(texts: Iterable[str], vocab_size: int, min_frequency: int = 2) -> Tokenizer:
    """Joint BPE over ``texts`` (pass both sides of the training split, never test data)."""
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.normalizer = normalizers.NFKC()
    # Metaspace keeps word boundaries inside the tokens (SentencePiece's "▁"), so decoding
    # restores the exact spacing of whitespace-separated text.
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=SPECIAL_TOKENS,
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    assert [tok.token_to_id(t) for t in SPECIAL_TOKENS] == [PAD, UNK, BOS, EOS]
    return tok


def load_tokenizer(path_or_json: str | Path) -> Tokenizer:
    text = str(path_or_json)
    if text.lstrip().startswith("{"):
        return Tokenizer.from_str(text)
    return Tokenizer.from_file(text)


def decode(tok: Tokenizer, ids: Iterable[int]) -> str:
    return tok.decode([int(i) for i in ids], skip_special_tokens=True)


def _chunks(lines: Iterable[str], size: int) -> Iterator[list[str]]:
    chunk: list[str] = []
    for line in lines:
        chunk.append(line)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def encode_lines(tok: Tokenizer, lines: Iterable[str], chunk_size: int = 8192) -> Iterator[list[int]]:
    for chunk in _chunks(lines, chunk_size):
        for enc in tok.encode_batch(chunk, add_special_tokens=False):
            yield enc.ids


def write_array(prefix: Path, sequences: Iterable[list[int]], vocab_size: int) -> int:
    """Write ``prefix.ids.npy`` / ``prefix.offsets.npy``; returns the number of sequences."""
    dtype = np.uint16 if vocab_size <= np.iinfo(np.uint16).max + 1 else np.uint32
    ids_parts, offsets, total = [], [0], 0
    for seq in sequences:
        ids_parts.append(np.asarray(seq, dtype=dtype))
        total += len(seq)
        offsets.append(total)
    ids = np.concatenate(ids_parts) if ids_parts else np.zeros(0, dtype)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    for suffix, arr in ((".ids.npy", ids), (".offsets.npy", np.asarray(offsets, dtype=np.int64))):
        tmp = prefix.with_name(prefix.name + suffix + ".tmp")
        with open(tmp, "wb") as f:
            np.save(f, arr)
        tmp.replace(prefix.with_name(prefix.name + suffix))
    return len(offsets) - 1


class TokenArray:
    """Read-only, memory-mapped view of one side of a split."""

    def __init__(self, prefix: str | Path):
        prefix = Path(prefix)
        ids_path = prefix.with_name(prefix.name + ".ids.npy")
        if not ids_path.is_file():
            raise FileNotFoundError(f"{ids_path} not found: run the prepare stage (`dvc repro prepare`)")
        self.ids = np.load(ids_path, mmap_mode="r")
        self.offsets = np.load(prefix.with_name(prefix.name + ".offsets.npy"))
        self.lengths = np.diff(self.offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> np.ndarray:
        return np.asarray(self.ids[self.offsets[i]:self.offsets[i + 1]], dtype=np.int64)
