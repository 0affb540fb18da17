"""A tool people script: machine-readable estimates and run summaries, and an eval that refuses or
explains what it cannot evaluate as asked."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from mmad import cli
from tests.conftest import cli_env, make_industry_subset, write_csv
from tests.wire_server import Fault


@pytest.fixture
def setup(tmp_path, server):
    make_industry_subset(tmp_path / "data", "toy", "widget", per_level=3)
    make_industry_subset(tmp_path / "data", "toy", "gear", per_level=3)
    return tmp_path, server, cli_env(tmp_path)


def mmad(env, *args):
    return subprocess.run([sys.executable, "-m", "mmad.cli", *args], env=env, capture_output=True, text=True,
                          timeout=120)


def test_estimate_json_and_per_subset_breakdown(setup):
    tmp, server, env = setup
    result = mmad(env, "estimate", "--provider", "openai", "--model", "gpt-4o", "--dataset", "toy", "--json",
                  "--prompt", "industrial,industrial-paper")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["prices"]["date"] and data["prices"]["file"].endswith("prices.toml")
    assert [v["label"] for v in data["variants"]] == ["gpt-4o", "gpt-4o+industrial-paper"]
    variant = data["variants"][0]
    assert [s["label"] for s in variant["subsets"]] == ["toy/gear", "toy/widget"]
    for field in ("jobs", "cached_jobs", "input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens",
                  "plain", "with_caching", "with_batch", "with_both"):
        assert field in variant and field in data["total"]
    assert variant["jobs"] == 24 and data["total"]["jobs"] == 48
    assert data["total"]["plain"] == pytest.approx(sum(v["plain"] for v in data["variants"]))
    verbose = mmad(env, "estimate", "--provider", "openai", "--model", "gpt-4o", "--dataset", "toy", "-v")
    assert "toy/gear" in verbose.stdout and "toy/widget" in verbose.stdout


def test_every_score_run_leaves_a_summary_json(setup):
    tmp, server, env = setup
    server.fault_rule = lambda received, n: Fault("garbage") if n == 4 else None
    out = tmp / "out"
    result = mmad(env, "score", "--provider", "openai", "--model", "gpt-4o", "--base-url", server.openai_url,
                  "--dataset", "toy", "--out", str(out), "-q", "--json", "--concurrency", "1")
    assert result.returncode == 6
    summary = json.loads((out / "summary.json").read_text())
    assert summary == json.loads(result.stdout)  # --json prints the file's content
    assert summary["statuses"] == {"ok": 23, "parse_failed": 1} and summary["jobs"]["failed"] == 1
    assert summary["failure_causes"] == {"answer: no anomaly score in the answer": 1}
    assert summary["tokens"]["input_tokens"] > 0 and summary["spend_usd"] > 0 and summary["estimated_usd"] > 0
    assert {"mmad", "openai", "anthropic", "python"} <= set(summary["versions"])
    assert summary["command"][1:] == ["score", "--provider", "openai", "--model", "gpt-4o", "--base-url",
                                   server.openai_url, "--dataset", "toy", "--out", str(out), "-q", "--json",
                                   "--concurrency", "1"]
    assert summary["runs"][0]["settings"]["model"] == "gpt-4o" and summary["elapsed_s"] >= 0


def test_detector_runs_leave_run_json(tmp_path, monkeypatch):
    pytest.importorskip("torch", reason="conventional detectors need torch")
    import mmad_conventional.run as run
    from mmad_conventional.backbone import efficientnet_lite0
    monkeypatch.setattr(run, "make_backbone", lambda name, weights: efficientnet_lite0(pretrained=False))
    make_industry_subset(tmp_path, "toy", "widget", per_level=2)
    out = tmp_path / "pd"
    assert cli.main(["baseline", "padim", "--root", str(tmp_path), "--dataset", "toy", "--out", str(out),
                     "--image-size", "32", "--device", "cpu", "-q"]) == 0
    info = json.loads((out / "run.json").read_text())
    assert info["kind"] == "detector" and info["settings"]["method"] == "padim" and info["settings"]["refs"] is None
    # a second baseline into the same folder resumes (skips), with other settings it refuses
    assert cli.main(["baseline", "padim", "--root", str(tmp_path), "--dataset", "toy", "--out", str(out),
                     "--image-size", "32", "--device", "cpu", "-q"]) == 0
    assert cli.main(["baseline", "padim", "--root", str(tmp_path), "--dataset", "toy", "--out", str(out),
                     "--image-size", "48", "--device", "cpu", "-q"]) == 2


# --------------------------------------------------------------------------- eval refuses or explains

def result(folder, run, dataset, subset, rows, header=("Path", "Severity", "Anomaly Score")):
    name = f"{run}_{dataset}.csv" if dataset == subset else f"{run}_{dataset}_{subset}.csv"
    return write_csv(folder / run / name, list(header), rows)


def test_duplicate_paths_are_refused_naming_them(tmp_path, capsys):
    path = result(tmp_path, "m", "mvtec", "bottle", [["a", "0", "1"], ["b", "1", "5"], ["a", "0", "2"]])
    assert cli.main(["eval", str(path)]) == 2
    err = capsys.readouterr().err
    assert "duplicate path(s) 'a' (lines 2 and 4)" in err and len(err.strip().splitlines()) == 1


def test_a_file_name_that_does_not_say_the_subset_needs_dataset_and_subset(tmp_path, capsys):
    path = write_csv(tmp_path / "myresults.csv", ["Path", "Severity", "Anomaly Score"],
                     [["a", "0", "1"], ["b", "1", "5"]])
    assert cli.main(["eval", str(path)]) == 2
    assert "pass --dataset and --subset" in capsys.readouterr().err
    assert cli.main(["eval", str(path), "--dataset", "mine", "--subset", "parts", "--json"]) == 0
    captured = capsys.readouterr()
    [record] = json.loads(captured.out)
    assert (record["dataset"], record["subset"], record["run"]) == ("mine", "parts", "myresults")
    assert "'mine' is not a known or discovered dataset" in captured.err  # a label of the user's own, said so
    assert cli.main(["eval", str(path), "--dataset", "mvtec", "--subset", "botle"]) == 2  # a typo of a known one
    assert "--subset 'botle' is not a subset of mvtec (bottle, cable" in capsys.readouterr().err


def test_bootstrap_intervals_show_in_the_table(tmp_path, capsys):
    rows = [[str(i), str(i % 4), str((i % 4) * 10 + i % 7)] for i in range(40)]
    result(tmp_path, "m", "mvtec", "bottle", rows)
    assert cli.main(["eval", str(tmp_path), "--bootstrap", "200", "--markdown"]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if "| bottle |" in line)
    assert row.count("[") == 3  # AUC, Ken and C each with its interval


def test_agreement_ranks_on_common_subsets_and_says_which_were_left_out(tmp_path, capsys):
    rng = np.random.default_rng(0)
    for run, noise in (("a", 1), ("b", 10), ("c", 40)):
        for subset in ("bottle", "cable"):
            rows = [[str(i), str(i % 4), str(round((i % 4) * 25 + rng.normal(0, noise), 2))] for i in range(40)]
            result(tmp_path, run, "mvtec", subset, rows)
    result(tmp_path, "a", "mvtec", "grid", [["x", "0", "1"], ["y", "1", "9"]])  # only run a has it
    assert cli.main(["eval", str(tmp_path), "--agreement"]) == 0
    captured = capsys.readouterr()
    assert "left out: mvtec/grid" in captured.err and "rankings of 3 runs" in captured.out


def test_dashes_are_explained(tmp_path, capsys):
    result(tmp_path, "m", "mvtec", "bottle", [["a", "1", "5"], ["b", "2", "9"]])  # no normal rows
    result(tmp_path, "m", "mvtec", "cable", [["a", "0", "5"], ["b", "1", "5"], ["c", "2", "5"]])  # constant
    assert cli.main(["eval", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    assert "mvtec/bottle: no normal (level 0) rows: AUROC is undefined" in err
    assert "mvtec/cable: every score is the same: Kendall tau-b is undefined" in err


def test_credentials_in_a_base_url_are_never_written_down(setup):
    tmp, server, env = setup
    url = server.openai_url.replace("http://", "http://bob:PASSWORD99@")
    out = tmp / "out"
    result = mmad(env, "score", "--provider", "openai", "--model", "gpt-4o", "--base-url", url, "--dataset", "toy",
                  "--subset", "widget", "--out", str(out), "-q")
    assert result.returncode == 0, result.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert server.openai_url in summary["command"] and summary["runs"][0]["settings"]["base_url"] == server.openai_url
    for path in [*out.rglob("*"), *(tmp / "cache").rglob("*")]:
        if path.is_file():
            assert b"PASSWORD99" not in path.read_bytes(), path
    assert "PASSWORD99" not in result.stderr + result.stdout


def test_recorded_commands_hide_credentials():
    from mmad.redaction import public_command
    argv = ["mmad", "score", "--base-url", "https://u:pw@h.example:8443/v1/?api-key=QS#f", "--api-key", "sk-x",
            "--base-url=http://a:b@h/v1", "--token=t0ken", "--dataset", "toy"]
    assert public_command(argv) == ["mmad", "score", "--base-url", "https://h.example:8443/v1", "--api-key", "***",
                                     "--base-url=http://h/v1", "--token=***", "--dataset", "toy"]


@pytest.mark.parametrize("command", [["data", "list"], ["eval", "RUN"], ["eval", "RUN", "--json"],
                                     ["eval", "RUN", "--csv"]])
def test_a_reader_that_leaves_early_is_exit_141_for_every_command(tmp_path, command):
    """`mmad ... | head -1`: whichever printer meets the closed pipe (rich's or print), exit 141, silently."""
    from tests.run_fixtures import write_run
    write_run(tmp_path / "m", "m", {("mvtec", "bottle"): ([0, 1, 2], [1, 5, 9])}, kind="mllm", settings={})
    reader, writer = os.pipe()
    os.close(reader)  # the reader has already gone
    try:
        done = subprocess.run([sys.executable, "-m", "mmad.cli", *[str(tmp_path / "m") if a == "RUN" else a
                                                                    for a in command]],
                              stdout=writer, stderr=subprocess.PIPE, text=True, timeout=60,
                              env=dict(os.environ, MMAD_DATA_ROOT=str(tmp_path / "data")))
    finally:
        os.close(writer)
    assert done.returncode == 141 and done.stderr == "", done.stderr
