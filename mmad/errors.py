"""The error tree. Every message names the file, row, field or variable to fix, never a secret.

    MmadError                 anything the CLI turns into one line and a non-zero exit
    ├── DataError             a dataset, template or result file is missing or malformed
    ├── ConfigError           a flag, prompt, environment variable or price file is wrong
    ├── ProviderError         a provider could not be used at all (auth, quota, capability)
    │   └── QuotaExhausted    billing/quota is spent: stop, the run stays resumable
    └── BudgetExceeded        --max-cost would be passed by the next request
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
