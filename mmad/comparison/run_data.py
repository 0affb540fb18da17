"""A run on disk as `compare` and `noise` need it: its result tables, run.json, the final JSONL
record of every job, and what the run cost (failures, tokens, $, latency).

A run is a folder of result files (or one result CSV). Its label is run.json's "run", else the
result files' name prefix. The JSONL beside each CSV (`<same stem>.jsonl`) holds one record per
finished job; a later record for the same path supersedes an earlier one (a retry), except that an
`ok` record is never superseded by a later failure.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mmad.errors import DataError
from mmad.results.files import JsonlLog, ResultTable, find_result_files, read_result_file
from mmad.results.runinfo import read_run_info

TOKEN_FIELDS = ("input_tokens", "output_tokens", "cached_input_tokens")
NO_RECORD_OK = "ok (no JSONL)"
NO_RECORD_FAILED = "no score (no JSONL)"

SubsetKey = tuple[str, str]  # (dataset, subset)


@dataclass(frozen=True)
class RunData:
    """One run: label, where it came from, run.json (None for reference folders), tables by subset,
    and per subset the final JSONL record of each path (empty when there is no JSONL)."""

    label: str
    source: Path
    info: dict | None
    tables: dict[SubsetKey, ResultTable]
    records: dict[SubsetKey, dict[str, dict]] = field(default_factory=dict)

    @property
    def settings(self) -> dict | None:
        return None if self.info is None else dict(self.info.get("settings") or {})


def load_run(source: Path) -> RunData:
    """Read every result file of one run; refuses duplicate paths, a subset given twice, and a
    folder that mixes the files of several runs."""
    source = Path(source)
    info = read_run_info(source)
    found = [read_result_file(path) for path in find_result_files([source])]
    labels = sorted({t.run for t in found})
    if info is not None and info.get("run"):
        label = str(info["run"])
    elif len(labels) == 1:
        label = labels[0]
    else:
        raise DataError(f"{source}: holds the result files of several runs ({', '.join(labels)}); "
                        f"name one run folder")
    tables: dict[SubsetKey, ResultTable] = {}
    records: dict[SubsetKey, dict[str, dict]] = {}
    for table in found:
        key = (table.dataset, table.subset)
        if key in tables:
            raise DataError(f"{table.source}: {table.dataset}/{table.subset} is also in {tables[key].source}; "
                            f"one run has one result file per subset")
        _refuse_duplicate_paths(table)
        tables[key] = table
        records[key] = final_records(JsonlLog.read(table.source.with_suffix(".jsonl")))
    return RunData(label, source, info, tables, records)


def load_runs(sources: Iterable[Path]) -> list[RunData]:
    """Several runs; labels that clash get their folder appended so every run stays nameable."""
    runs = [load_run(Path(s)) for s in sources]
    counts = Counter(r.label for r in runs)
    seen: set[str] = set()
    result = []
    for run in runs:
        label = run.label if counts[run.label] == 1 else f"{run.label} ({run.source})"
        if label in seen:
            raise DataError(f"{run.source}: given twice")
        seen.add(label)
        result.append(RunData(label, run.source, run.info, run.tables, run.records))
    return result


def _refuse_duplicate_paths(table: ResultTable) -> None:
    repeated = [path for path, count in Counter(table.paths).items() if count > 1]
    if repeated:
        raise DataError(f"{table.source}: duplicate path(s) {', '.join(repeated[:3])}"
                        f"{' ...' if len(repeated) > 3 else ''}; each image must appear once")


def final_records(records: Iterable[dict]) -> dict[str, dict]:
    """The record that stands for each path: the latest, except that `ok` is never replaced by a
    later failure (a failed retry of an answered job does not erase the answer)."""
    final: dict[str, dict] = {}
    for record in records:
        path = record.get("path") if isinstance(record, dict) else None
        if not isinstance(path, str):
            continue
        previous = final.get(path)
        if previous is not None and previous.get("status") == "ok" and record.get("status") != "ok":
            continue
        final[path] = record
    return final


# --------------------------------------------------------------------------- what a run cost

@dataclass(frozen=True)
class RunSummary:
    """Failures by status, tokens and $ of the final answers, median latency."""

    label: str
    items: int
    statuses: dict[str, int]
    tokens: dict[str, int] | None  # None when no record reports usage (detectors, reference folders)
    cost_usd: float | None
    cost_note: str
    median_latency_s: float | None

    @property
    def failure_rate(self) -> float:
        ok = self.statuses.get("ok", 0) + self.statuses.get(NO_RECORD_OK, 0)
        return math.nan if not self.items else 1 - ok / self.items

    def as_json(self) -> dict:
        return {"run": self.label, "items": self.items, "statuses": self.statuses,
                "failure_rate": None if math.isnan(self.failure_rate) else self.failure_rate,
                "tokens": self.tokens, "cost_usd": self.cost_usd, "cost_note": self.cost_note,
                "median_latency_s": self.median_latency_s}


def summarize_run(run: RunData, prices=None) -> RunSummary:
    """Status of every CSV row (from its final JSONL record; rows without one count by their score),
    tokens summed over the final records, $ when run.json names a priced model (batch answers at
    the batch price), median `latency_s`. `prices` is a `mmad.cost.PriceTable` (loaded when None)."""
    statuses: Counter = Counter()
    finals: list[dict] = []
    for key, table in run.tables.items():
        recorded = run.records.get(key, {})
        for path, score in zip(table.paths, table.scores):
            record = recorded.get(path)
            if record is None:
                statuses[NO_RECORD_OK if math.isfinite(score) else NO_RECORD_FAILED] += 1
            else:
                statuses[str(record.get("status", "unknown"))] += 1
                finals.append(record)
    usage = _usage_totals(finals)
    tokens = {name: sum(total[name] for total in usage.values()) for name in TOKEN_FIELDS} if usage else None
    latencies = [float(r["latency_s"]) for r in finals if isinstance(r.get("latency_s"), (int, float))]
    cost, note = _cost(run, finals, usage, prices)
    return RunSummary(run.label, sum(len(t.paths) for t in run.tables.values()), dict(statuses), tokens,
                      cost, note, statistics.median(latencies) if latencies else None)


def _cost(run: RunData, finals: Sequence[dict], usage: dict[bool, Counter], prices) -> tuple[float | None, str]:
    model = (run.settings or {}).get("model")
    if not model:
        return None, "no model in run.json" if run.info is not None else "no run.json"
    if not finals:
        return None, "no JSONL records"
    if prices is None:
        from mmad.cost.estimate import load_prices  # imported here: only runs with a model need prices
        prices = load_prices()
    price = prices.lookup(str(model))
    if price is None:
        return None, f"model {model!r} is not in the price table"
    total = 0.0
    for batch, sums in usage.items():
        # ModelPrice.cost is linear but for uncached input = max(input - cached - written, 0) per
        # answer; feeding it the per-answer sum of that keeps the total exact
        billed = {"input_tokens": sums["uncached"] + sums["cached_input_tokens"] + sums["cache_write_tokens"],
                  "cached_input_tokens": sums["cached_input_tokens"],
                  "cache_write_tokens": sums["cache_write_tokens"], "output_tokens": sums["output_tokens"]}
        total += price.cost(billed, batch=batch)
    return total, f"{price.name} prices"


def _usage_totals(finals: Sequence[dict]) -> dict[bool, Counter]:
    """Token fields summed per pricing (batch or not), plus `uncached` input summed per answer.
    Records without usage are skipped; non-numeric fields count as 0 (never a crash)."""
    totals: dict[bool, Counter] = {}
    for record in finals:
        usage = record.get("usage")
        if not isinstance(usage, dict) or not usage:
            continue
        fields = {name: _tokens(usage.get(name)) for name in (*TOKEN_FIELDS, "cache_write_tokens")}
        total = totals.setdefault(record.get("source") == "batch", Counter())
        total.update(fields)
        total["uncached"] += max(fields["input_tokens"] - fields["cached_input_tokens"] - fields["cache_write_tokens"], 0)
    return totals


def _tokens(value) -> int:
    return int(value) if isinstance(value, (int, float)) and math.isfinite(value) else 0
