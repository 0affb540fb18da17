"""Detection across severity (RQ4, Figure 3) and normal-class expansion (RQ5, Figure 4).

RQ4: AUROC of level 0 against each anomalous level on its own (`metrics.auroc_by_level`), per
subset, then the mean over a dataset's subsets: one curve per run and dataset.

RQ5: levels <= i are treated as normal (`metrics.expand_normal`), for i = 0 (the benchmark as is)
up to the level below the highest, and AUROC, C-index and Kendall tau-b are recomputed on the same
rows; per subset, then the mean over a dataset's subsets. A subset with fewer levels contributes
only to the steps it has.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from mmad import metrics
from mmad.analysis.evaluate import SubsetRecord
from mmad.analysis.runs import Run

Curve = dict[int, float]


def _mean_by_key(groups: dict[int, list[float]]) -> Curve:
    out = {}
    for key in sorted(groups):
        kept = [v for v in groups[key] if not math.isnan(v)]
        out[key] = float(np.mean(kept)) if kept else math.nan
    return out


def _json_curve(curve: dict[int, float]) -> dict[str, float | None]:
    return {str(k): (None if math.isnan(v) else v) for k, v in curve.items()}


@dataclass(frozen=True)
class LevelCurves:
    """RQ4: run -> dataset -> level -> mean AUROC (level 0 vs that level)."""

    curves: dict[str, dict[str, Curve]]

    def as_json(self) -> dict:
        return {run: {d: _json_curve(c) for d, c in by_d.items()} for run, by_d in self.curves.items()}


def level_curves(records: Sequence[SubsetRecord]) -> LevelCurves:
    grouped: dict[str, dict[str, dict[int, list[float]]]] = {}
    for record in records:
        by_level = grouped.setdefault(record.run, {}).setdefault(record.dataset, {})
        for level, value in record.auroc_by_level.items():
            by_level.setdefault(int(level), []).append(value)
    return LevelCurves({run: {d: _mean_by_key(levels) for d, levels in by_d.items()}
                        for run, by_d in grouped.items()})


EXPANSION_METRICS = ("auroc", "c_index", "kendall_tau_b")


@dataclass(frozen=True)
class ExpansionCurves:
    """RQ5: run -> dataset -> metric -> {i: mean metric with levels <= i normal}."""

    curves: dict[str, dict[str, dict[str, Curve]]]

    def as_json(self) -> dict:
        return {run: {d: {m: _json_curve(c) for m, c in by_m.items()} for d, by_m in by_d.items()}
                for run, by_d in self.curves.items()}


def expansion_steps(levels: np.ndarray, scores: np.ndarray, *, ties: str = "half") -> dict[int, metrics.Summary]:
    """Summary of the metrics for each i = 0 .. max level - 1, levels <= i counted as normal."""
    top = int(levels.max()) if levels.size else 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", metrics.MetricWarning)
        return {i: metrics.summarize(metrics.expand_normal(levels, i), scores, ties=ties) for i in range(top)}


def expansion_curves(runs: Sequence[Run], *, ties: str = "half") -> ExpansionCurves:
    grouped: dict[str, dict[str, dict[str, dict[int, list[float]]]]] = {}
    for run in runs:
        for table in run.tables:
            levels, scores, _ = metrics.drop_missing(metrics.severity_levels(table.severity), table.scores)
            by_metric = grouped.setdefault(run.name, {}).setdefault(table.dataset, {})
            for step, summary in expansion_steps(levels, scores, ties=ties).items():
                for name in EXPANSION_METRICS:
                    by_metric.setdefault(name, {}).setdefault(step, []).append(getattr(summary, name))
    return ExpansionCurves({run: {d: {m: _mean_by_key(steps) for m, steps in by_m.items()}
                                  for d, by_m in by_d.items()} for run, by_d in grouped.items()})
