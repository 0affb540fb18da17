"""Which runs the result folders hold, found from file names and run.json alone (no result file is
parsed here, so the runs page can list a hundred runs at once).

A run is one folder's result files of one name: run.json's `run`, else the file-name prefix
(`<run>_<dataset>_<subset>.csv`, the reference scripts' naming). Its kind: `detector` (run.json kind),
`hybrid` (settings.hybrid), `classify` / `qa` (settings.task or the CSV header), else `score`.
A subset with a JSONL but no CSV yet is a stopped run's: it is listed too.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mmad.errors import MmadError
from mmad.reading import open_file
from mmad.results.files import distinct_tails, identify, known_pairs, run_label
from mmad.results.runinfo import RUN_FILE, read_run_info

KINDS = ("score", "detector", "hybrid", "classify", "qa")
QA_HEADER = ("question_id", "image", "subtask", "correct", "predicted", "status", "note")
CLASSIFY_HEADER = ("Path", "Severity", "True Classes", "Predicted Class", "Status", "Decided By")


@dataclass(frozen=True)
class ResultFile:
    """One subset of a run: its CSV and JSONL (either may be missing), dataset and subset."""

    dataset: str
    subset: str
    csv: Path | None
    jsonl: Path | None

    @property
    def label(self) -> str:
        return self.dataset if self.dataset == self.subset else f"{self.dataset}/{self.subset}"


@dataclass(frozen=True)
class RunFiles:
    rid: str
    name: str  # run.json's name (or the files' prefix); `label` tells same-named runs apart
    folder: Path
    info: dict | None
    kind: str
    files: tuple[ResultFile, ...]
    label: str = ""

    @property
    def settings(self) -> dict:
        return dict((self.info or {}).get("settings") or {})

    @property
    def task(self) -> str:
        return "qa" if self.kind == "qa" else "classify" if self.kind == "classify" else "score"

    def signature(self) -> tuple:
        """Changes when any of its files changes (a run still writing, a rerun)."""
        stamps = []
        for path in [self.folder / RUN_FILE] + [p for f in self.files for p in (f.csv, f.jsonl) if p]:
            try:
                stat = path.stat()
                stamps.append((str(path), stat.st_size, stat.st_mtime_ns))
            except OSError:
                stamps.append((str(path), -1, 0))
        return tuple(stamps)


def _header(path: Path) -> tuple[str, ...]:
    try:
        with open_file(path, "r", encoding="utf-8-sig", newline="") as handle:
            return tuple(next(csv.reader(handle), ()))
    except (OSError, UnicodeDecodeError, csv.Error):
        return ()


def _first_record(path: Path | None) -> dict:
    """The first JSON line of `path` when it is an object, else {} (no file, unreadable, other)."""
    if path is None:
        return {}
    try:
        with open_file(path, "r", encoding="utf-8") as handle:
            record = json.loads(handle.readline())
        return record if isinstance(record, dict) else {}
    except (OSError, ValueError, UnicodeDecodeError):
        return {}


def kind_of(info: dict | None, header: tuple[str, ...]) -> str:
    settings = (info or {}).get("settings") or {}
    task = settings.get("task")
    if task == "qa" or header == QA_HEADER:
        return "qa"
    if task == "classify" or header[:len(CLASSIFY_HEADER)] == CLASSIFY_HEADER:
        return "classify"
    if (info or {}).get("kind") == "detector":
        return "detector"
    return "hybrid" if settings.get("hybrid") else "score"


def _identity(stem: str, csv_path: Path | None, jsonl: Path | None, kind: str, info: dict | None,
              pairs) -> tuple[str, str, str] | None:
    """(run name, dataset, subset) of one result file pair, or None when it cannot be told."""
    first = _first_record(jsonl)
    if kind == "qa":
        dataset = str(first.get("dataset") or stem.rsplit("_", 1)[-1])
        name = str((info or {}).get("run") or stem[: -len(dataset) - 1] or stem)
        return name, dataset, dataset
    if first.get("dataset") and first.get("subset"):
        dataset, subset = str(first["dataset"]), str(first["subset"])
    else:
        found = identify(stem, pairs)
        if found is None:
            return None
        dataset, subset = found
    if info and info.get("run"):
        return str(info["run"]), dataset, subset
    path = csv_path or jsonl
    assert path is not None, "a result stem has its .csv, its .jsonl or both"
    return run_label(path, dataset, subset), dataset, subset


def _folder_runs(folder: Path, names: Sequence[str], pairs, notes: list[str]) -> list[RunFiles]:
    stems: dict[str, dict[str, Path]] = {}
    for name in names:
        path = folder / name
        if name.endswith("_template.csv") or name.startswith("."):
            continue
        if name.endswith(".csv") or (name.endswith(".jsonl") and not name.endswith(".maps.jsonl")):
            stems.setdefault(path.stem, {})[path.suffix] = path
    if not stems:
        return []
    info = read_run_info(folder)
    groups: dict[str, list[ResultFile]] = {}
    kinds: dict[str, str] = {}
    for stem, found in sorted(stems.items()):
        csv_path, jsonl = found.get(".csv"), found.get(".jsonl")
        kind = kind_of(info, _header(csv_path) if csv_path else ())
        if csv_path is None and kind not in ("qa", "classify") and not _first_record(jsonl).get("path"):
            continue  # a JSONL that is no result log (batches, summaries)
        who = _identity(stem, csv_path, jsonl, kind, info, pairs)
        if who is None:
            notes.append(f"{csv_path or jsonl}: cannot tell its dataset and subset from the name; left out")
            continue
        name, dataset, subset = who
        groups.setdefault(name, []).append(ResultFile(dataset, subset, csv_path, jsonl))
        kinds.setdefault(name, kind)
    runs: list[RunFiles] = []
    for name, files in groups.items():
        rid = hashlib.sha1(f"{folder.resolve()}|{name}".encode()).hexdigest()[:10]
        runs.append(RunFiles(rid, name, folder, info, kinds[name], tuple(files)))
    return runs


@dataclass
class Catalog:
    """The runs under the given result folders (or files), found again on every `scan`."""

    sources: tuple[Path, ...]
    data_root: Path | None = None
    runs: list[RunFiles] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    unreadable: list[dict] = field(default_factory=list)  # {name, folder, error} of folders left out

    def scan(self) -> list[RunFiles]:
        from mmad.data.datasets import discover
        extra = []
        if self.data_root is not None and self.data_root.is_dir():
            extra = [(s.dataset, s.subset) for s in discover(self.data_root)]
        pairs = known_pairs(extra)
        runs: list[RunFiles] = []
        notes: list[str] = []
        unreadable: list[dict] = []
        for source in self.sources:
            if source.is_file():
                runs.extend(_folder_runs(source.parent, [source.name, source.with_suffix(".jsonl").name
                                                         if source.suffix == ".csv" else source.name], pairs, notes))
                continue
            if not source.is_dir():
                notes.append(f"{source}: no such file or folder")
                continue
            for folder, dirs, names in os.walk(source):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                try:
                    runs.extend(_folder_runs(Path(folder), sorted(names), pairs, notes))
                except MmadError as exc:  # one damaged folder (a bad run.json) never hides the others
                    unreadable.append({"name": Path(folder).name, "folder": str(folder), "error": str(exc)})
        seen, unique = set(), []
        for run in runs:
            if run.rid not in seen:
                seen.add(run.rid)
                unique.append(run)
        self.runs, self.notes, self.unreadable = _labelled(unique), notes, unreadable
        return self.runs

    def get(self, rid: str) -> RunFiles | None:
        found = next((run for run in self.runs if run.rid == rid), None)
        if found is None:
            self.scan()
            found = next((run for run in self.runs if run.rid == rid), None)
        return found


def _labelled(runs: list[RunFiles]) -> list[RunFiles]:
    """`name`, or `name (folder tail)` when two folders hold runs of one name."""
    from dataclasses import replace
    out = []
    for run in runs:
        twins = [r.folder.resolve() for r in runs if r.name == run.name]
        tail = distinct_tails(twins)[run.folder.resolve()] if len(set(twins)) > 1 else ""
        out.append(replace(run, label=f"{run.name} ({tail})" if tail else run.name))
    return out
