"""Atomic outputs: at any instant a stage's output is the old complete file or folder, or the new one.

Every output is written under a temporary name next to its target (``.{name}.XXXX.tmp``, ignored by
git's ``*.tmp`` rule and outside every DVC output), fsynced, then renamed onto the target: a rename
within one file system is atomic (POSIX), and the fsyncs make sure that what a rename publishes is
on disk before the rename itself is, so a crash or a power cut cannot leave a published name
pointing at missing data.

* :func:`atomic_path`: one file (``os.replace``).
* :func:`atomic_dir`: one folder, built whole in a temporary folder and swapped with the old one in
  a single ``renameat2(RENAME_EXCHANGE)``; the old tree is then deleted.
* :func:`atomic_outputs`: several files and folders that belong together (a stage's outputs at
  separate paths), each written to its temporary sibling; only when all are written and fsynced
  are they renamed, one after another, in the order they were asked for.

**The window between separate paths.** Two paths cannot change in one system call. Between the
renames of :func:`atomic_outputs` (microseconds: nothing is written there) a crash leaves the first
outputs new and the others old; each one is still whole. DVC never consumes such a mixture: it
deletes a stage's outputs before running it, records them in dvc.lock only after the command has
exited 0, and reruns a stage whose outputs do not match dvc.lock. Where ``renameat2`` or
``RENAME_EXCHANGE`` is unavailable (not Linux, glibc < 2.28, a file system without it), a folder is
swapped by renaming the old one aside and the new one in: in between, the folder is missing, never
half.

A crash leaves ``*.tmp`` debris next to the target (a temporary file, or a folder being built or
being deleted); it is never mistaken for an output.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

# mkstemp creates files with mode 0o600 and mkdtemp folders with 0o700; give the results the mode
# an ordinary open() or mkdir() would. os.umask can only be read by setting it, so read it once,
# at import, before any threads exist.
_UMASK = os.umask(0)
os.umask(_UMASK)

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def _load_renameat2():
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2  # glibc >= 2.28
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


_renameat2 = _load_renameat2()


def _exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths in one system call; False where the system cannot."""
    if _renameat2 is None:
        return False
    # ctypes calls are invisible to audit hooks; os.rename raises "os.rename", this its own event
    sys.audit("lmlab.files.exchange", str(a), str(b))
    if _renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):  # no kernel or file system support
        return False
    raise OSError(err, os.strerror(err), str(a), None, str(b))


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as err:
        if err.errno not in (errno.EINVAL, errno.ENOTSUP):  # a folder some file systems will not sync
            raise
    finally:
        os.close(fd)


def _fsync_tree(path: Path) -> None:
    """fsync a file, or every file and folder of a tree (the folders last, so they list the files)."""
    if not path.is_dir():
        _fsync_path(path)
        return
    for parent, _, files in os.walk(path, topdown=False):
        for name in files:
            _fsync_path(Path(parent) / name)
        _fsync_path(Path(parent))


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


class StagedOutputs:
    """The temporary siblings of :func:`atomic_outputs`; ask for each with :meth:`file` or :meth:`dir`."""

    def __init__(self):
        self.staged: list[tuple[Path, Path]] = []  # (temporary, target), in the order asked for

    def _temp(self, target: str | os.PathLike, make) -> Path:
        target = Path(target)
        here = target.resolve()
        for tmp, other in self.staged:  # a folder swapped in whole would carry the other's temporary away
            there = other.resolve()
            if here == there or (tmp.is_dir() and there in here.parents) or (make is _make_dir and here in there.parents):
                raise ValueError(f"{target} and {other} are outputs of one stage, and one is the folder of the "
                                 "other, which is replaced whole: give them separate places")
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(make(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"))
        self.staged.append((tmp, target))
        return tmp

    def file(self, target: str | os.PathLike) -> Path:
        """An empty temporary file for ``target`` (parent folders are created)."""
        def make(**kw):
            fd, name = tempfile.mkstemp(**kw)
            os.close(fd)
            os.chmod(name, 0o666 & ~_UMASK)
            return name
        return self._temp(target, make)

    def dir(self, target: str | os.PathLike) -> Path:
        """An empty temporary folder that replaces the folder ``target`` whole.

        A stage owns its output folder: whatever else is in ``target`` goes. A folder that holds
        folders is no stage's output folder (``data``, ``reports``, the repository) and is refused
        before anything is written, rather than deleted.
        """
        check_output_dir(target)
        return self._temp(target, _make_dir)

    def publish(self) -> None:
        """fsync every staged output, rename them into place in order, fsync their folders, and
        delete the old trees the swaps left behind."""
        for tmp, target in self.staged:  # every check before the first rename
            if target.exists() and tmp.is_dir() != target.is_dir():
                raise IsADirectoryError(f"{target}: cannot replace a {'folder' if target.is_dir() else 'file'} "
                                        f"with a {'folder' if tmp.is_dir() else 'file'}")
            _fsync_tree(tmp)
        parents = list(dict.fromkeys(target.parent for _, target in self.staged))
        old_trees: list[Path] = []
        try:
            while self.staged:
                tmp, target = self.staged[0]
                if tmp.is_dir() and target.is_dir():
                    old_trees.append(_swap(tmp, target))
                else:
                    os.replace(tmp, target)  # a file onto a file, or a folder where there is none yet
                self.staged.pop(0)
            for parent in parents:
                _fsync_path(parent)
        finally:
            for tree in old_trees:
                _remove(tree)

    def discard(self) -> None:
        for tmp, _ in self.staged:
            _remove(tmp)
        self.staged.clear()


def check_output_dir(target: str | os.PathLike) -> None:
    """Refuse ``target`` as a folder that a stage replaces whole: a file, or a folder that holds
    folders (``data``, ``reports``, the repository: no stage's own output folder). Stages call it
    before their work too, so that a long run does not fail only when it publishes."""
    target = Path(target)
    if target.is_dir():
        inner = next((p.name for p in target.iterdir() if p.is_dir() and not p.name.endswith(".tmp")), None)
        if inner is not None:
            raise IsADirectoryError(f"{target} holds the folder {inner}/: an output folder is replaced "
                                    "whole, so give the stage a folder of its own")
    elif target.exists():
        raise NotADirectoryError(f"{target} is a file, not a folder")


def _make_dir(**kw) -> str:
    name = tempfile.mkdtemp(**kw)
    os.chmod(name, 0o777 & ~_UMASK)
    return name


def _swap(new: Path, target: Path) -> Path:
    """Put the folder ``new`` at ``target``; returns where the old tree now is, to be deleted."""
    if _exchange(new, target):
        return new
    aside = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".old.tmp"))
    os.replace(target, aside)  # onto the empty folder mkdtemp made
    try:
        os.rename(new, target)
    except BaseException:
        os.replace(aside, target)
        raise
    return aside


@contextmanager
def atomic_outputs() -> Iterator[StagedOutputs]:
    """Write several outputs that belong together, then publish them together:

        with atomic_outputs() as out:
            write_figures(out.dir("reports/figures"))
            out.file("reports/report.md").write_text(markdown)

    On success every temporary file and folder is fsynced, then each is renamed onto its target
    in the order asked for (put the one that points at the others last: the report after its
    figures), and the old folders are deleted. On an error nothing is renamed and every
    temporary is deleted. Between the renames lies the window described in the module docstring.
    """
    staged = StagedOutputs()
    try:
        yield staged
        staged.publish()
    finally:
        staged.discard()  # after an error, or what a failed rename left


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success fsync it and rename it onto ``path``, on
    error delete it.

        with atomic_path("data/model/model.pt") as tmp:
            torch.save(payload, tmp)

    Parent directories are created. The temporary name ends in ``.tmp`` (ignored by git), so tools
    that infer a format from the suffix need it given explicitly (``savefig(tmp, format="png")``).
    """
    with atomic_outputs() as out:
        yield out.file(path)


@contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a fresh temporary folder next to ``path``; on success fsync everything in it and swap
    it with ``path`` in one rename (creating ``path`` if missing), then delete the old tree; on
    error delete it and leave ``path`` as it was.

        with atomic_dir("data/raw") as tmp:
            (tmp / "train.source").write_text(...)

    A folder that holds folders is refused (see :meth:`StagedOutputs.dir`).
    """
    with atomic_outputs() as out:
        yield out.dir(path)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON (keys in their given order, trailing newline, UTF-8) in place:
    for a file inside a temporary folder of :func:`atomic_dir` or :func:`atomic_outputs`."""
    Path(path).write_text(json.dumps(obj, indent=2, sort_keys=False, ensure_ascii=False) + "\n",
                          encoding="utf-8")


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON (keys in their given order, trailing newline) atomically."""
    with atomic_path(path) as tmp:
        write_json(tmp, obj)
