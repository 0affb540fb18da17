"""Job records: which record of a job counts, why a job failed, and the JSONL logs of a run.

A run appends one record per finished job to `<out>/<run>_<dataset>_<subset>.jsonl`. A job can
have several records (a retried failure, a concurrent run before the lock existed); the one
that counts is the newest `ok` record if there is one, else the newest record: a later failure
never hides an earlier success. Records are matched to jobs by cache key, so a record made with
other settings (another prompt, other references, a changed image) never counts as done.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

from mmad.engine.events import OtherModel
from mmad.errors import DataError, StorageError, describe_os_error, os_failure
from mmad.providers.base import ProviderFailure
from mmad.reading import open_file
from mmad.results.files import JsonlLog

FINAL_STATUSES = ("ok", "parse_failed", "refused", "error")


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def make_record(job, empty: Mapping, status: str, *, source: str, attempts: int, fields: Mapping | None = None,
                raw: str | None = None, usage: dict | None = None, latency: float | None = None,
                error: str | None = None, cause: str | None = None) -> dict:
    """A job's record: its own fields, the task's answer fields (or `empty`), and what happened."""
    return {**job.fields, **empty, **(fields or {}), "status": status, "raw": raw, "usage": usage or {},
            "latency_s": None if latency is None else round(latency, 4), "attempts": attempts,
            "source": source, "error": error, "cause": cause, "key": job.key, "time": now_iso()}


def answer_record(job, task, value: Mapping, *, source: str, attempts: int) -> dict:
    """The record of an answer (live, cached or from a batch), read by the job's task; `model` is
    the model the answer names (the response's own field), which may differ from the one asked."""
    interpretation = task.interpret(value.get("text"), job)
    cause = None if interpretation.status == "ok" else (
        "refused by the model" if interpretation.status == "refused" else f"answer: {interpretation.error}")
    record = make_record(job, task.empty, interpretation.status, source=source, attempts=attempts,
                         fields=interpretation.fields, raw=value.get("text"), usage=value.get("usage"),
                         latency=value.get("latency_s"), error=interpretation.error, cause=cause)
    record["model"] = value.get("model")
    return record


def other_model(asked: str, answered: object) -> str | None:
    """The model an answer names when it is not the one asked, else None. A vendor's alias answered
    by its dated snapshot (`gpt-4o` -> `gpt-4o-2024-08-06`, `claude-3-5-sonnet-latest` ->
    `claude-3-5-sonnet-20241022`) or by a tag (`llava` -> `llava:latest`) is the same model."""
    if not isinstance(answered, str) or not answered or answered == asked:
        return None
    base = re.escape(asked.removesuffix("-latest"))
    if re.fullmatch(base + r"(-\d{4}-?\d{2}-?\d{2}|-\d{4}|:[\w.-]+)?", answered):
        return None
    return answered


def note_model(summary, asked: str, record: Mapping) -> OtherModel | None:
    """Count an answer that names another model than `asked`; the event for the first of its pair."""
    answered = other_model(asked, record.get("model"))
    if answered is None:
        return None
    pair = f"{asked} -> {answered}"
    summary.other_models[pair] += 1
    return OtherModel(asked, answered, summary.url) if summary.other_models[pair] == 1 else None


def merge_record(best: dict[str, dict], record: Mapping) -> None:
    """Let a newer record count for its job unless it is a failure after a success."""
    key = record.get("key")
    if not key or record.get("status") not in FINAL_STATUSES:
        return
    previous = best.get(key)
    if previous is not None and previous["status"] == "ok" and record["status"] != "ok":
        return
    best[key] = dict(record)


def best_records(records: Iterable[Mapping]) -> dict[str, dict]:
    """The record that counts per job key (see the module docstring)."""
    best: dict[str, dict] = {}
    for record in records:
        merge_record(best, record)
    return best


def account(summary, plan, best: Mapping[str, dict]) -> None:
    """Add a plan's outcome to a run summary: jobs left, final statuses, why jobs failed."""
    for job in plan.jobs:
        record = best.get(job.key)
        if record is None:
            summary.remaining += 1
            continue
        summary.final_statuses[record["status"]] += 1
        if record["status"] != "ok":
            summary.failed += 1
            cause = record.get("cause") or record.get("error") or record["status"]
            summary.causes[cause] += 1
            summary.examples.setdefault(cause, record.get("path") or job.path)


def cause_of(failure: ProviderFailure) -> str:
    """A short, countable cause for the summary ("server error (HTTP 500)", "connection refused")."""
    if failure.kind == "transient":
        if failure.status:
            return f"server error (HTTP {failure.status})"
        text = str(failure)
        return "timeout" if "timed out" in text else "truncated answer" if "truncated" in text else "server error"
    if failure.kind == "connection":
        text = str(failure).lower()
        for marker, cause in (("does not resolve", "host name does not resolve"), ("refused", "refused"),
                              ("reset", "reset"), ("unreachable", "unreachable"), ("ssl", "ssl")):
            if marker in text:
                return f"connection: {cause}"
        return "connection error"
    if failure.kind == "protocol":
        return "protocol: not the API's JSON"
    if failure.kind == "bad_request":
        return f"bad request (HTTP {failure.status or 400})"
    if failure.kind == "rate_limit":
        return "rate limited for too long"
    return failure.kind


def interleave(groups: Sequence[Sequence]) -> list:
    """Round-robin over groups (variants of a grid), so a long grid makes progress on all."""
    out = []
    longest = max((len(g) for g in groups), default=0)
    for index in range(longest):
        for group in groups:
            if index < len(group):
                out.append(group[index])
    return out


class RunLogs:
    """The JSONL files of a run, opened on first append; every failure is a StorageError naming
    the file and the errno."""

    def __init__(self) -> None:
        self._logs: dict[Path, JsonlLog] = {}

    def read(self, path: Path) -> list[dict]:
        try:
            return JsonlLog.read(path)
        except (OSError, UnicodeDecodeError) as exc:
            raise StorageError(f"cannot read {describe_os_error(path, exc)}") from None

    def append(self, path: Path, record: dict) -> None:
        try:
            log = self._logs.get(path)
            if log is None:
                log = self._logs[path] = JsonlLog(path)
            log.append(record)
        except OSError as exc:
            raise os_failure("cannot write", path, exc) from None

    def flush(self, path: Path) -> None:
        log = self._logs.get(path)
        if log is not None:
            try:
                log.flush()
            except OSError as exc:
                raise StorageError(f"cannot write {describe_os_error(path, exc)}") from None

    def close(self) -> None:
        for path, log in self._logs.items():
            try:
                log.close()
            except OSError:
                pass


def check_records(plan, records: Iterable[Mapping]) -> None:
    """Refuse a run whose JSONL holds a record its task could not have written (a score edited by
    hand): one line naming the file, the line and the field, never a bad value in the results."""
    for record in records:
        problem = plan.task.check_record(record)
        if problem is not None:
            raise DataError(f"{plan.jsonl_path}: line {_line_of(plan.jsonl_path, record)} ({record.get('path')}): "
                            f"{problem}; edited by hand? Delete that line (the answer comes back from the "
                            f"response cache, free) or start over with --fresh")


def _line_of(path, record: Mapping) -> str:
    with open_file(path, "r", encoding="utf-8", errors="replace") as handle:
        for number, line in enumerate(handle, start=1):
            try:
                if json.loads(line) == record:
                    return str(number)
            except ValueError:
                continue
    return "?"
