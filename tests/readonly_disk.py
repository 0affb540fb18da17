"""`python -m tests.readonly_disk ARGS...`: `mmad ARGS...` on a disk the kernel turns read-only
after $MMAD_TEST_RO_AFTER lines reach the result records (JSONL): from then on every write and
every open for appending fails with EROFS, as after an `errors=remount-ro` remount. A real
remount needs root and a disk of its own, and refuses while the run holds a file open for
writing; this plays the same system calls' answers to mmad's own file code."""

from __future__ import annotations

import builtins
import errno
import os
import sys

import mmad.results.files as files

LIMIT = int(os.environ.get("MMAD_TEST_RO_AFTER", "5"))
_written = {"lines": 0}
_real_open = builtins.open


def _read_only() -> bool:
    return _written["lines"] >= LIMIT


class _Handle:
    """The real handle, until the disk turns read-only: then its writes fail with EROFS (and a
    closed one raises what a closed file raises)."""

    def __init__(self, handle) -> None:
        self._handle = handle

    def write(self, text: str) -> int:
        if not self._handle.closed and _read_only():
            raise OSError(errno.EROFS, "Read-only file system")
        _written["lines"] += text.count("\n")
        return self._handle.write(text)

    def __getattr__(self, name: str):
        return getattr(self._handle, name)


def _open(path, mode="r", *args, **kwargs):
    if "a" in mode and _read_only():
        raise OSError(errno.EROFS, "Read-only file system", str(path))
    handle = _real_open(path, mode, *args, **kwargs)
    return _Handle(handle) if "a" in mode else handle


files.open = _open  # the module's own name for open: JsonlLog's appends go through it

if __name__ == "__main__":
    from mmad.__main__ import main
    sys.argv[0] = "mmad"
    sys.exit(main())
