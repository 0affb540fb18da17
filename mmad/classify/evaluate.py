"""Evaluate classification runs: per category (subset) and overall (mean over categories, as VELM)."""

from __future__ import annotations

import csv
import json
import math
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from mmad.classify.scores import ClassScores, classification_scores, effective_truth, group_accuracy, random_grouping
from mmad.classify.task import CSV_HEADER
from mmad.errors import ConfigError, DataError
from mmad.results.runinfo import read_run_info


@dataclass(frozen=True)
class CategoryResult:
    run: str
    dataset: str
    subset: str
    source: Path
    truths: tuple[tuple[str, ...], ...]  # of the rows that have a prediction
    predicted: tuple[str, ...]
    dropped: int  # rows without a prediction (failed jobs), counted, not imputed
    gated: int  # rows the detector gate decided
    classes: tuple[str, ...]  # the subset's anomaly classes (the class file's order)
    scores: ClassScores = field(compare=False, default=None)

    @property
    def label(self) -> str:
        return self.dataset if self.dataset == self.subset else f"{self.dataset}/{self.subset}"


def find_classify_files(inputs: Sequence[Path]) -> list[Path]:
    """Classification CSVs named directly or found in folders (by their header)."""
    files = []
    for item in inputs:
        candidates = sorted(item.rglob("*.csv")) if item.is_dir() else [item] if item.is_file() else None
        if candidates is None:
            raise DataError(f"{item}: no such file or folder")
        for path in candidates:
            try:
                with open(path, encoding="utf-8", newline="") as handle:
                    header = next(csv.reader(handle), [])
            except (OSError, UnicodeDecodeError):
                header = []
            if tuple(header[:len(CSV_HEADER)]) == CSV_HEADER:
                files.append(path)
            elif item.is_file():
                raise DataError(f"{path}: not a classification result (expected the header {','.join(CSV_HEADER)})")
    if not files:
        raise DataError(f"no classification results in {', '.join(str(i) for i in inputs)} (run `mmad classify`)")
    return files


def _identity(path: Path) -> tuple[str, str]:
    try:
        with open(path.with_suffix(".jsonl"), encoding="utf-8") as handle:
            first = json.loads(handle.readline())
        return str(first["dataset"]), str(first["subset"])
    except (OSError, ValueError, KeyError, TypeError):
        raise DataError(f"{path}: cannot tell its dataset and subset (the JSONL beside it is missing)") from None


def read_category(path: Path) -> CategoryResult:
    with open(path, encoding="utf-8", newline="") as handle:
        rows = list(csv.reader(handle))[1:]
    dataset, subset = _identity(path)
    info = read_run_info(path.parent) or {}
    run = str(info.get("run") or path.parent.name)
    label = dataset if dataset == subset else f"{dataset}/{subset}"
    classes = tuple(((info.get("settings") or {}).get("classes") or {}).get("names", {}).get(label, ()))
    truths, predicted, dropped, gated = [], [], 0, 0
    for line, row in enumerate(rows, start=2):
        if len(row) < len(CSV_HEADER):
            raise DataError(f"{path}: line {line}: expected {len(CSV_HEADER)} columns")
        _, _, truth, pred, status, decided = row[:len(CSV_HEADER)]
        if not truth:
            raise DataError(f"{path}: line {line}: empty True Classes")
        if status != "ok" or not pred:
            dropped += 1
            continue
        truths.append(tuple(truth.split(",")))
        predicted.append(pred)
        gated += decided == "gate"
    if not classes:  # a run without run.json: the anomaly classes seen in the ground truth
        classes = tuple(sorted({t for truth in truths for t in truth} - {"good"}))
    result = CategoryResult(run, dataset, subset, path, tuple(truths), tuple(predicted), dropped, gated, classes)
    y_true = effective_truth(result.truths, result.predicted)
    return replace(result, scores=classification_scores(y_true, result.predicted, classes))


@dataclass(frozen=True)
class RunMean:
    run: str
    categories: int
    accuracy: float
    macro_f1: float
    micro_f1: float
    kappa: float


def run_means(results: Sequence[CategoryResult]) -> list[RunMean]:
    """Overall per run = the mean over its categories (undefined ones left out)."""
    out = []
    for run in dict.fromkeys(r.run for r in results):
        group = [r.scores for r in results if r.run == run]
        means = [_nanmean([getattr(s, key) for s in group]) for key in ("accuracy", "macro_f1", "micro_f1", "kappa")]
        out.append(RunMean(run, len(group), *means))
    return out


def _nanmean(values) -> float:
    values = [v for v in values if not math.isnan(v)]
    return float(np.mean(values)) if values else math.nan


# --------------------------------------------------------------------------- grouping

def load_groups(path: Path) -> dict[str, dict[str, frozenset]]:
    """A grouping file: per subset, two named groups of class names, e.g.

        [brick]
        negligible = ["blotch"]
        critical = ["scratch"]
    """
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"--groups {path}: cannot read ({exc.strerror or exc})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    out = {}
    for subset, groups in data.items():
        if not isinstance(groups, dict) or len(groups) != 2 or not all(
                isinstance(v, list) and all(isinstance(x, str) for x in v) for v in groups.values()):
            raise ConfigError(f"{path}: [{subset}] must hold exactly two groups, each a list of class names")
        out[subset] = {name: frozenset(members) for name, members in groups.items()}
    return out


@dataclass(frozen=True)
class GroupResult:
    run: str
    groups: tuple[str, ...]  # "normal" first
    mean: dict[str, float]  # per group: mean over seeds of the mean over categories
    std: dict[str, float]  # per group: std over seeds (ddof 0); 0 for a user grouping
    seeds: int  # 0: a user grouping


def grouping(results: Sequence[CategoryResult], *, groups_file: Path | None, seeds: int) -> list[GroupResult]:
    """Per run: per-group accuracy, mean over categories; VELM's random grouping over `seeds`
    seeds (mean ± std), or the user's grouping."""
    user = load_groups(groups_file) if groups_file else None
    out = []
    for run in dict.fromkeys(r.run for r in results):
        categories = [r for r in results if r.run == run]
        per_seed = []
        for seed in range(seeds if user is None else 1):
            rows = []
            for r in categories:
                if user is not None:
                    if r.subset not in user:
                        raise ConfigError(f"{groups_file}: no grouping for {r.subset!r}")
                    named = user[r.subset]
                    stray = set(r.classes) - set().union(*named.values())
                    if stray:
                        raise ConfigError(f"{groups_file}: [{r.subset}] leaves class(es) {', '.join(sorted(stray))} "
                                          f"in no group")
                else:
                    a, b = random_grouping(r.classes, seed, r.subset)
                    named = {"A": a, "B": b}
                rows.append(group_accuracy(r.truths, r.predicted, named))
            names = list(dict.fromkeys(name for row in rows for name in row)) or ["normal"]
            per_seed.append({name: _nanmean([row.get(name, math.nan) for row in rows]) for name in names})
        names = tuple(dict.fromkeys(name for s in per_seed for name in s))
        values = {n: [s[n] for s in per_seed if not math.isnan(s.get(n, math.nan))] for n in names}
        mean = {n: float(np.mean(v)) if v else math.nan for n, v in values.items()}
        std = {n: float(np.std(v)) if v else math.nan for n, v in values.items()}
        out.append(GroupResult(run, names, mean, std, 0 if user is not None else seeds))
    return out
