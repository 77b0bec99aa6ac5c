"""Tokenizers (Hugging Face ``tokenizers``) and compact token-id arrays on disk.

Three kinds, all with the same four special tokens at fixed ids (<pad>=0 <unk>=1 <s>=2 </s>=3):

* ``bpe``: subword BPE with NFKC normalisation and Metaspace word boundaries (SentencePiece's
  "▁"), so decoding restores the spacing of whitespace-separated text;
* ``byte_bpe``: byte-level BPE (GPT-2): the 256 byte symbols are always in the vocabulary, so any
  text encodes without <unk> and decodes back byte for byte;
* ``char``: one token per character seen in training (most frequent first, ``vocab_size`` at
  most); a character never seen maps to <unk>.

A corpus's tokenizers live in a :class:`TokenizerSet`: one tokenizer for every side (joint), or one
per side (separate vocabularies) in one shared id space, which is what the model and the decoding
code see.

A split is stored as two ``.npy`` files per side: ``ids`` (every sequence's ids concatenated,
uint16 while the vocabulary fits, else uint32) and ``offsets`` (int64, n+1 entries: sequence i is
``ids[offsets[i]:offsets[i+1]]``). The ids are memory-mapped on load; :class:`IdsWriter` writes both
as the sequences come, so neither side needs the corpus in memory.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterable, Iterator
from itertools import chain
from pathlib import Path

import numpy as np
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

PAD, UNK, BOS, EOS = 0, 1, 2, 3
SPECIAL_TOKENS = ["<pad>", "<unk>", "<s>", "</s>"]
N_SPECIAL = len(SPECIAL_TOKENS)
BYTE_ALPHABET = pre_tokenizers.ByteLevel.alphabet()  # the 256 symbols byte-level BPE starts from
SET_FORMAT = "lmlab_tokenizers"  # the key that marks a TokenizerSet's own JSON (separate vocabularies)


def new_tokenizer(kind: str, vocab_size: int, min_frequency: int):
    """An untrained tokenizer of ``kind`` and the trainer that fills its vocabulary."""
    if kind == "bpe":
        tok = Tokenizer(models.BPE(unk_token="<unk>"))
        tok.normalizer = normalizers.NFKC()
        tok.pre_tokenizer = pre_tokenizers.Metaspace()
        tok.decoder = decoders.Metaspace()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                      special_tokens=SPECIAL_TOKENS, show_progress=False)
    elif kind == "byte_bpe":
        # No normaliser and no unknown token: every text is a byte string, so it round-trips.
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                      special_tokens=SPECIAL_TOKENS, initial_alphabet=BYTE_ALPHABET,
                                      show_progress=False)
    elif kind == "char":
        # Every character is a "word" of a word-level model; the trainer orders them by count,
        # ties by character, so the ids are deterministic. (?m) is Oniguruma's dot-matches-all.
        tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
        tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"(?m)."), behavior="isolated")
        tok.decoder = decoders.Fuse()
        trainer = trainers.WordLevelTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                            special_tokens=SPECIAL_TOKENS, show_progress=False)
    else:
        raise ValueError(f"unknown tokenizer kind {kind!r} (known: bpe, byte_bpe, char)")
    return tok, trainer


def train_tokenizer(texts: Iterable[str], kind: str = "bpe", vocab_size: int = 6000,
                    min_frequency: int = 2) -> Tokenizer:
    """A ``kind`` tokenizer trained on ``texts``, any iterable of lines (a generator streams them)."""
    tok, trainer = new_tokenizer(kind, vocab_size, min_frequency)
    tok.train_from_iterator(texts, trainer=trainer)
    if [tok.token_to_id(t) for t in SPECIAL_TOKENS] != [PAD, UNK, BOS, EOS]:
        raise RuntimeError(f"{kind} tokenizer put the special tokens at the wrong ids")
    return tok


def train_bpe(texts: Iterable[str], vocab_size: int, min_frequency: int = 2) -> Tokenizer:
    """Subword BPE over ``texts`` (pass the training split only, never test data)."""
    return train_tokenizer(texts, "bpe", vocab_size, min_frequency)


class TokenizerSet:
    """The tokenizers of a corpus's sides in one id space.

    Joint: one tokenizer encodes every side, with its own ids. Its JSON is that tokenizer's JSON,
    so ``tokenizer.json`` files and model files written before separate vocabularies load as joint.

    Separate: one tokenizer per side (``source``, ``target``, or ``text``). The four specials are
    shared at 0-3, and each side's own tokens follow those of the sides before it. With a source
    vocabulary of 5,000 and a target vocabulary of 6,000 (both counting the specials), source ids
    are 0-4,999 and target token t >= 4 has id t + 4,996, so the model sees one vocabulary of
    10,996 ids and needs no notion of sides. Decoding a side skips the ids of the other sides.
    """

    def __init__(self, tokenizers: Tokenizer | dict[str, Tokenizer]):
        self.joint = isinstance(tokenizers, Tokenizer)
        self._tokenizers = {None: tokenizers} if self.joint else dict(tokenizers)
        self._shift, start = {}, 0
        for side, tok in list(self._tokenizers.items()):
            # Text that spells a special token ("<pad>") is text, never the special id; set on a
            # copy, so the caller's tokenizer keeps its own behaviour.
            tok = self._tokenizers[side] = Tokenizer.from_str(tok.to_str())
            tok.encode_special_tokens = True
            self._shift[side] = start
            start += tok.get_vocab_size() - N_SPECIAL
        self._vocab_size = start + N_SPECIAL

    @property
    def sides(self) -> list[str] | None:
        """The sides with their own vocabulary (None when joint)."""
        return None if self.joint else list(self._tokenizers)

    def get_vocab_size(self) -> int:
        """Size of the one id space (the model's vocabulary)."""
        return self._vocab_size

    def tokenizer(self, side: str | None) -> tuple[Tokenizer, int]:
        """The tokenizer of ``side`` and the shift of its own ids (>= 4) in the shared id space."""
        if self.joint:
            side = None
        elif side is None:
            raise ValueError(f"this tokenizer has separate vocabularies ({', '.join(self._tokenizers)}): "
                             "name the side to encode or decode")
        if side not in self._tokenizers:
            raise ValueError(f"no vocabulary for side {side!r}: this tokenizer has separate "
                             f"vocabularies for {', '.join(self._tokenizers)} only")
        return self._tokenizers[side], self._shift[side]

    def encode_arrays(self, lines: list[str], side: str | None,
                      dtype=np.int64) -> tuple[np.ndarray, np.ndarray]:
        """(every line's ids concatenated, each line's length) for a batch of lines."""
        tok, shift = self.tokenizer(side)
        ids = [e.ids for e in tok.encode_batch(lines, add_special_tokens=False)]
        lengths = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
        flat = np.fromiter(chain.from_iterable(ids), dtype=np.int64, count=int(lengths.sum()))
        if shift:
            flat[flat >= N_SPECIAL] += shift
        return flat.astype(dtype, copy=False), lengths

    def encode(self, lines: list[str], side: str | None) -> list[list[int]]:
        flat, lengths = self.encode_arrays(lines, side)
        return [a.tolist() for a in np.split(flat, np.cumsum(lengths)[:-1])] if len(lines) else []

    def decode(self, ids: Iterable[int], side: str | None) -> str:
        tok, shift = self.tokenizer(side)
        ids = [int(i) for i in ids]
        if not self.joint:  # back to the side's own ids; other sides' ids become <unk>, skipped
            top = shift + tok.get_vocab_size()
            ids = [i - shift if shift + N_SPECIAL <= i < top else (i if i < N_SPECIAL else UNK)
                   for i in ids]
        return tok.decode(ids, skip_special_tokens=True)

    def vocab_sizes(self) -> dict[str, int]:
        """Each separate side's own vocabulary size, specials included (empty when joint)."""
        return {} if self.joint else {side: t.get_vocab_size() for side, t in self._tokenizers.items()}

    def to_json(self) -> str:
        if self.joint:
            return self._tokenizers[None].to_str(pretty=True)  # byte for byte what Tokenizer.save writes
        sides = {side: json.loads(tok.to_str()) for side, tok in self._tokenizers.items()}
        return json.dumps({SET_FORMAT: 1, "sides": sides}, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> TokenizerSet:
        obj = json.loads(text)
        if SET_FORMAT not in obj:  # a plain tokenizers JSON: joint, as every file before this class
            return cls(Tokenizer.from_str(text))
        if obj[SET_FORMAT] != 1:
            raise ValueError(f"tokenizer JSON has {SET_FORMAT}={obj[SET_FORMAT]!r}; this lmlab reads version 1")
        return cls({side: Tokenizer.from_str(json.dumps(t)) for side, t in obj["sides"].items()})


def tokenizer_hash(tokenizer_json: str) -> str:
    """A short hash of a tokenizer's JSON: a model file and the prepared data it decodes must agree
    on it (``prepare`` records it in stats.json, and generation compares the model's)."""
    return hashlib.sha256(tokenizer_json.encode("utf-8")).hexdigest()[:16]


def load_tokenizer(path_or_json: str | Path) -> TokenizerSet:
    """A ``TokenizerSet`` from a JSON string or a ``tokenizer.json`` path (either format)."""
    text = str(path_or_json)
    if not text.lstrip().startswith("{"):
        text = Path(text).read_text(encoding="utf-8")
    return TokenizerSet.from_json(text)


def _as_set(tok: Tokenizer | TokenizerSet) -> TokenizerSet:
    return tok if isinstance(tok, TokenizerSet) else TokenizerSet(tok)


def decode(tok: Tokenizer | TokenizerSet, ids: Iterable[int], side: str | None = None) -> str:
    """Text of ``side``'s ids, special tokens dropped (``side`` matters for separate vocabularies)."""
    return _as_set(tok).decode(ids, side)


def chunked(items: Iterable, size: int) -> Iterator[list]:
    """Consecutive lists of ``size`` items (the last one shorter)."""
    chunk: list = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def encode_lines(tok: Tokenizer | TokenizerSet, lines: Iterable[str], chunk_size: int = 8192,
                 side: str | None = None) -> Iterator[list[int]]:
    """Each line's ids (no special tokens), encoding ``chunk_size`` lines at a time."""
    tokset = _as_set(tok)
    for chunk in chunked(lines, chunk_size):
        yield from tokset.encode(chunk, side)


def ids_dtype(vocab_size: int):
    return np.uint16 if vocab_size <= np.iinfo(np.uint16).max + 1 else np.uint32


class NpyStream:
    """A 1-D ``.npy`` file written piece by piece: the pieces go to a raw temporary file, and
    :meth:`finish` writes the header (which needs the final length) and copies them behind it,
    giving the same bytes as ``np.save`` of the whole array."""

    def __init__(self, path: Path, dtype):
        self.path, self.dtype, self.count = Path(path), np.dtype(dtype), 0
        self.raw_path = self.path.with_name(self.path.name + ".raw.tmp")
        self._raw = open(self.raw_path, "wb")

    def write(self, values: np.ndarray) -> None:
        self._raw.write(np.ascontiguousarray(values, dtype=self.dtype).tobytes())
        self.count += len(values)

    def finish(self) -> None:
        self._raw.close()
        header = {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False,
                  "shape": (self.count,)}
        with open(self.path, "wb") as out, open(self.raw_path, "rb") as raw:
            np.lib.format.write_array_header_1_0(out, header)
            shutil.copyfileobj(raw, out, 1 << 20)
        self.raw_path.unlink()

    def discard(self) -> None:
        """Close and remove the raw file (nothing left behind by a stream that did not finish)."""
        self._raw.close()
        self.raw_path.unlink(missing_ok=True)


class IdsWriter:
    """One side of a split written as it is encoded, to ``ids.npy`` and ``offsets.npy``: both
    stream to disk (:class:`NpyStream`), so memory does not grow with the number of sequences."""

    def __init__(self, ids_path: Path, offsets_path: Path, vocab_size: int):
        self.ids = NpyStream(ids_path, ids_dtype(vocab_size))
        self.offsets = NpyStream(offsets_path, np.int64)
        self.offsets.write(np.zeros(1, np.int64))
        self.n_ids = 0

    def append(self, flat: np.ndarray, lengths: np.ndarray) -> None:
        """Add sequences: ``flat`` holds their ids back to back, ``lengths`` their lengths."""
        self.ids.write(flat)
        self.offsets.write(self.n_ids + np.cumsum(lengths, dtype=np.int64))
        self.n_ids += int(len(flat))

    def __len__(self) -> int:
        return self.offsets.count - 1

    def finish(self) -> int:
        """Write both ``.npy`` files; returns the number of sequences."""
        self.ids.finish()
        self.offsets.finish()
        return len(self)

    def __enter__(self) -> IdsWriter:
        return self

    def __exit__(self, *_) -> None:
        self.ids.discard()
        self.offsets.discard()


def write_array(prefix: Path, sequences: Iterable[list[int]], vocab_size: int,
                chunk_size: int = 8192) -> int:
    """Write ``prefix.ids.npy`` / ``prefix.offsets.npy`` atomically; returns the number of sequences."""
    from lmlab.files import atomic_path

    prefix = Path(prefix)
    with atomic_path(prefix.with_name(prefix.name + ".ids.npy")) as ids_tmp, \
            atomic_path(prefix.with_name(prefix.name + ".offsets.npy")) as offsets_tmp:
        with IdsWriter(ids_tmp, offsets_tmp, vocab_size) as writer:
            for chunk in chunked(sequences, chunk_size):
                writer.append(np.fromiter(chain.from_iterable(chunk), dtype=np.int64),
                              np.fromiter(map(len, chunk), dtype=np.int64, count=len(chunk)))
            return writer.finish()


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
