"""What a path is, in words, so a message blames the right thing: a FIFO is not "no such file", a
symlink loop is not "unknown dataset", and a file given where a folder belongs says so.

Only `lstat`/`stat`: nothing here opens a path (opening a FIFO would block).
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from mmad.errors import DataError

_KINDS = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))


def describe(path: str | os.PathLike) -> str:
    """`a regular file`, `a folder`, `a FIFO (named pipe)`, `a symlink loop`, `a dangling symlink
    (to X)`, `a symlink (to X)` (to a regular file or folder: see `describe_target`), `missing`,
    or why it cannot be looked at (`not reachable: [Errno 13] Permission denied`)."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return "missing"
    except OSError as exc:
        return _unreachable(exc)
    if stat.S_ISLNK(info.st_mode):
        target = _link_target(path)
        try:
            os.stat(path)
        except FileNotFoundError:
            return f"a dangling symlink (to {target})"
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                return "a symlink loop"
            return _unreachable(exc)
        return f"a symlink (to {target})"
    return _mode_words(info.st_mode)


def describe_target(path: str | os.PathLike) -> str:
    """What the path leads to, links followed: `a folder`, `a FIFO (named pipe)`, `a symlink loop`..."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return describe(path)  # missing, or a dangling link
    except OSError as exc:
        return "a symlink loop" if exc.errno == errno.ELOOP else _unreachable(exc)
    return _mode_words(info.st_mode)


def _mode_words(mode: int) -> str:
    if stat.S_ISREG(mode):
        return "a regular file"
    if stat.S_ISDIR(mode):
        return "a folder"
    return next((words for test, words in _KINDS if test(mode)), "not a regular file")


def _link_target(path: str | os.PathLike) -> str:
    try:
        return str(os.readlink(os.fspath(path)))
    except OSError:
        return "?"


def _unreachable(exc: OSError) -> str:
    if exc.errno == errno.ENAMETOOLONG:
        return "a path too long for this system"
    return f"not reachable: [Errno {exc.errno}] {exc.strerror}"


def require_folder(path: Path, what: str) -> Path:
    """`path` when it is a folder (or missing: the caller says what a missing one means); else a
    DataError naming what it is instead (a file, a FIFO, a symlink loop)."""
    found = describe_target(path)
    if found in ("a folder", "missing") or found.startswith("a dangling symlink"):
        return path
    raise DataError(f"{what} {path} is {found}, not a folder")


def require_readable_file(path: Path, what: str) -> Path:
    """`path` when it is (or leads to) a regular file; else a DataError naming what it is."""
    found = describe_target(path)
    if found != "a regular file":
        raise DataError(f"{what} {path} is {found}, not a file" if found != "missing"
                        else f"{what} {path}: no such file")
    return path


def check_replaceable(path: Path) -> None:
    """An atomic write renames over its target: refuse anything but a regular file or a missing
    path (a FIFO, a device, a folder, a symlink dangling or not would be replaced by a file)."""
    found = describe(path)
    if found in ("missing", "a regular file") or found.startswith(("not reachable", "a path too long")):
        return  # written, or the write itself fails naming its errno
    if found.startswith(("a symlink", "a dangling symlink")):
        raise DataError(f"{path} is {found}; mmad writes its files whole and replaces only regular files, never "
                        f"a link: write to another path (or to the link's target itself)")
    raise DataError(f"{path} is {found}, not a regular file; mmad writes its files whole and replaces only regular "
                    f"files: remove it or write to another path")
