"""The metrics core of MAD-Bench (paper appendix A). numpy/scipy only; imports nothing of ours.

Every metric takes `levels` (integer severity levels, 0 = normal; round fractional severities up
with `severity_levels` first) and `scores` (higher = more anomalous) and returns a float.

Ties. The paper counts a pair only when f(x_i) > f(x_j) strictly (`ties="strict"`). The reference
code's stack (sklearn `roc_auc_score`, lifelines `concordance_index`) counts a tied score across two
levels as 1/2 (`ties="half"`). **The default is "half"**, so numbers agree with published tables.
Undefined cases (no normal rows, a single level, constant scores for tau-b) return NaN and warn.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

TIES = ("half", "strict")


class MetricWarning(UserWarning):
    """A metric is undefined for the given rows and came out NaN."""


@dataclass(frozen=True)
class PairCounts:
    """Pair counts between rows of different levels, plus the tie totals tau-b needs."""

    concordant: int  # higher level has the higher score
    tied: int  # different levels, equal scores
    cross: int  # pairs of different levels
    level_ties: int  # pairs within one level
    score_ties: int  # pairs with equal scores (any levels)
    total: int  # all pairs

    @property
    def discordant(self) -> int:
        return self.cross - self.concordant - self.tied


def severity_levels(severity: np.ndarray) -> np.ndarray:
    """Fractional severities are rounded up, as the benchmark does (`np.ceil`)."""
    return np.ceil(np.asarray(severity, dtype=float)).astype(np.int64)


def check_inputs(levels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One validation helper for every metric: 1-D, equal length, finite."""
    levels = np.asarray(levels)
    scores = np.asarray(scores, dtype=float)
    if levels.ndim != 1 or scores.ndim != 1:
        raise ValueError("levels and scores must be 1-D")
    if levels.shape != scores.shape:
        raise ValueError(f"levels ({levels.size}) and scores ({scores.size}) differ in length")
    if not np.all(np.isfinite(scores)):
        raise ValueError("scores contain NaN or inf; drop unscored rows first (drop_missing)")
    if levels.dtype.kind == "f":
        if not np.all(np.isfinite(levels)):
            raise ValueError("levels contain NaN or inf")
        if np.any(levels != np.round(levels)):
            raise ValueError("levels must be integers; round severities with severity_levels()")
    return levels.astype(np.int64), scores


def drop_missing(levels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Rows without a score (failed calls) are dropped and counted, never imputed."""
    scores = np.asarray(scores, dtype=float)
    keep = np.isfinite(scores)
    return np.asarray(levels)[keep], scores[keep], int((~keep).sum())


def _pairs_within(counts: np.ndarray) -> int:
    counts = counts.astype(np.int64)
    return int((counts * (counts - 1) // 2).sum())


@dataclass(frozen=True)
class _ScoreOrder:
    """Rows sorted once by score; shared by every metric computed on the same rows."""

    levels: np.ndarray  # input order
    scores: np.ndarray  # input order
    sorted_levels: np.ndarray
    run_start: np.ndarray  # per sorted position: where its run of equal scores starts
    run_end: np.ndarray  # ... and ends (exclusive)
    run_sizes: np.ndarray  # one entry per run


def _score_order(levels: np.ndarray, scores: np.ndarray) -> _ScoreOrder:
    levels, scores = check_inputs(levels, scores)
    order = np.argsort(scores)  # stability is not needed: equal scores are handled as runs
    sorted_scores = scores[order]
    n = scores.size
    breaks = np.flatnonzero(sorted_scores[1:] != sorted_scores[:-1]) + 1
    starts = np.concatenate(([0], breaks)).astype(np.int64)
    ends = np.concatenate((breaks, [n])).astype(np.int64)
    sizes = ends - starts if n else np.zeros(0, dtype=np.int64)
    if n == 0:
        starts = ends = sizes
    return _ScoreOrder(levels, scores, levels[order], np.repeat(starts, sizes),
                       np.repeat(ends, sizes), sizes)


def _level_counts(levels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct level values and their counts (bincount when levels are small non-negative ints)."""
    if levels.size and levels.min() >= 0 and levels.max() < 1_000_000:
        counts = np.bincount(levels)
        values = np.flatnonzero(counts)
        return values, counts[values]
    return np.unique(levels, return_counts=True)


def pair_counts(levels: np.ndarray, scores: np.ndarray) -> PairCounts:
    """Count every pair by how its scores order against its levels, in O(n log n)."""
    return _pair_counts(_score_order(levels, scores))


def _pair_counts(ordered: _ScoreOrder) -> PairCounts:
    """How it works: one sort by score. Rows with equal scores form a run [start, end) in
    that order. For a level g, a running count of rows with a level below g tells, at a run's
    start, how many lower-level rows score strictly less than a row of that run, and the count at
    its end minus the count at its start how many tie with it. Summing over the rows of level g
    gives the concordant and tied cross-level pairs: one sort, then one O(n) sweep per level
    (MAD-Bench has 4-7 levels). With many distinct levels (continuous severities) a bitwise
    divide-and-conquer takes over.
    """
    n = ordered.levels.size
    values, counts = _level_counts(ordered.levels)
    total = n * (n - 1) // 2
    level_ties = _pairs_within(counts)
    if values.size <= SWEEP_MAX_LEVELS:
        concordant = tied = 0
        for value in values[1:]:
            below = np.concatenate(([0], np.cumsum(ordered.sorted_levels < value)))
            mine = ordered.sorted_levels == value
            at_start = below[ordered.run_start[mine]]
            concordant += int(at_start.sum())
            tied += int((below[ordered.run_end[mine]] - at_start).sum())
    else:
        _, level_index = np.unique(ordered.levels, return_inverse=True)
        concordant, tied = _cross_counts_bitwise(level_index.astype(np.int64).ravel(), ordered.scores)
    return PairCounts(concordant, tied, total - level_ties, level_ties,
                      _pairs_within(ordered.run_sizes), total)


SWEEP_MAX_LEVELS = 32


def _cross_counts_bitwise(level_index: np.ndarray, scores: np.ndarray) -> tuple[int, int]:
    """O(n log n log G) for many levels.

    Any two rows of different levels first differ at one bit k of the level index, where the
    higher row has a 1, the lower a 0, and both share the bits above k (their node). Per bit, sort
    the lower rows' keys `node * M + score rank` and binary-search the upper rows' keys in them.
    """
    _, rank = np.unique(scores, return_inverse=True)
    rank = rank.astype(np.int64).ravel()
    span = int(rank.max()) + 1
    concordant = tied = 0
    for bit in range(int(level_index.max()).bit_length()):
        node = level_index >> (bit + 1)
        upper = ((level_index >> bit) & 1).astype(bool)
        lower_keys = np.sort(node[~upper] * span + rank[~upper])
        upper_node = node[upper] * span
        upper_keys = upper_node + rank[upper]
        left = np.searchsorted(lower_keys, upper_keys, side="left")
        right = np.searchsorted(lower_keys, upper_keys, side="right")
        start = np.searchsorted(lower_keys, upper_node, side="left")
        concordant += int((left - start).sum())
        tied += int((right - left).sum())
    return concordant, tied


def _ratio(numerator: float, denominator: float, what: str) -> float:
    if denominator == 0:
        warnings.warn(f"{what} is undefined for these rows (no comparable pairs)", MetricWarning,
                      stacklevel=3)
        return math.nan
    return numerator / denominator


def _credit(won: int, tied: int, ties: str) -> float:
    if ties not in TIES:
        raise ValueError(f"ties must be one of {TIES}, not {ties!r}")
    return won + (0.5 * tied if ties == "half" else 0.0)


def c_index(levels: np.ndarray, scores: np.ndarray, *, ties: str = "half") -> float:
    """Share of pairs from different levels whose scores are ordered like their levels.

    Pairs of equal level are skipped. `ties="half"` (default) = lifelines `concordance_index`;
    `ties="strict"` = the paper's appendix A.2 formula (a tie earns nothing).
    """
    return _c_index(pair_counts(levels, scores), ties)


def _normal_vs_levels(ordered: _ScoreOrder) -> dict[int, tuple[int, int, int]]:
    """For each anomalous level a: (pairs won against level 0, pairs tied, |L_a| * |L_0|)."""
    sorted_levels = ordered.sorted_levels
    below = np.concatenate(([0], np.cumsum(sorted_levels == 0)))
    n_normal = int(below[-1])
    values, counts = _level_counts(ordered.levels)
    result = {}
    for level, count in zip(values, counts):
        if level <= 0:
            continue
        mine = sorted_levels == level
        at_start = below[ordered.run_start[mine]]
        result[int(level)] = (int(at_start.sum()), int((below[ordered.run_end[mine]] - at_start).sum()),
                              int(count) * n_normal)
    return result


def _auroc(per_level: dict[int, tuple[int, int, int]], ties: str) -> float:
    won, tied, pairs = (sum(v[i] for v in per_level.values()) for i in range(3))
    return _ratio(_credit(won, tied, ties), pairs, "AUROC")


def auroc(levels: np.ndarray, scores: np.ndarray, *, ties: str = "half") -> float:
    """Level 0 against every anomalous level (appendix A.1); "half" = sklearn `roc_auc_score`."""
    return _auroc(_normal_vs_levels(_score_order(levels, scores)), ties)


def auroc_by_level(levels: np.ndarray, scores: np.ndarray, *, ties: str = "half") -> dict[int, float]:
    """Level 0 against each anomalous level on its own: {level: AUROC}."""
    return _auroc_by_level(_normal_vs_levels(_score_order(levels, scores)), ties)


def _auroc_by_level(per_level: dict[int, tuple[int, int, int]], ties: str) -> dict[int, float]:
    return {level: _ratio(_credit(won, tied, ties), pairs, f"AUROC of level {level}")
            for level, (won, tied, pairs) in per_level.items()}


def kendall_tau_b(levels: np.ndarray, scores: np.ndarray) -> float:
    """Kendall's tau-b (appendix A.3) = scipy `kendalltau`: (C - D) / sqrt((n0 - n1)(n0 - n2))."""
    return _kendall(pair_counts(levels, scores))


def _kendall(counts: PairCounts) -> float:
    denominator = math.sqrt((counts.total - counts.level_ties) * (counts.total - counts.score_ties))
    return _ratio(counts.concordant - counts.discordant, denominator, "Kendall tau-b")


def _c_index(counts: PairCounts, ties: str) -> float:
    return _ratio(_credit(counts.concordant, counts.tied, ties), counts.cross, "C-index")


@dataclass(frozen=True)
class Summary:
    """The paper's three metrics on one set of rows."""

    n: int
    auroc: float
    auroc_by_level: dict[int, float]
    c_index: float
    kendall_tau_b: float


def summarize(levels: np.ndarray, scores: np.ndarray, *, ties: str = "half") -> Summary:
    """AUROC (overall and per level), C-index and Kendall tau-b from a single sort."""
    ordered = _score_order(levels, scores)
    counts = _pair_counts(ordered)
    per_level = _normal_vs_levels(ordered)
    return Summary(ordered.levels.size, _auroc(per_level, ties), _auroc_by_level(per_level, ties),
                   _c_index(counts, ties), _kendall(counts))


def expand_normal(levels: np.ndarray, k: int) -> np.ndarray:
    """Treat levels <= k as normal (level 0); higher levels keep their value."""
    levels = np.asarray(levels, dtype=np.int64)
    return np.where(levels <= k, 0, levels)


def bootstrap_ci(metric: Callable[[np.ndarray, np.ndarray], float], levels: np.ndarray,
                 scores: np.ndarray, *, n_boot: int = 1000, confidence: float = 0.95,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval, resampling rows within each level (every level stays present)."""
    levels, scores = check_inputs(levels, scores)
    rng = np.random.default_rng(seed)
    groups = [np.flatnonzero(levels == level) for level in np.unique(levels)]
    values = np.empty(n_boot)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MetricWarning)
        for b in range(n_boot):
            idx = np.concatenate([rng.choice(g, size=g.size, replace=True) for g in groups])
            values[b] = metric(levels[idx], scores[idx])
    alpha = (1 - confidence) / 2
    low, high = np.nanquantile(values, [alpha, 1 - alpha])
    return float(low), float(high)


def ranking_agreement(table: np.ndarray) -> np.ndarray:
    """Spearman correlation between metrics of the method rankings they induce.

    `table` is methods x metrics; the result is metrics x metrics.
    """
    from scipy import stats  # imported here: scipy.stats costs ~0.6 s at start-up

    table = np.asarray(table, dtype=float)
    if table.ndim != 2 or table.shape[0] < 3:
        raise ValueError("need a methods x metrics table with at least 3 methods")
    if table.shape[1] == 2:
        rho = stats.spearmanr(table[:, 0], table[:, 1]).statistic
        return np.array([[1.0, rho], [rho, 1.0]])
    return np.asarray(stats.spearmanr(table).statistic, dtype=float)
