"""Is run B better than run A? Paired comparisons of runs, subset by subset and pooled.

`compare_runs(base, others)` pairs identical items (same dataset, subset and path, scored in both
runs), then per subset and metric reports both values, other - base, a paired bootstrap interval
and p-value (`mmad.stats`); per dataset (mean over its subsets) and overall (mean over datasets,
the paper's Table-3 averaging) the mean difference with a two-level bootstrap interval, Wilcoxon
signed-rank and sign tests over the subset differences, and win/tie/loss counts. Every p-value of
one comparison (base vs one other) is Holm-corrected as one family:

    the 3 metrics x every subset with a defined difference (bootstrap p), plus, for each dataset
    with at least 2 such subsets and for the overall mean, per metric: the two-level bootstrap p,
    the Wilcoxon p and the sign-test p. (A one-subset dataset's mean is that subset, and a
    one-dataset overall mean is that dataset's: neither is tested twice.)

A subset difference is a tie when it is 0 after rounding to 12 decimals (float noise between equal
metrics is not a win); ties are dropped by both rank tests, as scipy does by default.
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
from mmad.comparison.noise import GroupNoise, group_noise, is_repeat_of, noise_band, order_repeats
from mmad.comparison.results import Comparison, ComparisonReport, MetricResult, ScopeResult, Test
from mmad.comparison.run_data import RunData, SubsetKey, load_runs, summarize_run
from mmad.comparison.verdicts import verdict_lines
from mmad.errors import DataError
from mmad.metrics import stats

INTERVAL_METHOD = ("percentile 95% interval of the paired stratified bootstrap (n-1 draws per level); "
                   "pooled: two-level bootstrap with shrunken subset effects")
P_METHOD = "two-sided bootstrap z-test: 2 * Phi(-|diff| / sd of the resampled differences)"
HOLM_FAMILY = ("one comparison: every subset x metric bootstrap p, plus per metric the bootstrap, Wilcoxon "
               "and sign-test p of each dataset with >= 2 subsets and of the overall mean")
TIE_DECIMALS = 12


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
                 seed: int = 0, noise: Sequence[Path] = ()) -> ComparisonReport:
    """Compare each run in `others` with `base` (folders or result CSVs); see the module docstring."""
    runs = load_runs([Path(base), *map(Path, others)])
    base_run, other_runs = runs[0], runs[1:]
    repeats = _repeat_groups(runs, load_runs(noise) if noise else [], ties)
    comparisons = [Comparison(base_run.label, o.label, [], [], {}, {}) for o in other_runs]
    resampled: list[dict[SubsetKey, dict[str, np.ndarray]]] = [{} for _ in other_runs]
    tasks = []
    for key in sorted(base_run.tables):
        groups: dict[tuple[int, ...], list[tuple[int, Paired]]] = {}
        for index, other in enumerate(other_runs):
            if key in other.tables:
                paired = pair_subset(base_run, other, key, comparisons[index].dropped)
                groups.setdefault(paired.rows, []).append((index, paired))
        tasks.extend((key, members) for members in groups.values())
    # numpy releases the GIL in the heavy loops: subsets are bootstrapped on all cores, in threads
    with ThreadPoolExecutor(max_workers=min(len(tasks), os.cpu_count() or 1) or 1) as pool:
        boots = list(pool.map(lambda task: _bootstrap(task[1], n_boot, _seed(seed, *task[0]), ties), tasks))
    for (key, members), boot in zip(tasks, boots):
        _record(key, members, boot, comparisons, resampled)
    for index, other in enumerate(other_runs):
        comparison = comparisons[index]
        _count_unpaired(base_run, other, comparison)
        if not comparison.subsets:
            raise DataError(f"{base_run.label} and {other.label} have no scored item in common "
                            f"(same dataset, subset and path)")
        comparison.pooled = _pooled(comparison.subsets, resampled[index], seed)
        groups_here = [g for g in repeats if g.label in (base_run.label, other.label)]
        _attach_noise(comparison, groups_here)
        _holm(comparison)
        comparison.verdicts = verdict_lines(comparison)
    return ComparisonReport([summarize_run(r) for r in runs], comparisons, repeats, n_boot, seed, ties)


def _bootstrap(members: list[tuple[int, Paired]], n_boot: int, seed: list[int], ties: str) -> dict | None:
    """One resample for every other run paired on the same items: the base is bootstrapped once."""
    first = members[0][1]
    if not first.rows:
        return None
    scores = {"base": first.base, **{str(index): paired.other for index, paired in members}}
    return stats.bootstrap_runs(first.levels, scores, n_boot=n_boot, seed=seed, ties=ties)


def _record(key: SubsetKey, members: list[tuple[int, Paired]], boot: dict | None, comparisons: list[Comparison],
            resampled: list[dict]) -> None:
    if boot is None:
        for index, _ in members:
            comparisons[index].empty_subsets.append(f"{key[0]}/{key[1]}")
        return
    for index, paired in members:
        results, arrays = {}, {}
        for metric in stats.METRICS:
            d = stats.paired_difference(boot["base"], boot[str(index)], metric)
            results[metric] = MetricResult(metric, d.base, d.other, d.diff, d.low, d.high, Test(d.p))
            arrays[metric] = d.diff_resampled
        comparisons[index].subsets.append(ScopeResult(("subset", *key), 1, len(paired.rows), results))
        resampled[index][key] = arrays


def _count_unpaired(base: RunData, other: RunData, comparison: Comparison) -> None:
    for run, missing in ((base, set(base.tables) - set(other.tables)), (other, set(other.tables) - set(base.tables))):
        for key in sorted(missing):
            comparison.unpaired_subsets.setdefault(run.label, []).append(f"{key[0]}/{key[1]}")
            _count(comparison.dropped, run.label, "missing in the other run", len(run.tables[key].paths))


def _pooled(subsets: list[ScopeResult], resampled: dict[SubsetKey, dict[str, np.ndarray]], seed: int) -> list[ScopeResult]:
    """Dataset means (over subsets) and the overall mean (over datasets), per metric."""
    by_dataset: dict[str, list[ScopeResult]] = {}
    for result in subsets:
        by_dataset.setdefault(result.scope[1], []).append(result)
    pooled, overall_parts = [], {m: [] for m in stats.METRICS}
    for dataset, members in sorted(by_dataset.items()):
        results = {}
        for metric in stats.METRICS:
            defined = [r for r in members if math.isfinite(r.metrics[metric].diff)]
            if not defined:
                results[metric] = _undefined(metric)
                continue
            observed = np.array([r.metrics[metric].diff for r in defined])
            matrix = np.stack([resampled[r.scope[1:]][metric] for r in defined])
            draws = stats.pooled_resamples(observed, matrix, seed=_seed(seed, "pooled", dataset, metric))
            overall_parts[metric].append((defined, draws))
            results[metric] = (_pooled_metric(metric, defined, draws) if len(defined) >= 2
                               else _single(defined[0].metrics[metric]))
        pooled.append(ScopeResult(("dataset", dataset), len(members), sum(r.items for r in members), results))
    overall = {}
    for metric, parts in overall_parts.items():
        if not parts:
            overall[metric] = _undefined(metric)
            continue
        if len(by_dataset) == 1:  # one dataset: the overall mean is its mean (not retested)
            overall[metric] = pooled[0].metrics[metric]
            continue
        draws = np.mean([d for _, d in parts], axis=0)
        means = [_means(defined, metric) for defined, _ in parts]
        everything = [r for defined, _ in parts for r in defined]
        overall[metric] = _pooled_metric(metric, everything, draws, means)
    pooled.append(ScopeResult(("overall",), len(subsets), sum(r.items for r in subsets), overall))
    return pooled


def _means(defined: list[ScopeResult], metric: str) -> tuple[float, float]:
    return (float(np.mean([r.metrics[metric].base for r in defined])),
            float(np.mean([r.metrics[metric].other for r in defined])))


def _pooled_metric(metric: str, defined: list[ScopeResult], draws: np.ndarray,
                   dataset_means: list[tuple[float, float]] | None = None) -> MetricResult:
    """Mean of base and other (over subsets, or over dataset means), two-level interval, rank tests."""
    means = dataset_means or [_means(defined, metric)]
    base = float(np.mean([m[0] for m in means]))
    other = float(np.mean([m[1] for m in means]))
    diff = other - base
    low, high = stats.percentile_interval(draws)
    differences = np.round([r.metrics[metric].diff for r in defined], TIE_DECIMALS)
    sign = stats.sign_test(differences)
    return MetricResult(metric, base, other, diff, low, high, Test(stats.z_test_p(diff, draws)),
                        Test(stats.wilcoxon_signed_rank(differences)), sign, Test(sign.p))


def _single(result: MetricResult) -> MetricResult:
    """A dataset with one subset: its mean is that subset (same interval, same test)."""
    sign = stats.sign_test(np.round([result.diff], TIE_DECIMALS))
    return MetricResult(result.metric, result.base, result.other, result.diff, result.low, result.high,
                        result.bootstrap, None, sign, None)


def _undefined(metric: str) -> MetricResult:
    nan = math.nan
    return MetricResult(metric, nan, nan, nan, nan, nan, Test(nan))


def _holm(comparison: Comparison) -> None:
    tests: list[Test] = []
    for result in comparison.subsets:
        tests.extend(r.bootstrap for r in result.metrics.values())
    for result in comparison.pooled:
        for r in result.metrics.values():
            if r.wilcoxon is not None:  # pooled over >= 2 subsets
                tests.extend((r.bootstrap, r.wilcoxon, r.sign_test))
    unique = list({id(t): t for t in tests}.values())
    adjusted = stats.holm([t.p for t in unique])
    for test, value in zip(unique, adjusted):
        test.p_holm = float(value)
    comparison.family = int(np.isfinite([t.p for t in unique]).sum())


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


def _attach_noise(comparison: Comparison, groups: list[GroupNoise]) -> None:
    comparison.noise_measured = bool(groups)
    for result in comparison.subsets + comparison.pooled:
        for metric, r in result.metrics.items():
            r.noise = noise_band(groups, result.scope, metric) if groups else None
