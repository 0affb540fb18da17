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

Exit codes: 0 every job ok; 1 stopped early, resumable; 2 bad input or configuration (and
RunBusy); 3 provider unusable; 4 quota; 5 --max-cost reached; 6 finished, but some jobs failed
(--retry-failed redoes them); 7 storage; 130 aborted.
"""

from __future__ import annotations


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
    return f"{path}: [Errno {errno}] {reason}" if errno else f"{path}: {reason}"
