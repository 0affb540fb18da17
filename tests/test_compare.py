"""mmad.comparison and `mmad compare`: pairing, pooled means, tests, Holm family, verdicts, run costs."""

import json
import statistics

import numpy as np
import pytest
from scipy import stats as scipy_stats

from mmad import cli, metrics
from mmad.comparison.compare import compare_runs
from mmad.comparison.run_data import final_records, load_run, summarize_run
from mmad.cost.estimate import load_prices
from mmad.data.templates import write_result_csv
from mmad.errors import DataError
from tests.run_factory import simulated_run, subset_rows, write_run

SHAPE = {("mvtec", "bottle"): (20, 15, 15, 12), ("mvtec", "cable"): (25, 12, 12, 10),
         ("mvtec", "grid"): (18, 15, 10, 12), ("visa", "pcb1"): (30, 10, 20, 10), ("visa", "pcb2"): (30, 10, 20, 10),
         ("covid19", "covid19"): (20, 20, 15, 15, 15, 20, 20)}
SETTINGS = {"provider": "openai", "model": "gpt-4o", "prompt": "industrial", "refs": 3, "temperature": 0}


def _two_runs(tmp_path, other_signal=0.8, **kw):
    base = simulated_run(tmp_path / "base", "industrial", SHAPE, signal=0.8, seed=1, settings=SETTINGS, **kw)
    other = simulated_run(tmp_path / "other", "industrial-paper", SHAPE, signal=other_signal, seed=2,
                          settings={**SETTINGS, "prompt": "industrial-paper"}, **kw)
    return base, other


def test_subset_values_pooled_means_rank_tests_and_holm_family(tmp_path):
    base, other = _two_runs(tmp_path, other_signal=1.0)
    report = compare_runs(base, [other], n_boot=200, seed=3)
    comparison = report.comparisons[0]
    a, b = load_run(base), load_run(other)
    diffs = {}
    for result in comparison.subsets:
        key = result.scope[1:]
        levels = metrics.severity_levels(a.tables[key].severity)
        summary_a = metrics.summarize(levels, a.tables[key].scores)
        summary_b = metrics.summarize(levels, b.tables[key].scores)
        r = result.metrics["c_index"]
        assert (r.base, r.other) == pytest.approx((summary_a.c_index, summary_b.c_index), abs=1e-12)
        assert result.metrics["kendall_tau_b"].diff == pytest.approx(
            summary_b.kendall_tau_b - summary_a.kendall_tau_b, abs=1e-12)
        assert r.low <= r.diff <= r.high or not (r.low < r.high)
        diffs[key] = r.diff
    pooled = {p.scope: p.metrics["c_index"] for p in comparison.pooled}
    mvtec = [diffs[k] for k in diffs if k[0] == "mvtec"]
    assert pooled[("dataset", "mvtec")].diff == pytest.approx(np.mean(mvtec), abs=1e-12)
    by_dataset = [np.mean([diffs[k] for k in diffs if k[0] == d]) for d in ("covid19", "mvtec", "visa")]
    assert pooled[("overall",)].diff == pytest.approx(np.mean(by_dataset), abs=1e-12)  # Table-3 averaging
    all_diffs = list(diffs.values())
    assert pooled[("overall",)].wilcoxon.p == pytest.approx(scipy_stats.wilcoxon(all_diffs).pvalue, rel=1e-9)
    wins = sum(d > 0 for d in all_diffs)
    assert pooled[("overall",)].sign.wins == wins
    assert pooled[("overall",)].sign_test.p == pytest.approx(
        scipy_stats.binomtest(wins, len(all_diffs)).pvalue, rel=1e-12)
    assert pooled[("dataset", "covid19")].wilcoxon is None  # one subset: its mean is that subset
    # family: 6 subsets x 3 metrics + (mvtec, visa, overall) x 3 metrics x 3 tests
    assert comparison.family == 6 * 3 + 3 * 3 * 3
    holm = sorted(t for t in [r.bootstrap.p_holm for s in comparison.subsets for r in s.metrics.values()])
    raw = sorted(r.bootstrap.p for s in comparison.subsets for r in s.metrics.values())
    assert holm[0] == pytest.approx(min(1.0, comparison.family * raw[0]))


def test_a_planted_effect_gets_a_positive_verdict(tmp_path):
    base, other = _two_runs(tmp_path, other_signal=2.0)
    comparison = compare_runs(base, [other], n_boot=500, seed=0).comparisons[0]
    overall = next(p for p in comparison.pooled if p.scope == ("overall",)).metrics["c_index"]
    assert overall.diff > 0 and overall.low > 0 and overall.bootstrap.p_holm < 0.05
    line = next(v for v in comparison.verdicts if v.startswith("industrial-paper vs industrial, overall: C-index"))
    assert "industrial-paper is higher" in line and "(Holm)" in line and "6 subsets" in line
    assert "run-to-run noise not measured" in line


def test_no_difference_is_not_called_significant(tmp_path):
    base = simulated_run(tmp_path / "a", "a", SHAPE, signal=0.8, seed=1)
    other = simulated_run(tmp_path / "b", "b", SHAPE, signal=0.8, seed=1)  # identical scores
    comparison = compare_runs(base, [other], n_boot=200).comparisons[0]
    overall = next(p for p in comparison.pooled if p.scope == ("overall",)).metrics["auroc"]
    assert overall.diff == 0 and overall.sign.ties == 6 and overall.sign.wins == 0
    assert all("no significant difference" in v for v in comparison.verdicts)


def test_pairing_drops_and_counts_missing_and_failed_items(tmp_path):
    paths, severity = subset_rows((10, 10, 10))
    scores = severity * 10 + np.arange(30) % 7
    failed_base = scores.copy()
    failed_base[[0, 11]] = np.nan
    failed_other = scores.copy()
    failed_other[[11, 12, 20]] = np.nan
    key = ("mvtec", "bottle")
    write_run(tmp_path / "a", "a", {key: (paths, severity, failed_base)})
    write_run(tmp_path / "b", "b", {key: (paths[:-2], severity[:-2], failed_other[:-2]),  # last 2 missing
                                    ("mvtec", "cable"): (paths, severity, scores)})  # a subset only here
    comparison = compare_runs(tmp_path / "a", [tmp_path / "b"], n_boot=100).comparisons[0]
    assert comparison.subsets[0].items == 30 - 2 - 4  # rows 0, 11, 12, 20 fail somewhere; 28, 29 missing
    assert comparison.dropped["a"] == {"failed (empty score) here": 2, "missing in the other run": 2}
    assert comparison.dropped["b"] == {"failed (empty score) here": 3, "missing in the other run": 30}
    assert comparison.unpaired_subsets == {"b": ["mvtec/cable"]}


def test_duplicate_paths_a_subset_twice_and_mixed_runs_are_refused(tmp_path):
    paths, severity = subset_rows((3, 3))
    write_result_csv(tmp_path / "dup" / "m_mvtec_bottle.csv", [(p, s, 1.0) for p, s in zip(paths + paths[:1],
                                                                                             list(severity) + [0])])
    with pytest.raises(DataError, match=r"duplicate path\(s\) 'level_0/img00000.png'"):
        load_run(tmp_path / "dup")
    for name in ("m_mvtec_bottle.csv", "sub/m_mvtec_bottle.csv"):
        write_result_csv(tmp_path / "twice" / name, [(p, s, 1.0) for p, s in zip(paths, severity)])
    with pytest.raises(DataError, match="mvtec/bottle is also in"):
        load_run(tmp_path / "twice")
    for name in ("x/gpt_mvtec_bottle.csv", "y/claude_mvtec_bottle.csv"):
        write_result_csv(tmp_path / "mixed" / name, [(p, s, 1.0) for p, s in zip(paths, severity)])
    with pytest.raises(DataError, match=r"several runs \(claude, gpt\)"):
        load_run(tmp_path / "mixed")


def test_different_severities_and_no_common_items_are_refused(tmp_path):
    paths, severity = subset_rows((4, 4))
    write_run(tmp_path / "a", "a", {("mvtec", "bottle"): (paths, severity, severity * 3)})
    write_run(tmp_path / "b", "b", {("mvtec", "bottle"): (paths, severity[::-1], severity * 3)})
    with pytest.raises(DataError, match="severity of level_0/img00000.png"):
        compare_runs(tmp_path / "a", [tmp_path / "b"], n_boot=100)
    write_run(tmp_path / "c", "c", {("mvtec", "bottle"): ([p + "x" for p in paths], severity, severity)})
    with pytest.raises(DataError, match="no scored item in common"):
        compare_runs(tmp_path / "a", [tmp_path / "c"], n_boot=100)


def test_a_comparison_does_not_depend_on_the_other_runs_given(tmp_path):
    base, other = _two_runs(tmp_path)
    third = simulated_run(tmp_path / "third", "third", SHAPE, signal=1.5, seed=9)
    alone = compare_runs(base, [other], n_boot=150, seed=4).comparisons[0]
    together = compare_runs(base, [third, other], n_boot=150, seed=4).comparisons[1]
    assert alone.verdicts == together.verdicts


def test_final_records_supersede_but_never_replace_ok_by_a_failure():
    records = [{"path": "a", "status": "error"}, {"path": "a", "status": "ok", "score": 5},
               {"path": "b", "status": "ok", "score": 1}, {"path": "b", "status": "error"},
               {"path": "c", "status": "refused"}, {"path": "c", "status": "parse_failed"}, {"no": "path"}]
    final = final_records(records)
    assert {k: v["status"] for k, v in final.items()} == {"a": "ok", "b": "ok", "c": "parse_failed"}


def test_run_summary_failures_tokens_cost_latency(tmp_path):
    folder, _ = _two_runs(tmp_path, fail_every=9)
    run = load_run(folder)
    summary = summarize_run(run)
    finals = [r for per_subset in run.records.values() for r in per_subset.values()]
    items = sum(len(t.paths) for t in run.tables.values())
    failed = sum(int(np.isnan(t.scores).sum()) for t in run.tables.values())
    assert summary.items == items and summary.statuses == {"ok": items - failed, "parse_failed": failed}
    assert summary.failure_rate == pytest.approx(failed / items)
    for name in ("input_tokens", "output_tokens", "cached_input_tokens"):
        assert summary.tokens[name] == sum(r["usage"].get(name, 0) for r in finals)
    price = load_prices().lookup("gpt-4o")
    assert summary.cost_usd == pytest.approx(sum(price.cost(r["usage"]) for r in finals))
    assert summary.median_latency_s == pytest.approx(statistics.median(r["latency_s"] for r in finals))
    (folder / "run.json").unlink()
    assert summarize_run(load_run(folder)).cost_usd is None


def test_cli_json_markdown_and_bad_input(tmp_path, capsys):
    base, other = _two_runs(tmp_path)
    assert cli.main(["compare", str(base), str(other), "--bootstrap", "100", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    comparison = report["comparisons"][0]
    assert (comparison["base"], comparison["other"]) == ("industrial", "industrial-paper")
    assert set(comparison["subsets"][0]["metrics"]) == {"auroc", "c_index", "kendall_tau_b"}
    assert report["runs"][0]["cost_usd"] > 0 and report["bootstrap"] == 100
    assert cli.main(["compare", str(base), str(other), "--bootstrap", "100", "--markdown"]) == 0
    out = capsys.readouterr().out
    assert "| dataset | subset | n | metric |" in out and "industrial-paper vs industrial, overall: C-index" in out
    (tmp_path / "empty").mkdir()
    assert cli.main(["compare", str(base), str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: no result CSV files in") and "\n" not in err
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["compare", str(base), str(other), "--bootstrap", "99"])
    assert exit_info.value.code == 2
    assert "at least 100" in capsys.readouterr().err


def test_terminal_output_has_tables_verdicts_and_run_costs(tmp_path, capsys):
    base, other = _two_runs(tmp_path)
    assert cli.main(["compare", str(base), str(other), "--bootstrap", "100"]) == 0
    out = capsys.readouterr().out
    assert "Per subset: industrial-paper vs industrial" in out and "median latency s" in out
    assert "note: run-to-run noise not measured" in out


def test_one_dataset_overall_is_that_dataset_and_not_tested_twice(tmp_path):
    shape = {key: SHAPE[key] for key in SHAPE if key[0] == "mvtec"}
    base = simulated_run(tmp_path / "a", "a", shape, signal=0.8, seed=1)
    other = simulated_run(tmp_path / "b", "b", shape, signal=1.2, seed=2)
    comparison = compare_runs(base, [other], n_boot=100).comparisons[0]
    dataset, overall = comparison.pooled
    assert overall.metrics["auroc"] is dataset.metrics["auroc"]
    assert comparison.family == 3 * 3 + 3 * 3  # subsets x metrics + the dataset's 3 tests x metrics
    assert not [v for v in comparison.verdicts if ", overall:" in v]
