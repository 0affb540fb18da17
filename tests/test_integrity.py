"""Nothing wrong ever counts: a changed byte in a cached answer is a miss (never a score), a damaged
cache schema is exit 7 that `cache rebuild` repairs, a disk turned read-only mid-run is one line
and exit 7, an image replaced with its mtime kept is hashed again, the answering model is
recorded, and an early Ctrl-C is one line. `mmad` runs as a user runs it, in a subprocess."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mmad.cache.store import ResponseCache
from mmad.results.files import JsonlLog, read_result_file
from tests.cli_support import jobs_sent, mmad, one_error, score_args
from tests.conftest import cli_env, make_industry_subset

LOG = "m_toy_widget.jsonl"


@pytest.fixture
def setup(tmp_path, server):
    make_industry_subset(tmp_path / "data", "toy", "widget")  # 12 jobs
    env = cli_env(tmp_path)
    first = mmad(env, *score_args(server.openai_url, tmp_path / "a"))
    assert first.returncode == 0, first.stderr
    return tmp_path, server, env


def database(tmp: Path) -> Path:
    path = tmp / "cache" / "responses" / "cache.db"
    with closing(sqlite3.connect(path)) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return path


def change_one_digit(tmp: Path, record: dict) -> None:
    """One digit of one stored answer changed in place: the row, its page and its JSON stay sound."""
    with closing(sqlite3.connect(database(tmp))) as db, db:
        (value,) = db.execute("SELECT value FROM Cache WHERE key = ?", (record["key"],)).fetchone()
        line = record["raw"].splitlines()[0]  # "Anomaly Score: 24"
        damaged = value.replace(line, line[:-1] + str((int(line[-1]) + 1) % 10), 1)
        assert damaged != value and len(damaged) == len(value) and json.loads(damaged)
        db.execute("UPDATE Cache SET value = ? WHERE key = ?", (damaged, record["key"]))


def test_a_changed_digit_in_a_cached_answer_is_a_miss_never_a_score(setup):
    tmp, server, env = setup
    records = JsonlLog.read(tmp / "a" / LOG)
    victim = records[4]
    change_one_digit(tmp, victim)
    check = mmad(env, "cache", "check")
    assert "1 of 12 answers fail their checksum" in one_error(check, 7)
    server.requests.clear()
    rerun = mmad(env, *score_args(server.openai_url, tmp / "b", "--json"))
    assert rerun.returncode == 0, rerun.stderr
    assert json.loads(rerun.stdout)["this_run"]["sources"] == {"cache": 11, "live": 1}
    assert len(jobs_sent(server)) == 1  # the damaged one was asked again, alone
    table = read_result_file(tmp / "b" / "m_toy_widget.csv")
    assert table.scores[table.paths.index(victim["path"])] == victim["score"]  # the server's answer, not the damage
    assert mmad(env, "cache", "check").returncode == 0  # the fresh answer replaced the damaged one


def test_rebuild_takes_the_records_answer_over_a_damaged_one(setup):
    tmp, server, env = setup
    victim = JsonlLog.read(tmp / "a" / LOG)[7]
    change_one_digit(tmp, victim)
    rebuilt = mmad(env, "cache", "rebuild", "--from", tmp / "a")
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert "fail their checksum" in rebuilt.stdout and "restored 12 paid answers" in rebuilt.stdout
    assert "salvaged 11 of 12 answers" in rebuilt.stdout and "no answer lost" in rebuilt.stdout
    cache = ResponseCache(tmp / "cache")
    assert cache.get(victim["key"])["text"] == victim["raw"]
    cache.close()
    server.requests.clear()
    assert mmad(env, *score_args(server.openai_url, tmp / "b")).returncode == 0 and not jobs_sent(server)


def test_a_non_utf8_schema_is_storage_and_rebuild_repairs_it(setup):
    tmp, server, env = setup
    with closing(sqlite3.connect(database(tmp))) as db, db:
        db.execute("PRAGMA writable_schema=ON")
        db.execute("UPDATE sqlite_master SET sql = CAST(? AS TEXT) WHERE name = 'Cache_expire_time'",
                   (b"CREATE INDEX Cache_expire_time ON Cache (expire_time\xff)",))
    server.requests.clear()
    for command, says in ((score_args(server.openai_url, tmp / "b"), "mmad cache rebuild"),
                          (["cache", "check"], "damaged schema")):
        assert says in one_error(mmad(env, *command), 7), command
    rebuilt = mmad(env, "cache", "rebuild", "--from", tmp / "a")
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert "salvaged 12 of 12 answers" in rebuilt.stdout and "no answer lost" in rebuilt.stdout
    assert mmad(env, "cache", "check").returncode == 0
    assert mmad(env, *score_args(server.openai_url, tmp / "b")).returncode == 0 and not jobs_sent(server)


def test_a_disk_turned_read_only_mid_run_is_one_line_and_the_rerun_resumes(tmp_path, server):
    make_industry_subset(tmp_path / "data", "toy", "widget", per_level=10)  # 40 jobs
    env = cli_env(tmp_path, MMAD_TEST_RO_AFTER="6")
    out = tmp_path / "out"
    first = subprocess.run([sys.executable, "-m", "tests.readonly_disk", *score_args(server.openai_url, out,
                            "--concurrency", "8")], env=env, capture_output=True, text=True, timeout=120,
                           cwd=Path(__file__).resolve().parents[1])
    line = one_error(first, 7)
    assert f"cannot write {out / LOG}: [Errno 30] Read-only file system" in line and "rerun" in line, line
    paid = len(jobs_sent(server))
    recorded = len(JsonlLog.read(out / LOG))
    assert 6 <= recorded < 40 and paid < 40
    server.requests.clear()
    rerun = mmad(env, *score_args(server.openai_url, out))
    assert rerun.returncode == 0, rerun.stderr
    assert len(jobs_sent(server)) == 40 - paid  # every answer paid before the failure came from the cache


def test_an_image_replaced_with_its_mtime_kept_is_hashed_again(tmp_path, server):
    make_industry_subset(tmp_path / "data", "toy", "widget")
    env = cli_env(tmp_path)
    image = tmp_path / "data" / "Industry" / "toy" / "widget" / "test" / "defect_level_2" / "001.png"

    def uncompressed(seed: int) -> None:  # same pixels size, no compression: the same file size
        pixels = np.random.default_rng(seed).integers(0, 255, (32, 32, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(image, compress_level=0)
    uncompressed(1)
    assert mmad(env, *score_args(server.openai_url, tmp_path / "a")).returncode == 0
    before = os.stat(image)
    uncompressed(2)  # what `cp -p` or `rsync -t` leave: other bytes, the same size and mtime
    os.utime(image, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = os.stat(image)
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    server.requests.clear()
    assert mmad(env, *score_args(server.openai_url, tmp_path / "b")).returncode == 0
    [sent] = jobs_sent(server)  # the replaced image, and nothing else, is asked again
    [record] = [r for r in JsonlLog.read(tmp_path / "b" / LOG) if r["source"] == "live"]
    assert record["path"] == "defect_level_2/001.png"


def test_the_answering_model_is_recorded_and_a_different_one_is_warned(tmp_path, server):
    make_industry_subset(tmp_path / "data", "toy", "widget")
    env = cli_env(tmp_path)
    server.answer_model = "llama-3-8b"
    result = mmad(env, *score_args(server.openai_url, tmp_path / "a", model="gpt-4o"))
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("warning: asked for model 'gpt-4o'") == 1
    assert "answered as 'llama-3-8b'" in result.stderr and "12 answer(s) of this run named model" in result.stderr
    assert {r["model"] for r in JsonlLog.read(tmp_path / "a" / "gpt-4o_toy_widget.jsonl")} == {"llama-3-8b"}
    assert json.loads((tmp_path / "a" / "summary.json").read_text())["other_models"] == {"gpt-4o -> llama-3-8b": 12}
    server.answer_model = "gpt-4o-2024-08-06"  # an alias answered by its dated snapshot is the same model
    same = mmad(env, *score_args(server.openai_url, tmp_path / "b", "--refs", "2", model="gpt-4o"))
    assert same.returncode == 0 and "warning" not in same.stderr, same.stderr


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="finds the moment through /proc (Linux)")
def test_ctrl_c_while_mmad_is_still_starting_is_one_line(tmp_path, server):
    """SIGINT while the command line is still being imported (numpy just mapped), long before the
    run's own handlers exist: one line and exit 130, no traceback."""
    make_industry_subset(tmp_path / "data", "toy", "widget")
    proc = subprocess.Popen([sys.executable, "-m", "mmad", *score_args(server.openai_url, tmp_path / "a")],
                            env=cli_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if "_multiarray_umath" in Path(f"/proc/{proc.pid}/maps").read_text():
            break
        time.sleep(0.001)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and err.strip() == "interrupted", err
    assert not jobs_sent(server)
