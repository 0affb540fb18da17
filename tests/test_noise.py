"""mmad.noise and `mmad noise` / `compare --noise`: repeats, item and metric spreads, the noise rule."""

import json
import math

import numpy as np
import pytest

from mmad import cli, metrics
from mmad.comparison.compare import compare_runs
from mmad.comparison.noise import NOISE_Z, group_noise, group_repeats, noise_report
from mmad.comparison.run_data import load_run, load_runs
from mmad.errors import DataError
from tests.run_factory import simulated_run, subset_rows, write_run

SHAPE = {("mvtec", "bottle"): (20, 15, 15, 12), ("mvtec", "cable"): (25, 12, 12, 10), ("visa", "pcb1"): (30, 10, 20, 10)}
SETTINGS = {"provider": "openai", "model": "gpt-4o", "prompt": "industrial", "refs": 3, "temperature": 0}


def _repeats(tmp_path, name, settings, count, signal=0.8, seed=0):
    folders = []
    for repeat in range(count):
        label = name + (f"+r{repeat}" if repeat else "")
        folders.append(simulated_run(tmp_path / label, label, SHAPE, signal=signal, seed=seed + repeat,
                                     settings={**settings, "repeat": repeat}, fail_every=23))
    return folders


def test_item_and_metric_spread_equal_a_hand_computation(tmp_path):
    paths, severity = subset_rows((3, 3, 2))
    key = ("mvtec", "bottle")
    runs = [[10, 20, 30, 40, 50, 60, 70, 80], [10, 25, 30, 40, np.nan, 60, 90, 80], [10, 20, 35, 40, 50, 60, 70, 75]]
    for repeat, scores in enumerate(runs):
        label = "m" + (f"+r{repeat}" if repeat else "")
        write_run(tmp_path / label, label, {key: (paths, severity, np.array(scores, dtype=float))},
                  settings={**SETTINGS, "repeat": repeat})
    group = group_repeats(load_runs([tmp_path / "m+r2", tmp_path / "m", tmp_path / "m+r1"]))[0]
    assert [r.label for r in group] == ["m", "m+r1", "m+r2"]  # ordered by settings.repeat
    noise = group_noise(group)
    kept = [0, 1, 2, 3, 5, 6, 7]  # item 4 failed in repeat 1
    matrix = np.array(runs)[:, kept]
    item = dict(noise.scope_items())[("subset", "mvtec", "bottle")]
    assert (item.items, item.dropped, item.changed) == (7, 1, 4)
    assert item.mean_sd == pytest.approx(matrix.std(axis=0, ddof=1).mean())
    assert item.max_range == 20
    levels = metrics.severity_levels(severity[kept])
    values = [metrics.c_index(levels, row) for row in matrix]
    spread = noise.metrics[("subset", "mvtec", "bottle")]["c_index"]
    assert spread.values == pytest.approx(values)
    assert spread.sd == pytest.approx(np.std(values, ddof=1))


def test_runs_with_other_settings_are_not_repeats(tmp_path):
    a = _repeats(tmp_path, "a", SETTINGS, 2)
    b = _repeats(tmp_path, "b", {**SETTINGS, "prompt": "industrial-paper"}, 2, seed=5)
    groups = group_repeats(load_runs([*a, *b]))
    assert [[r.label for r in g] for g in groups] == [["a", "a+r1"], ["b", "b+r1"]]
    assert cli.main(["noise", str(a[0]), str(b[0])]) == 0  # each finds its +r1 beside it
    assert len(noise_report([*a, *b])) == 2
    c = _repeats(tmp_path, "c", {**SETTINGS, "model": "gpt-4.1"}, 1)
    assert cli.main(["noise", str(a[1]), str(c[0])]) == 2  # neither repeats the other


def test_the_same_repeat_twice_is_refused_and_names_work_without_run_json(tmp_path):
    paths, severity = subset_rows((4, 4))
    data = {("visa", "pcb1"): (paths, severity, severity * 10 + np.arange(8))}
    write_run(tmp_path / "x", "x", data, settings={**SETTINGS, "repeat": 1})
    write_run(tmp_path / "y", "y", data, settings={**SETTINGS, "repeat": 1})
    with pytest.raises(DataError, match="both repeat 1"):
        group_repeats(load_runs([tmp_path / "x", tmp_path / "y"]))
    write_run(tmp_path / "plain", "plain", data)  # no run.json: `plain+r1` is its repeat by name
    write_run(tmp_path / "plain+r1", "plain+r1", data)
    groups = group_repeats(load_runs([tmp_path / "plain+r1", tmp_path / "plain"]))
    assert [r.label for r in groups[0]] == ["plain", "plain+r1"]


def test_noise_on_one_run_finds_its_repeats_beside_it(tmp_path, capsys):
    _repeats(tmp_path, "m", SETTINGS, 3)
    assert cli.main(["noise", str(tmp_path / "m"), "--json"]) == 0
    captured = capsys.readouterr()
    [group] = json.loads(captured.out)
    assert group["runs"] == ["m", "m+r1", "m+r2"] and "with the repeats beside it" in captured.err


def test_deterministic_repeats_have_no_spread(tmp_path, capsys):
    paths, severity = subset_rows((5, 5, 5))
    data = {("visa", "pcb1"): (paths, severity, severity * 10 + np.arange(15) % 4)}
    for label in ("d", "d+r1"):
        write_run(tmp_path / label, label, data, settings={"method": "patchcore", "repeat": int(label != "d")},
                  kind="detector")
    assert cli.main(["noise", str(tmp_path / "d"), str(tmp_path / "d+r1"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)[0]
    overall = next(i for i in report["items"] if i["scope"] == "overall")
    assert overall["changed"] == 0 and overall["mean_sd"] == 0
    assert report["metrics"]["overall"]["auroc"]["sd"] == 0


def test_compare_with_repeats_applies_the_noise_rule(tmp_path):
    base = _repeats(tmp_path, "industrial", SETTINGS, 3)
    other = _repeats(tmp_path, "industrial-paper", {**SETTINGS, "prompt": "industrial-paper"}, 2, signal=1.6, seed=10)
    report = compare_runs(base[0], [other[0]], n_boot=200, noise=[base[1], base[2], other[1]])
    comparison = report.comparisons[0]
    assert comparison.noise_measured
    groups = {g.label: g for g in report.noise}
    assert set(groups) == {"industrial", "industrial-paper"}
    scope = ("overall",)
    sd_base = groups["industrial"].metrics[scope]["c_index"].sd
    sd_other = groups["industrial-paper"].metrics[scope]["c_index"].sd
    pooled_sd = math.sqrt((2 * sd_base ** 2 + 1 * sd_other ** 2) / 3)  # df 2 and 1
    result = next(p for p in comparison.pooled if p.scope == scope).metrics["c_index"]
    assert result.noise.df == 3 and result.noise.repeats == 5
    assert result.noise.band == pytest.approx(NOISE_Z * math.sqrt(2) * pooled_sd)
    line = next(v for v in comparison.verdicts if v.startswith("industrial-paper vs industrial, overall: C-index"))
    expected = "exceeds" if abs(result.diff) > result.noise.band else "within"
    assert f"{expected} run-to-run noise" in line and "5 runs, df 3" in line


def test_compare_refuses_a_noise_run_that_repeats_nothing(tmp_path, capsys):
    base = _repeats(tmp_path, "a", SETTINGS, 1)
    other = _repeats(tmp_path, "b", {**SETTINGS, "prompt": "p2"}, 1)
    stranger = _repeats(tmp_path, "c", {**SETTINGS, "model": "gpt-4.1"}, 1)
    assert cli.main(["compare", str(base[0]), str(other[0]), "--noise", str(stranger[0])]) == 2
    assert "not a repeat of any compared run" in capsys.readouterr().err


def test_noise_needs_two_runs(tmp_path, capsys):
    base = _repeats(tmp_path, "a", SETTINGS, 1)
    assert cli.main(["noise", str(base[0])]) == 2
    assert "at least 2 runs" in capsys.readouterr().err
    assert load_run(base[0]).label == "a"
