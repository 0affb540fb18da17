"""Is run B better than run A? Paired comparisons of runs, subset by subset and pooled.

`compare_runs(base, others)` pairs identical items (same dataset, subset and path, scored in both
runs), then per subset and metric reports both values, other - base, the paired test
(`mmad.metrics.paired_tests`: DeLong for AUROC, U-statistic tests for C-index and Kendall tau-b) and the
percentile interval of the paired stratified bootstrap (`mmad.metrics.stats`); per dataset (mean over its subsets)
and overall (mean over datasets, the paper's Table-3 averaging) the same, pooled with fixed
Table-3 weights (`mmad.comparison.scopes`), plus wins/ties/losses and rank tests over the row's own
units. Which differences are called is decided by one pre-specified procedure per metric
(`mmad.comparison.decisions`): the primary question, then a fixed sequence, and Holm across the
variants compared with one base. Run-to-run noise measured from repeats enters every test and
interval with its degrees of freedom. The procedure is explained in docs/compare.md.
"""

from __future__ import annotations

import math
import os
import zlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mmad import metrics
from mmad.comparison.decisions import apply_procedure
from mmad.comparison.noise import GroupNoise, NoiseBand, Scope, group_noise, is_repeat_of, noise_band, order_repeats
from mmad.comparison.results import Comparison, ComparisonReport, MetricResult, Procedure, ScopeResult
from mmad.comparison.run_data import RunData, SubsetKey, load_runs, summarize_run
from mmad.comparison.scopes import Decision, Part, decide, pool, rank_tests, single, table3_weights
from mmad.comparison.verdicts import verdict_lines
from mmad.errors import DataError
from mmad.metrics import paired_tests, stats

INTERVAL_METHOD = ("percentile 95% interval of the paired stratified bootstrap (n - 1 draws per severity level); "
                   "dataset and overall means: the subsets' resamples combined with the Table-3 weights "
                   "(fixed effects); widened by run-to-run noise with its degrees of freedom when measured")
TEST_METHODS = {
    "auroc": "DeLong's paired test (Sun & Xu midranks), variance per severity level, second-order corrected",
    "c_index": "paired U-statistic test of the C-index (K-sample, variance per severity level, second-order "
               "corrected)",
    "kendall_tau_b": "paired U-statistic test of Kendall tau-b (delta method over concordance and score ties)",
}
POOLING = ("fixed effects: a pooled difference is sum_s w_s d_s with the Table-3 weights w_s = 1 / (datasets x "
           "subsets of the dataset), its variance sum_s w_s^2 v_s")


# --------------------------------------------------------------------------- pairing

@dataclass(frozen=True)
class Paired:
    """Items of one subset scored in both runs, in the base run's order."""

    key: SubsetKey
    levels: np.ndarray
    base: np.ndarray
    other: np.ndarray
    rows: tuple[int, ...]  # base rows paired (identifies the resample group)


def pair_subset(base: RunData, other: RunData, key: SubsetKey, dropped: dict[str, dict[str, int]]) -> Paired:
    """Pair by path; count what each side loses: `missing in the other run` or `failed here`."""
    a, b = base.tables[key], other.tables[key]
    where = {path: i for i, path in enumerate(b.paths)}
    rows, other_rows = [], []
    for i, path in enumerate(a.paths):
        j = where.get(path)
        if j is None:
            _count(dropped, base.label, "missing in the other run")
            continue
        if a.severity[i] != b.severity[j]:
            raise DataError(f"{b.source}: severity of {path} is {b.severity[j]:g}, "
                            f"but {a.severity[i]:g} in {a.source}; not the same data")
        ok_a, ok_b = math.isfinite(a.scores[i]), math.isfinite(b.scores[j])
        if not ok_a:
            _count(dropped, base.label, "failed (empty score) here")
        if not ok_b:
            _count(dropped, other.label, "failed (empty score) here")
        if ok_a and ok_b:
            rows.append(i)
            other_rows.append(j)
    mine = set(a.paths)
    for path in b.paths:
        if path not in mine:
            _count(dropped, other.label, "missing in the other run")
    rows_array = np.array(rows, dtype=np.int64)
    return Paired(key, metrics.severity_levels(a.severity[rows_array]), a.scores[rows_array],
                  b.scores[np.array(other_rows, dtype=np.int64)], tuple(rows))


def _count(dropped: dict[str, dict[str, int]], label: str, reason: str, n: int = 1) -> None:
    dropped.setdefault(label, {}).setdefault(reason, 0)
    dropped[label][reason] += n


def _seed(seed: int, *parts: str) -> list[int]:
    """A seed per subset (or pooled scope) that does not depend on what else is compared."""
    return [seed, zlib.crc32("/".join(parts).encode("utf-8"))]


# --------------------------------------------------------------------------- comparing

def compare_runs(base: Path, others: Sequence[Path], *, ties: str = "half", n_boot: int = stats.DEFAULT_RESAMPLES,
                 seed: int = 0, noise: Sequence[Path] = (), procedure: Procedure | None = None) -> ComparisonReport:
    """Compare each run in `others` with `base` (folders or result CSVs); see the module docstring.
    The others are variants of one comparison: the procedure (default: `Procedure()`, the overall
    mean first) corrects across them."""
    procedure = procedure or Procedure()
    runs = load_runs([Path(base), *map(Path, others)])
    base_run, other_runs = runs[0], runs[1:]
    repeats = _repeat_groups(runs, load_runs(noise) if noise else [], ties)
    comparisons = [Comparison(base_run.label, o.label, [], [], {}, {}) for o in other_runs]
    parts: list[dict[SubsetKey, dict[str, Part]]] = [{} for _ in other_runs]
    tasks: list[tuple[SubsetKey, list[tuple[int, Paired]]]] = []
    for key in sorted(base_run.tables):
        groups: dict[tuple[int, ...], list[tuple[int, Paired]]] = {}
        for index, other in enumerate(other_runs):
            if key in other.tables:
                paired = pair_subset(base_run, other, key, comparisons[index].dropped)
                groups.setdefault(paired.rows, []).append((index, paired))
        tasks.extend((key, members) for members in groups.values())
    # numpy releases the GIL in the heavy loops: subsets are bootstrapped on all cores, in threads
    with ThreadPoolExecutor(max_workers=min(len(tasks), os.cpu_count() or 1) or 1) as workers:
        boots = list(workers.map(lambda task: _bootstrap(task[1], n_boot, _seed(seed, *task[0]), ties), tasks))
    for (key, members), boot in zip(tasks, boots):
        for index, paired in members:
            if boot is None:
                comparisons[index].empty_subsets.append(f"{key[0]}/{key[1]}")
            else:
                parts[index][key] = _parts(paired, boot, index)
                comparisons[index].notes.extend(_single_image_levels(paired))
    for index, other in enumerate(other_runs):
        comparison = comparisons[index]
        _count_unpaired(base_run, other, comparison)
        if not parts[index]:
            raise DataError(f"{base_run.label} and {other.label} have no scored item in common "
                            f"(same dataset, subset and path)")
        groups_here = [g for g in repeats if g.label in (base_run.label, other.label)]
        comparison.noise_measured = bool(groups_here)
        items = {key: len(p.rows) for key, p in _paired_items(tasks, index)}
        comparison.subsets = [_subset_result(key, items[key], by_metric, groups_here)
                              for key, by_metric in sorted(parts[index].items())]
        comparison.pooled = _pooled(parts[index], items, groups_here)
    apply_procedure(comparisons, procedure, stats.METRICS)
    for comparison in comparisons:
        comparison.verdicts = verdict_lines(comparison)
    return ComparisonReport([summarize_run(r) for r in runs], comparisons, repeats, n_boot, seed, ties, procedure)


def _paired_items(tasks, index: int):
    for key, members in tasks:
        for i, paired in members:
            if i == index:
                yield key, paired


def _bootstrap(members: list[tuple[int, Paired]], n_boot: int, seed: list[int], ties: str) -> dict | None:
    """One resample for every other run paired on the same items: the base is resampled once."""
    first = members[0][1]
    if not first.rows:
        return None
    scores = {"base": first.base, **{f"other{index}": paired.other for index, paired in members}}
    runs = stats.bootstrap_runs(first.levels, scores, n_boot=n_boot, seed=seed, ties=ties)
    second = {f"other{index}": paired_tests.second_order_terms(first.levels, first.base, paired.other, ties=ties)
              for index, paired in members}
    return {"runs": runs, "second": second}


def _parts(paired: Paired, boot: dict, index: int) -> dict[str, Part]:
    name = f"other{index}"
    second = boot["second"][name]
    out = {}
    for metric in stats.METRICS:
        d = stats.paired_difference(paired.levels, boot["runs"]["base"], boot["runs"][name], metric,
                                    float(second[metric]))
        out[metric] = Part(d.base, d.other, d.diff, d.variance, d.diff_resampled)
    return out


def _single_image_levels(paired: Paired) -> list[str]:
    values, counts = np.unique(paired.levels, return_counts=True)
    lonely = [int(v) for v, c in zip(values, counts) if c == 1]
    if not lonely or values.size < 2:
        return []
    return [f"{paired.key[0]}/{paired.key[1]}: level {', '.join(map(str, lonely))} has one image; it is resampled "
            f"and its variance estimated together with the next lower level"]


def _result(metric: str, part_or_pooled, decision: Decision, noise: NoiseBand | None, **extra) -> MetricResult:
    return MetricResult(metric, part_or_pooled.base, part_or_pooled.other, part_or_pooled.diff, decision.low,
                        decision.high, math.sqrt(part_or_pooled.variance) if part_or_pooled.variance >= 0 else math.nan,
                        decision.p, noise=noise, **extra)


def _subset_result(key: SubsetKey, items: int, by_metric: dict[str, Part], groups: list[GroupNoise]) -> ScopeResult:
    scope = ("subset", *key)
    results = {}
    for metric, part in by_metric.items():
        band = noise_band(groups, scope, metric) if groups else None
        defined = math.isfinite(part.diff)
        results[metric] = _result(metric, part, decide(single(part), band), band, defined=int(defined),
                                  undefined=int(not defined))
    return ScopeResult(scope, 1, items, results)


def _pooled(parts: dict[SubsetKey, dict[str, Part]], items: dict[SubsetKey, int],
            groups: list[GroupNoise]) -> list[ScopeResult]:
    """Dataset means (over subsets) and the overall mean (over datasets), per metric."""
    datasets = sorted({key[0] for key in parts})
    pooled = []
    dataset_diffs: dict[str, dict[str, float]] = {m: {} for m in stats.METRICS}
    for dataset in datasets:
        keys = [key for key in sorted(parts) if key[0] == dataset]
        results = {}
        for metric in stats.METRICS:
            defined = [key for key in keys if math.isfinite(parts[key][metric].diff)]
            results[metric] = _pool_scope(("dataset", dataset), metric, [parts[k][metric] for k in defined],
                                          np.full(len(defined), 1 / max(len(defined), 1)), len(keys) - len(defined),
                                          [parts[k][metric].diff for k in defined], "subsets", groups)
            if defined:
                dataset_diffs[metric][dataset] = results[metric].diff
        pooled.append(ScopeResult(("dataset", dataset), len(keys), sum(items[k] for k in keys), results))
    if len(datasets) == 1:  # one dataset: the overall mean is its mean (not tested twice)
        pooled.append(ScopeResult(("overall",), pooled[0].subsets, pooled[0].items, pooled[0].metrics))
        return pooled
    overall = {}
    for metric in stats.METRICS:
        defined = [key for key in sorted(parts) if math.isfinite(parts[key][metric].diff)]
        overall[metric] = _pool_scope(("overall",), metric, [parts[k][metric] for k in defined],
                                      table3_weights([k[0] for k in defined]), len(parts) - len(defined),
                                      list(dataset_diffs[metric].values()), "datasets", groups)
    pooled.append(ScopeResult(("overall",), len(parts), sum(items.values()), overall))
    return pooled


def _pool_scope(scope: Scope, metric: str, members: list[Part], weights: np.ndarray, undefined: int,
                unit_diffs: list[float], units: str, groups: list[GroupNoise]) -> MetricResult:
    band = noise_band(groups, scope, metric) if groups else None
    if not members:
        nan = math.nan
        return MetricResult(metric, nan, nan, nan, nan, nan, nan, nan, 0, undefined, None, band)
    pooled = pool(members, weights) if len(members) > 1 else single(members[0])
    return _result(metric, pooled, decide(pooled, band), band, defined=len(members), undefined=undefined,
                   rank=rank_tests(unit_diffs, units))


def _count_unpaired(base: RunData, other: RunData, comparison: Comparison) -> None:
    for run, missing in ((base, set(base.tables) - set(other.tables)), (other, set(other.tables) - set(base.tables))):
        for key in sorted(missing):
            comparison.unpaired_subsets.setdefault(run.label, []).append(f"{key[0]}/{key[1]}")
            _count(comparison.dropped, run.label, "missing in the other run", len(run.tables[key].paths))


# --------------------------------------------------------------------------- run-to-run noise

def _repeat_groups(runs: list[RunData], noise_runs: list[RunData], ties: str) -> list[GroupNoise]:
    """Each --noise run must be a repeat of one compared run; groups = that run plus its repeats."""
    if not noise_runs:
        return []
    members: dict[int, list[RunData]] = {}
    for extra in noise_runs:
        owner = next((i for i, run in enumerate(runs) if is_repeat_of(run, extra)), None)
        if owner is None:
            raise DataError(f"{extra.source}: not a repeat of any compared run (neither its run.json settings "
                            f"apart from `repeat` nor a `<run>+rN` name match one)")
        members.setdefault(owner, [runs[owner]]).append(extra)
    return [group_noise(order_repeats(group), ties=ties, label=group[0].label) for _, group in sorted(members.items())]

