"""RQ4 (AUROC per level) against sklearn, RQ5 (normal-class expansion) by hand."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from mmad.analysis.runs import evaluate_runs, load_runs
from mmad.analysis.severity_curves import expansion_curves, expansion_steps, level_curves
from tests.run_fixtures import write_run


def test_expansion_by_hand():
    levels, scores = np.array([0, 0, 1, 1, 2, 2]), np.array([1., 2, 3, 5, 4, 6])
    steps = expansion_steps(levels, scores)
    assert sorted(steps) == [0, 1]  # i = 0 .. max level - 1
    # i = 0: every anomaly beats every normal; C: 8 pairs with level 0 won, L1 {3,5} vs L2 {4,6}: 3 of 4
    assert steps[0].auroc == 1.0 and steps[0].c_index == pytest.approx(11 / 12)
    # i = 1: normal = {1,2,3,5}, level 2 = {4,6}: 4 beats 3 of them, 6 all 4 -> 7/8 (two levels: C = AUROC)
    assert steps[1].auroc == pytest.approx(7 / 8) and steps[1].c_index == pytest.approx(7 / 8)


def test_expansion_curves_mean_over_subsets(tmp_path):
    write_run(tmp_path / "r", "r", {("mvtec", "bottle"): ([0, 0, 1, 1, 2, 2], [1, 2, 3, 5, 4, 6]),
                                    ("mvtec", "cable"): ([0, 1, 1, 2], [1, 2, 3, 4]),
                                    ("visa", "pcb1"): ([0, 1, 2, 3], [1, 3, 2, None])}, kind="mllm")
    curves = expansion_curves(load_runs([tmp_path / "r"])).curves["r"]
    assert curves["mvtec"]["auroc"] == pytest.approx({0: 1.0, 1: (7 / 8 + 1) / 2})
    assert curves["mvtec"]["c_index"] == pytest.approx({0: (11 / 12 + 1) / 2, 1: (7 / 8 + 1) / 2})
    # the failed row (level 3) is dropped: levels 0,1,2 remain, scores 1,3,2
    assert curves["visa"]["c_index"] == pytest.approx({0: 2 / 3, 1: 0.5})


def test_auroc_by_level_matches_sklearn(tmp_path):
    rng = np.random.default_rng(7)
    subsets, expected = {}, {}
    for name in ("bottle", "cable"):
        levels = np.repeat([0, 1, 2, 3], 12)
        scores = np.round(levels * 0.8 + rng.normal(0, 1, levels.size), 1)  # rounding makes ties
        subsets[("mvtec", name)] = (levels.tolist(), scores.tolist())
        for level in (1, 2, 3):
            keep = (levels == 0) | (levels == level)
            expected.setdefault(level, []).append(roc_auc_score(levels[keep] == level, scores[keep]))
    write_run(tmp_path / "r", "r", subsets, kind="detector")
    runs = load_runs([tmp_path / "r"])
    curve = level_curves(evaluate_runs(runs)).curves["r"]["mvtec"]
    assert curve == pytest.approx({level: np.mean(values) for level, values in expected.items()})
