"""The paper's Table 3 (RQ1) and its rank agreement (RQ2), for any set of runs.

Table 3: per run and dataset, the mean of AUROC, Kendall tau-b and C-index over the dataset's
subsets; the average of those dataset means; and each run's rank by each metric's average.

Ranks: 1 = best (highest average). **Ties share the mean of the ranks they span** (two runs tied
for 2nd both get 2.5, the next gets 4) — the rule under which Spearman's rho is the Pearson
correlation of the rank vectors. "Tied" means exactly equal averages; a run whose average is
undefined (NaN) gets no rank and is left out of the correlations.

RQ2: Spearman's rho between the rankings = Pearson correlation of the rank vectors. Fed the
paper's printed ranks this gives its 0.973 (AUC-C) and 0.916 (AUC-Ken). (`scipy.stats.spearmanr`
re-ranks its input; on the printed C column, which has a tie at 4 followed by a 5, that gives
0.972, so the paper correlated the printed ranks as they stand.)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from mmad.analysis.evaluate import SubsetRecord, dataset_means
from mmad.analysis.runs import Run

METRICS = ("auroc", "kendall_tau_b", "c_index")  # the paper's column order: AUC, Ken, C
LABELS = {"auroc": "AUC", "kendall_tau_b": "Ken", "c_index": "C"}
PAPER_ORDER = ("multidog", "mvtec", "visa", "diabetic-retinopathy", "covid19", "skin-lesion")
TITLES = {"multidog": "MultiDogs-MAD", "mvtec": "MVTec-MAD", "visa": "VisA-MAD",
          "diabetic-retinopathy": "DRD-MAD", "covid19": "Covid19-MAD", "skin-lesion": "SkinLesion-MAD"}


def dataset_title(name: str) -> str:
    return TITLES.get(name, name)


def order_datasets(names: set[str] | Sequence[str]) -> list[str]:
    """The paper's order first, then any other dataset alphabetically."""
    return sorted(set(names), key=lambda n: (PAPER_ORDER.index(n) if n in PAPER_ORDER else len(PAPER_ORDER), n))


def average_ranks(values: Mapping[str, float]) -> dict[str, float]:
    """Rank by value, highest = 1; ties get the mean of their ranks; NaN gets NaN."""
    finite = {k: v for k, v in values.items() if not math.isnan(v)}
    ordered = sorted(finite.values(), reverse=True)
    ranks = {}
    for key, value in finite.items():
        first = ordered.index(value) + 1
        count = ordered.count(value)
        ranks[key] = first + (count - 1) / 2
    return {key: ranks.get(key, math.nan) for key in values}


def rank_correlation(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman's rho of two rankings given as rank vectors (Pearson correlation of the ranks).
    NaN for fewer than 3 runs or a constant ranking."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.size < 3 or x.size != y.size or np.ptp(x) == 0 or np.ptp(y) == 0:
        return math.nan
    x, y = x - x.mean(), y - y.mean()
    return float((x * y).sum() / math.sqrt((x * x).sum() * (y * y).sum()))


@dataclass(frozen=True)
class Table3Row:
    run: str
    family: str
    by_dataset: dict[str, dict[str, float]]  # dataset -> metric -> mean over its subsets
    subsets: dict[str, int]  # dataset -> subsets averaged
    average: dict[str, float]  # metric -> mean of the dataset means
    rank: dict[str, float]  # metric -> rank of the average (1 = best)


@dataclass(frozen=True)
class Table3:
    datasets: tuple[str, ...]
    rows: tuple[Table3Row, ...]
    best: dict[str, dict[str, list[str]]] = field(default_factory=dict)  # family -> column -> runs
    like_for_like: bool = True  # every run covers the same datasets

    def as_json(self) -> dict:
        return {"datasets": list(self.datasets), "like_for_like": self.like_for_like,
                "tie_rule": "ties share the mean of the ranks they span; 1 = best",
                "rows": [{"run": r.run, "family": r.family, "subsets": r.subsets,
                          "by_dataset": {d: _clean(m) for d, m in r.by_dataset.items()},
                          "average": _clean(r.average), "rank": _clean(r.rank)} for r in self.rows],
                "best": self.best}


def _clean(values: Mapping[str, float]) -> dict[str, float | None]:
    return {k: (None if v is None or math.isnan(v) else float(v)) for k, v in values.items()}


def table3(runs: Sequence[Run], records: Sequence[SubsetRecord]) -> Table3:
    """Table 3 for the runs (in their order); records come from `runs.evaluate_runs`."""
    means = {(m.run, m.dataset): m for m in dataset_means(records)}
    datasets = tuple(order_datasets({d for _, d in means}))
    rows = []
    for run in runs:
        by_dataset = {d: {k: getattr(means[(run.name, d)], k) for k in METRICS}
                      for d in datasets if (run.name, d) in means}
        subsets = {d: means[(run.name, d)].subsets for d in by_dataset}
        average = {k: _nanmean([v[k] for v in by_dataset.values()]) for k in METRICS}
        rows.append(Table3Row(run.name, run.family, by_dataset, subsets, average, {}))
    ranks = {k: average_ranks({r.run: r.average[k] for r in rows}) for k in METRICS}
    rows = [Table3Row(r.run, r.family, r.by_dataset, r.subsets, r.average, {k: ranks[k][r.run] for k in METRICS})
            for r in rows]
    coverage = {frozenset(r.by_dataset) for r in rows}
    return Table3(datasets, tuple(rows), _best_per_family(rows, datasets), len(coverage) <= 1)


def _nanmean(values: Sequence[float]) -> float:
    kept = [v for v in values if not math.isnan(v)]
    return float(np.mean(kept)) if kept else math.nan


def column_values(row: Table3Row, column: str) -> float:
    """A cell by column key: `<dataset>/<metric>`, `average/<metric>` or `rank/<metric>`."""
    group, metric = column.rsplit("/", 1)
    if group == "average":
        return row.average[metric]
    if group == "rank":
        return row.rank[metric]
    return row.by_dataset.get(group, {}).get(metric, math.nan)


def table3_columns(datasets: Sequence[str]) -> list[str]:
    return [f"{g}/{m}" for g in (*datasets, "average", "rank") for m in METRICS]


def _best_per_family(rows: Sequence[Table3Row], datasets: Sequence[str]) -> dict[str, dict[str, list[str]]]:
    """Per family (mllm, detector) and column, the run(s) with the best value (lowest rank)."""
    best: dict[str, dict[str, list[str]]] = {}
    for family in ("mllm", "detector"):
        members = [r for r in rows if r.family == family]
        for column in table3_columns(datasets):
            values = {r.run: column_values(r, column) for r in members}
            values = {k: v for k, v in values.items() if not math.isnan(v)}
            if not values:
                continue
            target = min(values.values()) if column.startswith("rank/") else max(values.values())
            best.setdefault(family, {})[column] = [k for k, v in values.items() if v == target]
    return best


@dataclass(frozen=True)
class RankAgreement:
    """RQ2: Spearman's rho between the rankings by each metric, and each run's rank gaps."""

    metrics: tuple[str, ...]
    matrix: list[list[float]]
    ranks: dict[str, dict[str, float]]  # run -> metric -> rank

    def difference(self, run: str, a: str, b: str) -> float:
        return self.ranks[run][a] - self.ranks[run][b]

    def as_json(self) -> dict:
        return {"metrics": list(self.metrics), "runs_ranked": len(self.ranks),
                "spearman": [[None if math.isnan(v) else v for v in row] for row in self.matrix],
                "ranks": {run: _clean(r) for run, r in self.ranks.items()},
                "rank_differences": {run: {"auroc-kendall_tau_b": self.difference(run, "auroc", "kendall_tau_b"),
                                           "auroc-c_index": self.difference(run, "auroc", "c_index")}
                                     for run in self.ranks}}


def rank_agreement(table: Table3) -> RankAgreement:
    """Correlations over the runs ranked by every metric (NaN matrix below 3 such runs)."""
    ranked = [r for r in table.rows if all(not math.isnan(r.rank[k]) for k in METRICS)]
    # re-ranked among these runs, so that each vector is a proper ranking of the same runs
    ranks = {k: average_ranks({r.run: r.average[k] for r in ranked}) for k in METRICS}
    vectors = {k: [ranks[k][r.run] for r in ranked] for k in METRICS}
    matrix = [[rank_correlation(vectors[a], vectors[b]) if len(ranked) >= 3 else math.nan for b in METRICS]
              for a in METRICS]
    return RankAgreement(METRICS, matrix, {r.run: {k: ranks[k][r.run] for k in METRICS} for r in ranked})
