"""Is a difference between two runs real? Paired bootstrap of the paper's metrics, and rank tests.

numpy/scipy only; of ours it imports `mmad.metrics` alone.

Paired, stratified bootstrap. A resample draws images with replacement within each severity level
(every level stays present), and the *same* resample is applied to every run being compared, so
image difficulty cancels out of the difference. A level of n images gets n - 1 draws (the "n - 1
bootstrap"): n draws underestimate a level's variance by (n - 1)/n, which matters for MAD-Bench's
small levels (6-20 images) and showed as coverage below 95% on null pairs. A resample is a row of a
count matrix W (B x n): W[b, i] = how many times image i was drawn. No data is copied: each run is
sorted by score once and the weighted pair counts of every resample come from weighted cumulative
sums along that order (`_counts_by_pairs`), or, when scores take few values (MLLM answers), from
per-(score, level) cell totals (`_counts_by_cells`). A drawn-twice image is two rows tied in both
level and score, exactly as a copied row would be (it counts in tau-b's tie totals).

Intervals and p-values (decisions documented in docs/compare.md, checked for calibration in
tests/test_stats.py):
  - interval: the percentile interval of the resampled differences;
  - p-value: a bootstrap z-test, p = 2 * Phi(-|delta| / sd(delta*)). The shifted-null count
    (share of |delta* - delta| >= |delta|, +1 corrected) is kept too (`shifted_null_p`), but its
    floor 1 / (B + 1) cannot pass a Holm correction over the ~150 tests of one comparison unless
    B > 3,000, so it is not what verdicts use.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from mmad import metrics

DEFAULT_RESAMPLES = 2000
METRICS = ("auroc", "c_index", "kendall_tau_b")
_CHUNK_CELLS = 1 << 19  # resample rows are processed in blocks of about this many matrix cells


# --------------------------------------------------------------------------- resampling

def stratified_indices(levels: np.ndarray, n_boot: int, seed: int | Sequence[int]) -> np.ndarray:
    """Row indices of each resample (B x (n - levels)): per level in ascending order, `rng.integers`
    draws max(size - 1, 1) of that level's rows. This is *the* definition of a resample; the
    count matrix below is derived from it (and the tests copy rows by it)."""
    levels = np.asarray(levels)
    rng = np.random.default_rng(seed)
    blocks = []
    for value in np.unique(levels):
        rows = np.flatnonzero(levels == value)
        blocks.append(rows[rng.integers(0, rows.size, size=(n_boot, max(rows.size - 1, 1)))])
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


def _counts_by_pairs(run: RankedRun, weights: np.ndarray) -> tuple[np.ndarray, ...]:
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


def _counts_by_cells(run: RankedRun, weights: np.ndarray) -> tuple[np.ndarray, ...]:
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
    """One run's metrics on the data (`observed`) and on each resample (`resampled`, B values)."""

    observed: dict[str, float]
    resampled: dict[str, np.ndarray]


def bootstrap_runs(levels: np.ndarray, runs: Mapping[str, np.ndarray], *, n_boot: int = DEFAULT_RESAMPLES,
                   seed: int | Sequence[int] = 0, ties: str = "half") -> dict[str, Resampled]:
    """The same stratified resamples applied to every run's scores on the same rows (paired)."""
    counts = resample_counts(levels, n_boot, seed)
    return {name: Resampled(observed_metrics(levels, scores, ties=ties),
                            weighted_metrics(rank_run(levels, scores), counts, ties=ties))
            for name, scores in runs.items()}


@dataclass(frozen=True)
class PairedDifference:
    """other - base for one metric: observed, per resample, interval and p-values."""

    base: float
    other: float
    diff: float
    base_resampled: np.ndarray
    other_resampled: np.ndarray
    diff_resampled: np.ndarray
    low: float
    high: float
    p: float  # bootstrap z-test (what verdicts use)
    p_shifted: float  # shifted-null resampling count, +1 corrected


def paired_difference(base: Resampled, other: Resampled, metric: str, confidence: float = 0.95) -> PairedDifference:
    diff = other.observed[metric] - base.observed[metric]
    resampled = other.resampled[metric] - base.resampled[metric]
    low, high = percentile_interval(resampled, confidence)
    return PairedDifference(base.observed[metric], other.observed[metric], diff, base.resampled[metric],
                            other.resampled[metric], resampled, low, high, z_test_p(diff, resampled),
                            shifted_null_p(diff, resampled))


def paired_bootstrap(levels: np.ndarray, base_scores: np.ndarray, other_scores: np.ndarray, *,
                     n_boot: int = DEFAULT_RESAMPLES, seed: int | Sequence[int] = 0,
                     ties: str = "half") -> dict[str, PairedDifference]:
    """Per metric: both runs' values and their difference, observed and on the same resamples."""
    runs = bootstrap_runs(levels, {"base": base_scores, "other": other_scores}, n_boot=n_boot, seed=seed, ties=ties)
    return {metric: paired_difference(runs["base"], runs["other"], metric) for metric in METRICS}


def percentile_interval(resampled: np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    """The (1 - confidence)/2 and (1 + confidence)/2 quantiles of the finite resampled values."""
    finite = resampled[np.isfinite(resampled)]
    if finite.size == 0:
        return math.nan, math.nan
    alpha = (1 - confidence) / 2
    low, high = np.quantile(finite, [alpha, 1 - alpha])
    return float(low), float(high)


def z_test_p(observed: float, resampled: np.ndarray) -> float:
    """Two-sided p of observed / sd(resampled) against a standard normal (0 difference = p 1).
    Resamples that never vary (a level of one image, identical runs) give NaN: not testable."""
    finite = resampled[np.isfinite(resampled)]
    if not math.isfinite(observed) or finite.size < 2:
        return math.nan
    if observed == 0:
        return 1.0
    sd = float(np.std(finite, ddof=1))
    if sd == 0:
        return math.nan
    return math.erfc(abs(observed) / sd / math.sqrt(2))


def shifted_null_p(observed: float, resampled: np.ndarray) -> float:
    """(1 + #{|delta* - delta| >= |delta|}) / (B + 1): the resamples recentred on the null."""
    finite = resampled[np.isfinite(resampled)]
    if not math.isfinite(observed) or finite.size == 0:
        return math.nan
    return float((1 + np.count_nonzero(np.abs(finite - observed) >= abs(observed))) / (finite.size + 1))


# --------------------------------------------------------------------------- pooled (two-level)

def pooled_resamples(observed: np.ndarray, resampled: np.ndarray, *, seed: int | Sequence[int] = 0,
                     n_boot: int | None = None, shrink: bool = True) -> np.ndarray:
    """Resampled means over subsets of a per-subset difference: a two-level bootstrap.

    `observed` (S,) are the subsets' differences, `resampled` (S x B) their image-level resamples.
    Each pooled resample draws S subsets with replacement and, for each draw, one of that subset's
    image-level resamples at random (so a subset drawn twice gets two independent inner draws).

    Plain two-level resampling counts the image-level noise twice (the spread of the observed
    subset differences already contains it), which makes 95% intervals cover ~99% under the null.
    With `shrink` (default) the subset centres are first pulled towards their mean so that their
    spread is only the between-subset excess, max(0, var(observed) - mean within-subset variance),
    the random-effects bootstrap of Davison & Hinkley (1997, sec. 3.8) and Carpenter, Goldstein &
    Rasbash (2003). With one subset it is the image-level bootstrap of that subset.
    """
    observed = np.asarray(observed, dtype=float)
    resampled = np.asarray(resampled, dtype=float)
    subsets, inner = resampled.shape
    rng = np.random.default_rng(seed)
    n_boot = n_boot or inner
    centre = float(observed.mean())
    factor = 1.0
    if shrink and subsets >= 2:
        between = float(observed.var(ddof=1))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            within = float(np.nanmean(np.nanvar(resampled, axis=1, ddof=1)))
        excess = max(between - within, 0.0) if math.isfinite(within) else between
        factor = math.sqrt(excess / between * subsets / (subsets - 1)) if between > 0 else 0.0
    centres = centre + factor * (observed - centre)
    deviations = resampled - observed[:, None]
    pick = rng.integers(0, subsets, size=(n_boot, subsets))
    column = rng.integers(0, inner, size=(n_boot, subsets))
    return (centres[pick] + deviations[pick, column]).mean(axis=1)


# --------------------------------------------------------------------------- rank tests over subsets

def wilcoxon_signed_rank(differences: Sequence[float]) -> float:
    """Two-sided p of the Wilcoxon signed-rank test, as `scipy.stats.wilcoxon(d)` by default:
    zeros dropped ("wilcox"); n <= 50 without ties or zeros: the exact distribution; ties or zeros
    with n <= 13: the exact sign-flip permutation distribution; otherwise the normal approximation
    with tie correction and no continuity correction (n counts the zeros in these choices)."""
    d = np.asarray(differences, dtype=float)
    if d.size == 0:
        return math.nan
    nonzero = d[d != 0]
    ranks, tie_sizes = _average_ranks(np.abs(nonzero))
    r_plus = float(ranks[nonzero > 0].sum())
    has_ties = bool(np.any(tie_sizes > 1))
    zeros = d.size - nonzero.size
    if d.size <= 50 and not has_ties and not zeros:
        return _wilcoxon_exact(r_plus, nonzero.size)
    if d.size <= 13:
        signs = ((np.arange(2 ** nonzero.size)[:, None] >> np.arange(nonzero.size)) & 1).astype(bool)
        null = (signs * ranks).sum(axis=1)  # every sign pattern of the non-zero differences
        gamma = abs(np.finfo(float).eps * 100 * r_plus)
        p = 2 * min(np.mean(null <= r_plus + gamma), np.mean(null >= r_plus - gamma))
        return float(min(p, 1.0))
    count = nonzero.size
    mean = count * (count + 1) / 4
    variance = (count * (count + 1) * (2 * count + 1) - (tie_sizes ** 3 - tie_sizes).sum() / 2) / 24
    if variance <= 0:
        return math.nan
    return math.erfc(abs(r_plus - mean) / math.sqrt(variance) / math.sqrt(2))


def _average_ranks(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Average ranks (1-based) and the size of each group of equal values."""
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    starts = np.flatnonzero(np.concatenate(([True], ordered[1:] != ordered[:-1]))) if values.size else order
    sizes = np.diff(np.concatenate((starts, [values.size])))
    ranks = np.empty(values.size)
    ranks[order] = np.repeat(starts + (sizes + 1) / 2, sizes)
    return ranks, sizes


def _wilcoxon_exact(r_plus: float, n: int) -> float:
    """Exact null of W+ for n distinct ranks: the number of subsets of {1..n} with each sum."""
    counts = np.zeros(n * (n + 1) // 2 + 1)
    counts[0] = 1.0
    for k in range(1, n + 1):
        counts[k:] = counts[k:] + counts[:-k].copy()
    pmf = counts / 2.0 ** n
    low = pmf[: int(math.ceil(r_plus)) + 1].sum()
    high = pmf[int(math.floor(r_plus)):].sum()
    return float(min(2 * min(low, high), 1.0))


@dataclass(frozen=True)
class SignTest:
    wins: int
    ties: int
    losses: int
    p: float  # exact two-sided binomial p over wins + losses (ties dropped); NaN when all tie


def sign_test(differences: Sequence[float]) -> SignTest:
    """Exact binomial sign test (p = 1/2), ties dropped: equals `scipy.stats.binomtest(wins, n)`."""
    d = np.asarray(differences, dtype=float)
    wins, losses = int((d > 0).sum()), int((d < 0).sum())
    n = wins + losses
    if n == 0:
        return SignTest(0, int(d.size), 0, math.nan)
    tail = sum(math.comb(n, i) for i in range(min(wins, losses) + 1))
    return SignTest(wins, int(d.size) - n, losses, min(1.0, 2 * tail / 2 ** n))


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values (step-down); NaN entries are not tested and stay NaN."""
    p = np.asarray(pvalues, dtype=float)
    adjusted = np.full(p.shape, np.nan)
    tested = np.flatnonzero(np.isfinite(p))
    m = tested.size
    order = tested[np.argsort(p[tested], kind="stable")]
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[index]))
        adjusted[index] = running
    return adjusted
