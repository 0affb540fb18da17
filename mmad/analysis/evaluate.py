"""Evaluation of result files and the paper's analyses, on top of the metrics core."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from mmad import metrics
from mmad.results.files import ResultTable, read_runs


@dataclass(frozen=True)
class SubsetRecord:
    """One row of an evaluation: the `--json` record."""

    dataset: str
    subset: str
    n: int
    dropped: int
    run: str
    auroc: float
    auroc_by_level: dict[int, float]
    c_index: float
    kendall_tau_b: float
    source: str = ""
    ci: dict[str, tuple[float, float]] = field(default_factory=dict)
    notes: tuple[str, ...] = ()  # why a metric is undefined (shown as "—")

    def as_json(self) -> dict:
        record = asdict(self)
        record["notes"] = list(self.notes)
        record["auroc_by_level"] = {str(k): _json_number(v) for k, v in self.auroc_by_level.items()}
        for key in ("auroc", "c_index", "kendall_tau_b"):
            record[key] = _json_number(record[key])
        if not self.ci:
            record.pop("ci")
        return record


def _json_number(value: float) -> float | None:
    return None if value is None or math.isnan(value) else float(value)


def evaluate_table(table: ResultTable, *, ties: str = "half", normal_up_to: int = 0,
                   bootstrap: int = 0, seed: int = 0) -> SubsetRecord:
    """Metrics for one result table; rows without a score are dropped and counted."""
    levels = metrics.severity_levels(table.severity)
    levels, scores, dropped = metrics.drop_missing(levels, table.scores)
    if normal_up_to:
        levels = metrics.expand_normal(levels, normal_up_to)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", metrics.MetricWarning)
        summary = metrics.summarize(levels, scores, ties=ties)
        ci = {}
        if bootstrap and summary.n:
            ci = {
                "auroc": metrics.bootstrap_ci(lambda lv, sc: metrics.auroc(lv, sc, ties=ties),
                                              levels, scores, n_boot=bootstrap, seed=seed),
                "c_index": metrics.bootstrap_ci(lambda lv, sc: metrics.c_index(lv, sc, ties=ties),
                                                levels, scores, n_boot=bootstrap, seed=seed),
                "kendall_tau_b": metrics.bootstrap_ci(metrics.kendall_tau_b, levels, scores,
                                                      n_boot=bootstrap, seed=seed),
            }
    return SubsetRecord(table.dataset, table.subset, summary.n, dropped, table.run, summary.auroc,
                        summary.auroc_by_level, summary.c_index, summary.kendall_tau_b,
                        str(table.source), ci, undefined_notes(levels, scores))


def undefined_notes(levels: np.ndarray, scores: np.ndarray) -> tuple[str, ...]:
    """Why a metric of these rows is undefined, in words (the table shows "—")."""
    notes = []
    if levels.size == 0:
        return ("no scored rows: every metric is undefined",)
    if not np.any(levels == 0):
        notes.append("no normal (level 0) rows: AUROC is undefined")
    elif np.all(levels == 0):
        notes.append("no anomalous rows: AUROC is undefined")
    if np.unique(levels).size < 2:
        notes.append("a single severity level: C-index and Kendall tau-b are undefined")
    elif np.unique(scores).size < 2:
        notes.append("every score is the same: Kendall tau-b is undefined")
    return tuple(notes)


def evaluate_paths(inputs: Sequence[Path], *, data_root: Path | None = None, dataset: str | None = None,
                   subset: str | None = None, skipped: list[Path] | None = None, **options) -> list[SubsetRecord]:
    """Evaluate every result file named or found in folders.

    Datasets discovered under `data_root` are recognised in file names besides the registry's;
    `dataset`/`subset` name the data of files whose names do not say it. Runs are labelled as
    the report labels them (mmad.results.label_runs); runs of another task found in folders are
    left out and appended to `skipped`.
    """
    runs = read_runs(inputs, data_root=data_root, dataset=dataset, subset=subset, skipped=skipped)
    return [evaluate_table(table, **options) for group in runs.values() for table in group]


@dataclass(frozen=True)
class DatasetMean:
    """Mean over subsets, as in the paper's Table 3 (one per run and dataset)."""

    run: str
    dataset: str
    subsets: int
    auroc: float
    c_index: float
    kendall_tau_b: float


def dataset_means(records: Sequence[SubsetRecord]) -> list[DatasetMean]:
    by_dataset: dict[tuple[str, str], list[SubsetRecord]] = {}
    for record in records:
        by_dataset.setdefault((record.run, record.dataset), []).append(record)
    means = []
    for (run, name), group in by_dataset.items():
        means.append(DatasetMean(run, name, len(group), *(_mean(group, key) for key in METRIC_KEYS)))
    return means


def run_means(records: Sequence[SubsetRecord]) -> dict[str, dict[str, float]]:
    """Per run, each metric's mean over all its subsets (NaNs left out)."""
    by_run: dict[str, list[SubsetRecord]] = {}
    for record in records:
        by_run.setdefault(record.run, []).append(record)
    return {run: {key: _mean(group, key) for key in METRIC_KEYS} for run, group in by_run.items()}


def common_subsets(records: Sequence[SubsetRecord]) -> tuple[list[SubsetRecord], list[str]]:
    """Only the (dataset, subset) pairs every run has, so rankings compare like with like;
    also returns the labels of the pairs left out."""
    runs = {r.run for r in records}
    have: dict[tuple[str, str], set[str]] = {}
    for record in records:
        have.setdefault((record.dataset, record.subset), set()).add(record.run)
    shared = {pair for pair, owners in have.items() if owners == runs}
    left_out = sorted(f"{d}/{s}" if d != s else d for (d, s) in have if (d, s) not in shared)
    return [r for r in records if (r.dataset, r.subset) in shared], left_out


METRIC_KEYS = ("auroc", "c_index", "kendall_tau_b")


def _mean(group: Sequence[SubsetRecord], key: str) -> float:
    """Mean of a metric over subsets, leaving out undefined (NaN) ones."""
    values = [getattr(r, key) for r in group if not math.isnan(getattr(r, key))]
    return float(np.mean(values)) if values else math.nan


def ranking_agreement(methods: dict[str, dict[str, float]]) -> tuple[list[str], np.ndarray]:
    """Spearman correlation of the method rankings that each metric induces.

    `methods` maps method name -> {metric name: value}; returns (metric names, matrix).
    """
    names = sorted(next(iter(methods.values())))
    table = np.array([[values[m] for m in names] for values in methods.values()])
    return names, metrics.ranking_agreement(table)
