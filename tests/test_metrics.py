import itertools
import math
import warnings

import numpy as np
import pytest
from lifelines.utils import concordance_index
from scipy.stats import kendalltau
from sklearn.metrics import roc_auc_score

from mmad import metrics
from mmad.metrics import core


def naive_c_index(levels, scores, ties="half"):
    """The paper's double sum, O(n^2), with the tie rule as an option."""
    won = pairs = 0.0
    for i, j in itertools.combinations(range(len(levels)), 2):
        if levels[i] == levels[j]:
            continue
        hi, lo = (i, j) if levels[i] > levels[j] else (j, i)
        pairs += 1
        if scores[hi] > scores[lo]:
            won += 1
        elif scores[hi] == scores[lo] and ties == "half":
            won += 0.5
    return won / pairs


def naive_auroc(levels, scores, ties="half"):
    normal = [s for lv, s in zip(levels, scores) if lv == 0]
    anomal = [s for lv, s in zip(levels, scores) if lv > 0]
    won = sum((a > b) + (0.5 if ties == "half" and a == b else 0) for a in anomal for b in normal)
    return won / (len(anomal) * len(normal))


CASES = [
    # (n, number of levels, number of distinct scores): heavy ties come from few distinct scores
    (40, 4, 3), (200, 5, 6), (500, 7, 11), (300, 4, 1000), (150, 2, 2), (400, 40, 25), (250, 200, 7),
]


@pytest.mark.parametrize("n,groups,distinct", CASES)
def test_agrees_with_reference_stack(n, groups, distinct):
    rng = np.random.default_rng(n + groups)
    levels = rng.integers(0, groups, n)
    scores = rng.integers(0, distinct, n).astype(float) * 7.5
    assert metrics.c_index(levels, scores) == pytest.approx(concordance_index(levels, scores), abs=1e-9)
    assert metrics.kendall_tau_b(levels, scores) == pytest.approx(kendalltau(levels, scores).statistic, abs=1e-9)
    assert metrics.auroc(levels, scores) == pytest.approx(roc_auc_score(levels > 0, scores), abs=1e-9)
    for level, value in metrics.auroc_by_level(levels, scores).items():
        keep = (levels == 0) | (levels == level)
        assert value == pytest.approx(roc_auc_score(levels[keep] > 0, scores[keep]), abs=1e-9)


@pytest.mark.parametrize("ties", ["half", "strict"])
@pytest.mark.parametrize("seed", range(6))
def test_matches_naive_oracle(ties, seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(10, 80))
    levels = rng.integers(0, int(rng.integers(2, 8)), n)
    levels[0], levels[1] = 0, 1
    scores = rng.integers(0, 5, n).astype(float)
    assert metrics.c_index(levels, scores, ties=ties) == pytest.approx(naive_c_index(levels, scores, ties), abs=1e-12)
    assert metrics.auroc(levels, scores, ties=ties) == pytest.approx(naive_auroc(levels, scores, ties), abs=1e-12)


def test_strict_differs_from_half_only_through_ties():
    levels = np.array([0, 0, 1, 1, 2, 2])
    scores = np.array([0.0, 10, 10, 20, 20, 30])
    half, strict = metrics.c_index(levels, scores), metrics.c_index(levels, scores, ties="strict")
    assert strict < half
    unique_scores = np.array([0.0, 10, 11, 20, 21, 30])
    assert metrics.c_index(levels, unique_scores) == metrics.c_index(levels, unique_scores, ties="strict") == 1.0


def test_row_order_does_not_matter():
    rng = np.random.default_rng(7)
    levels = rng.integers(0, 5, 2000)
    scores = rng.integers(0, 30, 2000).astype(float)
    before = metrics.summarize(levels, scores)
    perm = rng.permutation(levels.size)
    after = metrics.summarize(levels[perm], scores[perm])
    assert before == after


def test_bitwise_path_equals_sweep():
    rng = np.random.default_rng(3)
    levels = rng.integers(0, 6, 3000)
    scores = rng.integers(0, 50, 3000).astype(float)
    ordered = core._score_order(levels, scores)
    sweep = core._pair_counts(ordered)
    bitwise = core._cross_counts_bitwise(levels, scores)
    assert (sweep.concordant, sweep.tied) == bitwise


def test_perfect_and_reversed_rankings():
    levels = np.repeat(np.arange(4), 5)
    assert metrics.c_index(levels, levels * 10.0) == 1.0
    assert metrics.kendall_tau_b(levels, levels * 10.0) == pytest.approx(1.0)
    assert metrics.c_index(levels, -levels * 10.0) == 0.0
    assert metrics.auroc(levels, -levels * 10.0) == 0.0


def test_tau_b_penalises_spread_within_a_level_but_c_index_does_not():
    levels = np.repeat(np.arange(3), 4)
    scores = levels * 100.0 + np.tile(np.arange(4), 3)
    assert metrics.c_index(levels, scores) == 1.0
    assert metrics.kendall_tau_b(levels, scores) < 1.0


def test_undefined_cases_are_nan_with_a_warning():
    with pytest.warns(metrics.MetricWarning):
        assert math.isnan(metrics.auroc(np.array([1, 2, 3]), np.array([1.0, 2, 3])))
    with pytest.warns(metrics.MetricWarning):
        assert math.isnan(metrics.c_index(np.array([2, 2]), np.array([1.0, 2])))
    with pytest.warns(metrics.MetricWarning):
        assert math.isnan(metrics.kendall_tau_b(np.array([0, 1, 2]), np.array([5.0, 5, 5])))


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="differ in length"):
        metrics.c_index(np.array([0, 1]), np.array([1.0]))
    with pytest.raises(ValueError, match="NaN"):
        metrics.c_index(np.array([0, 1]), np.array([1.0, np.nan]))
    with pytest.raises(ValueError, match="integers"):
        metrics.c_index(np.array([0, 1.5]), np.array([1.0, 2.0]))
    with pytest.raises(ValueError, match="ties"):
        metrics.c_index(np.array([0, 1]), np.array([1.0, 2.0]), ties="third")


def test_drop_missing_counts_and_never_imputes():
    levels, scores, dropped = metrics.drop_missing(np.array([0, 1, 2, 3]), np.array([1.0, np.nan, 3, np.nan]))
    assert dropped == 2
    assert levels.tolist() == [0, 2] and scores.tolist() == [1.0, 3.0]


def test_severity_levels_round_up():
    assert metrics.severity_levels(np.array([0, 0.5, 1, 1.5, 6])).tolist() == [0, 1, 1, 2, 6]


def test_expand_normal_merges_low_levels():
    levels = np.array([0, 1, 2, 3])
    assert metrics.expand_normal(levels, 1).tolist() == [0, 0, 2, 3]
    scores = np.array([5.0, 1.0, 6.0, 7.0])  # level 1 scores below level 0: no longer counted
    assert metrics.c_index(metrics.expand_normal(levels, 1), scores) == 1.0
    assert metrics.c_index(levels, scores) < 1.0


def test_bootstrap_is_seeded_and_brackets_the_estimate():
    rng = np.random.default_rng(0)
    levels = rng.integers(0, 4, 300)
    scores = levels + rng.normal(0, 1.5, 300)
    a = metrics.bootstrap_ci(metrics.c_index, levels, scores, n_boot=200, seed=1)
    b = metrics.bootstrap_ci(metrics.c_index, levels, scores, n_boot=200, seed=1)
    c = metrics.bootstrap_ci(metrics.c_index, levels, scores, n_boot=200, seed=2)
    assert a == b and a != c
    assert a[0] < metrics.c_index(levels, scores) < a[1]


def test_ranking_agreement():
    table = np.array([[0.9, 0.8, 0.5], [0.8, 0.7, 0.6], [0.7, 0.6, 0.7], [0.6, 0.5, 0.8]])
    rho = metrics.ranking_agreement(table)
    assert rho.shape == (3, 3)
    assert rho[0, 1] == pytest.approx(1.0) and rho[0, 2] == pytest.approx(-1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        two = metrics.ranking_agreement(table[:, :2])
    assert two[0, 1] == pytest.approx(1.0)
