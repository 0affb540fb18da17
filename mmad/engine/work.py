"""The units of work every task shares: a job (one request), a subset's plan, and the task that
reads a job's answer and writes the plan's result files.

The engine is the same for every task (cache, limits, retries, records); a `Task` says how to
read the raw answer (`interpret`) and how to write the plan's result files from the best record
of each job (`write`). Scoring (`engine.tasks.SCORE`), classification and multiple-choice QA plug
in the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from mmad.data import datasets
from mmad.data.images import ImageRef, ImageSpec
from mmad.providers.base import Request


@dataclass(frozen=True)
class ImageInput:
    """One image of a request: its identity, its file, and how it is prepared."""

    ref: ImageRef
    path: Path
    spec: ImageSpec


@dataclass(frozen=True)
class Job:
    """One request and the record fields it is filed under."""

    dataset: str
    subset: str
    path: str  # as in the template
    severity: float | None
    query: Path
    request: Request
    key: str
    family: str | None = None  # prompt family (sets the default output-token estimate)
    images: tuple[ImageInput, ...] = ()  # aligned with request.image_refs
    extra: Mapping = field(default_factory=dict)  # task-specific record fields
    follow_up: Callable[[dict], Job | None] | None = None  # the next job of a chain (QA turns)
    # A job answered without any request (a detector's gate decision): {"source": "gate",
    # "status": "ok", "fields": {...}, "reason": "why"}; recorded as is, never sent, never cached.
    local: Mapping | None = None

    @property
    def fields(self) -> dict:
        """What every record of this job carries before the answer's own fields."""
        return {"dataset": self.dataset, "subset": self.subset, "path": self.path, "severity": self.severity,
                **self.extra}

    @property
    def prefix_id(self) -> tuple:
        """Jobs with the same prefix share a provider prompt cache entry."""
        prefix = self.request.parts[:self.request.prefix_parts or 0]
        return (self.request.system, self.request.model) + tuple(
            p.sha256 if isinstance(p, ImageRef) else p for p in prefix)


@dataclass(frozen=True)
class SubsetPlan:
    subset: datasets.Subset
    prompt_name: str
    references: tuple[Path, ...]  # the subset's references when fixed (first / random); () when per query
    jobs: tuple[Job, ...]
    csv_path: Path
    jsonl_path: Path
    task: Task

    @property
    def out_dir(self) -> Path:
        return self.csv_path.parent


@dataclass(frozen=True)
class Interpretation:
    """A raw answer read by a task: `ok` (fields set), `parse_failed` or `refused` (fields empty)."""

    status: str
    fields: Mapping = field(default_factory=dict)
    error: str | None = None


class Task:
    """Base: subclasses set `name`, `empty` (the fields of a record without an answer) and
    implement `interpret` and `write`."""

    name = "task"
    empty: Mapping = {}
    max_reasks = 0  # refused answers are asked again this many times (each a new paid request)

    def interpret(self, text: str | None, job: Job) -> Interpretation:
        raise NotImplementedError

    def write(self, plan: SubsetPlan, best: Mapping[str, dict]) -> Path:
        """Write the plan's result file(s) from `best` (job key -> record); returns the main file."""
        raise NotImplementedError

    def check_record(self, record: Mapping) -> str | None:
        """Why a record read back from the run's JSONL cannot be what this task wrote (a hand edit,
        another tool), or None. An answer is checked on read: a bad one is never written as a result."""
        return None
