"""The fault cases of `bench_engine.py`: `mmad score` as a user runs it against tests/wire_server.py
in its own process, with the faults real providers produce (tests/wire_faults.py).

clean      the same server without faults: what this machine reaches now (the control)
random429  10 % of requests answered 429 at random, a 600/min token bucket announced in headers:
           ok answers per second / the limit                           target >= 0.80
mixed      5 % 429 + 5 % 500 + 1 % hangs (30 s) at random, --timeout 10  target >= 0.85
failing    every request after the 20th fails (truncated body, JSON without choices, reset):
           requests drawn after the 20th, time to stop                 target <= 30
twins      two runs on one cache (different --out), started together and 8 s apart: answers paid
           twice                                                       target 0 beyond those in flight
trickle    every body at 1 byte/s, --timeout 10: time to give up a request; SIGTERM: time to exit
retryafter every answer 429 with retry-after: 3600, --rate-limit-timeout 20: time to stop, what the
           progress line says
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from benchmarks.bench_engine import REPO, Server, make_dataset

LIMIT = 600.0  # requests per minute, as a token bucket with 2 s of burst, announced in the headers
HEADROOM = 0.99  # the client paces at this share of an announced limit


def bucket(*extra: str) -> tuple[str, ...]:
    return ("--bucket-rpm", str(LIMIT), "--burst-seconds", "2", "--limit-header", str(int(LIMIT)), *extra)


def command(data: Path, url: str, out: Path, *extra: str) -> tuple[list[str], dict]:
    env = dict(os.environ, OPENAI_API_KEY="bench", MMAD_CACHE_DIR=str(out.parent / f"cache-{out.name}"),
               MMAD_DATA_ROOT=str(data), PYTHONUNBUFFERED="1")
    return ([sys.executable, "-m", "mmad.cli", "score", "--provider", "openai", "--model", "bench", "--base-url",
             url, "--dataset", "bench", "--out", str(out), *extra], env)


def start(data: Path, url: str, out: Path, *extra: str, cache: str | None = None) -> tuple[subprocess.Popen, float]:
    cmd, env = command(data, url, out, *extra)
    if cache is not None:
        env["MMAD_CACHE_DIR"] = cache
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=str(REPO)), time.monotonic()


def dataset(tmp: Path, name: str, jobs: int) -> Path:
    data = tmp / name
    if not data.exists():
        make_dataset(data, subsets=1, per_subset=jobs)
    return data


def throughput(tmp: Path, name: str, jobs: int, shares: tuple[str, ...], faulted: float, label: str) -> None:
    data = dataset(tmp, f"data-{jobs}", jobs)
    server = Server(*bucket("--latency", "0.3", *shares))
    try:
        process, t0 = start(data, server.url, tmp / f"out-{name}", "--quiet", "--timeout", "10")
        _, err = process.communicate()
        wall = time.monotonic() - t0
        stats = server.stats()
    finally:
        server.stop()
    arrivals = sorted(stats["arrivals"])
    ok = stats["paid"]
    span = arrivals[-1] - arrivals[0]
    low, high = len(arrivals) // 10, len(arrivals) * 9 // 10  # steady: neither the start nor the tail of retries
    steady = (high - low) / (arrivals[high] - arrivals[low]) * (1 - faulted)
    ceiling = HEADROOM * (1 - faulted)
    print(f"[{name}] {label}; {jobs} jobs, latency 0.3 s, a {LIMIT:.0f}/min bucket announced in headers "
          f"(exit {process.returncode}; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")
    print(f"  {stats['requests']} requests, {stats['rate_limited']} x 429 ({stats['bucket_limited']} from the "
          f"bucket, i.e. our pace); {ok} answers")
    print(f"  ok answers/s / limit: {ok / wall * 60 / LIMIT:.3f} over the whole run ({wall:.1f} s with start-up), "
          f"{ok / span * 60 / LIMIT:.3f} from the first request to the last, {steady * 60 / LIMIT:.3f} in steady "
          f"state (requests 10 %-90 %, sent x {1 - faulted:.2f}); ceiling {ceiling:.3f} (paced at {HEADROOM} x the limit, "
          f"{faulted:.0%} refused)")
    print(f"  the controller: {pacing(tmp / f'out-{name}')}")
    if process.returncode not in (0, 6):
        print(f"  stderr: {err.strip()[-500:]}")


def pacing(out: Path) -> str:
    """What the run's rate controller did, from its summary.json."""
    import json
    try:
        report = next(iter(json.loads((out / "summary.json").read_text())["pacing"].values()))
    except (OSError, ValueError, KeyError, StopIteration):
        return "(no summary)"
    return ", ".join(f"{key} {value}" for key, value in report.items())


def clean(tmp: Path, jobs: int) -> None:
    throughput(tmp, "clean", jobs, (), 0.0, "no faults (the control for this machine's load)")


def random429(tmp: Path, jobs: int) -> None:
    throughput(tmp, "random429", jobs, ("--fault-429", "0.10"), 0.10, "10 % of requests answered 429 at random "
                                                                        "(target >= 0.80 of the limit)")


def mixed(tmp: Path, jobs: int) -> None:
    throughput(tmp, "mixed", jobs, ("--fault-429", "0.05", "--fault-500", "0.05", "--fault-hang", "0.01",
                                    "--hang-seconds", "30"), 0.11,
               "5 % 429 + 5 % 500 + 1 % hangs (30 s) at random, --timeout 10 (target >= 0.85 of the limit)")


def failing(tmp: Path, jobs: int) -> None:
    data = dataset(tmp, f"data-{jobs}", jobs)
    server = Server(*bucket("--latency", "0.3", "--fail-after", "20"))
    try:
        process, t0 = start(data, server.url, tmp / "out-failing", "--quiet")
        _, err = process.communicate()
        ended = time.monotonic()
        stats = server.stats()
    finally:
        server.stop()
    arrivals = sorted(stats["arrivals"])
    onset = arrivals[20] if len(arrivals) > 20 else ended
    line = next((line for line in err.splitlines() if line.startswith("error:")), err.strip()[-300:])
    print(f"[failing] every request after the 20th fails (truncated body, JSON without choices, reset); {jobs} jobs")
    print(f"  requests drawn after the 20th: {stats['requests'] - 20} (target <= 30); stopped "
          f"{ended - onset:.1f} s after the first failure, exit {process.returncode}")
    print(f"  {line[:300]}")


def twins(tmp: Path, jobs: int) -> None:
    data = dataset(tmp, f"data-{jobs}", jobs)
    print(f"[twins] two `mmad score` runs, same cache, different --out, {jobs} jobs each, latency 0.3 s, "
          f"one {LIMIT:.0f}/min bucket for both")
    for apart in (0.0, 8.0):
        server = Server(*bucket("--latency", "0.3"))
        cache = str(tmp / f"cache-twins-{apart:g}")
        try:
            first, t0 = start(data, server.url, tmp / f"out-twins-a-{apart:g}", "--quiet", cache=cache)
            time.sleep(apart)
            in_flight_paid = server.stats()["paid"]
            second, t1 = start(data, server.url, tmp / f"out-twins-b-{apart:g}", "--quiet", cache=cache)
            first.communicate()
            walls = [time.monotonic() - t0]
            second.communicate()
            walls.append(time.monotonic() - t1)
            stats = server.stats()
        finally:
            server.stop()
        paid = Counter(stats["paid_ids"])
        twice = sum(n - 1 for n in paid.values() if n > 1)
        print(f"  {'started together' if not apart else f'{apart:g} s apart'}: {twice} answers paid twice "
              f"(target 0), {len(paid)} distinct of {jobs}, {stats['requests']} requests, "
              f"{stats['rate_limited']} x 429 (two runs on one limit); exits {first.returncode}/{second.returncode}, "
              f"{walls[0]:.1f} s / {walls[1]:.1f} s" + (f"; the first had {in_flight_paid} answers when the second "
                                                         f"started" if apart else ""))


def trickle(tmp: Path, jobs: int) -> None:
    data = dataset(tmp, "data-trickle", 20)
    server = Server("--trickle", "1")
    try:
        process, t0 = start(data, server.url, tmp / "out-trickle", "--quiet", "--timeout", "10", "--max-attempts", "1",
                            "--concurrency", "1")
        _, err = process.communicate()
        ended = time.monotonic()
        first, code = min(server.stats()["arrivals"]), process.returncode
        before = server.stats()["requests"]
        process, t0 = start(data, server.url, tmp / "out-trickle-term", "--quiet", "--timeout", "10")
        while server.stats()["requests"] <= before:
            time.sleep(0.05)
        time.sleep(1.0)
        signalled = time.monotonic()
        process.send_signal(signal.SIGTERM)
        process.communicate()
        term = time.monotonic() - signalled
    finally:
        server.stop()
    print("[trickle] every answer's body at 1 byte/s, --timeout 10")
    print(f"  a request (the run's first, alone, one attempt) given up and the run ended {ended - first:.1f} s after "
          f"it reached the server (target: the timeout, 10 s), exit {code}")
    print(f"  SIGTERM 1 s into the requests: exited {term:.1f} s later (exit {process.returncode}; requests in flight "
          f"get a grace period: 5 s, or 3 typical latencies)")


def retryafter(tmp: Path, jobs: int) -> None:
    data = dataset(tmp, "data-trickle", 20)
    server = Server("--retry-after", "3600")
    try:
        process, t0 = start(data, server.url, tmp / "out-retryafter", "--rate-limit-timeout", "20",
                            "--progress-every", "5")
        _, err = process.communicate()
        wall = time.monotonic() - t0
        stats = server.stats()
    finally:
        server.stop()
    waiting = next((line for line in err.splitlines() if "waiting until" in line), "(no progress line said it)")
    error = next((line for line in err.splitlines() if line.startswith("error:")), "")
    print("[retryafter] every answer 429 with retry-after: 3600; --rate-limit-timeout 20")
    print(f"  stopped after {wall:.1f} s (target: about 20 s, not an hour), exit {process.returncode}, "
          f"{stats['requests']} requests")
    print(f"  progress: {waiting.strip()[:240]}")
    print(f"  {error[:300]}")


CASES = {"clean": clean, "random429": random429, "mixed": mixed, "failing": failing, "twins": twins, "trickle": trickle,
         "retryafter": retryafter}
