"""RQ1 (Table 3) and RQ2 (rank agreement): hand-computed fixtures and the paper's own numbers."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from mmad.analysis.paper_tables import average_ranks, rank_agreement, rank_correlation, table3
from mmad.analysis.runs import evaluate_runs, load_runs
from tests.run_fixtures import write_run

# Table 3's last three columns as printed (AUC, Ken, C ranks), written by hand from the paper:
# Skip-GAN, OCR-GAN, AE4AD, RD4AD, RRD, PatchCore, PNI, IGD, CFLOW-AD, SPR,
# MMAD-4o, MMAD-4o-mini, MMAD-Sonnet, MMAD-Haiku
PAPER_AUC = [11, 10, 13, 8, 4, 6, 2, 9, 7, 14, 1, 5, 3, 12]
PAPER_KEN = [12, 11, 13, 7, 4, 6, 5, 10, 9, 14, 1, 3, 2, 8]
PAPER_C = [11, 9, 12, 6, 3, 5, 4, 8, 7, 13, 1, 4, 2, 10]


def test_spearman_of_the_papers_printed_ranks():
    assert round(rank_correlation(PAPER_AUC, PAPER_C), 3) == 0.973
    assert round(rank_correlation(PAPER_AUC, PAPER_KEN), 3) == 0.916


def test_spearman_of_values_equals_scipy():
    rng = np.random.default_rng(3)
    for _ in range(20):
        a = rng.integers(0, 6, 9).astype(float)  # ties on purpose
        b = a + rng.integers(-3, 4, 9)
        ranks_a = average_ranks({str(i): v for i, v in enumerate(a)})
        ranks_b = average_ranks({str(i): v for i, v in enumerate(b)})
        mine = rank_correlation([ranks_a[str(i)] for i in range(9)], [ranks_b[str(i)] for i in range(9)])
        assert mine == pytest.approx(stats.spearmanr(a, b).statistic, abs=1e-12)


def test_average_ranks_tie_rule():
    ranks = average_ranks({"a": .9, "b": .8, "c": .8, "d": .7, "e": math.nan})
    assert {k: v for k, v in ranks.items() if k != "e"} == {"a": 1, "b": 2.5, "c": 2.5, "d": 4}
    assert math.isnan(ranks["e"])


def test_rank_correlation_undefined_cases():
    assert math.isnan(rank_correlation([1, 2], [2, 1]))
    assert math.isnan(rank_correlation([1, 1, 1], [1, 2, 3]))


def _fixture(tmp_path):
    # dataset "mvtec" (2 subsets) and "visa" (1 subset); levels 0,0,1,2.
    sev = [0, 0, 1, 2]
    perfect, swapped, flat = [1, 2, 3, 4], [1, 2, 4, 3], [1, 1, 1, 1]
    # hand values per subset -- AUC: anomalies vs normals; C: cross-level pairs (5), ties half
    #   perfect: AUC 1, C 1, Ken = (5-0)/sqrt(5*6) = 0.9129;  swapped: AUC 1, C 4/5, Ken 3/sqrt(30)
    #   flat: AUC .5, C .5, Ken NaN
    write_run(tmp_path / "m", "m", {("mvtec", "bottle"): (sev, perfect), ("mvtec", "cable"): (sev, swapped),
                                    ("visa", "pcb1"): (sev, swapped)}, kind="mllm")
    write_run(tmp_path / "d", "d", {("mvtec", "bottle"): (sev, swapped), ("mvtec", "cable"): (sev, swapped),
                                    ("visa", "pcb1"): (sev, perfect)}, source="local")
    write_run(tmp_path / "u", "u", {("mvtec", "bottle"): (sev, flat), ("mvtec", "cable"): (sev, perfect),
                                    ("visa", "pcb1"): (sev, flat)})
    runs = load_runs([tmp_path / "m", tmp_path / "d", tmp_path / "u"])
    return runs, table3(runs, evaluate_runs(runs))


def test_table3_by_hand(tmp_path):
    runs, t = _fixture(tmp_path)
    assert [r.family for r in runs] == ["mllm", "detector", "unknown"]  # run.json; source local; neither
    assert t.datasets == ("mvtec", "visa")  # the paper's order
    rows = {r.run: r for r in t.rows}
    ken_p, ken_s = 5 / math.sqrt(30), 3 / math.sqrt(30)
    assert rows["m"].by_dataset["mvtec"]["c_index"] == pytest.approx((1 + .8) / 2)
    assert rows["m"].by_dataset["mvtec"]["kendall_tau_b"] == pytest.approx((ken_p + ken_s) / 2)
    assert rows["m"].average["c_index"] == pytest.approx(((1 + .8) / 2 + .8) / 2)
    assert rows["d"].average["c_index"] == pytest.approx((.8 + 1) / 2)
    # u: mvtec C (0.5 + 1)/2, visa .5; Ken NaN on flat subsets is left out of the mean
    assert rows["u"].average["c_index"] == pytest.approx((.75 + .5) / 2)
    assert rows["u"].by_dataset["mvtec"]["kendall_tau_b"] == pytest.approx(ken_p)
    assert math.isnan(rows["u"].by_dataset["visa"]["kendall_tau_b"])
    assert rows["u"].average["kendall_tau_b"] == pytest.approx(ken_p)  # mean over the defined dataset only
    # C averages: m .85, d .9, u .625 -> ranks 2, 1, 3; AUC: m 1, d 1, u .75 -> 1.5, 1.5, 3
    assert [rows[r].rank["c_index"] for r in "mdu"] == [2, 1, 3]
    assert [rows[r].rank["auroc"] for r in "mdu"] == [1.5, 1.5, 3]
    assert t.best["mllm"]["average/c_index"] == ["m"] and t.best["detector"]["average/c_index"] == ["d"]
    assert t.best["detector"]["rank/c_index"] == ["d"]
    assert "unknown" not in t.best and t.like_for_like


def test_rank_agreement_by_hand(tmp_path):
    _, t = _fixture(tmp_path)
    a = rank_agreement(t)
    # Ken averages: m ((.913 + .548) / 2 + .548) / 2 = .639, d (.548 + .913) / 2 = .730, u .913 -> ranks 3, 2, 1
    assert [a.ranks[r]["kendall_tau_b"] for r in "mdu"] == [3, 2, 1]
    assert a.difference("m", "auroc", "c_index") == -0.5
    auc, ken, c = [1.5, 1.5, 3], [3, 2, 1], [2, 1, 3]
    assert a.matrix[0][2] == pytest.approx(stats.pearsonr(auc, c).statistic)
    assert a.matrix[0][1] == pytest.approx(stats.pearsonr(auc, ken).statistic)
    assert a.matrix[1][2] == pytest.approx(-0.5)  # ranks (3,2,1) vs (2,1,3): by hand


def test_fewer_than_three_runs_gives_no_correlation(tmp_path):
    write_run(tmp_path / "a", "a", {("mvtec", "bottle"): ([0, 1], [1, 2])}, kind="mllm")
    write_run(tmp_path / "b", "b", {("mvtec", "bottle"): ([0, 1], [2, 1])}, kind="detector")
    runs = load_runs([tmp_path])
    agreement = rank_agreement(table3(runs, evaluate_runs(runs)))
    assert len(agreement.ranks) == 2 and all(math.isnan(v) for row in agreement.matrix for v in row)
