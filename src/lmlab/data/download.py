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
from lmlab.files import atomic_path


def download(cfg: Config, raw_dir: str | Path) -> dict:
    """Write the splits of ``cfg.data`` as one-example-per-line files in ``raw_dir``; returns the
    number of examples per split. All files are replaced together once every split is written, so
    a failure anywhere (a missing file, an offline Hub) leaves the old ones untouched."""
    d = cfg.data
    splits = load_splits(d)
    sides = (TEXT_SIDE,) if d.task == "language_modeling" else SIDES
    counts = {}
    with ExitStack() as replace_on_success:
        for split in SPLITS:
            tmps = [replace_on_success.enter_context(atomic_path(raw_path(raw_dir, split, side)))
                    for side in sides]
            counts[split] = _write(splits[split], tmps, split)
            if not counts[split]:
                raise SourceError(f"data: the {split} split of data={d.name} has no examples "
                                  "(check data.splits and the data.*_field keys)")
    for split in SPLITS:  # the other layout's files, from an earlier run, would mislead `prepare`
        for side in SIDES if sides == (TEXT_SIDE,) else (TEXT_SIDE,):
            raw_path(raw_dir, split, side).unlink(missing_ok=True)
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
