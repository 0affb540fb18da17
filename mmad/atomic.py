"""Atomic file writes: a full disk or a kill leaves the old file (or none), never half a file.

Every file mmad writes whole (result CSVs, run.json, reports, contour images) goes through here.
Only a regular file (or nothing) is ever replaced: a FIFO, a device, a folder or a symlink at the
target is refused with one line (mmad.paths), and a failure names the target, never the temporary.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from mmad.paths import check_replaceable

_UMASK = os.umask(0)
os.umask(_UMASK)  # read once: the process's umask, for files mkstemp creates 0600


def atomic_write_text(path: Path, text: str) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over the target."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over the target: a full
    disk or a kill leaves the old file (or none), never half a file or a stray temporary.
    Raises DataError for a target that is not a regular file, OSError (naming `path`) otherwise."""
    path = Path(path)
    check_replaceable(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; results are ordinary files
        os.replace(tmp, path)
    except OSError as exc:
        _discard(tmp)
        if exc.filename is not None and Path(exc.filename) in path.parents:
            raise  # a folder on the way is the trouble: its name is the one to say
        raise type(exc)(exc.errno, exc.strerror or str(exc), str(path)) from None
    except BaseException:
        _discard(tmp)
        raise


def _discard(tmp: str | None) -> None:
    if tmp is not None:
        Path(tmp).unlink(missing_ok=True)
