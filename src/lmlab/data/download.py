"""Stage `download`: the raw splits as one-example-per-line text files.

Translation and summarization write ``{split}.source`` and ``{split}.target`` (line i of one is the
pair of line i of the other); language modelling writes ``{split}.text``, one line of text per
line. ``lmlab.data.sources`` says where the examples come from and how each is made to fit one line.
"""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import ExitStack
from pathlib import Path

from tqdm import tqdm

from lmlab.config import Config
from lmlab.data.rawfiles import SIDES, SPLITS, TEXT_SIDE, raw_path
from lmlab.data.sources import SourceError, load_splits
from lmlab.files import atomic_dir


def download(cfg: Config, raw_dir: str | Path) -> dict:
    """Write the splits of ``cfg.data`` as one-example-per-line files in ``raw_dir``; returns the
    number of examples per split. The files are written to a temporary folder that replaces
    ``raw_dir`` whole once every split is written (``lmlab.files.atomic_dir``), so a failure or a
    kill anywhere (a missing file, an offline Hub) leaves the old folder untouched, and files of
    the other layout from an earlier run (``.text`` against ``.source``/``.target``) are gone."""
    d = cfg.data
    source = Path(d.path).expanduser().resolve() if d.path is not None else None
    if source is not None and Path(raw_dir).resolve() in (source, *source.parents):
        raise SourceError(f"data.path={d.path!r} lies in {raw_dir}, which the download stage replaces whole: "
                          "keep your files in a folder of their own")
    splits = load_splits(d)
    sides = (TEXT_SIDE,) if d.task == "language_modeling" else SIDES
    counts = {}
    with atomic_dir(raw_dir) as tmp:
        for split in SPLITS:
            counts[split] = _write(splits[split], [raw_path(tmp, split, side) for side in sides], split)
            if not counts[split]:
                raise SourceError(f"data: the {split} split of data={d.name} has no examples "
                                  "(check data.splits and the data.*_field keys)")
    return counts


def _write(examples: Iterable, paths: list[Path], split: str) -> int:
    """Write ``examples`` (pairs to two paths, or lines to one) one per line; returns how many."""
    n = 0
    with ExitStack() as files:
        outs = [files.enter_context(open(p, "w", encoding="utf-8", newline="\n")) for p in paths]
        # progress on stderr, only on a terminal: big corpora take minutes here
        for example in tqdm(examples, desc=f"download {split}", unit=" examples", disable=None,
                            mininterval=2.0, leave=False):
            if len(outs) == 1:
                outs[0].write(example + "\n")
            else:
                outs[0].write(example[0] + "\n")
                outs[1].write(example[1] + "\n")
            n += 1
    return n
