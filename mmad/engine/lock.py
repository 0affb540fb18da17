"""One writer per output folder: an advisory lock (`<out>/.mmad.lock`, fcntl.flock).

A second `mmad score` on the same folder stops at once with one line naming the holder's PID.
The run that takes a lock removes the temporary files a killed writer left in that folder.
The kernel releases a flock when its process dies, so a lock left by a killed run (kill -9, a
crash) is simply taken over by the next run; the PID in the file only serves the message.
"""

from __future__ import annotations

import fcntl
import os
import re
from collections.abc import Iterable
from pathlib import Path

from mmad.errors import RunBusy, StorageError, describe_os_error

LOCK_FILE = ".mmad.lock"
# What atomic_write_bytes names its temporaries (mkstemp: `.<target>.<8 random chars>.tmp`).
_TEMPORARY = re.compile(r"\..+\.[A-Za-z0-9_]{8}\.tmp")


class FolderLocks:
    def __init__(self) -> None:
        self._handles: list[int] = []

    def release(self) -> None:
        for fd in self._handles:
            try:
                fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)
            except OSError:
                pass
        self._handles.clear()


def lock_folders(folders: Iterable[Path]) -> FolderLocks:
    """Lock every folder (creating it); raises RunBusy or StorageError, holding nothing then."""
    locks = FolderLocks()
    try:
        for folder in sorted({Path(f) for f in folders}):
            path = folder / LOCK_FILE
            try:
                folder.mkdir(parents=True, exist_ok=True)
                fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                raise StorageError(f"cannot write the output folder: {describe_os_error(folder, exc)}") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 64).decode("ascii", "replace").strip() or "?"
                os.close(fd)
                raise RunBusy(f"{folder} is being written by another mmad run (PID {holder}); wait for it to "
                              f"finish, or use another --out / --run-name") from None
            locks._handles.append(fd)
            try:
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            except OSError as exc:
                raise StorageError(f"cannot write {describe_os_error(path, exc)}") from None
            remove_stale_temporaries(folder)
    except BaseException:
        locks.release()
        raise
    return locks


def remove_stale_temporaries(folder: Path) -> None:
    """Temporaries a killed writer left (kill -9 between create and rename). Only called with the
    folder's lock held, so no live mmad process is writing them."""
    try:
        stale = [p for p in folder.iterdir() if _TEMPORARY.fullmatch(p.name) and p.is_file()]
        for path in stale:
            path.unlink(missing_ok=True)
    except OSError:
        pass  # a folder we cannot list or clean is reported by the first real write
