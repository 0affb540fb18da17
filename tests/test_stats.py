"""mmad.metrics.stats: the vectorised paired bootstrap against a slow loop over copied rows, the strata
and draws of a resample, and the single-run BCa intervals of `eval --bootstrap`."""

import warnings

import numpy as np
import pytest
from scipy import stats as scipy_stats

from mmad import metrics
from mmad.metrics import paired_tests, stats


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
    runs = stats.bootstrap_runs(levels, {"a": a, "b": b}, n_boot=n_boot, seed=seed, ties=ties)
    result = stats.paired_bootstrap(levels, a, b, n_boot=n_boot, seed=seed, ties=ties)
    index = stats.stratified_indices(levels, n_boot, seed)  # the same resamples, as row indices
    for row in range(n_boot):
        copy = index[row]  # explicit resampled copies: duplicated rows tie in level and score
        slow_a, slow_b = _slow(levels[copy], a[copy], ties), _slow(levels[copy], b[copy], ties)
        for metric in stats.METRICS:
            assert runs["a"].resampled[metric][row] == pytest.approx(slow_a[metric], abs=1e-12)
            assert runs["b"].resampled[metric][row] == pytest.approx(slow_b[metric], abs=1e-12)
            assert result[metric].diff_resampled[row] == pytest.approx(slow_b[metric] - slow_a[metric], abs=1e-12)
    observed_a, observed_b = _slow(levels, a, ties), _slow(levels, b, ties)
    for metric in stats.METRICS:
        r = result[metric]
        assert r.base == pytest.approx(observed_a[metric], abs=1e-12)
        assert r.diff == pytest.approx(observed_b[metric] - observed_a[metric], abs=1e-12)
        assert (r.low, r.high) == pytest.approx(tuple(np.quantile(r.diff_resampled, [0.025, 0.975])))
        test = paired_tests.paired_tests(levels, a, b, ties=ties)[metric]  # the verdict's test, same numbers
        assert (r.variance, r.p) == pytest.approx((float(test.variance), float(test.p)), rel=1e-12)


def test_weighted_metrics_with_unit_weights_equal_metrics_even_without_a_normal_level():
    rng = np.random.default_rng(5)
    for levels in (rng.integers(0, 6, 200), rng.integers(1, 4, 50), np.zeros(10, dtype=int)):
        scores = np.round(rng.normal(levels, 1.5), 0)
        got = stats.weighted_metrics(stats.rank_run(levels, scores), np.ones((2, levels.size)))
        expected = _slow(levels, scores, "half")
        for metric in stats.METRICS:
            assert got[metric][0] == pytest.approx(expected[metric], abs=1e-12, nan_ok=True)


def test_resamples_draw_n_minus_1_per_stratum_and_a_lonely_image_moves_with_its_neighbours():
    levels = np.repeat([0, 1, 2, 5], [7, 1, 4, 9])  # level 1 has one image: drawn with level 0
    assert paired_tests.resampling_strata(levels).tolist() == [0] * 8 + [1] * 4 + [2] * 9
    index = stats.stratified_indices(levels, 300, 4)
    drawn = levels[index]
    assert np.all(np.isin(drawn[:, :7], [0, 1])) and np.all(drawn[:, 7:10] == 2) and np.all(drawn[:, 10:] == 5)
    assert index.shape == (300, 7 + 3 + 8)  # n - 1 draws per stratum of n
    lonely = (drawn[:, :7] == 1).sum(axis=1)
    assert lonely.min() == 0 and lonely.max() >= 2  # the lonely image varies between resamples
    assert np.array_equal(index, stats.stratified_indices(levels, 300, 4))
    assert not np.array_equal(index, stats.stratified_indices(levels, 300, 5))
    counts = stats.resample_counts(levels, 300, 4)
    assert np.array_equal(counts[17], np.bincount(index[17], minlength=levels.size))
    assert paired_tests.resampling_strata(np.array([3, 3, 1, 0, 0])).tolist() == [1, 1, 0, 0, 0]  # lowest: up
    assert paired_tests.resampling_strata(np.array([0, 1, 2])).tolist() == [0, 0, 0]  # chains of singles


def test_a_planted_effect_is_detected():
    rng = np.random.default_rng(8)
    levels = np.repeat([0, 1, 2, 3], [60, 50, 50, 40])
    shared = rng.normal(0, 1, levels.size)
    base = levels * 0.3 + shared + rng.normal(0, 1, levels.size)
    other = levels * 0.9 + shared + rng.normal(0, 1, levels.size)  # more severity signal
    result = stats.paired_bootstrap(levels, base, other, n_boot=1000, seed=1)
    for metric in stats.METRICS:
        r = result[metric]
        assert r.diff > 0 and r.low > 0 and r.p < 0.05


def test_eval_intervals_are_bca_of_compares_resamples_and_cover_near_auroc_1():
    """One run's AUROC near its bound (binormal, true AUROC 0.967, 30 + 30 images): 300 samples,
    BCa covers 93-97 %, where the percentile interval of the same resamples does not (~88 %)."""
    rng = np.random.default_rng(1)
    gap = 2.6
    true = scipy_stats.norm.cdf(gap / np.sqrt(2))
    levels = np.repeat([0, 1], 30)
    bca = percentile = 0
    samples = 300
    for r in range(samples):
        scores = np.where(levels == 0, rng.normal(0, 1, 60), rng.normal(gap, 1, 60))
        low, high = stats.bootstrap_intervals(levels, scores, n_boot=600, seed=r)["auroc"]
        bca += low <= true <= high
        run = stats.resample_run(levels, scores, stats.resample_counts(levels, 600, r))
        low, high = stats.percentile_interval(run.resampled["auroc"])
        percentile += low <= true <= high
    assert 0.93 <= bca / samples <= 0.97, bca / samples
    assert percentile / samples < 0.91, percentile / samples
