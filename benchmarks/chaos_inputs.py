"""The cases of bench_chaos.py that attack what a run reads rather than how it runs (issue 20):

5. integrity: digits changed inside cached answers, a non-UTF-8 byte in the cache's schema, images
   replaced by other bytes of the same size with their mtime kept, a disk turned read-only
   mid-run: wrong scores served (target 0), answers paid again, exit codes.
6. inputs: a sweep of bad invocations (FIFOs, links, loops, malformed run.json, out-of-range
   values, bad URLs and keys): exit codes, tracebacks (target 0), exit 70 (target 0), lines on
   stderr, and special files replaced (target 0).
7. early signals: Ctrl-C at random moments of the first second: one line and exit 130, or the
   interpreter's own start-up (before any of mmad runs), never a traceback from mmad.
"""

from __future__ import annotations

import csv
import os
import random
import signal
import sqlite3
import stat
import subprocess
import sys
import time
from collections import Counter
from contextlib import closing
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]


def _mmad(env: dict, *args, module: str = "mmad", **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], env=env, capture_output=True, text=True,
                          cwd=str(REPO), **kw)


def _score(url: str, out: Path, *extra: str) -> list[str]:
    return ["score", "--provider", "openai", "--model", "bench", "--base-url", url, "--dataset", "bench",
            "--out", str(out), "--quiet", *extra]


def _scores(out: Path) -> dict[str, str]:
    with open(out / "bench_bench_s00.csv", newline="") as handle:
        return {row["Path"]: row["Anomaly Score"] for row in csv.DictReader(handle)}


def _error(result: subprocess.CompletedProcess) -> str:
    lines = [line for line in result.stderr.splitlines() if "error:" in line]
    return lines[0][:140] if lines else "no error line"


def integrity(server, tmp: Path, data: Path, environment, jobs: int, damaged: int = 10) -> None:
    env = environment(tmp, data, "integrity")
    paid = lambda: server.stats()["paid"]  # noqa: E731
    first = _mmad(env, *_score(server.url, tmp / "i-a"))
    truth = _scores(tmp / "i-a")
    database = Path(env["MMAD_CACHE_DIR"]) / "responses" / "cache.db"
    with closing(sqlite3.connect(database)) as db, db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        rows = db.execute("SELECT key, value FROM Cache LIMIT ?", (damaged,)).fetchall()
        for key, value in rows:  # one digit of the score changed: the row still reads as an answer
            at = value.index("Anomaly Score: ") + len("Anomaly Score: ")
            db.execute("UPDATE Cache SET value = ? WHERE key = ?",
                       (value[:at] + str((int(value[at]) + 1) % 10) + value[at + 1:], key))
    check = _mmad(env, "cache", "check")
    before = paid()
    rerun = _mmad(env, *_score(server.url, tmp / "i-b"))
    wrong = sum(score != truth[path] for path, score in _scores(tmp / "i-b").items())
    print(f"  {damaged} answers with one digit changed: cache check exit {check.returncode} ({_error(check)}...); "
          f"a new run exit {rerun.returncode} (first run {first.returncode}), paid {paid() - before} again, "
          f"{wrong} wrong score(s) served")
    with closing(sqlite3.connect(database)) as db, db:
        db.execute("PRAGMA writable_schema=ON")
        db.execute("UPDATE sqlite_master SET sql = CAST(? AS TEXT) WHERE name = 'Cache_expire_time'",
                   (b"CREATE INDEX Cache_expire_time ON Cache (expire_time\xff)",))
    codes = [_mmad(env, *_score(server.url, tmp / "i-c")).returncode, _mmad(env, "cache", "check").returncode]
    rebuilt = _mmad(env, "cache", "rebuild", "--from", tmp / "i-a")
    before = paid()
    after = _mmad(env, *_score(server.url, tmp / "i-c"))
    salvaged = next((line for line in rebuilt.stdout.splitlines() if line.startswith("salvaged")), "?")
    print(f"  a non-UTF-8 byte in the schema: score exit {codes[0]}, cache check exit {codes[1]}, rebuild exit "
          f"{rebuilt.returncode} ({salvaged[:60]}...); then a run exit {after.returncode}, paid {paid() - before}")
    replaced = sorted((data / "Industry" / "bench" / "s00" / "test").rglob("*.png"))[:5]
    for index, path in enumerate(replaced):
        _noise(path, index)
    _mmad(env, *_score(server.url, tmp / "i-d"))  # these bytes are known now: hashed, answered, cached
    for index, path in enumerate(replaced):  # what `cp -p`, `rsync -t` or tar leave: same size, same mtime
        kept = os.stat(path)
        _noise(path, 1000 + index)
        os.utime(path, ns=(kept.st_atime_ns, kept.st_mtime_ns))
    before = paid()
    again = _mmad(env, *_score(server.url, tmp / "i-e"))
    print(f"  {len(replaced)} images replaced by other bytes of the same size, mtime kept: run exit "
          f"{again.returncode}, {paid() - before} asked again (target {len(replaced)})")
    out, ro_env = tmp / "i-ro", dict(env, MMAD_CACHE_DIR=str(tmp / "cache-ro"), MMAD_TEST_RO_AFTER=str(jobs // 4))
    before = paid()
    failed = _mmad(ro_env, *_score(server.url, out, "--concurrency", "8"), module="tests.readonly_disk")
    first_paid = paid() - before
    resumed = _mmad(ro_env, *_score(server.url, out))
    print(f"  disk read-only after {jobs // 4} records: exit {failed.returncode} after {first_paid} paid answers "
          f"({_error(failed)}...); tracebacks "
          f"{failed.stderr.count('Traceback')}; rerun exit {resumed.returncode}, "
          f"{paid() - before - jobs} paid twice")


def _noise(path: Path, seed: int) -> None:
    """Random pixels saved uncompressed: every version of the image has the very same size."""
    pixels = np.random.default_rng(seed).integers(0, 255, (96, 96, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, compress_level=0)


def _special(tmp: Path) -> dict[str, Path]:
    made = {}
    made["fifo"] = tmp / "x-fifo"
    os.mkfifo(made["fifo"])
    made["dangling"] = tmp / "x-dangling"
    made["dangling"].symlink_to(tmp / "nowhere")
    (tmp / "x-file").write_text("keep")
    made["link"] = tmp / "x-link"
    made["link"].symlink_to(tmp / "x-file")
    made["loop"] = tmp / "x-loop"
    made["loop"].symlink_to(tmp / "x-loop2")
    (tmp / "x-loop2").symlink_to(made["loop"])
    if os.geteuid() == 0:
        made["device"] = tmp / "x-device"
        os.mknod(made["device"], 0o600 | stat.S_IFCHR, os.makedev(1, 3))
    return made


def _bounded(env: dict, case: list) -> subprocess.CompletedProcess:
    """One invocation, given 60 s (an unbounded --bootstrap used to run for many minutes)."""
    try:
        return _mmad(env, *case, timeout=60)
    except subprocess.TimeoutExpired as exc:
        return subprocess.CompletedProcess(exc.cmd, None, "", exc.stderr.decode() if exc.stderr else "")


def inputs(server, tmp: Path, data: Path, environment) -> None:
    env = environment(tmp, data, "inputs")
    run = tmp / "in-run"
    ok = _mmad(env, *_score(server.url, run))
    special = _special(tmp)
    modes = {name: os.lstat(path).st_mode for name, path in special.items()}
    (tmp / "masks").mkdir()
    (tmp / "neg.toml").write_text('[models."bench"]\ninput = -1.0\noutput = 1.0\n')
    broken = tmp / "in-broken"
    broken.mkdir()
    (broken / "run.json").write_text('{"mmad_run": 1, "settings": [1]}')
    cases = [["report", run, "--json", "-o", path] for path in special.values()]
    cases += [["score", "--provider", "openai", "--dataset", "bench", "--root", path] for path in special.values()]
    cases += [["eval", path] for path in special.values()]
    cases += [_score(server.url, broken), ["eval", broken], ["report", broken, "--json"], ["compare", broken, run],
              *[["data", "synth", "--root", tmp / "synth", *flag] for flag in (["--size", "99999999"], ["--seed", "-1"],
                                                                               ["--size", "1"])],
              _score("http://127.0.0.1:99999/v1", tmp / "o1"), _score("not-a-url", tmp / "o2"),
              ["eval", run, "--bootstrap", "1000000000"], _score(server.url, tmp / "o3", "--max-tokens", "99999999999"),
              ["estimate", "--provider", "openai", "--model", "bench", "--dataset", "bench", "--prices", tmp / "neg.toml"],
              ["report", run, "--json", "--masks", tmp / "masks"], ["data", "list", "--root", tmp / "x-file"],
              _score(server.url, tmp / "o4", "--run-name", "ñn"), ["cache", "check", "--cache-dir", tmp / "x-file"],
              _score(server.url, tmp / ("x" * 300)), _score(server.url, tmp / "o5", "--model", "m" * 10_000)]
    results = [_bounded(env, case) for case in cases]
    results.append(_bounded(dict(env, OPENAI_API_KEY=" "), _score(server.url, tmp / "o6")))
    results.append(_bounded(dict(env, MMAD_PRICES=str(tmp / "x-file" / "p.toml")), ["estimate", "--provider", "openai",
                            "--model", "bench", "--dataset", "bench"]))
    codes: Counter = Counter("still running after 60 s" if r.returncode is None else r.returncode for r in results)
    lines = max(len(r.stderr.splitlines()) for r in results)
    replaced = sum(os.lstat(path).st_mode != modes[name] for name, path in special.items())
    print(f"  {len(results)} bad invocations (a good run first: exit {ok.returncode}): exit codes "
          f"{dict(codes.most_common())}; tracebacks {sum('Traceback' in r.stderr for r in results)}, internal "
          f"errors {sum('internal error' in r.stderr for r in results)}; at most {lines} line(s) on stderr; "
          f"{replaced} of {len(special)} special files replaced; {(tmp / 'x-file').read_text()!r} left in the file")


def early_signals(server, tmp: Path, data: Path, environment, count: int, rng: random.Random) -> None:
    env = environment(tmp, data, "signals")
    kinds: Counter = Counter()
    for index in range(count):
        proc = subprocess.Popen([sys.executable, "-m", "mmad", *_score(server.url, tmp / f"sig-{index}")], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=str(REPO))
        time.sleep(rng.uniform(0.0, 0.8))
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        frames = [line for line in err.splitlines() if line.strip().startswith('File "') and "/mmad/" in line]
        if "Traceback" in err:  # (Python exits by the signal after printing it: a negative code)
            kinds["traceback from mmad" if frames else "traceback in the interpreter's start-up, before mmad"] += 1
        elif proc.returncode < 0:
            kinds["killed before Python's own handler existed (no output)"] += 1
        else:
            kinds[f"exit {proc.returncode}, {len(err.splitlines())} line(s)"] += 1
    print(f"  {count} Ctrl-C in the first 0.8 s: {dict(kinds.most_common())}")

