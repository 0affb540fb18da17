"""`mmad score` as a user runs it: a subprocess against the local wire-format server."""

import json
import signal
import subprocess
import sys
import time

import pytest

from mmad.results.files import JsonlLog, read_result_file
from tests.conftest import cli_env, make_industry_subset

KEY = "sk-cli-SECRET-abcdef123456"


@pytest.fixture
def setup(tmp_path, server):
    make_industry_subset(tmp_path / "data", "toy", "widget", per_level=6)  # 24 jobs
    return tmp_path, server, cli_env(tmp_path, KEY, PYTHONUNBUFFERED="1")


def score_cmd(server, out, *extra, provider="openai"):
    url = server.openai_url if provider == "openai" else server.anthropic_url
    return [sys.executable, "-m", "mmad.cli", "score", "--provider", provider, "--model", "m", "--base-url", url,
            "--dataset", "toy", "--out", str(out), "--quiet", *extra]


def job_requests(server):
    return list(server.requests)


def test_score_then_eval(setup):
    tmp, server, env = setup
    run = subprocess.run(score_cmd(server, tmp / "out"), env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "ok 24" in run.stderr and KEY not in run.stderr + run.stdout
    evaluated = subprocess.run([sys.executable, "-m", "mmad.cli", "eval", str(tmp / "out"), "--json"],
                               env=env, capture_output=True, text=True, timeout=60)
    [record] = json.loads(evaluated.stdout)
    assert record["dataset"] == "toy" and record["subset"] == "widget" and record["n"] == 24
    # a second run in a new folder is served from the cache
    before = len(server.requests)
    again = subprocess.run(score_cmd(server, tmp / "out2"), env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and "cache 24" in again.stderr and len(server.requests) == before


def test_dry_run_sends_nothing(setup):
    tmp, server, env = setup
    run = subprocess.run(score_cmd(server, tmp / "out", "--dry-run", provider="anthropic"), env=env,
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert "24 jobs in 1 run(s) x 1 subset(s)" in run.stdout and "<elided: 000.png" in run.stdout
    assert '"temperature": 0.0' in run.stdout and not server.requests


def test_kill_9_then_resume_pays_no_completed_job_twice(setup):
    tmp, server, env = setup
    server.latency = 0.25
    out = tmp / "out"
    proc = subprocess.Popen(score_cmd(server, out, "--concurrency", "2"), env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log = out / "m_toy_widget.jsonl"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(JsonlLog.read(log)) < 6:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    completed = JsonlLog.read(log)
    assert 6 <= len(completed) < 24
    done_keys = {r["key"] for r in completed}
    first_run_paid = len(job_requests(server))
    server.requests.clear()
    server.latency = 0.0
    rerun = subprocess.run(score_cmd(server, out), env=env, capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    resent = job_requests(server)
    records = {r["path"]: r for r in JsonlLog.read(log)}
    assert len(records) == 24 and {r["status"] for r in records.values()} == {"ok"}
    # nothing recorded before the kill is requested again; only jobs in flight at the kill may be
    import hashlib

    from mmad.data.images import encode_file
    root = tmp / "data" / "Industry" / "toy" / "widget" / "test"
    completed_queries = {hashlib.sha256(encode_file(root / r["path"]).data.encode()).hexdigest() for r in completed}
    assert not completed_queries & {r.query_id() for r in resent}
    assert len(resent) <= 24 - len(completed)
    assert first_run_paid + len(resent) <= 24 + 2  # at most the two in flight were paid twice
    assert len(JsonlLog.read(log)) == 24  # no job recorded twice
    assert not done_keys - {r["key"] for r in records.values()}
    table = read_result_file(out / "m_toy_widget.csv")
    assert len(table.paths) == 24 and not any(s != s for s in table.scores)


def test_sigterm_stops_gracefully_and_resumes(setup):
    tmp, server, env = setup
    server.latency = 0.25
    out = tmp / "out"
    proc = subprocess.Popen(score_cmd(server, out, "--concurrency", "2"), env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log = out / "m_toy_widget.jsonl"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(JsonlLog.read(log)) < 4:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 1, err
    assert "rerun the same command to resume" in err and "Traceback" not in err
    partial = read_result_file(out / "m_toy_widget.csv")  # written on the way out
    done = sum(s == s for s in partial.scores)
    assert 4 <= done < 24
    assert len(job_requests(server)) == done  # in-flight requests were finished, not abandoned
    server.latency = 0.0
    rerun = subprocess.run(score_cmd(server, out), env=env, capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0 and len(job_requests(server)) == 24


def test_quota_exit_code_and_message(setup):
    tmp, server, env = setup
    from tests.wire_server import Fault
    server.fault_rule = lambda received, n: Fault("quota")
    run = subprocess.run(score_cmd(server, tmp / "out"), env=env, capture_output=True, text=True, timeout=60)
    assert run.returncode == 4
    assert "quota" in run.stderr and "rerun the same command to resume" in run.stderr
    assert "Traceback" not in run.stderr and KEY not in run.stderr


def test_missing_key_is_one_line(setup, tmp_path):
    tmp, server, env = setup
    env = {k: v for k, v in env.items() if k != "OPENAI_API_KEY"}
    run = subprocess.run([sys.executable, "-m", "mmad.cli", "score", "--provider", "openai", "--dataset", "toy"],
                         env=env, capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and "set OPENAI_API_KEY" in run.stderr and "Traceback" not in run.stderr


def test_unknown_dataset_is_one_line(setup):
    tmp, server, env = setup
    run = subprocess.run(score_cmd(server, tmp / "out")[:-5] + ["--dataset", "nope", "--quiet"], env=env,
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and "unknown dataset 'nope'" in run.stderr and "Traceback" not in run.stderr


@pytest.mark.parametrize("bad", ["abc", "42", None, [1], True, 150, -5, 1e999])
def test_a_score_edited_by_hand_is_refused_naming_its_line_and_never_written(setup, bad):
    """The run's JSONL is read back on every resume: an `ok` record whose score its task could not
    have written stops the run in one line (file, line, image), exit 2, before the CSV is rewritten."""
    tmp, server, env = setup
    out = tmp / "out"
    assert subprocess.run(score_cmd(server, out), env=env, capture_output=True, timeout=120).returncode == 0
    [jsonl] = out.glob("*.jsonl")
    csv_before = jsonl.with_suffix(".csv").read_bytes()
    lines = jsonl.read_text().splitlines()
    record = json.loads(lines[4])
    record["score"] = bad
    lines[4] = json.dumps(record)
    jsonl.write_text("\n".join(lines) + "\n")
    run = subprocess.run(score_cmd(server, out), env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 2, run.stderr
    assert f"{jsonl.name}: line 5 ({record['path']}): status ok with score" in run.stderr
    assert "Traceback" not in run.stderr and jsonl.with_suffix(".csv").read_bytes() == csv_before
    del lines[4]  # what the message says to do: the answer comes back from the cache, unpaid
    jsonl.write_text("\n".join(lines) + "\n")
    paid = len(server.requests)
    again = subprocess.run(score_cmd(server, out), env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and "cache 1" in again.stderr and len(server.requests) == paid
