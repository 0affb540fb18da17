"""Evaluate classification runs: per category (subset) and overall (mean over categories, as VELM)."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mmad.classify.scores import ClassScores, classification_scores, effective_truth
from mmad.classify.task import CSV_HEADER
from mmad.errors import DataError
from mmad.reading import open_file
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
    scores: ClassScores = field(compare=False)
    # the whole class file of the run (VELM's grouping draw walks every category): {category: [keys]}
    # and {category: {key: display}}; empty for runs whose run.json predates them
    order: dict = field(compare=False, default_factory=dict)
    displays: dict = field(compare=False, default_factory=dict)

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
                with open_file(path, "r", encoding="utf-8", newline="") as handle:
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
        with open_file(path.with_suffix(".jsonl"), "r", encoding="utf-8") as handle:
            first = json.loads(handle.readline())
        return str(first["dataset"]), str(first["subset"])
    except (OSError, ValueError, KeyError, TypeError):
        raise DataError(f"{path}: cannot tell its dataset and subset (the JSONL beside it is missing)") from None


def read_category(path: Path) -> CategoryResult:
    with open_file(path, "r", encoding="utf-8", newline="") as handle:
        rows = list(csv.reader(handle))[1:]
    dataset, subset = _identity(path)
    info = read_run_info(path.parent) or {}
    run = str(info.get("run") or path.parent.name)
    label = dataset if dataset == subset else f"{dataset}/{subset}"
    described = (info.get("settings") or {}).get("classes") or {}
    classes = tuple(described.get("names", {}).get(label, ()))
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
    y_true = effective_truth(truths, predicted)
    return CategoryResult(run, dataset, subset, path, tuple(truths), tuple(predicted), dropped, gated, classes,
                          classification_scores(y_true, predicted, classes),
                          order=described.get("order") or {}, displays=described.get("display") or {})


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
