"""mmad.metrics.multiplicity: rank tests across subsets against scipy, Holm, fixed sequences and the
graphical procedure that joins them across variants."""

import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from mmad.metrics import multiplicity

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
    assert multiplicity.wilcoxon_signed_rank(differences) == pytest.approx(expected, rel=1e-9, abs=1e-15, nan_ok=True)


@pytest.mark.parametrize("differences", [[1, 2, -1, 0, 3, 0, 4], [1] * 9 + [-1], [-0.5, -2, 1], [5] * 20, [0, 0]])
def test_sign_test_equals_scipy_binomtest(differences):
    result = multiplicity.sign_test(differences)
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
    adjusted = multiplicity.holm([0.01, 0.04, 0.03, 0.005, math.nan])
    assert adjusted[:4] == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert math.isnan(adjusted[4])
    assert multiplicity.holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1


def test_smallest_reachable_p_of_the_rank_tests():
    assert multiplicity.smallest_p(5) == pytest.approx(0.0625) and multiplicity.smallest_p(6) == pytest.approx(0.03125)
    for n in range(1, 9):  # equals scipy's p when every difference has the same sign
        assert multiplicity.smallest_p(n) == pytest.approx(scipy_stats.binomtest(n, n).pvalue)
        assert multiplicity.smallest_p(n) == pytest.approx(scipy_stats.wilcoxon(np.arange(1.0, n + 1)).pvalue)


def test_graphical_procedure_is_holm_for_single_hypotheses_and_a_fixed_sequence_for_one_chain():
    rng = np.random.default_rng(0)
    for _ in range(100):
        m = int(rng.integers(1, 8))
        p = rng.uniform(0, 0.1, m)
        weights, transitions = multiplicity.chain_graph([1] * m)
        assert multiplicity.graphical_adjusted(p, weights, transitions) == pytest.approx(multiplicity.holm(p))
        weights, transitions = multiplicity.chain_graph([m])
        assert multiplicity.graphical_adjusted(p, weights, transitions) == pytest.approx(multiplicity.fixed_sequence(p))
        lengths = [int(x) for x in rng.integers(1, 5, int(rng.integers(1, 5)))]
        p = rng.uniform(0, 0.08, sum(lengths))
        weights, transitions = multiplicity.chain_graph(lengths)
        assert np.array_equal(multiplicity.graphical_adjusted(p, weights, transitions) <= 0.05,
                              multiplicity.graphical_rejections(p, weights, transitions, 0.05))


def test_two_chains_by_hand():
    # chains A = (0.01, 0.03) and B = (0.04,): A's head is tested at 0.025 and rejected, passing its
    # weight to A's second (0.03 > 0.025: not yet); B's head at 0.025 fails; nothing else moves.
    # Adjusted: A1 = 0.02; then min(0.03/0.5, 0.04/0.5) = 0.06 for A2; B1 gets all: 0.06 -> 0.06.
    weights, transitions = multiplicity.chain_graph([2, 1])
    adjusted = multiplicity.graphical_adjusted([0.01, 0.03, 0.04], weights, transitions)
    assert adjusted == pytest.approx([0.02, 0.06, 0.06])
    assert multiplicity.graphical_rejections([0.01, 0.03, 0.04], weights, transitions, 0.05).tolist() == [
        True, False, False]
    assert multiplicity.fixed_sequence([0.01, math.nan, 0.001]).tolist() == [0.01, 1.0, 1.0]
