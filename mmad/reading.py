"""Opening the files a user points at without ever blocking. `open()` on a FIFO waits forever for a
writer, so a named pipe where an image, a template or a price table belongs would hang a run with
no word; here the path is opened non-blocking, checked to be a regular file, and refused in one
line (`NotRegularFile`, an OSError) when it is not."""

from __future__ import annotations

import errno
import os
import stat
from typing import IO, Any

from mmad.errors import NotRegularFile
from mmad.paths import describe_target

__all__ = ["NotRegularFile", "open_file", "read_bytes", "read_text"]


def open_file(path: str | os.PathLike, mode: str = "rb", **text_options: Any) -> IO[Any]:
    """`open(path, mode)` for reading, after checking on the opened descriptor itself that it is a
    regular file (no window between the check and the open)."""
    if any(flag in mode for flag in "wax+"):
        raise ValueError("open_file only reads")
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        mode_bits = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode_bits):  # what open() itself says of a folder, so its handlers keep their words
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), os.fspath(path))
        if not stat.S_ISREG(mode_bits):
            raise NotRegularFile(path, describe_target(path))
        os.set_blocking(fd, True)
        return open(fd, mode, **text_options)
    except BaseException:
        os.close(fd)
        raise


def read_bytes(path: str | os.PathLike) -> bytes:
    with open_file(path) as handle:
        return handle.read()


def read_text(path: str | os.PathLike, encoding: str = "utf-8", errors: str = "strict") -> str:
    with open_file(path, "r", encoding=encoding, errors=errors) as handle:
        return handle.read()
