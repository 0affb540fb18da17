"""From subsets to the paper's Table-3 quantities: fixed-effects pooling of paired differences.

The benchmark's subsets are fixed strata, not a sample of subsets: a dataset's mean is the mean of
its subsets' metrics, and the overall mean the mean of the dataset means (Table 3). Both are
weighted sums of subset differences, sum_s w_s d_s, so (the subsets holding different images)

  - the variance is sum_s w_s^2 v_s, v_s the subset's U-statistic variance (`mmad.metrics.paired_tests`);
  - the bootstrap draws are sum_s w_s d*_s, the subsets' paired resamples combined draw by draw,
    and the interval is their percentile interval.

No random-effects shrinkage: the question is whether B beats A on these subsets, not on subsets
like them. With run-to-run noise measured, its variance enters test and interval with its degrees
of freedom (`noise_rules.noisy_p`). Rank tests across subsets (or, for the overall mean, across
datasets) are descriptive and use the row's own units, so that every number of a row is about one
aggregation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from mmad.comparison.noise import NoiseBand
from mmad.metrics import multiplicity, noise_rules, paired_tests, stats

ALPHA = 0.05
TIE_DECIMALS = 12  # a difference that is 0 after rounding is a tie (float noise between equal metrics)


@dataclass(frozen=True)
class Part:
    """One subset's paired difference of one metric, as pooling needs it."""

    base: float
    other: float
    diff: float
    variance: float
    draws: np.ndarray  # B paired resampled differences


@dataclass(frozen=True)
class Pooled:
    """A weighted sum of subset differences: values, variance and draws."""

    base: float
    other: float
    diff: float
    variance: float
    draws: np.ndarray


def table3_weights(datasets: Sequence[str]) -> np.ndarray:
    """Weight of each subset (named by its dataset) in the mean over datasets of the dataset means:
    1 / (datasets x subsets of its dataset)."""
    names, inverse, counts = np.unique(np.asarray(datasets, dtype=object).astype(str), return_inverse=True,
                                       return_counts=True)
    return 1.0 / (names.size * counts[inverse]) if len(datasets) else np.zeros(0)


def fixed_effects(weights: ArrayLike, diffs: ArrayLike, variances: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """sum_s w_s d_s and sum_s w_s^2 v_s over the last axis (subsets), for any batch of grids."""
    weights = np.asarray(weights, dtype=float)
    return np.asarray(diffs, dtype=float) @ weights, np.asarray(variances, dtype=float) @ (weights ** 2)


def pool(parts: Sequence[Part], weights: np.ndarray) -> Pooled:
    """`fixed_effects` of the parts, and their draws combined draw by draw (sum_s w_s d*_s)."""
    weights = np.asarray(weights, dtype=float)
    diff, variance = fixed_effects(weights, [p.diff for p in parts], [p.variance for p in parts])
    draws = np.asarray(weights @ np.stack([p.draws for p in parts]), dtype=float)
    return Pooled(float(weights @ [p.base for p in parts]), float(weights @ [p.other for p in parts]),
                  float(diff), float(variance), draws)


def single(part: Part) -> Pooled:
    """A subset on its own (weight 1)."""
    return pool([part], np.ones(1))


@dataclass(frozen=True)
class Decision:
    """The test and interval of one scope: images, and run-to-run noise when it was measured."""

    p: float
    low: float
    high: float


def decide(pooled: Pooled, noise: NoiseBand | None, confidence: float = 1 - ALPHA) -> Decision:
    """p and interval of a pooled difference: the U-statistic z-test and the percentile interval of
    the draws, or, with run-to-run noise, the df-aware test and the interval widened by the noise."""
    low, high = stats.percentile_interval(pooled.draws, confidence)
    if noise is None:
        return Decision(float(paired_tests.z_test(pooled.diff, pooled.variance).p), low, high)
    p = float(noise_rules.noisy_p(pooled.diff, pooled.variance, noise.run_variance, noise.df))
    if math.isfinite(low) and math.isfinite(high):
        low, high = noise_rules.noisy_interval(pooled.diff, low, high, noise.run_variance, noise.df, confidence)
    return Decision(p if math.isfinite(pooled.diff) else math.nan, low, high)


@dataclass(frozen=True)
class RankTests:
    """Wins, ties and losses over a row's units, and the two rank tests when they can reach ALPHA."""

    units: str  # "subsets" or "datasets"
    wins: int
    ties: int
    losses: int
    sign_p: float | None
    wilcoxon_p: float | None
    note: str  # why they were not run ("" when they were)

    def as_json(self) -> dict:
        return {"units": self.units, "wins": self.wins, "ties": self.ties, "losses": self.losses,
                "sign_p": self.sign_p, "wilcoxon_p": self.wilcoxon_p, "note": self.note or None}


def rank_tests(differences: Sequence[float], units: str, alpha: float = ALPHA) -> RankTests:
    """Sign and signed-rank tests of the units' differences, run only when their smallest possible
    p (2 / 2^n with n non-zero differences) is below alpha; otherwise a note says so."""
    d = np.round(np.asarray(differences, dtype=float), TIE_DECIMALS)
    sign = multiplicity.sign_test(d)
    nonzero = sign.wins + sign.losses
    smallest = multiplicity.smallest_p(nonzero)
    if smallest > alpha:
        note = (f"sign and signed-rank tests not run: with {nonzero} non-tied {units} their smallest "
                f"possible p is {smallest:.3g}, above {alpha:g}")
        return RankTests(units, sign.wins, sign.ties, sign.losses, None, None, note)
    return RankTests(units, sign.wins, sign.ties, sign.losses, sign.p, multiplicity.wilcoxon_signed_rank(d), "")
