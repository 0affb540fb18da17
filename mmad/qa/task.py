"""The engine's task for MMAD-QA: read a reply as an option letter; write the dataset's result CSV.

A refusal (see mmad.qa.parsing) is asked again up to `max_reasks` = 4 times, each a new paid
request: 5 requests in all, gpt4o.py's `max_retries = 5`. A reply without a usable letter is
`parse_failed` with the raw text kept, never a letter. `rule` is the answer-parsing rule
(`official` or `mmad`); parsing happens after the cache, so changing it costs nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from mmad.engine.work import Interpretation, Task
from mmad.qa.parsing import parse_choice
from mmad.qa.results import QARow, write_qa_csv

if TYPE_CHECKING:
    from mmad.engine.work import Job, SubsetPlan
    from mmad.qa.data import Question


@runtime_checkable
class Resolvable(Protocol):
    """A plan that maps its records back to every question (mmad.qa.jobs.QAPlan, which imports this module)."""

    def resolve(self, best: Mapping[str, dict]) -> list[tuple[Question, dict | None]]: ...


class QATask(Task):
    name = "qa"
    empty = {"letter": None, "match": None, "similarity": None}
    max_reasks = 4  # 5 requests in all

    def __init__(self, options: Mapping[str, Mapping[str, str]], rule: str = "official") -> None:
        self.options = options  # question id -> {letter: option text}
        self.rule = rule

    def interpret(self, text: str | None, job: Job) -> Interpretation:
        choice = parse_choice(text, self.options[job.extra["question_id"]], self.rule)
        if choice.refused:
            return Interpretation("refused", {}, choice.error)
        if choice.letter is None:
            return Interpretation("parse_failed", {"similarity": choice.similarity}, choice.error)
        return Interpretation("ok", {"letter": choice.letter, "match": choice.how, "similarity": choice.similarity})

    def write(self, plan: SubsetPlan, best: Mapping[str, dict]) -> Path:
        assert isinstance(plan, Resolvable), "the QA task runs QA plans only"
        rows = []
        for question, record in plan.resolve(best):
            status = record["status"] if record is not None else "pending"
            predicted = record.get("letter") if record is not None and status == "ok" else None
            note = "" if record is None or status == "ok" else str(record.get("cause") or record.get("error") or "")
            rows.append(QARow(question.qid, question.image, question.subtask, question.answer, predicted, status,
                              note))
        write_qa_csv(plan.csv_path, rows)
        return plan.csv_path
