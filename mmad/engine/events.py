"""What the engine tells its listener (the CLI's progress view), and what a run comes to."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from mmad.providers.base import ProviderFailure


@dataclass(frozen=True)
class RunStarted:
    total: int
    todo: int
    already_done: int


@dataclass(frozen=True)
class JobFinished:
    record: dict


@dataclass(frozen=True)
class Retrying:
    kind: str
    attempt: int
    wait_s: float
    message: str


@dataclass(frozen=True)
class Paused:
    """Nobody is admitted for `seconds` (until `until`, wall-clock seconds since the epoch)."""

    seconds: float
    reason: str
    until: float | None = None


@dataclass(frozen=True)
class RunStopped:
    reason: str


@dataclass(frozen=True)
class BatchSubmitted:
    batch_id: str
    requests: int


@dataclass(frozen=True)
class OtherModel:
    """The first answer of a run that names another model than the one asked (once per pair)."""
    asked: str
    answered: str
    url: str


Event = RunStarted | JobFinished | Retrying | Paused | RunStopped | BatchSubmitted | OtherModel


@dataclass
class RunSummary:
    total: int = 0
    already_done: int = 0
    statuses: Counter = field(default_factory=Counter)  # this run's records
    sources: Counter = field(default_factory=Counter)  # live / cache / batch
    usage: Counter = field(default_factory=Counter)  # live tokens this run
    failures: Counter = field(default_factory=Counter)  # failed attempts by kind (retried or not)
    causes: Counter = field(default_factory=Counter)  # why jobs failed, over every job's best record
    examples: dict = field(default_factory=dict)  # cause -> the image of the first job that failed so
    live_requests: int = 0  # HTTP calls made, retries included
    elapsed_s: float = 0.0
    stopped: str | None = None  # why the run ended early
    fatal: ProviderFailure | None = None
    storage_error: str | None = None
    unstored: int = 0  # answers paid for that could not be written anywhere
    budget_stop: bool = False
    remaining: int = 0  # jobs without a final record: to-do for a later run
    failed: int = 0  # jobs whose best record is not ok
    final_statuses: Counter = field(default_factory=Counter)  # best record per job, every job
    csv_paths: list = field(default_factory=list)
    spent: float = 0.0  # USD for this run's live answers (when the model has a price)
    estimated: float = 0.0  # what was expected for those same answers
    url: str = ""
    other_models: Counter = field(default_factory=Counter)  # "asked -> answered": answers naming another model
    pacing: dict = field(default_factory=dict)  # per model: what the rate controller did (RateControl.report)
