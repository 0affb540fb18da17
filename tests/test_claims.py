"""Two processes on one response cache pay once: claims on cache keys, released on answer,
failure or death, and a waiting twin that takes the answer from the cache."""

import subprocess
import sys
import time
from collections import Counter

import pytest

from mmad.cache.claims import FILE, LEASE_S, ClaimStore
from tests.conftest import cli_env, make_industry_subset


def test_a_claim_holds_off_other_processes_until_released(tmp_path):
    ours, theirs = ClaimStore(tmp_path), ClaimStore(tmp_path)  # two owners, as two processes would be
    try:
        assert ours.claim("k1") and not theirs.claim("k1") and theirs.claim("k2")
        assert ours.claim("k1")  # ours again: still ours
        ours.release("k1")
        assert theirs.claim("k1") and not ours.claim("k1")
    finally:
        ours.close()
        theirs.close()


def test_a_claim_of_a_dead_process_is_taken_over(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    store = ClaimStore(tmp_path)
    try:
        store._db.execute("INSERT INTO claims VALUES ('k', 'gone', ?, ?, '', ?)",
                          (store.host, pid, 1e18))  # a kill -9 left its row, lease and all
        assert store.claim("k")
    finally:
        store.close()


def test_an_expired_lease_frees_a_claim(tmp_path):
    now = [1000.0]
    ours = ClaimStore(tmp_path, clock=lambda: now[0])
    theirs = ClaimStore(tmp_path, clock=lambda: now[0])
    try:
        theirs.host = "elsewhere"  # another host: its PID cannot be checked, only its lease
        assert theirs.claim("k") and not ours.claim("k")
        now[0] += LEASE_S / 2
        theirs.renew()
        now[0] += LEASE_S / 2 + 1
        assert not ours.claim("k")  # renewed: still held
        now[0] += LEASE_S
        assert ours.claim("k")
    finally:
        ours.close()
        theirs.close()


def test_close_releases_everything_and_a_damaged_file_is_replaced(tmp_path):
    store = ClaimStore(tmp_path)
    store.claim("a")
    store.claim("b")
    store.close()
    other = ClaimStore(tmp_path)
    assert other.claim("a") and other.claim("b")
    other.close()
    (tmp_path / FILE).write_bytes(b"this is not a database" * 100)
    for suffix in ("-wal", "-shm"):
        (tmp_path / (FILE + suffix)).unlink(missing_ok=True)
    fresh = ClaimStore(tmp_path)
    assert fresh.claim("a")
    fresh.close()


@pytest.mark.parametrize("apart", [False, True])
def test_two_runs_on_one_cache_pay_once(tmp_path, server, apart):
    """Two `mmad score` with different --out and the same cache, started together or one after the
    other's first answers: every request is paid once, and both runs end with every job done."""
    make_industry_subset(tmp_path / "data", "toy", "widget", per_level=6)  # 24 jobs
    server.latency = 0.25
    env = cli_env(tmp_path)
    commands = [[sys.executable, "-m", "mmad.cli", "score", "--provider", "openai", "--model", "m", "--base-url",
                 server.openai_url, "--dataset", "toy", "--out", str(tmp_path / f"out{i}"), "--quiet",
                 "--concurrency", "4"] for i in (1, 2)]
    processes = [subprocess.Popen(commands[0], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)]
    try:
        while apart and len(server.paid) < 6 and processes[0].poll() is None:
            time.sleep(0.05)
        processes.append(subprocess.Popen(commands[1], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                          text=True))
        for process in processes:
            _, err = process.communicate(timeout=120)
            assert process.returncode == 0, err
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
    paid = Counter(received.query_id() for received in server.paid)
    assert len(paid) == 24 and max(paid.values()) == 1  # every answer paid once, none twice
