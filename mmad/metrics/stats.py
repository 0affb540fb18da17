"""Paired bootstrap of the paper's metrics: the resamples, the metrics on every resample at once,
and BCa intervals; the paired tests themselves are in `mmad.metrics.paired_tests`.

numpy/scipy only; of ours it imports the rest of `mmad.metrics` alone (core, paired_tests).

Paired, stratified bootstrap. A resample draws images with replacement within each severity level
(every level stays present; a level of one image is drawn together with the next lower level,
`paired_tests.resampling_strata`), and the *same* resample is applied to every run being compared,
so image difficulty cancels out of the difference. A level of n images gets n - 1 draws
(`paired_tests.draws_per_stratum`): n draws make a level's variance (n - 1)/n of the U-statistic
variance, which matters for MAD-Bench's small levels (6-20 images). `mmad eval --bootstrap` and
`mmad compare` draw the same resamples. A resample is a row of a count matrix W (B x n): W[b, i] =
how many times image i was drawn. No data is copied: each run is sorted by score once and the
weighted pair counts of every resample come from weighted cumulative sums along that order
(`_counts_by_pairs`), or, when scores take few values (MLLM answers), from per-(score, level) cell
totals (`_counts_by_cells`). A drawn-twice image is two rows tied in both level and score, exactly
as a copied row would be (it counts in tau-b's tie totals).

Intervals (docs/compare.md; calibration in tests/test_calibration.py): for a paired difference the
percentile interval of the resampled differences; for one run's metric (`eval --bootstrap`) the
BCa interval (bias-corrected and accelerated, Efron 1987), which keeps its coverage near AUROC 1
where the percentile interval does not (94 % against 88 % at AUROC 0.97). For differences BCa and
bootstrap-t were tried and lose coverage under the null (92 % and 85 % near AUROC 0.97): their
estimated bias, acceleration or resample SE are noise there.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from mmad import metrics
from mmad.metrics import paired_tests

DEFAULT_RESAMPLES = 2000
METRICS = ("auroc", "c_index", "kendall_tau_b")
_CHUNK_CELLS = 1 << 19  # resample rows are processed in blocks of about this many matrix cells


# --------------------------------------------------------------------------- resampling

def stratified_indices(levels: np.ndarray, n_boot: int, seed: int | Sequence[int]) -> np.ndarray:
    """Row indices of each resample (B x draws): per stratum (`paired_tests.resampling_strata`, in
    ascending order), `rng.integers` draws `paired_tests.draws_per_stratum(size)` of its rows. This
    is *the* definition of a resample; the count matrix below is derived from it (and the tests
    copy rows by it)."""
    strata = paired_tests.resampling_strata(np.asarray(levels))
    rng = np.random.default_rng(seed)
    blocks = []
    for value in np.unique(strata):
        rows = np.flatnonzero(strata == value)
        blocks.append(rows[rng.integers(0, rows.size, size=(n_boot, paired_tests.draws_per_stratum(rows.size)))])
    return np.concatenate(blocks, axis=1) if blocks else np.zeros((n_boot, 0), dtype=np.int64)


def resample_counts(levels: np.ndarray, n_boot: int, seed: int | Sequence[int]) -> np.ndarray:
    """W (B x n, float64): how many times each row is drawn in each resample of `stratified_indices`."""
    index = stratified_indices(levels, n_boot, seed)
    n = np.asarray(levels).size
    flat = (np.arange(n_boot, dtype=np.int64)[:, None] * n + index).ravel()
    return np.bincount(flat, minlength=n_boot * n).reshape(n_boot, n).astype(np.float64)


# --------------------------------------------------------------------------- weighted metrics

@dataclass(frozen=True)
class _LevelPair:
    """For each row of the higher level (in score order): how many rows of the lower level lie
    strictly below its score (`below`) and at or below it (`upto`, None when no score is shared)."""

    low: int
    high: int
    below: np.ndarray
    upto: np.ndarray | None


@dataclass(frozen=True)
class RankedRun:
    """One run's rows sorted by score once; every resample's metrics are read off this order."""

    n: int
    levels: int  # distinct levels
    runs: int  # distinct scores
    has_normal: bool  # level 0 is present (AUROC is level 0 vs the rest)
    members: tuple[np.ndarray, ...]  # per distinct level (ascending): its rows in score order
    pairs: tuple[_LevelPair, ...]
    cell_order: np.ndarray  # rows sorted by (score, level)
    cell_starts: np.ndarray  # where each non-empty (score, level) cell starts in cell_order
    cells: np.ndarray  # its flat index score_rank * levels + level_rank
    run_starts: np.ndarray  # where each run of equal scores starts in cell_order


def rank_run(levels: np.ndarray, scores: np.ndarray) -> RankedRun:
    """Sort one run's scores and precompute, per pair of levels, where each row's ties begin/end."""
    levels, scores = metrics.check_inputs(levels, scores)
    values, level_rank = np.unique(levels, return_inverse=True)
    distinct, score_rank = np.unique(scores, return_inverse=True)
    order = np.lexsort((level_rank, score_rank))  # by score, then level
    key = (score_rank * values.size + level_rank)[order]
    cell_starts = np.flatnonzero(np.concatenate(([True], key[1:] != key[:-1]))) if key.size else key
    sorted_rank = score_rank[order]
    run_start = np.searchsorted(sorted_rank, sorted_rank, side="left")
    run_end = np.searchsorted(sorted_rank, sorted_rank, side="right")
    run_starts = np.flatnonzero(np.concatenate(([True], sorted_rank[1:] != sorted_rank[:-1]))) if key.size else key
    positions = [np.flatnonzero(level_rank[order] == g) for g in range(values.size)]
    pairs = []
    for high in range(1, values.size):
        for low in range(high):
            below = np.searchsorted(positions[low], run_start[positions[high]])
            upto = np.searchsorted(positions[low], run_end[positions[high]])
            pairs.append(_LevelPair(low, high, below, upto if np.any(upto != below) else None))
    return RankedRun(scores.size, values.size, distinct.size, bool(values.size) and values[0] == 0,
                     tuple(order[p] for p in positions), tuple(pairs), order, cell_starts, key[cell_starts], run_starts)


def weighted_metrics(run: RankedRun, weights: np.ndarray, *, ties: str = "half") -> dict[str, np.ndarray]:
    """AUROC, C-index and Kendall tau-b of every weighted copy of the run (one per row of
    `weights`, B x n; row i of the data counted weights[b, i] times). All-ones weights give
    exactly `mmad.metrics`. Undefined values are NaN (no warning: the caller counts them)."""
    if ties not in metrics.TIES:
        raise ValueError(f"ties must be one of {metrics.TIES}, not {ties!r}")
    weights = np.asarray(weights, dtype=np.float64)
    if weights.ndim != 2 or weights.shape[1] != run.n:
        raise ValueError(f"weights must be B x {run.n}, not {weights.shape}")
    by_cells = run.runs * run.levels <= run.n  # few distinct scores (MLLM answers): count per cell
    step = max(1, _CHUNK_CELLS // max(run.n, run.runs * run.levels if by_cells else 1, 1))
    count = _counts_by_cells if by_cells else _counts_by_pairs
    parts = [_finish(run, *count(run, weights[i:i + step]), ties) for i in range(0, weights.shape[0], step)]
    return {key: np.concatenate([p[key] for p in parts]) if parts else np.zeros(0) for key in METRICS}


# the weighted pair counts: concordant, tied, normal_won, normal_tied, totals per level, score ties
PairCounts = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def _counts_by_pairs(run: RankedRun, weights: np.ndarray) -> PairCounts:
    """How it works: for a pair of levels (low, high), the rows of the low level in score order
    have a running weighted count (cumulative sum of their weights). A high-level row with k
    low-level rows strictly below its score wins against exactly the weight cum[k]; with u rows at
    or below, it ties with cum[u] - cum[k]. Summing weight(row) x cum[...] over the high level's
    rows gives the weighted concordant and tied counts of the pair: O(B x n) per level pair, one
    sort per run shared by all resamples."""
    rows = weights.shape[0]
    by_level = [weights[:, members] for members in run.members]
    cumulative = []
    for level_weights in by_level[:-1]:
        cum = np.zeros((rows, level_weights.shape[1] + 1))
        np.cumsum(level_weights, axis=1, out=cum[:, 1:])
        cumulative.append(cum)
    concordant, tied, normal_won, normal_tied = (np.zeros(rows) for _ in range(4))
    for pair in run.pairs:
        mine = by_level[pair.high]
        won = np.einsum("ij,ij->i", mine, cumulative[pair.low][:, pair.below])
        draw = (np.einsum("ij,ij->i", mine, cumulative[pair.low][:, pair.upto]) - won
                if pair.upto is not None else 0.0)
        concordant += won
        tied += draw
        if pair.low == 0:
            normal_won += won
            normal_tied += draw
    totals = np.stack([w.sum(axis=1) for w in by_level], axis=1) if by_level else np.zeros((rows, 0))
    if run.runs < run.n:  # some scores tie: weight per run of equal scores
        score_ties = _within(np.add.reduceat(weights[:, run.cell_order], run.run_starts, axis=1))
    else:
        score_ties = _within(weights)
    return concordant, tied, normal_won, normal_tied, totals, score_ties


def _counts_by_cells(run: RankedRun, weights: np.ndarray) -> PairCounts:
    """With few distinct scores: M[b, r, g] = weight of level g at the r-th score (one reduceat).
    Rows of level g at score r beat the weight of lower levels at lower scores (two exclusive
    cumulative sums, over scores then levels) and tie with lower levels at the same score."""
    cells = _by_score(run, np.add.reduceat(weights[:, run.cell_order], run.cell_starts, axis=1))
    below = np.cumsum(cells, axis=1) - cells  # same level, lower scores
    lower = np.cumsum(below, axis=2) - below  # lower levels, lower scores
    same_score = np.cumsum(cells, axis=2) - cells  # lower levels, same score
    concordant = np.einsum("brg,brg->b", cells, lower)
    tied = np.einsum("brg,brg->b", cells, same_score)
    normal_won = np.einsum("brg,br->b", cells[:, :, 1:], below[:, :, 0])
    normal_tied = np.einsum("brg,br->b", cells[:, :, 1:], cells[:, :, 0])
    return concordant, tied, normal_won, normal_tied, cells.sum(axis=1), _within(cells.sum(axis=2))


def _by_score(run: RankedRun, per_cell: np.ndarray) -> np.ndarray:
    """Per-cell sums (B x non-empty cells) spread into B x scores x levels."""
    full = np.zeros((per_cell.shape[0], run.runs * run.levels))
    full[:, run.cells] = per_cell
    return full.reshape(per_cell.shape[0], run.runs, run.levels)


def _within(weights: np.ndarray) -> np.ndarray:
    """Pairs inside each group of total weight t: t(t - 1)/2, summed per row."""
    return (weights * (weights - 1) / 2).sum(axis=1)


def _finish(run: RankedRun, concordant, tied, normal_won, normal_tied, totals, score_ties, ties: str):
    """The three ratios from the weighted pair counts (totals per level, tau-b's tie totals)."""
    rows = concordant.shape[0]
    total = totals.sum(axis=1)
    all_pairs = total * (total - 1) / 2
    level_ties = _within(totals)
    cross = (total * total - (totals * totals).sum(axis=1)) / 2
    half = 0.5 if ties == "half" else 0.0
    normal = totals[:, 0] if run.has_normal else np.zeros(rows)
    with np.errstate(divide="ignore", invalid="ignore"):
        auroc = np.where(normal * (total - normal) > 0,
                         (normal_won + half * normal_tied) / (normal * (total - normal)), np.nan)
        c_index = np.where(cross > 0, (concordant + half * tied) / cross, np.nan)
        denominator = np.sqrt((all_pairs - level_ties) * (all_pairs - score_ties))
        discordant = cross - concordant - tied
        tau = np.where(denominator > 0, (concordant - discordant) / denominator, np.nan)
    return {"auroc": auroc, "c_index": c_index, "kendall_tau_b": tau}


def observed_metrics(levels: np.ndarray, scores: np.ndarray, *, ties: str = "half") -> dict[str, float]:
    """The three metrics on the rows as they are (NaN when undefined, without a warning)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", metrics.MetricWarning)
        summary = metrics.summarize(levels, scores, ties=ties)
    return {"auroc": summary.auroc, "c_index": summary.c_index, "kendall_tau_b": summary.kendall_tau_b}


# --------------------------------------------------------------------------- paired bootstrap

@dataclass(frozen=True)
class Resampled:
    """One run's metrics on the data (`observed`), on each resample (`resampled`, B values), and
    each image's influence on them (`influence`, n values: variances, BCa acceleration)."""

    observed: dict[str, float]
    resampled: dict[str, np.ndarray]
    influence: dict[str, np.ndarray]


def bootstrap_runs(levels: np.ndarray, runs: Mapping[str, np.ndarray], *, n_boot: int = DEFAULT_RESAMPLES,
                   seed: int | Sequence[int] = 0, ties: str = "half") -> dict[str, Resampled]:
    """The same stratified resamples applied to every run's scores on the same rows (paired)."""
    counts = resample_counts(levels, n_boot, seed)
    return {name: resample_run(levels, scores, counts, ties=ties) for name, scores in runs.items()}


def resample_run(levels: np.ndarray, scores: np.ndarray, counts: np.ndarray, *, ties: str = "half") -> Resampled:
    """One run's metrics, on the data and on each resample of `counts`, with influence values."""
    influences = paired_tests.metric_influences(levels, scores, ties=ties)
    return Resampled(observed_metrics(levels, scores, ties=ties),
                     weighted_metrics(rank_run(levels, scores), counts, ties=ties),
                     {m: influences[m].influence for m in METRICS})


@dataclass(frozen=True)
class PairedDifference:
    """other - base for one metric: observed, per resample, percentile interval, and the paired test."""

    base: float
    other: float
    diff: float
    diff_resampled: np.ndarray
    low: float
    high: float
    variance: float  # U-statistic variance of diff (second-order corrected; mmad.metrics.paired_tests)
    p: float  # two-sided p of the paired test (DeLong for AUROC)


def paired_difference(levels: np.ndarray, base: Resampled, other: Resampled, metric: str,
                      second_order: float, confidence: float = 0.95) -> PairedDifference:
    """other - base: the percentile interval of the paired resamples and the paired U-statistic
    test. `second_order`: this metric's `paired_tests.second_order_terms` for the pair."""
    diff = other.observed[metric] - base.observed[metric]
    resampled = other.resampled[metric] - base.resampled[metric]
    first = paired_tests.stratified_variance(paired_tests.resampling_strata(levels),
                                             other.influence[metric] - base.influence[metric])
    variance = float(paired_tests.unbiased_variance(first, second_order))
    low, high = percentile_interval(resampled, confidence)
    return PairedDifference(base.observed[metric], other.observed[metric], diff, resampled, low, high, variance,
                            float(paired_tests.z_test(diff, variance).p))


def paired_bootstrap(levels: np.ndarray, base_scores: np.ndarray, other_scores: np.ndarray, *,
                     n_boot: int = DEFAULT_RESAMPLES, seed: int | Sequence[int] = 0,
                     ties: str = "half") -> dict[str, PairedDifference]:
    """Per metric: both runs' values and their difference, observed and on the same resamples."""
    runs = bootstrap_runs(levels, {"base": base_scores, "other": other_scores}, n_boot=n_boot, seed=seed, ties=ties)
    second = paired_tests.second_order_terms(levels, base_scores, other_scores, ties=ties)
    return {metric: paired_difference(levels, runs["base"], runs["other"], metric, float(second[metric]))
            for metric in METRICS}


def bootstrap_intervals(levels: np.ndarray, scores: np.ndarray, *, n_boot: int = DEFAULT_RESAMPLES,
                        seed: int | Sequence[int] = 0, ties: str = "half",
                        confidence: float = 0.95) -> dict[str, tuple[float, float]]:
    """BCa intervals of one run's metrics from the same resamples `compare` draws (`eval --bootstrap`)."""
    levels = np.asarray(levels)
    run = resample_run(levels, scores, resample_counts(levels, n_boot, seed), ties=ties)
    strata = paired_tests.resampling_strata(levels)
    return {m: paired_tests.bca_interval(run.observed[m], run.resampled[m],
                                         paired_tests.acceleration(strata, run.influence[m]), confidence)
            for m in METRICS}


def percentile_interval(resampled: np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    """The (1 - confidence)/2 and (1 + confidence)/2 quantiles of the finite resampled values."""
    finite = resampled[np.isfinite(resampled)]
    if finite.size == 0:
        return math.nan, math.nan
    alpha = (1 - confidence) / 2
    low, high = np.quantile(finite, [alpha, 1 - alpha])
    return float(low), float(high)
