"""The classification task on the shared engine: answers mapped to class names, one CSV per subset."""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from mmad.atomic import atomic_write_text
from mmad.classify.answers import map_answer
from mmad.data.templates import format_severity
from mmad.engine.work import Interpretation, Task

if TYPE_CHECKING:
    from mmad.engine.work import Job, SubsetPlan

CSV_HEADER = ("Path", "Severity", "True Classes", "Predicted Class", "Status", "Decided By")


class ClassifyTask(Task):
    """One per subset: it knows the subset's class names (the numbered list of the prompt)."""

    name = "classify"
    empty = {"predicted": None, "answer": None, "match": None}

    def __init__(self, classes: tuple[str, ...]) -> None:
        self.classes = classes

    def interpret(self, text: str | None, job: Job) -> Interpretation:
        if text is None or not text.strip():
            return Interpretation("parse_failed", dict(self.empty), "empty answer")
        mapped = map_answer(text, self.classes)
        return Interpretation("ok", {"predicted": mapped.predicted, "answer": mapped.answer, "match": mapped.match})

    def write(self, plan: SubsetPlan, best: Mapping[str, dict]) -> Path:
        """Path, severity, true class(es) (comma-joined), predicted class (empty when the job
        failed), status, and who decided (gate / mllm)."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(CSV_HEADER)
        for job in plan.jobs:
            record = best.get(job.key) or {}
            status = record.get("status") or "pending"
            ok = status == "ok"
            decided = ("gate" if record.get("source") == "gate" else "mllm") if ok else ""
            severity = "" if job.severity is None else format_severity(job.severity)
            writer.writerow((job.path, severity, ",".join(job.extra.get("true_classes", ())),
                             record.get("predicted") or "" if ok else "", status, decided))
        atomic_write_text(plan.csv_path, buffer.getvalue())
        return plan.csv_path
