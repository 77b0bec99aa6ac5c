"""Stage `download`: the raw splits as one-sentence-per-line text files."""

from __future__ import annotations

from pathlib import Path

from .config import Config
from .files import atomic_write_text

SPLITS = ("train", "validation", "test")
SIDES = ("source", "target")


def raw_path(raw_dir: str | Path, split: str, side: str) -> Path:
    return Path(raw_dir) / f"{split}.{side}"


def read_lines(path: Path) -> list[str]:
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run the download stage (`dvc repro download`)")
    return path.read_text(encoding="utf-8").splitlines()


def download(cfg: Config, raw_dir: str | Path) -> dict:
    """Write the splits of ``cfg.data`` as one-sentence-per-line files in ``raw_dir``."""
    from .corpus import generate_corpus

    d = cfg.data
    corpus = generate_corpus(seed=d.seed, n_train=d.n_train, n_valid=d.n_valid, n_test=d.n_test)
    counts = {}
    for split in SPLITS:
        pairs = corpus[split]
        for i, side in enumerate(SIDES):
            atomic_write_text(raw_path(raw_dir, split, side), "".join(p[i] + "\n" for p in pairs))
        counts[split] = len(pairs)
    return counts


