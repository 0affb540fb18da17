"""One run's items as columns: what the item table shows, sorts and filters, read once per file
version.

An item is one row of a result file (an image; for QA one question), with the record that counts
for it (mmad.run_data.final_records: the latest, an `ok` never replaced by a later failure). Its
status is that record's; without one it is `to-do` (a JSONL exists, so the run has not answered
it yet), or `ok (no JSONL)` / `no score (no JSONL)` for the reference scripts' CSVs.

**How mis-ranked an item is** (score runs): the share of its cross-level pairs in its subset that
it gets wrong, ties counting half: pairs with a lower-level item scored higher, and with a
higher-level item scored lower. It is the item's own part of 1 - C-index: a normal image scored
above most anomalous ones, or a severe one below most milder ones, comes first. For classify and
QA runs a wrong answer is 1 and a right one 0.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mmad.comparison.run_data import NO_RECORD_FAILED, NO_RECORD_OK, final_records
from mmad.metrics import severity_levels
from mmad.reading import open_file, read_text
from mmad.results.files import JsonlLog, read_result_file
from mmad.view.catalog import ResultFile, RunFiles

TODO = "to-do"
FAILED = ("parse_failed", "refused", "error", NO_RECORD_FAILED)
REASON_CHARS = 240


@dataclass
class Items:
    """Columns of one run, in subset order, then file order."""

    subsets: list[str] = field(default_factory=list)
    sub: list[int] = field(default_factory=list)
    key: list[str] = field(default_factory=list)  # the item within its subset: path, or QA question id
    path: list[str] = field(default_factory=list)  # the image (template path; QA: image path)
    severity: list[float | None] = field(default_factory=list)
    score: list[float | None] = field(default_factory=list)
    status: list[str] = field(default_factory=list)
    source: list[str | None] = field(default_factory=list)
    tokens: list[int | None] = field(default_factory=list)
    latency: list[float | None] = field(default_factory=list)
    attempts: list[int | None] = field(default_factory=list)
    reason: list[str | None] = field(default_factory=list)
    raw: list[str | None] = field(default_factory=list)
    answer: list[str | None] = field(default_factory=list)  # QA letter / predicted class
    truth: list[str | None] = field(default_factory=list)  # QA correct letter / true classes
    extra: list[str | None] = field(default_factory=list)  # QA subtask
    misrank: list[float | None] = field(default_factory=list)
    finals: list[dict | None] = field(default_factory=list, repr=False)
    files: list[ResultFile] = field(default_factory=list, repr=False)

    def __len__(self) -> int:
        return len(self.key)

    def level(self, index: int) -> int | None:
        value = self.severity[index]
        return None if value is None else int(math.ceil(value))


def read_records(path: Path | None) -> list[dict]:
    """The records of a JSONL, as mmad.results.JsonlLog.read gives them, parsed in one call (three
    times faster on a large file); a torn or damaged line sends it to the line-by-line reader."""
    if path is None:
        return []
    try:
        text = read_text(path, "utf-8", errors="replace")
    except FileNotFoundError:
        return []
    lines = [line for line in text.split("\n") if line.strip()]
    try:
        records = json.loads("[" + ",".join(lines) + "]")
    except ValueError:
        return JsonlLog.read(path)
    return [record for record in records if isinstance(record, dict)]


def _number(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) \
        else None


def _tokens(record: dict | None) -> int | None:
    usage = (record or {}).get("usage")
    if not isinstance(usage, dict) or not usage:
        return None
    return int(sum(v for k, v in usage.items() if k in ("input_tokens", "output_tokens") and _number(v)))


def _reason(record: dict | None) -> str | None:
    if not record:
        return None
    text = record.get("reason") or record.get("error") or record.get("cause")
    return None if text is None else str(text)[:REASON_CHARS]


Row = tuple  # (key, path, severity, score, status, record, answer, truth, extra)


def _extend(items: Items, sub: int, rows: list[Row]) -> None:
    """Append one file's rows, column by column."""
    if not rows:
        return
    keys, paths, severities, scores, statuses, records, answers, truths, extras = zip(*rows)
    empty: dict = {}
    found = [r or empty for r in records]
    items.sub.extend([sub] * len(rows))
    items.key.extend(keys)
    items.path.extend(paths)
    items.severity.extend(severities)
    items.score.extend(scores)
    items.status.extend(statuses)
    items.source.extend([r.get("source") for r in found])
    items.tokens.extend([_tokens(r) for r in found])
    items.latency.extend([_number(r.get("latency_s")) for r in found])
    items.attempts.extend([a if isinstance(a := r.get("attempts"), int) else None for r in found])
    items.reason.extend([_reason(r) for r in found])
    items.raw.extend([None if (raw := r.get("raw")) is None else str(raw) for r in found])
    items.answer.extend(answers)
    items.truth.extend(truths)
    items.extra.extend(extras)
    items.finals.extend(records)


def _status(record: dict | None, has_log: bool, score: float | None) -> str:
    if record is not None:
        return str(record.get("status") or "unknown")
    if has_log:
        return TODO
    return NO_RECORD_OK if score is not None else NO_RECORD_FAILED


def _score_file(items: Items, sub: int, result: ResultFile) -> None:
    finals = final_records(read_records(result.jsonl))
    logged = result.jsonl is not None
    rows: list[Row] = []
    seen = set()
    if result.csv is not None:
        table = read_result_file(result.csv, result.dataset, result.subset)
        for path, severity, score in zip(table.paths, table.severity.tolist(), table.scores.tolist()):
            record = finals.get(path)
            value = score if math.isfinite(score) else None
            rows.append((path, path, severity, value, _status(record, logged, value), record, None, None, None))
            seen.add(path)
    for path, record in finals.items():  # answered, but no CSV row yet (a stopped run)
        if path not in seen:
            value = _number(record.get("score")) if record.get("status") == "ok" else None
            rows.append((path, path, _number(record.get("severity")), value, _status(record, True, value), record,
                         None, None, None))
    _extend(items, sub, rows)


def _rows(path: Path | None) -> list[dict]:
    if path is None:
        return []
    with open_file(path, "r", encoding="utf-8-sig", newline="") as handle:
        return list(csv.DictReader(handle))


def _classify_file(items: Items, sub: int, result: ResultFile) -> None:
    finals = final_records(read_records(result.jsonl))
    out: list[Row] = []
    for row in _rows(result.csv) or [{"Path": p} for p in finals]:
        path = row.get("Path", "")
        record = finals.get(path)
        truth = row.get("True Classes") or ",".join((record or {}).get("true_classes") or []) or None
        answer = row.get("Predicted Class") or (record or {}).get("predicted") or None
        severity = _number((record or {}).get("severity"))
        if severity is None and row.get("Severity"):
            try:
                severity = float(row["Severity"])
            except ValueError:
                severity = None
        out.append((path, path, severity, None, _status(record, result.jsonl is not None, None), record, answer,
                    truth, None))
    _extend(items, sub, out)


def _qa_file(items: Items, sub: int, result: ResultFile) -> None:
    records = read_records(result.jsonl)
    finals = final_records({**r, "path": r.get("question_id")} for r in records)
    rows = _rows(result.csv) or [{"question_id": q, "image": (r.get("path") or ""), "subtask": r.get("subtask"),
                                  "correct": r.get("correct")} for q, r in finals.items()]
    out: list[Row] = []
    for row in rows:
        qid = row.get("question_id", "")
        record = finals.get(qid)
        status = row.get("status") if row.get("status") and row.get("status") != "pending" else \
            _status(record, result.jsonl is not None, None)
        out.append((qid, row.get("image", ""), None, None, status, record,
                    row.get("predicted") or (record or {}).get("letter") or None, row.get("correct") or None,
                    row.get("subtask") or None))
    _extend(items, sub, out)


def load_items(run: RunFiles) -> Items:
    """Every item of every result file of the run, with its mis-rank."""
    items = Items()
    reader = {"qa": _qa_file, "classify": _classify_file}.get(run.kind, _score_file)
    for sub, result in enumerate(run.files):
        items.subsets.append(result.label)
        items.files.append(result)
        reader(items, sub, result)
    items.misrank = misranks(items, run.kind)
    return items


def misranks(items: Items, kind: str) -> list[float | None]:
    """How mis-ranked each item is (see the module docstring); None where it has no answer."""
    if kind in ("qa", "classify"):
        return [None if (a is None or s != "ok") else float(not _correct(a, t))
                for a, t, s in zip(items.answer, items.truth, items.status)]
    out: list[float | None] = [None] * len(items)
    sub = np.asarray(items.sub, dtype=np.int64)
    scores = np.array([np.nan if s is None else s for s in items.score], dtype=float)
    severity = np.array([np.nan if s is None else s for s in items.severity], dtype=float)
    for index in range(len(items.subsets)):
        rows = np.flatnonzero((sub == index) & np.isfinite(scores) & np.isfinite(severity))
        if rows.size < 2:
            continue
        levels = severity_levels(severity[rows])
        values = scores[rows]
        wrong = np.zeros(rows.size)
        for level in np.unique(levels):
            others = np.sort(values[levels == level])
            below = np.searchsorted(others, values, "left")  # their scores below each item's
            above = others.size - np.searchsorted(others, values, "right")
            tied = others.size - below - above
            wrong += np.where(levels > level, above, 0) + np.where(levels < level, below, 0)
            wrong += np.where(levels != level, 0.5 * tied, 0)
        _, inverse, sizes = np.unique(levels, return_inverse=True, return_counts=True)
        counts = (rows.size - sizes[inverse]).astype(float)  # the item's cross-level pairs
        shares = np.divide(wrong, counts, out=np.full(rows.size, np.nan), where=counts > 0)
        for row, share in zip(rows, shares):
            out[row] = None if math.isnan(share) else round(float(share), 6)
    return out


def _correct(answer: str, truth: str | None) -> bool:
    """A classify answer is right when it names one of the item's true classes (a QA letter: equal)."""
    return bool(truth) and answer in str(truth).split(",")
