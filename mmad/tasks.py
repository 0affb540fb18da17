"""What an answer means, per kind of job, and which result files a plan writes.

The engine is the same for every task (cache, limits, retries, records); a `Task` says how to
read the raw answer (`interpret`) and how to write the plan's result files from the best record
of each job (`write`). Scoring is the task of `mmad score`; classification and multiple-choice
QA plug in the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from mmad.parsing import parse_answer
from mmad.results import write_result_csv

if TYPE_CHECKING:
    from mmad.jobs import Job, SubsetPlan


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

    def interpret(self, text: str | None, job: "Job") -> Interpretation:
        raise NotImplementedError

    def write(self, plan: "SubsetPlan", best: Mapping[str, dict]) -> Path:
        """Write the plan's result file(s) from `best` (job key -> record); returns the main file."""
        raise NotImplementedError


class ScoreTask(Task):
    """`Anomaly Score: N` (0-100); results in the benchmark's CSV format."""

    name = "score"
    empty = {"score": None, "reason": None}

    def interpret(self, text: str | None, job: "Job") -> Interpretation:
        parsed = parse_answer(text)
        if not parsed.ok:
            return Interpretation("parse_failed", {"score": None, "reason": parsed.reason}, parsed.error)
        return Interpretation("ok", {"score": parsed.score, "reason": parsed.reason})

    def write(self, plan: "SubsetPlan", best: Mapping[str, dict]) -> Path:
        rows = []
        for job in plan.jobs:
            record = best.get(job.key)
            score = record.get("score") if record and record.get("status") == "ok" else None
            rows.append((job.path, job.severity, score))
        write_result_csv(plan.csv_path, rows)
        return plan.csv_path


SCORE = ScoreTask()
