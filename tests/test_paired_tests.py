"""mmad.metrics.paired_tests against brute force: metrics and influence values, DeLong (Sun & Xu) against
the textbook double loop, the second-order term against explicit pair tables, the noise rules.
Calibration (do the tests hold their level?) is in tests/test_calibration.py."""

import math
import warnings

import numpy as np
import pytest
from scipy import stats as scipy_stats

from mmad import metrics
from mmad.metrics import noise_rules, paired_tests


def _runs(seed=0, sizes=(9, 7, 8, 6), rows=3, rounding=None):
    rng = np.random.default_rng(seed)
    levels = np.repeat(np.arange(len(sizes)), sizes)
    shared = rng.normal(0, 1, (rows, levels.size))
    a = levels * 0.8 + shared + rng.normal(0, 0.5, (rows, levels.size))
    b = levels * 0.9 + shared + rng.normal(0, 0.5, (rows, levels.size))
    if rounding:
        a, b = np.round(a * rounding), np.round(b * rounding)
    return levels, a, b


def _psi(x, y, tie):
    return 1.0 if x > y else tie if x == y else 0.0


def _slow_shares(levels, scores, ties):
    """c_i = sum over the images j of other levels of psi(higher, lower), by a double loop."""
    tie = 0.5 if ties == "half" else 0.0
    n = levels.size
    share = np.zeros(n)
    for i in range(n):
        for j in range(n):
            if levels[i] > levels[j]:
                share[i] += _psi(scores[i], scores[j], tie)
            elif levels[i] < levels[j]:
                share[i] += _psi(scores[j], scores[i], tie)
    return share


@pytest.mark.parametrize("ties", ["half", "strict"])
@pytest.mark.parametrize("rounding", [None, 1])
def test_estimates_equal_the_metrics_and_influence_equals_the_double_loop(ties, rounding):
    levels, a, _ = _runs(1, rounding=rounding)
    got = paired_tests.metric_influences(levels, a, ties=ties)
    cross = (levels.size ** 2 - (np.bincount(levels) ** 2).sum()) / 2
    for row in range(a.shape[0]):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", metrics.MetricWarning)
            assert got["auroc"].estimate[row] == pytest.approx(metrics.auroc(levels, a[row], ties=ties), abs=1e-12)
            assert got["c_index"].estimate[row] == pytest.approx(metrics.c_index(levels, a[row], ties=ties), abs=1e-12)
            assert got["kendall_tau_b"].estimate[row] == pytest.approx(metrics.kendall_tau_b(levels, a[row]), abs=1e-12)
        assert got["c_index"].influence[row] == pytest.approx(_slow_shares(levels, a[row], ties) / cross)
    no_normal = paired_tests.metric_influences(levels + 1, a, ties=ties)
    assert np.all(np.isnan(no_normal["auroc"].estimate)) and np.all(no_normal["auroc"].influence == 0)


def _slow_delong(positive, a, b):
    """DeLong, DeLong & Clarke-Pearson (1988), the textbook way: structural components by loops."""
    x, y = np.flatnonzero(positive), np.flatnonzero(~positive)
    comps = []
    for s in (a, b):
        v10 = np.array([np.mean([_psi(s[i], s[j], 0.5) for j in y]) for i in x])
        v01 = np.array([np.mean([_psi(s[i], s[j], 0.5) for i in x]) for j in y])
        comps.append((v10, v01))
    (a10, a01), (b10, b01) = comps
    s10 = np.cov(np.vstack([a10, b10]))
    s01 = np.cov(np.vstack([a01, b01]))
    variance = (s10[0, 0] + s10[1, 1] - 2 * s10[0, 1]) / x.size + (s01[0, 0] + s01[1, 1] - 2 * s01[0, 1]) / y.size
    return b10.mean() - a10.mean(), variance


def test_delong_by_midranks_equals_the_textbook_and_the_stratified_form_on_two_levels():
    levels, a, b = _runs(2, sizes=(11, 9), rows=4, rounding=2)
    positive = levels == 1
    fast = paired_tests.delong_paired(positive, a, b)
    strata = paired_tests.resampling_strata(levels)
    first = paired_tests.stratified_variance(strata, paired_tests.metric_influences(levels, b)["auroc"].influence
                                             - paired_tests.metric_influences(levels, a)["auroc"].influence)
    for row in range(4):
        diff, variance = _slow_delong(positive, a[row], b[row])
        assert (fast.diff[row], fast.variance[row]) == pytest.approx((diff, variance), rel=1e-12)
        assert first[row] == pytest.approx(variance, rel=1e-12)  # two strata: DeLong exactly
    assert fast.p == pytest.approx(2 * scipy_stats.norm.sf(np.abs(fast.diff) / np.sqrt(fast.variance)))


def _slow_second_order(levels, a, b, ties, metric):
    """The interaction mean square of each level pair's kernel table, by loops."""
    tie = 0.5 if ties == "half" else 0.0
    values = np.unique(levels)
    n = levels.size
    sizes = {v: int((levels == v).sum()) for v in values}
    cross = (n * n - sum(s * s for s in sizes.values())) / 2
    total = 0.0
    for hi in values:
        for lo in values[values < hi]:
            if metric == "auroc" and lo != 0:
                continue
            rows, cols = np.flatnonzero(levels == hi), np.flatnonzero(levels == lo)
            k = np.array([[_psi(b[i], b[j], tie) - _psi(a[i], a[j], tie) for j in cols] for i in rows])
            r = k - k.mean(axis=1, keepdims=True) - k.mean(axis=0, keepdims=True) + k.mean()
            ms = (r ** 2).sum() / ((rows.size - 1) * (cols.size - 1))
            scale = cross if metric == "c_index" else sizes[0] * (n - sizes[0])
            total += sizes[hi] * sizes[lo] * ms / scale ** 2
    return total


@pytest.mark.parametrize("ties", ["half", "strict"])
def test_second_order_term_equals_explicit_pair_tables(ties):
    levels, a, b = _runs(3, rows=2, rounding=1)
    got = paired_tests.second_order_terms(levels, a, b, ties=ties)
    for row in range(2):
        for metric in ("auroc", "c_index"):
            assert got[metric][row] == pytest.approx(_slow_second_order(levels, a[row], b[row], ties, metric))
    # a level above `most` images uses evenly spaced ones: close to, not equal to, the full table
    sub = paired_tests.second_order_terms(levels, a, b, ties=ties, most=6)
    assert not np.allclose(sub["c_index"], got["c_index"]) and np.all(sub["c_index"] > 0)
    # the corrected variance never falls below half of the first-order one
    assert paired_tests.unbiased_variance(1.0, 0.7) == 0.5 and paired_tests.unbiased_variance(1.0, 0.2) == 0.8


def test_z_test_edges():
    test = paired_tests.z_test(np.array([0.0, 0.1, 0.1, np.nan]), np.array([0.0, 0.0, 0.01, 0.01]))
    assert test.p[0] == 1.0 and math.isnan(test.p[1]) and math.isnan(test.p[3])
    assert test.p[2] == pytest.approx(2 * scipy_stats.norm.sf(1.0))


def test_noise_rules_use_students_t_with_the_repeats_df():
    sd, df = 0.02, 2
    run_variance = 2 * sd ** 2
    assert noise_rules.noise_band(run_variance, df) == pytest.approx(scipy_stats.t.ppf(0.975, 2) * math.sqrt(2) * sd)
    p = noise_rules.noisy_p(0.1, 1e-4, run_variance, df)
    alone = 2 * scipy_stats.t.sf(0.1 / math.sqrt(run_variance), df)
    df_eff = (1e-4 + run_variance) ** 2 * df / run_variance ** 2
    combined = 2 * scipy_stats.t.sf(0.1 / math.sqrt(1e-4 + run_variance), df_eff)
    assert p == pytest.approx(max(alone, combined))
    assert noise_rules.noisy_p(0.1, 1e-4, 0.0, df) == pytest.approx(2 * scipy_stats.norm.sf(10))  # no noise
    low, high = noise_rules.noisy_interval(0.1, 0.08, 0.13, run_variance, df)
    assert low < 0.08 and high > 0.13 and (0.1 - low) < (high - 0.1)  # wider, skew kept


def test_bca_without_bias_or_acceleration_is_the_percentile_interval():
    draws = np.random.default_rng(0).normal(0, 1, 4001)
    centre = float(np.median(draws))
    assert paired_tests.bca_interval(centre, draws, 0.0) == pytest.approx(tuple(np.quantile(draws, [0.025, 0.975])),
                                                                          abs=2e-3)
    low, high = paired_tests.bca_interval(centre, draws, 0.1)
    assert high > np.quantile(draws, 0.975)  # positive acceleration stretches the upper tail
