"""The raw text files of ``data/raw`` (what the download stage writes and the prepare and
generate stages read): their names and a reader that both agree on.

Translation and summarization: ``{split}.source`` and ``{split}.target`` (line i of one is the pair
of line i of the other); language modelling: ``{split}.text``, one line of text per line.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

SPLITS = ("train", "validation", "test")
SIDES = ("source", "target")
TEXT_SIDE = "text"  # language modelling's one side


def raw_path(raw_dir: str | Path, split: str, side: str) -> Path:
    return Path(raw_dir) / f"{split}.{side}"


def read_lines(path: Path) -> list[str]:
    return list(iter_lines(path))


def iter_lines(path: Path) -> Iterator[str]:
    """The lines of a UTF-8 file, streamed: the same lines as ``path.read_text().splitlines()``, so
    the encoded arrays (``prepare``) and the references (``read_lines``) line up."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run the download stage (`dvc repro download`)")
    return _stream_lines(path)


def _stream_lines(path: Path) -> Iterator[str]:
    with open(path, encoding="utf-8") as f:
        try:
            for line in f:
                # a file line can hold more than one str.splitlines() line (\x0c, \u2028, ...)
                yield from line.splitlines()
        except UnicodeDecodeError as err:
            raise ValueError(f"{path} is not valid UTF-8: {err}") from None
