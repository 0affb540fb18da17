"""The scoring task of `mmad score`: `Anomaly Score: N` read from the answer, results written in
the benchmark's CSV format. (Classification and MMAD-QA define their own tasks beside theirs.)"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from mmad.data.templates import write_result_csv
from mmad.engine.work import Interpretation, Job, SubsetPlan, Task
from mmad.prompts.parsing import parse_answer


class ScoreTask(Task):
    """`Anomaly Score: N` (0-100); results in the benchmark's CSV format."""

    name = "score"
    empty = {"score": None, "reason": None}

    def interpret(self, text: str | None, job: Job) -> Interpretation:
        parsed = parse_answer(text)
        if not parsed.ok:
            return Interpretation("parse_failed", {"score": None, "reason": parsed.reason}, parsed.error)
        return Interpretation("ok", {"score": parsed.score, "reason": parsed.reason})

    def check_record(self, record: Mapping) -> str | None:
        if record.get("status") != "ok":
            return None
        score = record.get("score")
        if isinstance(score, bool) or not isinstance(score, int | float) or not 0 <= score <= 100:
            return f"status ok with score {json.dumps(score)[:40]}, not a number from 0 to 100"
        return None

    def write(self, plan: SubsetPlan, best: Mapping[str, dict]) -> Path:
        rows: list[tuple[str, float, float | None]] = []
        for job in plan.jobs:
            assert job.severity is not None, "a score job's severity is its template row's"
            record = best.get(job.key)
            score = record.get("score") if record and record.get("status") == "ok" else None
            rows.append((job.path, job.severity, score))
        write_result_csv(plan.csv_path, rows)
        return plan.csv_path


SCORE = ScoreTask()
