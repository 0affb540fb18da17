"""`mmad cache stats` and `mmad cache prune` as a user runs them (subprocesses against the wire
server): a dry run lists exactly what the prune removes, entries a result file needs stay unless
--force, and a pruned cache makes the rerun pay again for exactly the pruned entries."""

import json
import shutil
import sqlite3
import subprocess
import sys

import pytest

from mmad.results.files import JsonlLog
from tests.conftest import cli_env, make_industry_subset


def mmad(env, *args, cwd):
    return subprocess.run([sys.executable, "-m", "mmad.cli", *args], env=env, capture_output=True, text=True,
                          timeout=180, cwd=cwd)


def cache_keys(cache_dir) -> set[str]:
    with sqlite3.connect(cache_dir / "responses" / "cache.db") as db:
        return {row[0] for row in db.execute("SELECT key FROM Cache")}


def record_keys(folder) -> set[str]:
    return {r["key"] for path in folder.glob("*.jsonl") for r in JsonlLog.read(path)}


@pytest.fixture
def scored(tmp_path, server):
    """Two prompt variants of one model scored into ./results (the working directory is tmp_path)."""
    make_industry_subset(tmp_path / "data", "toy", "widget", per_level=3)
    env = cli_env(tmp_path)
    score = ["score", "--provider", "openai", "--base-url", server.openai_url, "--dataset", "toy",
             "--prompt", "industrial,industrial-paper", "-q"]
    first = mmad(env, *score, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    return tmp_path, env, score


def test_prune_keeps_what_results_need_and_repays_exactly_the_pruned(scored, server):
    tmp, env, score = scored
    paper = tmp / "results" / "gpt-4o+industrial-paper"
    plain = tmp / "results" / "gpt-4o"
    paper_keys, plain_keys = record_keys(paper), record_keys(plain)
    assert len(paper_keys) == len(plain_keys) == 12 and cache_keys(tmp / "cache") == paper_keys | plain_keys

    stats = json.loads(mmad(env, "cache", "stats", "--json", cwd=tmp).stdout)
    assert stats["entries"] == 24 and stats["needed"] == 24
    assert [(g["provider"], g["model"], g["entries"]) for g in stats["by_model"]] == [("openai", "gpt-4o", 24)]

    # every entry is needed: a bare prune and a --model prune remove nothing without --force
    for args in ((), ("--model", "gpt-4o")):
        kept = json.loads(mmad(env, "cache", "prune", *args, "--json", cwd=tmp).stdout)
        assert kept["removed"] == [] and kept["kept_needed"] == 24
    assert len(cache_keys(tmp / "cache")) == 24

    shutil.rmtree(paper)  # that run's results are gone: its answers are needed no more
    dry = json.loads(mmad(env, "cache", "prune", "--dry-run", "--json", cwd=tmp).stdout)
    assert set(dry["would_remove"]) == paper_keys and cache_keys(tmp / "cache") == paper_keys | plain_keys
    done = json.loads(mmad(env, "cache", "prune", "--json", cwd=tmp).stdout)
    assert done["removed"] == dry["would_remove"]  # the dry run listed exactly what went
    assert cache_keys(tmp / "cache") == plain_keys

    before = len(server.requests)
    rerun = mmad(env, *score, cwd=tmp)
    assert rerun.returncode == 0, rerun.stderr
    assert len(server.requests) - before == len(done["removed"]) == 12  # exactly the pruned entries re-paid
    assert record_keys(paper) == paper_keys


def test_prune_of_one_run_spares_entries_another_run_needs(scored):
    tmp, env, _ = scored
    plain = tmp / "results" / "gpt-4o"
    copy = tmp / "results" / "copy-of-plain"  # a second run folder needing the same answers
    shutil.copytree(plain, copy)
    dry = json.loads(mmad(env, "cache", "prune", "--run", str(plain), "--dry-run", "--json", cwd=tmp).stdout)
    assert dry["would_remove"] == [] and dry["kept_needed"] == 12
    shutil.rmtree(copy)
    only = json.loads(mmad(env, "cache", "prune", "--run", str(plain), "--json", cwd=tmp).stdout)
    assert set(only["removed"]) == record_keys(plain)  # the run's own records do not protect them
    forced = json.loads(mmad(env, "cache", "prune", "--older-than", "0s", "--force", "--json", cwd=tmp).stdout)
    assert len(forced["removed"]) == 12 and cache_keys(tmp / "cache") == set()


def test_the_prune_knows_the_lock_and_run_file_names():
    from mmad.cache import admin
    from mmad.engine.lock import LOCK_FILE
    from mmad.results.runinfo import RUN_FILE
    assert (admin.LOCK_FILE, admin.RUN_FILE) == (LOCK_FILE, RUN_FILE)


def test_prune_refuses_without_results_and_names_bad_input(tmp_path):
    env = cli_env(tmp_path)
    (tmp_path / "cache" / "responses").mkdir(parents=True)
    bare = mmad(env, "cache", "prune", cwd=tmp_path)
    assert bare.returncode == 2 and "no result folders found" in bare.stderr and "Traceback" not in bare.stderr
    age = mmad(env, "cache", "prune", "--older-than", "3 weeks", "--results", str(tmp_path), cwd=tmp_path)
    assert age.returncode == 2 and "--older-than" in age.stderr and len(age.stderr.strip().splitlines()) == 1
