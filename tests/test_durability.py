"""Durability: a stop stops, exit codes tell the truth, and no disk, cache or second process can
lose paid work. `mmad score` runs as a user runs it: a subprocess against the wire server."""

import json
import os
import resource
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import pytest

from mmad.cache.repair import check_cache, rebuild_cache
from mmad.cache.store import ResponseCache
from mmad.results.files import JsonlLog, read_result_file
from tests.conftest import cli_env, make_industry_subset
from tests.wire_server import Fault

KEY = "sk-dur-SECRET-abcdef123456"


@pytest.fixture
def setup(tmp_path, server):
    make_industry_subset(tmp_path / "data", "toy", "widget", per_level=6)  # 24 jobs
    return tmp_path, server, cli_env(tmp_path, KEY, PYTHONUNBUFFERED="1")


def score_cmd(url, out, *extra, provider="openai", model="m"):
    return [sys.executable, "-m", "mmad.cli", "score", "--provider", provider, "--model", model, "--base-url", url,
            "--dataset", "toy", "--out", str(out), "--quiet", *extra]


def jobs_sent(server):
    return [r for r in server.requests if r.body.get("max_tokens") == 300]


def run(cmd, env, **kw):
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, **kw)


def one_line_error(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


# --------------------------------------------------------------------------- stopping

def test_after_sigterm_no_request_leaves_and_nothing_becomes_a_failure(setup):
    tmp, server, env = setup
    server.latency = 0.3
    # every request after the 7th is rate limited: a stop must leave those jobs to-do, not failed
    server.fault_rule = lambda received, n: Fault("429", retry_after_ms=200) if n > 7 else None
    arrivals = server.arrivals  # receipt times of every request
    out = tmp / "out"
    proc = subprocess.Popen(score_cmd(server.openai_url, out, "--concurrency", "4"), env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(arrivals) < 12:
        time.sleep(0.02)
    stopped_at = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    took = time.monotonic() - stopped_at
    assert proc.returncode == 1, err
    assert "rerun the same command to resume" in err and "Traceback" not in err
    assert "terminated (SIGTERM)" in err
    late = [t for t in arrivals if t > stopped_at + 0.05]
    assert late == []  # no new request after the stop (only those already in flight finish)
    assert took < 5
    records = JsonlLog.read(out / "m_toy_widget.jsonl")
    assert {r["status"] for r in records} <= {"ok"}  # 429s cut short by the stop left no record
    server.fault_rule = None
    server.latency = 0
    rerun = run(score_cmd(server.openai_url, out), env)
    assert rerun.returncode == 0, rerun.stderr
    table = read_result_file(out / "m_toy_widget.csv")
    assert not any(s != s for s in table.scores)


# --------------------------------------------------------------------------- exit codes and the first request

def closed_port() -> int:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_unreachable_server_is_one_line_exit_3(setup, provider):
    tmp, _, env = setup
    url = f"http://127.0.0.1:{closed_port()}" + ("/v1" if provider == "openai" else "")
    started = time.monotonic()
    result = run(score_cmd(url, tmp / "out", provider=provider), env)
    line = one_line_error(result.stderr)
    assert result.returncode == 3 and f"cannot reach {url}" in line
    assert "connection refused" in line and "--base-url right?" in line and "Error" not in line, line
    assert "nothing finished" in result.stderr and "nothing to do" not in result.stderr
    assert time.monotonic() - started < 30
    assert KEY not in result.stderr


@pytest.mark.parametrize("fault,fragment", [
    ("auth", "refused the key"),
    ("not_found", "answered 404"),
    ("html", "not the API's JSON"),
    ("html_404", "answered 404 (not found (HTTP 404): an HTML page, not the API's JSON)"),
    # python -m http.server answers POST with 501 and an HTML page; 405 alike: no API endpoint, no retry
    ("html_501", "HTTP 501 Not Implemented (an HTML page, not the API's JSON): this URL is not an API endpoint"),
    ("html_405", "HTTP 405 Method Not Allowed (an HTML page, not the API's JSON): this URL is not an API"),
])
@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_a_bad_first_answer_stops_everything(setup, provider, fault, fragment):
    tmp, server, env = setup
    server.fault_rule = lambda received, n: Fault(fault)
    url = server.openai_url if provider == "openai" else server.anthropic_url
    result = run(score_cmd(url, tmp / "out", provider=provider), env)
    line = one_line_error(result.stderr)
    assert result.returncode == 3 and fragment in line and url in line
    assert len(server.requests) == 1  # the first job and nothing else
    assert KEY not in result.stderr
    # the whole message on its one line (no newline from a body), and never the page itself
    assert line.endswith("rerun the same command to resume") and "<" not in result.stderr


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_a_servers_error_message_is_one_short_redacted_line(setup, provider):
    tmp, server, env = setup
    message = f"no such model\n\n  key {KEY} was used\n" + "details " * 200
    server.fault_rule = lambda received, n: Fault("not_found", message=message)
    url = server.openai_url if provider == "openai" else server.anthropic_url
    result = run(score_cmd(url, tmp / "out", provider=provider), env)
    line = one_line_error(result.stderr)
    assert result.returncode == 3 and "no such model key *** was used details" in line
    assert line.endswith("rerun the same command to resume") and len(line) < 700
    assert KEY not in result.stderr and "SECRET" not in result.stderr


def test_server_that_always_fails_exits_3_after_one_job(setup):
    tmp, server, env = setup
    server.fault_rule = lambda received, n: Fault("500")
    result = run(score_cmd(server.anthropic_url, tmp / "out", "--max-attempts", "2", provider="anthropic"), env)
    line = one_line_error(result.stderr)
    assert result.returncode == 3 and "HTTP 500" in line and "24 job(s) left" in line
    assert len(server.requests) == 2


def test_finished_with_failed_jobs_exits_6_and_names_the_causes(setup):
    tmp, server, env = setup
    server.fault_rule = lambda received, n: (Fault("bad_request", message="image too large") if n in (3, 5) else
                                             Fault("garbage") if n == 7 else None)
    result = run(score_cmd(server.openai_url, tmp / "out", "--concurrency", "1"), env)
    assert result.returncode == 6, result.stderr
    assert "3 job(s) failed (bad request (HTTP 400) x2, e.g. good_level_0/00" in result.stderr
    assert "--retry-failed" in result.stderr
    again = run(score_cmd(server.openai_url, tmp / "out"), env)  # nothing to do, but the failures remain
    assert again.returncode == 6 and "nothing to do" in again.stderr
    server.fault_rule = lambda received, n: Fault("auth")  # the retry of the failed is stopped at once
    before = len(server.requests)
    refused = run(score_cmd(server.openai_url, tmp / "out", "--retry-failed"), env)
    assert refused.returncode == 3 and "0 job(s) left, 3 failed: rerun the same command" in refused.stderr
    assert len(server.requests) == before + 1  # the first request only; the parse failure is re-read (free)
    assert "ok" not in refused.stderr.split("this run")[1].split("\n")[0]
    stopped = run(score_cmd(server.openai_url, tmp / "out"), env)  # a plain rerun: nothing of it is sent
    assert stopped.returncode == 6
    server.fault_rule = None
    fixed = run(score_cmd(server.openai_url, tmp / "out", "--retry-failed"), env)
    assert fixed.returncode == 6  # the parse failure is re-read from the cache (free) and fails the same way
    assert "1 job(s) failed (answer: no anomaly score" in fixed.stderr


# --------------------------------------------------------------------------- storage

def test_full_disk_stops_at_once_and_the_rerun_pays_only_what_was_lost(setup):
    """A file-size limit (RLIMIT_FSIZE, no root needed) plays the full disk: SQLite's log
    outgrows it after some dozens of answers."""
    tmp, server, env = setup
    make_industry_subset(tmp / "big", "toy", "widget", per_level=50)  # 200 jobs
    env = dict(env, MMAD_DATA_ROOT=str(tmp / "big"))
    out = tmp / "out"
    limit = 1100 * 1024

    def small_disk():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    result = subprocess.run(score_cmd(server.openai_url, out, "--concurrency", "4"), env=env, capture_output=True,
                            text=True, timeout=120, preexec_fn=small_disk)
    line = one_line_error(result.stderr)
    assert result.returncode == 7, result.stderr
    assert "cannot write" in line and str(tmp / "cache") in line and "rerun the same command" in line
    paid_first = len(jobs_sent(server))
    stored = {r["key"] for r in JsonlLog.read(out / "m_toy_widget.jsonl")}
    assert 0 < paid_first < 200 and len(stored) >= paid_first - 4
    server.requests.clear()
    rerun = run(score_cmd(server.openai_url, out), env)
    assert rerun.returncode == 0, rerun.stderr
    # every answer stored in the cache or the JSONL is not paid again: at most those in flight
    assert len(jobs_sent(server)) <= 200 - paid_first + 4
    table = read_result_file(out / "m_toy_widget.csv")
    assert len(table.paths) == 200 and not any(s != s for s in table.scores)


def without_override():
    """In the child: drop the capabilities that let root write where permission bits forbid it
    (prctl PR_CAPBSET_DROP of CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH; takes effect at exec).
    For other users permission bits apply anyway."""
    if os.geteuid() == 0:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        for capability in (1, 2):
            libc.prctl(24, capability, 0, 0, 0)


@pytest.mark.parametrize("which", ["out", "cache"])
def test_read_only_folders_are_one_line_exit_7(setup, which):
    tmp, server, env = setup
    locked = tmp / "read-only"
    locked.mkdir()
    (locked / "cache").mkdir()
    locked.chmod(0o555)
    (locked / "cache").chmod(0o555)
    env = dict(env, MMAD_CACHE_DIR=str((locked if which == "cache" else tmp) / "cache"))
    out = (locked if which == "out" else tmp) / "out"
    try:
        result = subprocess.run(score_cmd(server.openai_url, out), env=env, capture_output=True, text=True,
                                timeout=120, preexec_fn=without_override)
    finally:
        locked.chmod(0o755)
        (locked / "cache").chmod(0o755)
    line = one_line_error(result.stderr)
    assert result.returncode == 7 and ("Permission denied" in line or "read-only" in line), line
    assert str(locked) in line
    assert not jobs_sent(server)


def test_a_read_only_cache_is_checked_without_writing(setup):
    tmp, server, env = setup
    assert run(score_cmd(server.openai_url, tmp / "out"), env).returncode == 0
    store = tmp / "cache" / "responses"
    store.chmod(0o555)
    try:
        check = subprocess.run([sys.executable, "-m", "mmad.cli", "cache", "check"], env=env, capture_output=True,
                               text=True, timeout=60, preexec_fn=without_override)
    finally:
        store.chmod(0o755)
    assert check.returncode == 0 and "24 answers, ok" in check.stdout, check.stderr


def test_a_cache_damaged_in_the_middle_is_not_written_into(setup):
    """Bytes overwritten inside the database (a bad sector, a crash of the disk): the next run stops
    before using the store, rather than writing into it and spreading the damage."""
    tmp, server, env = setup
    assert run(score_cmd(server.openai_url, tmp / "out"), env).returncode == 0
    database = tmp / "cache" / "responses" / "cache.db"
    run([sys.executable, "-c", f"import sqlite3; sqlite3.connect({str(database)!r}).execute('PRAGMA "
                               f"wal_checkpoint(TRUNCATE)')"], env)
    data = bytearray(database.read_bytes())
    assert len(data) >= 4 * 4096
    data[len(data) - 4096:len(data) - 2048] = os.urandom(2048)  # the last page: the newest answers
    database.write_bytes(bytes(data))
    server.requests.clear()
    result = run(score_cmd(server.openai_url, tmp / "out2", "--refs", "2"), env)
    line = one_line_error(result.stderr)
    assert result.returncode == 7 and "mmad cache rebuild" in line, result.stderr
    assert not jobs_sent(server)


def test_corrupt_cache_is_one_line_and_rebuilt_from_the_results(setup):
    tmp, server, env = setup
    out = tmp / "out"
    assert run(score_cmd(server.openai_url, out), env).returncode == 0
    database = tmp / "cache" / "responses" / "cache.db"
    database.write_bytes(os.urandom(8192))
    for extra in ("-wal", "-shm"):
        Path(str(database) + extra).unlink(missing_ok=True)
    result = run(score_cmd(server.openai_url, tmp / "out2"), env)
    line = one_line_error(result.stderr)
    assert result.returncode == 7 and "mmad cache rebuild" in line
    check = run([sys.executable, "-m", "mmad.cli", "cache", "check"], env)
    assert check.returncode == 7 and "damaged" in check.stderr
    rebuilt = run([sys.executable, "-m", "mmad.cli", "cache", "rebuild", "--from", str(out)], env)
    assert rebuilt.returncode == 0 and "restored 24 paid answers" in rebuilt.stdout
    assert "nothing could be read from the damaged store (file is not a database)" in rebuilt.stdout
    assert list((tmp / "cache").glob("responses.damaged-*"))  # set aside, not deleted
    server.requests.clear()
    again = run(score_cmd(server.openai_url, tmp / "out2"), env)
    assert again.returncode == 0 and not jobs_sent(server)  # every answer came back from the results
    assert run([sys.executable, "-m", "mmad.cli", "cache", "check"], env).returncode == 0


def test_rebuild_of_a_healthy_cache_keeps_every_answer_and_only_adds(setup):
    """A rebuild from one out folder must not cost another folder's answers (they would be paid again)."""
    tmp, server, env = setup
    assert run(score_cmd(server.openai_url, tmp / "a"), env).returncode == 0
    assert run(score_cmd(server.openai_url, tmp / "b", model="m2"), env).returncode == 0
    log = tmp / "a" / "m_toy_widget.jsonl"
    records = JsonlLog.read(log)
    cache = ResponseCache(tmp / "cache")
    for record in records[:3]:
        del cache._store[record["key"]]  # answers the cache lacks and a record keeps
    cached_text = cache.get(records[5]["key"])["text"]
    cache.close()
    log.write_text(log.read_text().replace(json.dumps(records[5]["raw"]), json.dumps("Anomaly Score: 1")))
    rebuilt = run([sys.executable, "-m", "mmad.cli", "cache", "rebuild", "--from", str(tmp / "a")], env)
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert "cache healthy: kept 45 answers, added 3 from 1 record file" in rebuilt.stdout
    assert "1 record disagreed" in rebuilt.stdout and not list((tmp / "cache").glob("responses.damaged-*"))
    cache = ResponseCache(tmp / "cache")
    assert len(cache) == 48 and cache.get(records[5]["key"])["text"] == cached_text  # never overwritten
    cache.close()
    server.requests.clear()  # a rerun of either folder's run into a new folder pays nothing
    for out, model in ((tmp / "a2", "m"), (tmp / "b2", "m2")):
        assert run(score_cmd(server.openai_url, out, model=model), env).returncode == 0
    assert not jobs_sent(server)


def test_rebuild_of_a_damaged_cache_salvages_every_readable_answer(setup):
    """One table page destroyed: its rows are unreadable, every other row is salvaged, and the
    lost ones that no record keeps are counted, and paid again on a rerun, exactly."""
    tmp, server, env = setup
    assert run(score_cmd(server.openai_url, tmp / "a"), env).returncode == 0
    assert run(score_cmd(server.openai_url, tmp / "b", model="m2"), env).returncode == 0
    database = tmp / "cache" / "responses" / "cache.db"
    with closing(sqlite3.connect(database)) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    b_keys = [r["key"] for r in JsonlLog.read(tmp / "b" / "m2_toy_widget.jsonl")]
    data = bytearray(database.read_bytes())
    size = int.from_bytes(data[16:18], "big")
    page = next(o // size * size for o in range(len(data))  # the table leaf page holding one of b's answers
                if data.startswith(b_keys[10].encode(), o) and data[o // size * size] == 0x0D)
    rows_on_page = int.from_bytes(data[page + 3:page + 5], "big")
    data[page:page + size] = b"\xff" * size
    database.write_bytes(bytes(data))
    for extra in ("-wal", "-shm"):
        Path(str(database) + extra).unlink(missing_ok=True)
    rebuilt = run([sys.executable, "-m", "mmad.cli", "cache", "rebuild", "--from", str(tmp / "a")], env)
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert "restored 24 paid answers" in rebuilt.stdout
    assert f"salvaged {48 - rows_on_page} of 48 answers still readable" in rebuilt.stdout, rebuilt.stdout
    cache = ResponseCache(tmp / "cache")
    lost = [key for key in b_keys if cache.get(key) is None]
    cache.close()
    assert b_keys[10] in lost and f"{len(lost)} answer{'s' if len(lost) > 1 else ''} lost" in rebuilt.stdout
    server.requests.clear()
    assert run(score_cmd(server.openai_url, tmp / "b2", model="m2"), env).returncode == 0
    assert len(jobs_sent(server)) == len(lost)  # only what no copy kept is paid again


def test_long_answers_are_checked_and_salvaged_from_their_files(tmp_path):
    """diskcache keeps an answer over 32 KB in a file beside the database: a check reads it, and a
    missing file is damage that costs that one answer only."""
    cache = ResponseCache(tmp_path)
    cache.put("a" * 64, {"text": "x" * 40_000})
    cache.put("b" * 64, {"text": "short"})
    cache.close()
    assert check_cache(tmp_path) == (2, "ok")
    next((tmp_path / "responses").rglob("*.val")).unlink()
    assert check_cache(tmp_path) == (2, "1 of 2 answers cannot be read")
    done = rebuild_cache(tmp_path, [])
    assert done.aside is not None and done.salvage.readable == 1 and (done.lost, done.lost_unknown) == (1, 0)
    cache = ResponseCache(tmp_path)
    assert cache.get("b" * 64)["text"] == "short" and cache.get("a" * 64) is None
    cache.close()


def test_an_answer_whose_bytes_were_damaged_costs_that_answer_only(tmp_path):
    """Bytes overwritten inside a stored text (not UTF-8 any more, the pages intact): a run treats
    it as absent, the check counts it, and the rebuild keeps every other answer."""
    import sqlite3
    cache = ResponseCache(tmp_path)
    cache.put("a" * 64, {"text": "Anomaly Score: 3"})
    cache.put("b" * 64, {"text": "Anomaly Score: 1"})
    cache.close()
    with sqlite3.connect(tmp_path / "responses" / "cache.db") as db:
        db.execute("UPDATE Cache SET value = CAST(? AS TEXT) WHERE key = ?", (b'{"text": "\xff\xfe"}', "a" * 64))
    cache = ResponseCache(tmp_path)  # the pages are sound: the quick check passes
    assert cache.get("a" * 64) is None and cache.get("b" * 64)["text"] == "Anomaly Score: 1"
    cache.close()
    assert check_cache(tmp_path) == (2, "1 of 2 answers cannot be read")
    done = rebuild_cache(tmp_path, [])
    assert done.aside is not None and done.salvage.readable == 1 and done.lost == 1
    cache = ResponseCache(tmp_path)
    assert cache.get("b" * 64)["text"] == "Anomaly Score: 1" and cache.get("a" * 64) is None
    cache.close()


# --------------------------------------------------------------------------- two processes, one folder

def test_second_process_on_one_folder_is_refused_and_a_dead_holder_is_taken_over(setup):
    tmp, server, env = setup
    server.latency = 1.0  # the first run must still be running when the second starts, on a busy machine too
    out = tmp / "out"
    first = subprocess.Popen(score_cmd(server.openai_url, out, "--concurrency", "2"), env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log = out / "m_toy_widget.jsonl"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(JsonlLog.read(log)) < 2:
        time.sleep(0.05)
    second = run(score_cmd(server.openai_url, out), env)
    line = one_line_error(second.stderr)
    assert second.returncode == 2 and f"PID {first.pid}" in line
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)
    done = len(JsonlLog.read(log))
    server.latency = 0
    # what a kill between create and rename leaves: the next run that takes the folder removes it
    stale = [out / ".run.json.x5z45lgc.tmp", out / ".m_toy_widget.csv.b_vol83n.tmp"]
    for path in stale:
        path.write_text("half")
    (out / "notes.tmp").write_text("mine")  # not ours: kept
    third = run(score_cmd(server.openai_url, out), env)  # the dead run's lock is simply taken over
    assert third.returncode == 0, third.stderr
    assert not any(p.exists() for p in stale) and (out / "notes.tmp").exists()
    records = JsonlLog.read(log)
    assert len({r["key"] for r in records}) == 24 and len(records) == 24
    assert done < 24 and len(jobs_sent(server)) <= 24 + 2  # at most the dead run's 2 in-flight requests again


def test_a_later_failure_never_hides_an_earlier_success(setup):
    tmp, server, env = setup
    out = tmp / "out"
    assert run(score_cmd(server.openai_url, out), env).returncode == 0
    log = out / "m_toy_widget.jsonl"
    records = JsonlLog.read(log)
    victim = dict(records[3], status="error", score=None, error="transient: late failure", source="live")
    with open(log, "a") as handle:
        import json
        handle.write(json.dumps(victim) + "\n")
    server.requests.clear()
    again = run(score_cmd(server.openai_url, out, "--retry-failed"), env)
    assert again.returncode == 0 and not jobs_sent(server)
    table = read_result_file(out / "m_toy_widget.csv")
    assert table.scores[table.paths.index(records[3]["path"])] == records[3]["score"]


# --------------------------------------------------------------------------- changed settings

def test_changed_settings_never_reuse_stale_answers(setup):
    tmp, server, env = setup
    base = [sys.executable, "-m", "mmad.cli", "score", "--provider", "openai", "--model", "m", "--base-url",
            server.openai_url, "--dataset", "toy", "--quiet"]
    assert run(base, env, cwd=tmp).returncode == 0
    assert (tmp / "results" / "m" / "run.json").exists()
    # another prompt into the same folder is refused, naming what differs
    refused = run(base + ["--prompt", "industrial-paper", "--out", str(tmp / "results" / "m")], env, cwd=tmp)
    line = one_line_error(refused.stderr)
    assert refused.returncode == 2 and "prompt: default -> 'industrial-paper'" in line
    # by default, variants get their own folders and are really sent
    sent_before = len(jobs_sent(server))
    dry = run(base + ["--prompt", "industrial-zeroshot", "--refs", "0", "--dry-run"], env, cwd=tmp)
    assert "m+industrial-zeroshot+refs0" in dry.stdout and "24" in dry.stdout
    variant = run(base + ["--prompt", "industrial-zeroshot", "--refs", "0"], env, cwd=tmp)
    assert variant.returncode == 0, variant.stderr
    assert len(jobs_sent(server)) == sent_before + 24
    assert (tmp / "results" / "m+industrial-zeroshot+refs0" / "m+industrial-zeroshot+refs0_toy_widget.csv").exists()
    # a record made with another request (a changed image) is not done: that job alone runs again
    victim = tmp / "data" / "Industry" / "toy" / "widget" / "test" / "defect_level_1" / "000.png"
    from tests.conftest import write_image
    write_image(victim, seed=4242)
    again = run(base, env, cwd=tmp)
    assert again.returncode == 0 and len(jobs_sent(server)) == sent_before + 25


def test_rebuild_refuses_a_named_file_without_records_and_notes_skipped_ones(tmp_path, capsys, monkeypatch):
    from mmad import cli
    monkeypatch.setenv("MMAD_CACHE_DIR", str(tmp_path / "cache"))
    results = tmp_path / "results"
    results.mkdir()
    record = {"key": "ab" * 32, "raw": "Anomaly Score: 2", "status": "ok", "usage": {}}
    (results / "m_toy_widget.jsonl").write_text(json.dumps(record) + "\n")
    (results / "notes.jsonl").write_text("not json at all\n")
    (tmp_path / "scores.csv").write_text("image,severity,score\na.png,0,1\n")
    assert cli.main(["cache", "rebuild", "--from", str(tmp_path / "scores.csv")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "scores.csv: no result records" in err
    assert not (tmp_path / "cache" / "responses").exists()  # refused before the cache was touched
    assert cli.main(["cache", "rebuild", "--from", str(results)]) == 0
    captured = capsys.readouterr()
    assert "note: 1 JSONL file held no result records and was skipped" in captured.err and "notes.jsonl" in captured.err
    assert "with 1 answer from 1 record file" in captured.out
