"""Decisions over many tests: rank tests across subsets, Holm, fixed sequences and graphical
procedures (Bretz et al. 2009) for one comparison or a grid of variants against one base.

numpy only; imports nothing of ours.

A *fixed sequence* tests hypotheses in a pre-specified order, each at the full level alpha, and
stops at the first one it cannot reject; it controls the family-wise error at alpha (Maurer,
Hothorn & Lehmacher 1995). Several sequences (one per variant compared with the same base) are
combined by the graphical procedure: each sequence starts with alpha / m; a sequence that has
rejected all of its hypotheses passes its level on to the others in equal parts. With one
hypothesis per sequence this is Holm's procedure, and with one sequence it is the fixed sequence.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike


def wilcoxon_signed_rank(differences: ArrayLike) -> float:
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


def sign_test(differences: ArrayLike) -> SignTest:
    """Exact binomial sign test (p = 1/2), ties dropped: equals `scipy.stats.binomtest(wins, n)`."""
    d = np.asarray(differences, dtype=float)
    wins, losses = int((d > 0).sum()), int((d < 0).sum())
    n = wins + losses
    if n == 0:
        return SignTest(0, int(d.size), 0, math.nan)
    tail = sum(math.comb(n, i) for i in range(min(wins, losses) + 1))
    return SignTest(wins, int(d.size) - n, losses, min(1.0, 2 * tail / 2 ** n))


def smallest_p(n: int) -> float:
    """The smallest two-sided p the exact sign and signed-rank tests can give with n non-zero
    differences: 2 / 2^n (all differences of one sign)."""
    return min(1.0, 2.0 / 2.0 ** n) if n > 0 else 1.0


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


def fixed_sequence(pvalues: ArrayLike) -> np.ndarray:
    """Adjusted p-values of a fixed sequence along the last axis: the running maximum (hypothesis k
    is rejected at alpha when it and every hypothesis before it have p <= alpha). NaN (not
    testable) counts as 1: the sequence stops there."""
    p = np.where(np.isfinite(pvalues), pvalues, 1.0)
    return np.maximum.accumulate(p, axis=-1)


def chain_graph(lengths: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Initial weights and transition matrix of m fixed sequences (chains of the given lengths):
    weight 1/m on each chain's first hypothesis, each hypothesis passes everything to the next in
    its chain, the last one of a chain passes equal shares to the first of every other chain."""
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(int)
    total = int(sum(lengths))
    weights = np.zeros(total)
    transitions = np.zeros((total, total))
    heads = [s for s, length in zip(starts, lengths) if length]
    for start, length in zip(starts, lengths):
        if not length:
            continue
        weights[start] = 1 / len(heads)
        for k in range(start, start + length - 1):
            transitions[k, k + 1] = 1.0
        others = [h for h in heads if h != start]
        for head in others:
            transitions[start + length - 1, head] = 1 / len(others)
    return weights, transitions


def graphical_adjusted(pvalues: ArrayLike, weights: np.ndarray, transitions: np.ndarray) -> np.ndarray:
    """Adjusted p-values of the graphical Bonferroni procedure (Bretz, Maurer, Brannath & Posch
    2009, algorithm 1 with its adjusted p-values): reject the hypothesis with the smallest p / w,
    pass its weight along the graph, update the graph, repeat. NaN p counts as 1."""
    p = np.where(np.isfinite(pvalues), np.asarray(pvalues, dtype=float), 1.0)
    w = np.asarray(weights, dtype=float).copy()
    g = np.asarray(transitions, dtype=float).copy()
    active = np.ones(p.size, dtype=bool)
    adjusted = np.ones(p.size)
    running = 0.0
    while active.any():
        with np.errstate(divide="ignore"):
            ratio = np.where(active & (w > 0), p / np.where(w > 0, w, 1), np.inf)
        j = int(np.argmin(ratio))
        if not math.isfinite(ratio[j]):
            adjusted[active] = 1.0
            break
        running = max(running, min(1.0, ratio[j]))
        adjusted[j] = running
        active[j] = False
        w, g = _remove(j, w, g, active)
    return adjusted


def graphical_rejections(pvalues: ArrayLike, weights: np.ndarray, transitions: np.ndarray, alpha: float) -> np.ndarray:
    """Which hypotheses the graphical procedure rejects at alpha (the same decisions as
    `graphical_adjusted(...) <= alpha`, stopping at the first step that rejects nothing)."""
    p = np.where(np.isfinite(pvalues), np.asarray(pvalues, dtype=float), 1.0)
    w = np.asarray(weights, dtype=float).copy()
    g = np.asarray(transitions, dtype=float).copy()
    rejected = np.zeros(p.size, dtype=bool)
    while True:
        candidates = np.flatnonzero(~rejected & (w > 0) & (p <= alpha * w))
        if candidates.size == 0:
            return rejected
        j = int(candidates[0])
        rejected[j] = True
        w, g = _remove(j, w, g, ~rejected)


def _remove(j: int, w: np.ndarray, g: np.ndarray, active: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bretz et al.'s update after rejecting j: its weight flows along its edges, and every path
    l -> j -> k becomes an edge l -> k (divided by 1 - g_lj g_jl)."""
    w = w.copy()
    w[active] += w[j] * g[j, active]
    w[j] = 0.0
    passed = np.outer(g[:, j], g[j, :])
    back = g[:, j] * g[j, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        updated = np.where((1 - back)[:, None] > 0, (g + passed) / (1 - back)[:, None], 0.0)
    np.fill_diagonal(updated, 0.0)
    updated[j, :] = 0.0
    updated[:, j] = 0.0
    updated[~active, :] = 0.0
    return w, updated
