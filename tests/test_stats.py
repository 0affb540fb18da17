"""mmad.stats: the vectorised paired bootstrap against a slow loop, calibration on null pairs,
and the rank tests against scipy."""

import math
import warnings

import numpy as np
import pytest
from scipy import stats as scipy_stats

from mmad import metrics
from mmad.metrics import stats


def _fixture(seed: int = 0, n_levels: int = 4, per_level: int = 12, tied: str = "many"):
    rng = np.random.default_rng(seed)
    levels = np.repeat(np.arange(n_levels), per_level + rng.integers(0, 5, n_levels))
    shared = rng.normal(0, 1, levels.size)
    a = levels * 0.7 + shared + rng.normal(0, 1, levels.size)
    b = levels * 0.7 + shared + rng.normal(0, 1, levels.size)
    if tied == "many":  # MLLM-like: 0-100 in steps of 10, many ties within and across levels
        a, b = (np.clip(np.round((x * 12 + 30) / 10) * 10, 0, 100) for x in (a, b))
    elif tied == "some":
        a, b = np.round(a, 1), np.round(b, 1)
    return levels, a, b


def _slow(levels, scores, ties):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", metrics.MetricWarning)
        return {"auroc": metrics.auroc(levels, scores, ties=ties),
                "c_index": metrics.c_index(levels, scores, ties=ties),
                "kendall_tau_b": metrics.kendall_tau_b(levels, scores)}


@pytest.mark.parametrize("ties", ["half", "strict"])
@pytest.mark.parametrize("tied", ["many", "some", "none"])
def test_paired_bootstrap_equals_slow_loop_over_explicit_copies(ties, tied):
    levels, a, b = _fixture(seed=3, tied=tied)
    ranked = stats.rank_run(levels, a)
    # "many": few distinct scores, counted per (score, level) cell; otherwise per pair of levels,
    # with ("some") and without ("none") scores shared across levels
    assert (ranked.runs * ranked.levels <= ranked.n) == (tied == "many")
    assert any(p.upto is not None for p in ranked.pairs) == (tied != "none")
    n_boot, seed = 60, 11
    result = stats.paired_bootstrap(levels, a, b, n_boot=n_boot, seed=seed, ties=ties)
    index = stats.stratified_indices(levels, n_boot, seed)  # the same resamples, as row indices
    for row in range(n_boot):
        copy = index[row]  # explicit resampled copies: duplicated rows tie in level and score
        slow_a, slow_b = _slow(levels[copy], a[copy], ties), _slow(levels[copy], b[copy], ties)
        for metric in stats.METRICS:
            r = result[metric]
            assert r.base_resampled[row] == pytest.approx(slow_a[metric], abs=1e-12)
            assert r.other_resampled[row] == pytest.approx(slow_b[metric], abs=1e-12)
            assert r.diff_resampled[row] == pytest.approx(slow_b[metric] - slow_a[metric], abs=1e-12)
    observed_a, observed_b = _slow(levels, a, ties), _slow(levels, b, ties)
    for metric in stats.METRICS:
        assert result[metric].base == pytest.approx(observed_a[metric], abs=1e-12)
        assert result[metric].diff == pytest.approx(observed_b[metric] - observed_a[metric], abs=1e-12)


def test_weighted_metrics_with_unit_weights_equal_metrics_even_without_a_normal_level():
    rng = np.random.default_rng(5)
    for levels in (rng.integers(0, 6, 200), rng.integers(1, 4, 50), np.zeros(10, dtype=int)):
        scores = np.round(rng.normal(levels, 1.5), 0)
        got = stats.weighted_metrics(stats.rank_run(levels, scores), np.ones((2, levels.size)))
        expected = _slow(levels, scores, "half")
        for metric in stats.METRICS:
            assert got[metric][0] == pytest.approx(expected[metric], abs=1e-12, nan_ok=True)


def test_resamples_keep_every_level_and_are_seeded():
    levels = np.repeat([0, 1, 2, 5], [7, 1, 4, 9])
    index = stats.stratified_indices(levels, 300, 4)
    drawn = levels[index]
    for value, size in ((0, 7), (1, 1), (2, 4), (5, 9)):
        # n - 1 draws per level (at least 1): every level present in every resample
        assert np.all((drawn == value).sum(axis=1) == max(size - 1, 1))
    assert np.array_equal(index, stats.stratified_indices(levels, 300, 4))
    assert not np.array_equal(index, stats.stratified_indices(levels, 300, 5))
    counts = stats.resample_counts(levels, 300, 4)
    assert np.array_equal(counts[17], np.bincount(index[17], minlength=levels.size))


def test_a_planted_effect_is_detected():
    rng = np.random.default_rng(8)
    levels = np.repeat([0, 1, 2, 3], [60, 50, 50, 40])
    shared = rng.normal(0, 1, levels.size)
    base = levels * 0.3 + shared + rng.normal(0, 1, levels.size)
    other = levels * 0.9 + shared + rng.normal(0, 1, levels.size)  # more severity signal
    result = stats.paired_bootstrap(levels, base, other, n_boot=1000, seed=1)
    for metric in stats.METRICS:
        r = result[metric]
        assert r.diff > 0 and r.low > 0 and r.p < 0.05 and r.p_shifted < 0.05


def test_calibration_on_null_pairs():
    """1,500 null pairs (both runs from one score distribution, independent noise given the level,
    mvtec-sized: 100 images in 4 levels). 400 resamples per pair (2,000 by default): at 200 the
    percentile tails are coarse enough to lose ~1 point of coverage. Standard error of a 95%
    coverage over 1,500 pairs: 0.56 points, so the 93-97% band is +/- 3.6 SE."""
    rng = np.random.default_rng(2024)
    levels = np.repeat([0, 1, 2, 3], [30, 25, 25, 20])
    pairs, covered, rejected = 1500, dict.fromkeys(stats.METRICS, 0), dict.fromkeys(stats.METRICS, 0)
    for i in range(pairs):
        a = levels * 0.6 + rng.normal(0, 1, levels.size)
        b = levels * 0.6 + rng.normal(0, 1, levels.size)
        for metric, r in stats.paired_bootstrap(levels, a, b, n_boot=400, seed=i).items():
            covered[metric] += r.low <= 0 <= r.high
            rejected[metric] += r.p < 0.05
    for metric in stats.METRICS:
        assert 0.93 <= covered[metric] / pairs <= 0.97, (metric, covered[metric] / pairs)
        assert rejected[metric] / pairs <= 0.06, (metric, rejected[metric] / pairs)


def test_calibration_of_the_pooled_two_level_interval_on_null_grids():
    """500 null grids of 5 subsets (48 images each, 4 levels), 200 resamples per subset. Plain
    two-level resampling counts image noise twice and over-covers; the shrunken version is checked
    against 93-97.5% (it is slightly conservative under a pure null, by construction)."""
    rng = np.random.default_rng(77)
    levels = np.repeat([0, 1, 2, 3], 12)
    grids, subsets = 500, 5
    covered, plain, rejected = dict.fromkeys(stats.METRICS, 0), dict.fromkeys(stats.METRICS, 0), dict.fromkeys(stats.METRICS, 0)
    for g in range(grids):
        observed, resampled = {m: [] for m in stats.METRICS}, {m: [] for m in stats.METRICS}
        for s in range(subsets):
            a = levels * 0.6 + rng.normal(0, 1, levels.size)
            b = levels * 0.6 + rng.normal(0, 1, levels.size)
            for metric, r in stats.paired_bootstrap(levels, a, b, n_boot=200, seed=(g, s)).items():
                observed[metric].append(r.diff)
                resampled[metric].append(r.diff_resampled)
        for metric in stats.METRICS:
            obs, res = np.array(observed[metric]), np.array(resampled[metric])
            low, high = stats.percentile_interval(stats.pooled_resamples(obs, res, seed=g))
            covered[metric] += low <= 0 <= high
            rejected[metric] += stats.z_test_p(obs.mean(), stats.pooled_resamples(obs, res, seed=g)) < 0.05
            low, high = stats.percentile_interval(stats.pooled_resamples(obs, res, seed=g, shrink=False))
            plain[metric] += low <= 0 <= high
    for metric in stats.METRICS:
        assert 0.93 <= covered[metric] / grids <= 0.975, (metric, covered[metric] / grids)
        assert rejected[metric] / grids <= 0.06
        assert plain[metric] > covered[metric]  # the double-counting the shrinkage removes


def test_pooled_resamples_of_one_subset_are_its_image_level_resamples():
    resampled = np.arange(50, dtype=float).reshape(1, 50) / 100
    draws = stats.pooled_resamples(np.array([0.2]), resampled, seed=3)
    assert set(np.round(draws, 10)).issubset(set(np.round(resampled[0], 10)))


def test_pooled_shrinkage_removes_between_spread_that_within_noise_explains():
    observed = np.array([0.01, -0.01, 0.0])
    resampled = observed[:, None] + np.random.default_rng(0).normal(0, 0.05, (3, 400))  # within >> between
    draws = stats.pooled_resamples(observed, resampled, seed=1)
    inner_only = resampled.mean(axis=0)
    assert np.std(draws) == pytest.approx(np.std(inner_only), rel=0.15)


WILCOXON_INPUTS = [
    [0.3, -1.2, 2.5, 0.8, 1.1, -0.4, 1.9, 0.05, 0.6, 1.4],  # n = 10, no ties: exact
    list(np.round(np.random.default_rng(1).normal(0.3, 1, 30), 4)),  # n = 30, no ties: exact
    [1.0, 1.0, -2.0, 3.0, 0.5, 0.5, 2.0, -1.0],  # ties, n = 8: permutation
    [0.0, 1.2, -0.3, 2.2, 0.0, 0.7],  # zeros, n = 6: permutation
    list(np.round(np.random.default_rng(2).normal(0.4, 1, 25), 1)),  # ties (and maybe zeros), n = 25: normal
    [0.0] * 3 + list(np.random.default_rng(3).normal(0.2, 1, 22)),  # zeros, n = 25: normal
    list(np.random.default_rng(4).normal(0.1, 1, 60)),  # n > 50: normal
    [0.0, 0.0, 0.0],  # all zero, small
    [2.0],
]


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # scipy divides 0 by 0 for all-zero input
@pytest.mark.parametrize("differences", WILCOXON_INPUTS)
def test_wilcoxon_equals_scipy(differences):
    expected = scipy_stats.wilcoxon(differences).pvalue
    assert stats.wilcoxon_signed_rank(differences) == pytest.approx(expected, rel=1e-9, abs=1e-15, nan_ok=True)


@pytest.mark.parametrize("differences", [[1, 2, -1, 0, 3, 0, 4], [1] * 9 + [-1], [-0.5, -2, 1], [5] * 20, [0, 0]])
def test_sign_test_equals_scipy_binomtest(differences):
    result = stats.sign_test(differences)
    d = np.asarray(differences, dtype=float)
    assert (result.wins, result.ties, result.losses) == ((d > 0).sum(), (d == 0).sum(), (d < 0).sum())
    if result.wins + result.losses:
        assert result.p == pytest.approx(scipy_stats.binomtest(result.wins, result.wins + result.losses).pvalue,
                                         rel=1e-12)
    else:
        assert math.isnan(result.p)


def test_holm_equals_a_hand_computation():
    # m = 4 tested (NaN is not a test): sorted 0.005, 0.01, 0.03, 0.04 -> x4, x3, x2, x1 = 0.02, 0.03,
    # 0.06, 0.04, made monotone: 0.02, 0.03, 0.06, 0.06
    adjusted = stats.holm([0.01, 0.04, 0.03, 0.005, math.nan])
    assert adjusted[:4] == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert math.isnan(adjusted[4])
    assert stats.holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1


def test_p_values_of_a_zero_difference_and_undefined_input():
    assert stats.z_test_p(0.0, np.array([0.1, -0.1, 0.05])) == 1.0
    assert math.isnan(stats.z_test_p(math.nan, np.array([0.1, -0.1])))
    assert stats.shifted_null_p(0.5, np.array([0.5, 0.5, 0.5])) == pytest.approx(1 / 4)
