"""The error tree. Every message names the file, row, field or variable to fix, never a secret.

    MmadError                 anything the CLI turns into one line and a non-zero exit
    ├── DataError             a dataset, template or result file is missing or malformed
    ├── ConfigError           a flag, prompt, environment variable or price file is wrong
    ├── ProviderError         a provider could not be used at all (auth, quota, capability)
    │   └── QuotaExhausted    billing/quota is spent: stop, the run stays resumable
    ├── BudgetExceeded        --max-cost would be passed by the next request
    ├── RunBusy               another mmad process holds the same output folder
    └── StorageError          a result, cache or lock file cannot be written or read (disk full,
                              read-only, corrupt cache): nothing more is sent

NotRegularFile (an OSError, as `open()` raises) is a FIFO, socket or device where mmad reads a
file: bad input (2), raised by `mmad.reading`.

Exit codes: 0 every job ok; 1 stopped early, resumable; 2 bad input or configuration (and
RunBusy); 3 provider unusable; 4 quota; 5 --max-cost reached; 6 finished, but some jobs failed
(--retry-failed redoes them); 7 storage; 130 aborted.
"""

from __future__ import annotations

import errno as _errno
import os


class MmadError(Exception):
    """Base class: the CLI prints `error: <message>` and exits with `exit_code`."""

    exit_code = 2


class DataError(MmadError):
    """A dataset, template or result file is missing or malformed."""


class ConfigError(MmadError):
    """A flag, prompt, environment variable or price file is wrong."""


class ProviderError(MmadError):
    """A provider cannot be used at all (bad key, unsupported request shape)."""

    exit_code = 3


class QuotaExhausted(ProviderError):
    """Billing or quota is exhausted; retrying will not help, resuming later will."""

    exit_code = 4


class BudgetExceeded(MmadError):
    """The next request could exceed --max-cost."""

    exit_code = 5


class RunBusy(MmadError):
    """Another process is writing the same output folder."""


class StorageError(MmadError):
    """A file the run needs cannot be written or read; the message names the path and errno."""

    exit_code = 7


def describe_os_error(path: object, exc: BaseException) -> str:
    """`<path>: [Errno 28] No space left on device` — the path and the errno, in one line."""
    errno = getattr(exc, "errno", None)
    reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    path = shorten(str(path))
    return f"{path}: [Errno {errno}] {reason}" if errno else f"{path}: {reason}"


# A path that cannot be one (too long, a symlink loop, a file where a folder belongs): the user's
# input to fix, not a disk that fails.
PATH_MISTAKES = {_errno.ENAMETOOLONG: "a path too long for this system (a name over 255 bytes?)",
                 _errno.ELOOP: "a symlink loop", _errno.EISDIR: "a folder where mmad needs a file",
                 _errno.EEXIST: "a file is in the way of a folder mmad needs there",
                 _errno.ENOTDIR: "a file is in the way of a folder mmad needs there"}


class NotRegularFile(OSError):
    """A FIFO, socket or device where a file belongs: the user's input to fix (exit 2)."""

    def __init__(self, path: str | os.PathLike, found: str):
        super().__init__(None, f"{found} where mmad needs a regular file", os.fspath(path))
        self.found = found

    def __str__(self) -> str:
        return f"{shorten(str(self.filename))}: {self.strerror}"


def os_failure(action: str, path: object, exc: OSError) -> MmadError:
    """A failed file operation as the error it is: a path mistake (PATH_MISTAKES) is bad input,
    exit 2, naming the path the system named; anything else is storage, exit 7."""
    if isinstance(exc, NotRegularFile):
        return DataError(str(exc))
    if exc.errno in PATH_MISTAKES:
        return DataError(f"{shorten(str(exc.filename or path))}: {PATH_MISTAKES[exc.errno]}")
    return StorageError(f"{action} {describe_os_error(path, exc)}")


def shorten(text: str, cap: int = 200) -> str:
    """A value echoed in a message, cut in the middle when long (a 10,000-character name would
    fill a screen): its start, its end, and how long it was."""
    if len(text) <= cap:
        return text
    return f"{text[:cap * 2 // 3]}...({len(text)} characters)...{text[-(cap // 4):]}"
