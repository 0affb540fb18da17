"""Paired tests of two runs on the same images: U-statistic variances of AUROC, C-index and
Kendall tau-b, DeLong's test, BCa intervals, and run-to-run noise with its degrees of freedom.

numpy/scipy only; imports nothing of ours (pure math, checked against brute force in
tests/test_paired_tests.py and for calibration in tests/test_calibration.py).

All three metrics are functions of pair counts, so each has a first-order (Hoeffding) expansion
over the images: metric - E[metric] ~ sum_i phi_i. For a pair statistic N = sum over pairs k(i, j),
image i's share is c_i = sum_j k(i, j), the sum over every pair it belongs to (for AUROC this is
DeLong's "structural component" times the other class's size; Sun & Xu (2014) get it from midranks,
here from one sort per run and cumulative counts per level, which is the same number). With the
benchmark's severity levels as fixed strata (the level counts are part of the design), the
variance is

    Var(metric) ~ sum over strata g of  n_g * s_g^2(phi),   s_g^2 = sample variance within g,

and for a paired difference of two runs on the same images phi is replaced by phi_B - phi_A: the
per-image difficulty both runs share cancels image by image. With two strata (normal, anomalous)
this is exactly DeLong, DeLong & Clarke-Pearson (1988); with severity levels it is its K-sample
extension (the C-index as a K-sample U-statistic, cf. Kang et al. 2015, compareC). A level with
one image has no within-level variance: it is merged with the next lower level (`resampling_strata`).

Run-to-run noise enters through `mmad.metrics.noise_rules`. All functions accept a batch of score
vectors (shape (..., n)) over the same levels, so that thousands of simulated pairs cost one call.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

METRICS = ("auroc", "c_index", "kendall_tau_b")
_CHUNK = 1 << 22  # cells of the (rows x images x levels) count arrays processed at once


# --------------------------------------------------------------------------- strata

def resampling_strata(levels: np.ndarray) -> np.ndarray:
    """Stratum of each row: its severity level, except that a level with a single image joins the
    next lower level (the next higher one for the lowest level), so that every stratum of two or
    more images varies between resamples and has a within-stratum variance."""
    levels = np.asarray(levels)
    values, inverse, counts = np.unique(levels, return_inverse=True, return_counts=True)
    target = np.arange(values.size)
    for k in range(values.size):
        if counts[k] == 1 and values.size > 1:
            target[k] = target[k - 1] if k > 0 else 1
    for k in range(values.size):  # follow chains of single-image levels to a level that stays
        while target[target[k]] != target[k]:
            target[k] = target[target[k]]
    _, strata = np.unique(target[inverse], return_inverse=True)
    return strata.astype(np.int64)


def draws_per_stratum(size: int) -> int:
    """Resample size of a stratum of `size` images: size - 1 (at least 1). With n draws the
    bootstrap variance is (n - 1)/n of the U-statistic variance (and too small for small levels);
    with n - 1 draws the two agree."""
    return max(size - 1, 1)


def stratified_variance(strata: np.ndarray, values: np.ndarray) -> np.ndarray:
    """sum over strata g of n_g * (sample variance of `values` within g), over the last axis."""
    values = np.asarray(values, dtype=float)
    total = np.zeros(values.shape[:-1])
    for g in np.unique(strata):
        members = np.flatnonzero(strata == g)
        if members.size > 1:
            total = total + members.size * values[..., members].var(axis=-1, ddof=1)
    return total


# --------------------------------------------------------------------------- influence of each image

@dataclass(frozen=True)
class Influence:
    """A metric of each score vector (shape (...)) and each image's first-order share (..., n):
    the variance of the metric is `stratified_variance(strata, influence)`."""

    estimate: np.ndarray
    influence: np.ndarray


def metric_influences(levels: np.ndarray, scores: np.ndarray, *, ties: str = "half") -> dict[str, Influence]:
    """AUROC (level 0 vs the rest), C-index and Kendall tau-b of every score vector in `scores`
    (..., n), with each image's influence. `ties` applies to AUROC and C-index ("half": a tied pair
    counts 1/2, "strict": 0); tau-b has its own tie correction. Undefined metrics are NaN."""
    levels = np.asarray(levels)
    scores = np.asarray(scores, dtype=float)
    if ties not in ("half", "strict"):
        raise ValueError(f"ties must be 'half' or 'strict', not {ties!r}")
    batch, n = scores.shape[:-1], scores.shape[-1]
    flat = scores.reshape(-1, n)
    values, rank = np.unique(levels, return_inverse=True)
    step = max(1, _CHUNK // max(n * max(values.size, 1), 1))
    parts = [_influences(rank, values, flat[i:i + step], ties) for i in range(0, flat.shape[0], step)] or \
        [_influences(rank, values, flat, ties)]
    return {m: Influence(np.concatenate([p[m][0] for p in parts]).reshape(batch),
                         np.concatenate([p[m][1] for p in parts]).reshape(*batch, n)) for m in METRICS}


def _shares(rank: np.ndarray, levels: int, scores: np.ndarray, tie: float) -> tuple[np.ndarray, ...]:
    """For every image (in each row's score order): its credited cross-level pairs c_i (pairs with
    lower levels it beats, with higher levels that beat it, ties worth `tie`), its AUROC share
    (against the other class), and the number of other images with its score. One sort per row;
    `lower[p, g]` counts the images of levels below g among the first p in score order."""
    rows, n = scores.shape
    order = np.argsort(scores, axis=1, kind="stable")
    ordered = np.take_along_axis(scores, order, axis=1)
    level = rank[order]
    new = np.ones((rows, n), dtype=bool)
    new[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    position = np.broadcast_to(np.arange(n), (rows, n))
    start = np.maximum.accumulate(np.where(new, position, 0), axis=1)  # first of its run of equal scores
    last = np.ones((rows, n), dtype=bool)
    last[:, :-1] = new[:, 1:]
    end = np.flip(np.minimum.accumulate(np.flip(np.where(last, position, n - 1), 1), axis=1), 1) + 1
    lower = np.zeros((rows, n + 1, levels + 1), dtype=np.float64)
    np.cumsum(level[:, :, None] < np.arange(levels + 1), axis=1, out=lower[:, 1:])
    flat = lower.reshape(-1)
    base = (np.arange(rows)[:, None] * (n + 1)) * (levels + 1)

    def at(where: np.ndarray, g: np.ndarray) -> np.ndarray:
        return flat[base + where * (levels + 1) + g]

    below_low, upto_low = at(start, level), at(end, level)  # images of lower levels below / up to
    below_high, upto_high = start - at(start, level + 1), end - at(end, level + 1)  # of higher levels
    sizes = np.bincount(rank, minlength=levels)
    above = n - np.cumsum(sizes)[level]  # images of higher levels
    share = (1 - tie) * below_low + tie * upto_low + above - (1 - tie) * upto_high - tie * below_high
    normal_below = (1 - tie) * at(start, np.ones_like(level)) + tie * at(end, np.ones_like(level))
    auroc = np.where(level == 0, share, normal_below)
    back = np.empty_like(order)
    np.put_along_axis(back, order, position, axis=1)
    return tuple(np.take_along_axis(x, back, axis=1) for x in (share, auroc, end - start - 1.0))


def _influences(rank: np.ndarray, values: np.ndarray, scores: np.ndarray, ties: str) -> dict:
    rows, n = scores.shape
    levels = values.size
    nan = np.full(rows, np.nan)
    if n == 0 or levels == 0:
        return {m: (nan, np.zeros((rows, n))) for m in METRICS}
    share, auroc_share, score_ties = _shares(rank, levels, scores, 0.5 if ties == "half" else 0.0)
    share_half = share if ties == "half" else _shares(rank, levels, scores, 0.5)[0]
    sizes = np.bincount(rank, minlength=levels).astype(float)
    cross = (n * n - (sizes ** 2).sum()) / 2  # pairs of different levels
    with np.errstate(divide="ignore", invalid="ignore"):
        c_index = share.sum(axis=1) / 2 / cross if cross > 0 else nan
        c_influence = share / cross if cross > 0 else np.zeros((rows, n))
        # Kendall tau-b = (2 N - P) / sqrt(Dy * Ds): N half-credited concordance, Ds with score ties
        all_pairs = n * (n - 1) / 2
        level_pairs = all_pairs - (sizes * (sizes - 1) / 2).sum()
        score_pairs = all_pairs - score_ties.sum(axis=1) / 2
        denominator = np.sqrt(level_pairs * score_pairs)
        defined = denominator > 0
        tau = np.where(defined, (share_half.sum(axis=1) - cross) / np.where(defined, denominator, 1), np.nan)
        tau_influence = np.where(defined[:, None], 2 * share_half / np.where(defined, denominator, 1)[:, None]
                                 + (tau / (2 * np.where(defined, score_pairs, 1)))[:, None] * score_ties, 0.0)
    if values[0] == 0 and 0 < sizes[0] < n:  # AUROC: level 0 (normal) against every other level
        normal = rank == 0
        n0, n1 = sizes[0], n - sizes[0]
        auroc = (auroc_share * ~normal).sum(axis=1) / (n0 * n1)
        auroc_influence = auroc_share / (n0 * n1)
    else:
        auroc, auroc_influence = nan, np.zeros((rows, n))
    return {"auroc": (auroc, auroc_influence), "c_index": (c_index, c_influence),
            "kendall_tau_b": (tau, tau_influence)}


# --------------------------------------------------------------------------- paired tests

@dataclass(frozen=True)
class PairedTest:
    """other - base: the difference, its U-statistic variance, z and two-sided normal p."""

    diff: np.ndarray
    variance: np.ndarray
    z: np.ndarray
    p: np.ndarray


def paired_tests(levels: np.ndarray, base: np.ndarray, other: np.ndarray, *, ties: str = "half") -> dict[str, PairedTest]:
    """Per metric, the paired test of other - base on the same images (any batch shape)."""
    levels = np.asarray(levels)
    strata = resampling_strata(levels)
    a = metric_influences(levels, base, ties=ties)
    b = metric_influences(levels, other, ties=ties)
    second = second_order_terms(levels, base, other, ties=ties)
    tests = {}
    for m in METRICS:
        first = stratified_variance(strata, b[m].influence - a[m].influence)
        tests[m] = z_test(b[m].estimate - a[m].estimate, unbiased_variance(first, second[m]))
    return tests


def unbiased_variance(first_order: ArrayLike, second_order: ArrayLike) -> np.ndarray:
    """DeLong's first-order variance less the pairs' own variance it counts twice, never below half
    of it (tiny samples, where the second-order estimate is itself noisy)."""
    first_order = np.asarray(first_order, dtype=float)
    return np.maximum(first_order - np.asarray(second_order, dtype=float), first_order / 2)


def second_order_terms(levels: np.ndarray, base: np.ndarray, other: np.ndarray, *, ties: str = "half",
                       most: int = 200) -> dict[str, np.ndarray]:
    """What the first-order variance counts twice, per metric (to subtract from it).

    The Hoeffding decomposition of a two-sample U-statistic has a second-order term
    tau = Var(k_ij) - Var(E[k|i]) - Var(E[k|j]) with weight 1/(n_g n_h); DeLong's estimator holds it
    twice, which makes paired tests of strongly correlated runs on small levels conservative (3.7 %
    instead of 5 % for 15 subsets of 20 images per level at r = 0.9). For each pair of levels the
    pair-kernel table k_ij = beta_B psi_B(i, j) - beta_A psi_A(i, j) (images i of the higher level,
    j of the lower) gives tau as the interaction mean square of a two-way layout, which is unbiased;
    levels larger than `most` images use `most` evenly spaced ones (any sub-table estimates tau).
    Kendall tau-b uses its concordance part only (score ties enter at higher order)."""
    levels = np.asarray(levels)
    base, other = np.asarray(base, dtype=float), np.asarray(other, dtype=float)
    batch, n = base.shape[:-1], base.shape[-1]
    values, rank = np.unique(levels, return_inverse=True)
    sizes = np.bincount(rank, minlength=values.size).astype(float)
    members = [np.flatnonzero(rank == g) for g in range(values.size)]
    picked = [m[np.unique(np.linspace(0, m.size - 1, most).round().astype(int))] if m.size > most else m
              for m in members]
    cross = (n * n - (sizes ** 2).sum()) / 2
    a_flat, b_flat = base.reshape(-1, n), other.reshape(-1, n)
    beta_a, beta_b = (_tau_scale(levels, x) for x in (a_flat, b_flat))
    totals = {m: np.zeros(a_flat.shape[0]) for m in METRICS}
    for high in range(1, values.size):
        for low in range(high):
            if sizes[high] < 2 or sizes[low] < 2 or cross == 0:
                continue
            rows, cols = picked[high], picked[low]
            weight = sizes[high] * sizes[low] / ((rows.size - 1) * (cols.size - 1))
            half = [_PairTable(x[:, rows], x[:, cols], 0.5) for x in (a_flat, b_flat)]
            mine = half if ties == "half" else [_PairTable(x[:, rows], x[:, cols], 0.0) for x in (a_flat, b_flat)]
            difference = mine[1].squares() + mine[0].squares() - 2 * mine[0].products(mine[1])
            totals["c_index"] += weight * difference / cross ** 2
            totals["kendall_tau_b"] += weight * (beta_b ** 2 * half[1].squares() + beta_a ** 2 * half[0].squares()
                                                 - 2 * beta_a * beta_b * half[0].products(half[1]))
            if low == 0 and values[0] == 0:
                totals["auroc"] += weight * difference / (sizes[0] * (n - sizes[0])) ** 2
    return {m: total.reshape(batch) for m, total in totals.items()}


class _PairTable:
    """psi(i, j) for the images i of a higher level (rows) and j of a lower one (columns): 1 when
    i scores above j, `tie` when equal; with the sums a two-way layout's interaction needs."""

    def __init__(self, high: np.ndarray, low: np.ndarray, tie: float):
        gap = np.sign(high[:, :, None] - low[:, None, :]).astype(np.float32)
        self.table = (gap + 1) / 2 if tie == 0.5 else (gap > 0).astype(np.float32)
        self.rows = self.table.sum(axis=2, dtype=np.float64)
        self.cols = self.table.sum(axis=1, dtype=np.float64)
        self.total = self.rows.sum(axis=1)

    def products(self, other: _PairTable) -> np.ndarray:
        """Interaction sum of cross-products: sum (x - row - col + grand)(y - row - col + grand)."""
        r, c = self.table.shape[1], self.table.shape[2]
        flat, other_flat = self.table.reshape(len(self.table), -1), other.table.reshape(len(other.table), -1)
        inner = np.einsum("ij,ij->i", flat, other_flat, dtype=np.float64)
        return (inner - np.einsum("ij,ij->i", self.rows, other.rows) / c
                - np.einsum("ij,ij->i", self.cols, other.cols) / r + self.total * other.total / (r * c))

    def squares(self) -> np.ndarray:
        return self.products(self)


def _tau_scale(levels: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """d tau-b / d(concordant pairs, ties half) = 2 / sqrt(Dy Ds) for each score vector."""
    n = scores.shape[1]
    all_pairs = n * (n - 1) / 2
    _, counts = np.unique(levels, return_counts=True)
    level_pairs = all_pairs - (counts * (counts - 1) / 2).sum()
    ordered = np.sort(scores, axis=1)
    new = np.ones(ordered.shape, dtype=bool)
    new[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    position = np.arange(n)
    tied = (position - np.maximum.accumulate(np.where(new, position, 0), axis=1)).sum(axis=1)  # earlier equals
    denominator = np.sqrt(level_pairs * (all_pairs - tied))
    with np.errstate(divide="ignore"):
        return np.where(denominator > 0, 2 / np.where(denominator > 0, denominator, 1), 0.0)


def z_test(diff: ArrayLike, variance: ArrayLike) -> PairedTest:
    """Two-sided normal p of diff / sqrt(variance); a zero difference has p = 1, a zero variance
    with a non-zero difference (nothing varies) NaN."""
    from scipy import special  # scipy is imported on use: it costs ~1 s of every command's start-up
    diff = np.asarray(diff, dtype=float)
    variance = np.asarray(variance, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = diff / np.sqrt(variance)
        p = np.where(diff == 0, 1.0, np.where(variance > 0, special.erfc(np.abs(z) / math.sqrt(2)), np.nan))
    return PairedTest(diff, variance, z, np.where(np.isfinite(diff), p, np.nan))


def delong_paired(positive: np.ndarray, base: np.ndarray, other: np.ndarray) -> PairedTest:
    """DeLong's paired test of two AUROCs (ties count 1/2) by Sun & Xu's (2014) midrank algorithm:
    V10 = (midrank among all - midrank among positives) / negatives, V01 likewise; the classic two
    strata (positive, negative). Batched over leading axes of `base` and `other`."""
    from scipy import stats as scipy_stats
    positive = np.asarray(positive, dtype=bool)
    m, n = int(positive.sum()), int((~positive).sum())
    components = []
    for scores in (np.asarray(base, dtype=float), np.asarray(other, dtype=float)):
        everything = scipy_stats.rankdata(scores, axis=-1)
        v10 = (everything[..., positive] - scipy_stats.rankdata(scores[..., positive], axis=-1)) / n
        v01 = 1 - (everything[..., ~positive] - scipy_stats.rankdata(scores[..., ~positive], axis=-1)) / m
        components.append((v10, v01))
    (a10, a01), (b10, b01) = components
    diff = b10.mean(axis=-1) - a10.mean(axis=-1)
    variance = (b10 - a10).var(axis=-1, ddof=1) / m + (b01 - a01).var(axis=-1, ddof=1) / n
    return z_test(diff, variance)


# --------------------------------------------------------------------------- BCa interval

def acceleration(strata: np.ndarray, influence: np.ndarray) -> float:
    """BCa acceleration from the images' influence values, centred within their strata:
    a = sum u^3 / (6 (sum u^2)^1.5) (Efron 1987; Davison & Hinkley 1997, sec. 3.2 for strata)."""
    influence = np.asarray(influence, dtype=float)
    centred = influence.copy()
    for g in np.unique(strata):
        members = strata == g
        centred[members] -= influence[members].mean()
    spread = float((centred ** 2).sum())
    return float((centred ** 3).sum() / (6 * spread ** 1.5)) if spread > 0 else 0.0


def bca_interval(observed: float, draws: np.ndarray, accel: float, confidence: float = 0.95) -> tuple[float, float]:
    """Bias-corrected and accelerated bootstrap interval: the percentile interval moved by the
    bootstrap's median bias (z0) and skew of the variance (accel). It keeps its coverage near a
    metric's bound (AUROC near 1), where the plain percentile interval does not. NaN draws (an
    undefined resample) are left out."""
    from scipy import special
    draws = np.asarray(draws, dtype=float)
    finite = draws[np.isfinite(draws)]
    if finite.size == 0 or not math.isfinite(observed):
        return math.nan, math.nan
    share = (np.count_nonzero(finite < observed) + 0.5 * np.count_nonzero(finite == observed)) / finite.size
    share = min(max(share, 0.5 / finite.size), 1 - 0.5 / finite.size)
    z0 = float(special.ndtri(share))
    quantiles = []
    for tail in ((1 - confidence) / 2, (1 + confidence) / 2):
        z = z0 + float(special.ndtri(tail))
        quantiles.append(float(special.ndtr(z0 + z / (1 - accel * z))) if 1 - accel * z > 0 else tail)
    low, high = np.quantile(finite, quantiles)
    return float(low), float(high)
