"""Runs as the report sees them: result files grouped by run, with run.json and a family.

A run is one model or detector with one set of settings. Its name is run.json's `run`, else the
result files' name prefix (`<run>_<dataset>_<subset>.csv`). Its family decides the paper's
"best MLLM" / "best conventional" marks: run.json `kind` ("mllm" / "detector"); without run.json,
a JSONL whose records say `source == "local"` (written by the detectors) makes a detector;
anything else is "unknown" (never guessed from a name).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from mmad.analysis.evaluate import SubsetRecord, evaluate_table
from mmad.results.files import JsonlLog, ResultTable, read_runs
from mmad.results.runinfo import read_run_info

FAMILIES = {"mllm": "MLLM", "detector": "conventional", "unknown": "unknown"}
CORRUPT_KEYS = ("corrupt", "corrupt_references")


@dataclass(frozen=True)
class Run:
    """The result tables of one run, its run.json (None when absent) and its family."""

    name: str
    family: str  # "mllm" | "detector" | "unknown"
    info: dict | None
    tables: tuple[ResultTable, ...]

    @property
    def settings(self) -> dict:
        return dict((self.info or {}).get("settings") or {})

    @property
    def corrupt(self) -> str | None:
        return self.settings.get("corrupt") or None

    @property
    def folders(self) -> tuple[Path, ...]:
        return tuple(dict.fromkeys(t.source.parent for t in self.tables))


def sidecar_records(table: ResultTable) -> list[dict]:
    """The JSONL records written beside a result CSV (empty for reference-code CSVs)."""
    return JsonlLog.read(table.source.with_suffix(".jsonl"))


def run_family(info: dict | None, tables: Sequence[ResultTable]) -> str:
    if info is not None:
        kind = info.get("kind")
        return kind if kind in ("mllm", "detector") else "unknown"
    for table in tables:
        records = sidecar_records(table)
        if records and all(r.get("source") == "local" for r in records):
            return "detector"
    return "unknown"


def load_runs(inputs: Sequence[Path], *, data_root: Path | None = None,
              skipped: list[Path] | None = None) -> list[Run]:
    """Every run among the result files named or found in folders, in first-seen order, labelled
    by mmad.results.label_runs (`name (folder)` when two folders hold the same name). Runs of
    another task found in folders are left out and appended to `skipped`."""
    runs = []
    for (label, folder), group in read_runs(list(inputs), data_root=data_root, skipped=skipped).items():
        info = read_run_info(folder)
        runs.append(Run(label, run_family(info, group), info, tuple(group)))
    return runs


def evaluate_runs(runs: Sequence[Run], *, ties: str = "half") -> list[SubsetRecord]:
    """One SubsetRecord per run and subset (the metrics core via mmad.analysis), named by run."""
    return [replace(evaluate_table(table, ties=ties), run=run.name) for run in runs for table in run.tables]
