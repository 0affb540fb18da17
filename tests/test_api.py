"""The Python API (mmad.api): the same numbers as the command line, from a script."""

import json
import subprocess
import sys

import pytest

import mmad
from mmad.errors import DataError
from tests.conftest import cli_env, make_industry_subset


@pytest.fixture
def scored(tmp_path, server, monkeypatch):
    """A run scored through `mmad.score` against the wire server (24 jobs)."""
    make_industry_subset(tmp_path / "data", "toy", "widget", per_level=6)
    for name, value in cli_env(tmp_path, "sk-api").items():
        monkeypatch.setenv(name, value)
    events = []
    result = mmad.score("openai", "toy", model=("m",), base_url=server.openai_url, out=str(tmp_path / "out"),
                        on_event=events.append)
    return tmp_path, server, result, events


def test_score_writes_the_run_and_reports_through_events(scored):
    tmp, server, result, events = scored
    assert result.summary.total == 24 and result.summary.remaining == 0 and result.summary.failed == 0
    assert len(server.requests) == 24 and (tmp / "out" / "m_toy_widget.csv").is_file()
    assert result.document["runs"][0]["run"] == "m" and (tmp / "out" / "summary.json").is_file()
    assert sum(type(e).__name__ == "JobFinished" for e in events) == 24


def test_evaluate_equals_mmad_eval(scored):
    tmp, _, _, _ = scored
    records = mmad.evaluate(tmp / "out")
    cli = subprocess.run([sys.executable, "-m", "mmad.cli", "eval", str(tmp / "out"), "--json"],
                         env=cli_env(tmp), capture_output=True, text=True, timeout=60)
    assert cli.returncode == 0, cli.stderr
    assert [r.as_json() for r in records] == json.loads(cli.stdout)
    [mean] = mmad.dataset_means(records)
    assert mean.dataset == "toy" and mean.auroc == pytest.approx(records[0].auroc)
    tables = mmad.load_results(tmp / "out")
    assert list(tables) == ["m"] and len(tables["m"][0].paths) == 24


def test_compare_pairs_the_runs_and_gives_verdicts(scored):
    tmp, server, _, _ = scored
    mmad.score("openai", "toy", model=("m",), temperature=(0.5,), base_url=server.openai_url,
               out=str(tmp / "warm"))
    report = mmad.compare(tmp / "out", tmp / "warm", n_boot=200)
    [comparison] = report.comparisons
    assert comparison.base == "m" and comparison.other == "m+t0.5"
    assert comparison.verdicts and all(isinstance(line, str) for line in comparison.verdicts)


def test_a_bad_option_is_the_cli_s_one_line_error(tmp_path, monkeypatch):
    monkeypatch.setenv("MMAD_DATA_ROOT", str(tmp_path))
    with pytest.raises(DataError, match="unknown dataset .no-such-dataset"):
        mmad.score("openai", "no-such-dataset", base_url="http://127.0.0.1:9/v1")
    with pytest.raises(TypeError):
        mmad.score("openai", "toy", no_such_option=1)
