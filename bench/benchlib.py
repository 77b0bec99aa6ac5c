"""What the bench scripts share: the median they quote, and the record of every run they made.

A bench's record is one JSON file (by default ``reports/bench/<bench>_<device>.json``)::

    {"meta":    {the command line, when, where, library versions, load average},
     "summary": {the figures the bench printed as its last line},
     "runs":    [one object per run the bench made, every repeat of every side, none left out]}

so a quoted figure (a median) can be checked against the runs it came from.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path

from lmlab.files import atomic_write_json

ROOT = Path(__file__).resolve().parents[1]
RECORD_DIR = ROOT / "reports" / "bench"


def median(values: Iterable[float]) -> float:
    """The median (the mean of the middle two for an even count); fails on no values."""
    values = list(values)
    if not values:
        raise ValueError("median of no values")
    return float(statistics.median(values))


def add_record_option(parser: argparse.ArgumentParser, bench: str) -> None:
    """``--record PATH``: where the record of every run goes (``''``: none)."""
    parser.add_argument("--record", metavar="PATH", default=None,
                        help=f"JSON record of every run (default reports/bench/{bench}_<device>.json; "
                             "'' writes none)")


def record_path(option: str | None, bench: str, device: str) -> Path | None:
    """The record's path for a ``--record`` value: None for ``''``, the default for None."""
    if option == "":
        return None
    return Path(option) if option is not None else RECORD_DIR / f"{bench}_{device}.json"


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def meta(argv: Sequence[str] | None, packages: Sequence[str] = ()) -> dict:
    """Where and how a bench ran: its command line, the time (UTC), the machine (CPU count, load
    average now) and the versions of ``packages``. Call it at the start; ``write_record`` adds the
    end time and load average."""
    versions = {}
    for name in packages:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    args = list(sys.argv[1:] if argv is None else argv)
    return {"command": " ".join([Path(sys.argv[0]).name if argv is None else "main()", *args]),
            "argv": args, "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "python": platform.python_version(), "platform": platform.platform(),
            "cpu_count": os.cpu_count(), "load_average_start": load_average(), "versions": versions}


def write_record(path: str | Path | None, summary: dict, runs: list[dict], meta: dict) -> Path | None:
    """Write ``{"meta", "summary", "runs"}`` to ``path`` atomically (nothing for None); returns the path."""
    if path is None:
        return None
    meta = dict(meta, finished=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                load_average_end=load_average(), n_runs=len(runs))
    atomic_write_json(path, {"meta": meta, "summary": summary, "runs": runs})
    return Path(path)


def finish(path: str | Path | None, summary: dict, runs: list[dict], meta: dict) -> dict:
    """Write the record (``write_record``), say where, and print ``summary`` as the last line."""
    written = write_record(path, summary, runs, meta)
    if written:
        print(f"record of all {len(runs)} runs: {written}")
    print(json.dumps(summary))
    return summary


@contextmanager
def training_session(threads: int | None, quiet: Sequence[str], env_keys: Sequence[str]) -> Iterator[None]:
    """What a bench that trains sets for its runs, all put back after (so ``main()`` runs
    in-process in the tests): torch's CPU threads (``threads``, None keeps them), W&B offline and
    silent whatever the environment says (a bench never touches the network), the ``quiet``
    loggers at WARNING (Lightning's banners would bury the tables), and ``env_keys`` as they were."""
    import torch

    saved_threads = torch.get_num_threads()
    env = {k: os.environ.get(k) for k in (*env_keys, "WANDB_MODE", "WANDB_SILENT")}
    levels = {name: logging.getLogger(name).level for name in quiet}
    try:
        if threads is not None:
            torch.set_num_threads(threads)
        os.environ.update(WANDB_MODE="offline", WANDB_SILENT="true")
        for name in quiet:
            logging.getLogger(name).setLevel(logging.WARNING)
        yield
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
        for key, value in env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        torch.set_num_threads(saved_threads)
