"""Result files: reading ours and the reference implementation's, writing atomically.

A result CSV has the template's columns `Path,Severity,Anomaly Score`; an empty score means the
job failed (the JSONL beside it says why). The reference scripts' quirks are accepted: a `Score`
column (its PatchCore script) and `Area` instead of `Severity` (its multidog script).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from mmad.data.datasets import REGISTRY, discover
from mmad.data.templates import (
    MAX_SEVERITY,
    PATH_COLUMNS,
    SCORE_COLUMNS,
    SEVERITY_COLUMNS,
    find_column,
    first_rows,
    parse_number,
    parse_severity,
    read_csv_rows,
)
from mmad.errors import DataError
from mmad.paths import describe_target
from mmad.reading import open_file
from mmad.results.runinfo import RUN_FILE, read_run_info


@dataclass(frozen=True)
class ResultTable:
    """One scored subset: severities as written and scores (NaN where the job failed)."""

    source: Path
    dataset: str
    subset: str
    paths: tuple[str, ...]
    severity: np.ndarray
    scores: np.ndarray
    run: str = ""  # which model/prompt/method produced it (`<run>_<dataset>_<subset>.csv`)


def known_pairs(extra: Iterable[tuple[str, str]] = ()) -> list[tuple[str, str]]:
    """(dataset, subset) of the registry plus any discovered ones, longest names first."""
    pairs = {(spec.name, subset) for spec in REGISTRY.values() for subset in spec.subsets}
    pairs.update(extra)
    return sorted(pairs, key=lambda pair: len(template_stem(*pair)), reverse=True)


def template_stem(dataset: str, subset: str) -> str:
    return dataset if dataset == subset else f"{dataset}_{subset}"


def identify(stem: str, pairs: Sequence[tuple[str, str]] | None = None) -> tuple[str, str] | None:
    """(dataset, subset) from a result file name: `<model>_<dataset>_<subset>` or `<model>_<dataset>`.

    Known (and discovered) names are matched, longest first; None when nothing matches.
    """
    for dataset, subset in pairs if pairs is not None else known_pairs():
        name = template_stem(dataset, subset)
        if stem == name or stem.endswith("_" + name):
            return dataset, subset
    return None


def _sidecar_note(path: Path) -> str:
    """Why the JSONL beside a result CSV, which would have named its data, did not: it is missing,
    no regular file, or its first record is unreadable."""
    sidecar = path.with_suffix(".jsonl")
    found = describe_target(sidecar)
    if found == "missing":
        return ""
    if found != "a regular file":
        return f", and its record file {sidecar.name}, which would say, is {found}"
    return f", and the first record of {sidecar.name} does not name them"


def _sidecar_identity(path: Path) -> tuple[str, str] | None:
    """(dataset, subset) from the first record of our JSONL beside the CSV, when there is one."""
    sidecar = path.with_suffix(".jsonl")
    try:
        with open_file(sidecar, "r", encoding="utf-8") as handle:
            first = json.loads(handle.readline())
        return str(first["dataset"]), str(first["subset"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def run_label(path: Path, dataset: str, subset: str) -> str:
    """The file-name prefix before `_<dataset>_<subset>`; a file named just `<dataset>_<subset>`
    takes its folder's name; any other name (`my-scores.csv`) is the run's name itself."""
    stem = template_stem(dataset, subset)
    if path.stem.endswith("_" + stem) and len(path.stem) > len(stem) + 1:
        return path.stem[: -len(stem) - 1]
    if path.stem == stem:
        return path.resolve().parent.name
    return path.stem


def read_result_file(path: Path, dataset: str | None = None, subset: str | None = None,
                     pairs: Sequence[tuple[str, str]] | None = None) -> ResultTable:
    """Read a result CSV; an empty score is a failed row, a non-numeric one is an error."""
    header, rows, lines = read_csv_rows(path)
    path_col = find_column(header, PATH_COLUMNS, path, "path")
    sev_col = find_column(header, SEVERITY_COLUMNS, path, "severity")
    score_col = find_column(header, SCORE_COLUMNS, path, "score")
    if not rows:
        raise DataError(f"{path}: no rows")
    severities = np.empty(len(rows))
    scores = np.full(len(rows), np.nan)
    bad_severity: list[int] = []
    bad_score: list[int] = []
    missing_path = [line for row, line in zip(rows, lines) if path_col >= len(row) or not row[path_col].strip()]
    if missing_path:
        raise DataError(f"{path}: no path at line(s) {first_rows(missing_path)}")
    for i, row in enumerate(rows):
        sev = parse_severity(row[sev_col]) if sev_col < len(row) else None
        if sev is None:
            bad_severity.append(lines[i])
        else:
            severities[i] = sev
        cell = row[score_col].strip() if score_col < len(row) else ""
        if cell and cell.lower() not in ("nan", "none", "null"):
            value = parse_number(cell)
            if value is None:
                bad_score.append(lines[i])
            else:
                scores[i] = value
    if bad_severity:
        raise DataError(f"{path}: a severity that is not a number from 0 to {MAX_SEVERITY:g} (non-numeric, negative, "
                        f"infinite or out of range) at line(s) {first_rows(bad_severity)}")
    if bad_score:
        raise DataError(f"{path}: non-numeric score at line(s) {first_rows(bad_score)} "
                        f"(leave the cell empty for a failed row)")
    names = [row[path_col] for row in rows]
    seen: dict[str, int] = {}
    duplicates = []
    for line, name in zip(lines, names):
        if name in seen:
            duplicates.append(f"{name!r} (lines {seen[name]} and {line})")
        seen.setdefault(name, line)
    if duplicates:
        raise DataError(f"{path}: duplicate path(s) {', '.join(duplicates[:3])}"
                        f"{f' (+{len(duplicates) - 3} more)' if len(duplicates) > 3 else ''}: each image must "
                        f"appear once (two runs written into one file?)")
    if dataset is None or subset is None:
        guessed = _sidecar_identity(path) or identify(path.stem, pairs)
        if guessed is None:
            raise DataError(f"{path}: cannot tell the dataset and subset from the file name (expected "
                            f"<run>_<dataset>_<subset>.csv of a known or discovered dataset){_sidecar_note(path)}; "
                            f"pass --dataset and --subset, or --root for a dataset of your own")
        dataset, subset = dataset or guessed[0], subset or guessed[1]
    return ResultTable(path, dataset, subset, tuple(row[path_col] for row in rows), severities, scores,
                       run_label(path, dataset, subset))


TASK_NAMES = {"score": "anomaly-score", "qa": "MMAD-QA", "classify": "anomaly-classification"}


def run_task(folder: Path) -> str:
    """What the run in `folder` did, from its run.json (`score` when there is none)."""
    info = read_run_info(folder)
    task = ((info or {}).get("settings") or {}).get("task")
    return str(task) if task else "score"


def find_result_files(inputs: Sequence[Path], *, task: str = "score",
                      skipped: list[Path] | None = None) -> list[Path]:
    """CSV files named directly or found (recursively) in folders, in a stable order. Runs of
    another task found in a folder are left out (their folders appended to `skipped`); one named
    directly is an error saying which --task reads it."""
    files: list[Path] = []
    tasks: dict[Path, str] = {}
    skipped = skipped if skipped is not None else []  # said in the error when nothing else is found

    def task_of(folder: Path) -> str:
        if folder not in tasks:
            tasks[folder] = run_task(folder)
        return tasks[folder]
    for item in inputs:
        if item.is_dir():
            for path in sorted(p for p in item.rglob("*.csv") if not p.name.endswith("_template.csv")):
                if task_of(path.parent) == task:
                    files.append(path)
                elif path.parent not in skipped:
                    skipped.append(path.parent)
        elif item.is_file():
            other = task_of(item.parent)
            if other != task:
                raise DataError(f"{item}: a result of an {TASK_NAMES.get(other, other)} run ({item.parent / RUN_FILE}); "
                                f"read it with `mmad eval --task {other}`")
            files.append(item)
        else:
            found = describe_target(item)
            raise DataError(f"{item}: no such file or folder" if found == "missing"
                            else f"{item} is {found}, not a result file or folder")
    if not files:
        other = f" of {TASK_NAMES.get(task, task)} runs; {skipped_note(skipped)}" if skipped else ""
        raise DataError(f"no result CSV files in {', '.join(str(i) for i in inputs)}{other}")
    return files


def unique_files(files: Sequence[Path]) -> list[Path]:
    """Each file once (a file named twice, or named and found in a folder), first-seen order."""
    seen: set[Path] = set()
    out = []
    for path in files:
        if path.resolve() not in seen:
            seen.add(path.resolve())
            out.append(path)
    return out


def skipped_note(skipped: Sequence[Path]) -> str | None:
    """One line naming the runs of another task that a folder scan left out, and how to read them."""
    if not skipped:
        return None
    by_task: dict[str, list[str]] = {}
    for folder in skipped:
        by_task.setdefault(run_task(folder), []).append(str(folder))
    parts = [f"{', '.join(folders)} ({TASK_NAMES.get(task, task)}: `mmad eval --task {task}`)"
             for task, folders in by_task.items()]
    return "left out runs of another task: " + "; ".join(parts)


def label_runs(tables: Sequence[ResultTable]) -> dict[tuple[str, Path], list[ResultTable]]:
    """Tables grouped by run: a run is one name in one folder (the name from run.json, else the
    file names). Two folders holding the same name (a run and its export, two copies) are told
    apart as `name (folder)`; one run with two files for a subset is an error."""
    groups: dict[tuple[str, Path], list[ResultTable]] = {}
    infos: dict[Path, dict | None] = {}  # run.json, read once per folder
    for table in tables:
        folder = table.source.parent.resolve()
        if folder not in infos:
            infos[folder] = read_run_info(folder)
        info = infos[folder]
        name = str(info.get("run") or table.run) if info else table.run
        groups.setdefault((name, folder), []).append(table)
    labelled: dict[tuple[str, Path], list[ResultTable]] = {}
    for (name, folder), group in groups.items():
        twins = [f for n, f in groups if n == name]
        label = f"{name} ({distinct_tails(twins)[folder]})" if len(twins) > 1 else name
        seen: dict[tuple[str, str], Path] = {}
        for table in group:
            key = (table.dataset, table.subset)
            if key in seen:
                raise DataError(f"run {label!r} has two result files for {table.dataset}/{table.subset}: "
                                f"{seen[key]} and {table.source}")
            seen[key] = table.source
        labelled[(label, folder)] = [replace(t, run=label) for t in group]
    return labelled


def read_runs(inputs: Sequence[Path], *, data_root: Path | None = None, dataset: str | None = None,
              subset: str | None = None, skipped: list[Path] | None = None
              ) -> dict[tuple[str, Path], list[ResultTable]]:
    """Every result file named or found in folders, read once and grouped by run (label_runs).
    Datasets discovered under `data_root` are recognised in file names besides the registry's;
    runs of another task found in folders are left out and appended to `skipped`."""
    extra = [(s.dataset, s.subset) for s in discover(data_root)] if data_root else []
    pairs = known_pairs(extra)
    files = unique_files(find_result_files(inputs, skipped=skipped))
    return label_runs([read_result_file(path, dataset, subset, pairs=pairs) for path in files])


def distinct_tails(folders: Sequence[Path]) -> dict[Path, str]:
    """Each folder by the fewest trailing path parts that tell it from the others: `gpt-4o` and
    `gpt-4o-reference`, or `results/gpt-4o` and `copy/gpt-4o` when the last parts agree."""
    for depth in range(1, max(len(f.parts) for f in folders) + 1):
        tails = {f: "/".join(f.parts[-depth:]) for f in folders}
        if len(set(tails.values())) == len(folders):
            return tails
    return {f: str(f) for f in folders}


# --------------------------------------------------------------------------- writing


class JsonlLog:
    """Append-only JSONL: one record per finished job, flushed to the OS as it completes.

    Flushing per record survives a killed process (kill -9); fsync runs at most once per
    `sync_every` seconds and on close, which bounds what a power cut can take (and what it
    takes is still in the response cache, so it is never paid for twice). A torn last line (a
    kill or a full disk mid-write) is ignored on reading and terminated before the next append.
    """

    def __init__(self, path: Path, sync_every: float = 1.0) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        _refuse_special(path)
        self._torn = path.exists() and path.stat().st_size > 0 and not _ends_with_newline(path)
        self._handle = open(path, "a", encoding="utf-8")
        self._sync_every = sync_every
        self._last_sync = time.monotonic()

    def append(self, record: dict) -> None:
        line = json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n"
        if self._torn:
            line = "\n" + line
        if self._handle.closed:  # an earlier failure could not reopen it (a disk turned read-only)
            self._handle = open(self.path, "a", encoding="utf-8")  # raises that disk's OSError again
        try:
            self._handle.write(line)
            self._handle.flush()
        except OSError:
            self._torn = True  # part of the line may be on disk; the next append starts afresh
            _close_quietly(self._handle)
            try:
                self._handle = open(self.path, "a", encoding="utf-8")  # a fresh handle, without the unwritable bytes
            except OSError:
                pass  # stays closed: the next append tries again and fails with the disk's own error
            raise
        self._torn = False
        now = time.monotonic()
        if now - self._last_sync >= self._sync_every:
            os.fsync(self._handle.fileno())
            self._last_sync = now

    def flush(self) -> None:
        if not self._handle.closed:
            self._handle.flush()

    def close(self) -> None:
        if not self._handle.closed:
            try:
                self._handle.flush()
                os.fsync(self._handle.fileno())
            finally:
                self._handle.close()

    @staticmethod
    def read(path: Path) -> list[dict]:
        if not path.exists():
            return []
        _refuse_special(path)
        records = []
        with open_file(path, "r", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if isinstance(record, dict):
                    records.append(record)
        return records


def _ends_with_newline(path: Path) -> bool:
    with open_file(path) as handle:
        handle.seek(-1, os.SEEK_END)
        return handle.read(1) == b"\n"


def _close_quietly(handle) -> None:
    """Close a handle whose buffer may hold bytes the disk refused (closing retries the write)."""
    try:
        handle.close()
    except (OSError, ValueError):
        pass


def _refuse_special(path: Path) -> None:
    """A record file that is a FIFO or a device would block or swallow the run: refused by name."""
    found = describe_target(path)
    if found not in ("a regular file", "missing") and not found.startswith(("not reachable", "a path too long")):
        raise DataError(f"{path} is {found}, not a record file (JSONL); remove or rename it")
