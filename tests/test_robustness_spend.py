"""RQ6 grouping (Table 5) and the failures/spend table, by hand."""

from __future__ import annotations

import json

import pytest

from mmad.analysis.robustness import corrupted_variants, robustness_table, spec_label
from mmad.analysis.runs import evaluate_runs, load_runs
from mmad.analysis.spend import run_spend
from mmad.errors import DataError
from tests.run_fixtures import write_run

SEV = [0, 0, 1, 2]


def test_runs_that_differ_only_in_corruption_form_one_row(tmp_path):
    base = {"provider": "openai", "model": "m", "prompt": "industrial"}
    data = {"orig": [1, 2, 3, 4], "bright": [1, 2, 4, 3], "noise": [2, 1, 1, 3]}
    # C by hand (5 cross-level pairs, ties half): orig 5/5; bright 4/5;
    # noise: 0-1 (1 vs 2, 1): lost one, tied one -> .5; 0-2 (3 vs 2, 1): 2; 1-2 (3 vs 1): 1 -> 3.5/5
    write_run(tmp_path / "a", "a", {("mvtec", "bottle"): (SEV, data["orig"])}, kind="mllm", settings=base)
    write_run(tmp_path / "a-b", "a-b", {("mvtec", "bottle"): (SEV, data["bright"])}, kind="mllm",
              settings={**base, "corrupt": "brightness:3"})
    write_run(tmp_path / "a-n", "a-n", {("mvtec", "bottle"): (SEV, data["noise"])}, kind="mllm",
              settings={**base, "corrupt": "gaussian_noise:2", "corrupt_references": True})
    write_run(tmp_path / "p", "p", {("mvtec", "bottle"): (SEV, data["orig"])}, kind="mllm",
              settings={**base, "prompt": "industrial-paper"})  # another prompt: not a variant of a
    write_run(tmp_path / "old", "old", {("mvtec", "bottle"): (SEV, data["orig"])})  # no run.json
    runs = load_runs([tmp_path / n for n in ("a", "a-b", "a-n", "p", "old")])
    table = robustness_table(runs, evaluate_runs(runs))
    assert table.specs == ["orig", "brightness:3", "gaussian_noise:2"]
    assert [spec_label(s) for s in table.specs] == ["Orig", "Brgt 3", "Noise 2"]
    (group,) = table.groups
    assert group.label == "a" and group.runs == {"orig": "a", "brightness:3": "a-b", "gaussian_noise:2": "a-n"}
    assert group.c_index["orig"]["mvtec"] == 1.0
    assert group.c_index["brightness:3"]["mvtec"] == pytest.approx(0.8)
    assert group.c_index["gaussian_noise:2"]["mvtec"] == pytest.approx(0.7)
    assert table.without_info == ["old"]
    assert corrupted_variants(runs) == {"a-b", "a-n"}


def test_a_corrupted_run_without_its_original_stays_in_the_main_tables(tmp_path):
    write_run(tmp_path / "n", "n", {("mvtec", "bottle"): (SEV, [1, 2, 3, 4])}, kind="detector",
              settings={"method": "patchcore", "corrupt": "gaussian_noise:1"})
    runs = load_runs([tmp_path / "n"])
    assert corrupted_variants(runs) == set()
    assert robustness_table(runs, evaluate_runs(runs)).groups[0].runs == {"gaussian_noise:1": "n"}


def test_bad_corruption_in_run_json_names_the_file(tmp_path):
    write_run(tmp_path / "x", "x", {("mvtec", "bottle"): (SEV, [1, 2, 3, 4])}, kind="mllm",
              settings={"corrupt": "fog:3"})
    runs = load_runs([tmp_path / "x"])
    with pytest.raises(DataError, match=r"x/run.json: settings.corrupt: unknown corruption 'fog'"):
        robustness_table(runs, evaluate_runs(runs))


def test_spend_and_statuses_by_hand(tmp_path):
    prices = tmp_path / "prices.toml"
    prices.write_text('version = 1\ndate = "2026-01-01"\nsource = "test"\n[models."m1"]\n'
                      'input = 2.0\noutput = 10.0\ncached_input = 1.0\ncache_write = 2.5\nbatch = 0.5\n')
    folder = write_run(tmp_path / "r", "r", {("mvtec", "bottle"): (SEV, [1, 2, None, 4])}, kind="mllm",
                       settings={"model": "m1-2026"})  # priced by its longest listed prefix
    records = [
        {"path": "img/000.png", "status": "ok", "source": "live",
         "usage": {"input_tokens": 1000, "cached_input_tokens": 400, "output_tokens": 100}},
        {"path": "img/001.png", "status": "ok", "source": "batch", "usage": {"input_tokens": 1000, "output_tokens": 100}},
        {"path": "img/002.png", "status": "error", "source": "live", "usage": {}},
        {"path": "img/003.png", "status": "error", "source": "live", "usage": {"input_tokens": 500, "output_tokens": 0}},
        {"path": "img/003.png", "status": "ok", "source": "cache", "usage": {"input_tokens": 1000, "output_tokens": 100}},
    ]
    with open(folder / "r_mvtec_bottle.jsonl", "w") as handle:
        for record in records:
            handle.write(json.dumps({"dataset": "mvtec", "subset": "bottle", **record}) + "\n")
    spend = run_spend(load_runs([folder])[0], prices)
    assert (spend.rows, spend.dropped) == (4, 1)
    assert spend.statuses == {"ok": 3, "error": 1}  # img/003 was retried: its last record counts
    assert spend.sources == {"live": 2, "batch": 1, "cache": 1}
    # live: 600 plain x 2 + 400 cached x 1 + 100 out x 10 = 2600; batch: (2000 + 1000) x .5 = 1500;
    # the failed first try of img/003: 500 x 2 = 1000 (it reached the API, so it was paid)
    assert spend.usd == pytest.approx((2600 + 1500 + 1000) / 1e6)
    assert spend.saved_usd == pytest.approx((2000 + 1000) / 1e6)
    assert spend.tokens["input_tokens"] == 2500 and spend.tokens["output_tokens"] == 200


def test_spend_without_a_price_or_jsonl(tmp_path):
    folder = write_run(tmp_path / "r", "r", {("mvtec", "bottle"): (SEV, [1, 2, 3, 4])}, kind="mllm",
                       settings={"model": "no-such-model"})
    spend = run_spend(load_runs([folder])[0])
    assert spend.usd is None and "not in prices.toml" in spend.note
    (folder / "r_mvtec_bottle.jsonl").unlink()
    assert run_spend(load_runs([folder])[0]).note == "no JSONL records beside the result files"


def test_comparisons_hold_the_corruption_fixed(tmp_path):
    """A prompt variant is compared with its original, and a corrupted prompt variant with the
    corrupted original; never a corrupted run with a clean one of another prompt."""
    from mmad.report.data import comparable_pairs
    base = {"provider": "openai", "model": "m", "prompt": "industrial"}
    scores = {("mvtec", "bottle"): (SEV, [1, 2, 3, 4])}
    settings = {"a": base, "p": {**base, "prompt": "industrial-paper"},
                "p-b": {**base, "prompt": "industrial-paper", "corrupt": "brightness:3"},
                "a-b": {**base, "corrupt": "brightness:3"}}
    for name, s in settings.items():
        write_run(tmp_path / name, name, scores, kind="mllm", settings=s)
    runs = load_runs([tmp_path / n for n in settings])
    pairs = {(a.name, b.name): changes for a, b, changes in comparable_pairs(runs)}
    assert set(pairs) == {("a", "p"), ("p-b", "a-b")}
    assert pairs[("a", "p")] == ["prompt: 'industrial' -> 'industrial-paper'"]
