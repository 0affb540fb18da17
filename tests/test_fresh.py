"""A run folder holds one run: `--fresh` starts it over on purpose (its files set aside, the cache
still serving identical requests), a folder whose run never received an answer is taken over by
the corrected command, and every refusal says which of the two applies."""

from __future__ import annotations

import json

import pytest

from mmad.results.files import read_result_file
from tests.cli_support import jobs_sent, mmad, one_error, score_args
from tests.conftest import cli_env, make_industry_subset
from tests.wire_server import Fault


@pytest.fixture
def env(tmp_path):
    make_industry_subset(tmp_path / "data", "toy", "widget")  # 12 jobs
    return cli_env(tmp_path)


def test_a_typo_in_the_base_url_is_taken_over_by_the_corrected_command(tmp_path, env, server):
    out = tmp_path / "out"
    typo = server.openai_url.replace("/v1", "/v2")  # a path nothing serves: 404 at the first request
    server.fault_rule = lambda received, n: Fault("not_found") if received.route.startswith("/v2/") else None
    assert "rerun the same command to resume" in one_error(mmad(env, *score_args(typo, out)), 3)
    server.requests.clear()
    fixed = mmad(env, *score_args(server.openai_url, out))
    assert fixed.returncode == 0, fixed.stderr
    assert "never received an answer: this run takes the folder over" in fixed.stderr
    assert len(jobs_sent(server)) == 12
    assert json.loads((out / "run.json").read_text())["settings"]["base_url"] == server.openai_url
    evaluated = mmad(env, "eval", out, "--json")  # one result file per subset: nothing of the typo's is left
    assert evaluated.returncode == 0 and [r["n"] for r in json.loads(evaluated.stdout)] == [12], evaluated.stderr


def test_a_folder_with_answers_is_refused_saying_how_to_start_it_over(tmp_path, env, server):
    out = tmp_path / "out"
    assert mmad(env, *score_args(server.openai_url, out)).returncode == 0
    before = (out / "m_toy_widget.jsonl").read_text()
    line = one_error(mmad(env, *score_args(server.openai_url, out, "--refs", "2")), 2)
    assert "made with other settings (refs: 3 -> 2)" in line and "it holds answers, so it is kept" in line
    assert "--fresh starts this folder over" in line and "another --out or --run-name" in line
    assert (out / "m_toy_widget.jsonl").read_text() == before and len(jobs_sent(server)) == 12
    dry = mmad(env, *score_args(server.openai_url, out, "--refs", "2", "--dry-run"))
    assert "it holds answers, so it is kept" in one_error(dry, 2)  # a dry run says what the run would say
    fresh = mmad(env, *score_args(server.openai_url, out, "--refs", "2", "--fresh"))
    assert fresh.returncode == 0, fresh.stderr
    [aside] = tmp_path.glob("out.replaced-*")
    assert f"--fresh: {out} starts over; its previous files are in {aside}" in fresh.stderr
    assert (aside / "m_toy_widget.jsonl").read_text() == before and (aside / "run.json").exists()
    assert json.loads((out / "run.json").read_text())["settings"]["refs"] == 2 and len(jobs_sent(server)) == 24


def test_fresh_pays_nothing_for_what_the_cache_holds(tmp_path, env, server):
    out = tmp_path / "out"
    assert mmad(env, *score_args(server.openai_url, out)).returncode == 0
    scores = read_result_file(out / "m_toy_widget.csv").scores
    (out / "run.json").write_text("{broken")  # refused as it is; --fresh is the deliberate way
    assert "--fresh starts this folder over" in one_error(mmad(env, *score_args(server.openai_url, out)), 2)
    again = mmad(env, *score_args(server.openai_url, out, "--fresh", "--json"))
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["this_run"]["sources"] == {"cache": 12} and len(jobs_sent(server)) == 12
    assert list(read_result_file(out / "m_toy_widget.csv").scores) == list(scores)
    [aside] = tmp_path.glob("out.replaced-*")
    assert (aside / "run.json").read_text() == "{broken"
