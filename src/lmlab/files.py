"""Atomic file writes: a stage's output is either the old file or the complete new one, never half.

Every writer goes through :func:`atomic_path`: write to a temporary file in the target's own
directory (so the final ``os.replace`` is a rename on one file system, which POSIX makes atomic),
then rename it onto the target. A crash or an exception leaves no partial output for DVC to cache.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

# mkstemp creates files with mode 0o600; give the result the mode an ordinary open() would.
# os.umask can only be read by setting it, so read it once, at import, before any threads exist.
_UMASK = os.umask(0)
os.umask(_UMASK)


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success rename it onto ``path``, on error delete it.

        with atomic_path("data/model/model.pt") as tmp:
            torch.save(payload, tmp)

    Parent directories are created. The temporary name ends in ``.tmp`` (ignored by git), so tools
    that infer a format from the suffix need it given explicitly (``savefig(tmp, format="png")``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON (keys in their given order, trailing newline) atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, ensure_ascii=False) + "\n")
