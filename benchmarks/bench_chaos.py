"""Durability figures: `mmad score` as a user runs it, against tests/wire_server.py in its own
process, while it is killed, stopped, starved of disk and capped by a budget.

1. kills: kill -9 at random moments, then rerun until done: answers paid twice per kill vs
   requests in flight at the kill (quiet machine, then with ten CPU burners beside it).
2. stops: SIGTERM / SIGINT at random moments: requests that reached the server after the signal
   (target 0 beyond those in flight), time to stop, exit code, records afterwards.
3. disk: a file-size limit (RLIMIT_FSIZE) fills the disk mid-run: exit code, and what the rerun
   paid again.
4. budget: --max-cost worth k requests: requests sent, spend vs the budget.
5.-7. integrity, inputs, early signals: what a run reads, attacked (benchmarks/chaos_inputs.py).

    python benchmarks/bench_chaos.py [--only kills,stops,disk,budget,integrity,inputs,signals] [--jobs 200]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks import chaos_inputs  # noqa: E402
from benchmarks.bench_engine import Server, burners, make_dataset  # noqa: E402


def command(server: Server, out: Path, *extra: str, provider: str = "openai", model: str = "bench") -> list[str]:
    url = server.url if provider == "openai" else server.url[:-3]
    return [sys.executable, "-m", "mmad.cli", "score", "--provider", provider, "--model", model, "--base-url", url,
            "--dataset", "bench", "--out", str(out), "--quiet", *extra]


def environment(tmp: Path, data: Path, name: str) -> dict:
    return dict(os.environ, OPENAI_API_KEY="bench", ANTHROPIC_API_KEY="bench", MMAD_DATA_ROOT=str(data),
                MMAD_CACHE_DIR=str(tmp / f"cache-{name}"))


def records(out: Path) -> int:
    path = out / "bench_bench_s00.jsonl"
    if not path.exists():
        return 0
    return sum(1 for line in path.read_text().splitlines() if line.endswith("}"))


def kills(tmp: Path, data: Path, jobs: int, load: int, count: int, rng: random.Random) -> None:
    server = Server("--latency", "0.2")
    hogs = burners(load)
    out, env = tmp / f"kills-{load}", environment(tmp, data, f"kills-{load}")
    per_kill = []
    unrecorded = 0  # answers paid for but in no record, so far
    try:
        for _ in range(count):
            proc = subprocess.Popen(command(server, out, "--concurrency", "8"), env=env, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
            target = records(out) + rng.randint(10, max(11, jobs // (count + 2)))
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and records(out) < target and proc.poll() is None:
                time.sleep(0.02)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            time.sleep(0.5)  # let requests already at the server finish being answered
            stats = server.stats()
            lost = stats["paid"] - records(out) - unrecorded  # paid at this kill, never recorded
            unrecorded += lost
            per_kill.append(lost)
        final = subprocess.run(command(server, out), env=env, capture_output=True, text=True)
        paid = server.stats()["paid"]
    finally:
        for hog in hogs:
            hog.kill()
        server.stop()
    repaid = paid - jobs
    label = "quiet machine" if not load else f"{load} CPU burners beside it"
    print(f"  {label}: {count} kills survived, final run exit {final.returncode}, {records(out)} records for "
          f"{jobs} jobs; paid {paid}: {repaid} paid twice ({repaid / count:.1f} per kill; per kill "
          f"{per_kill}) with 8 requests in flight at a time")


def stops(tmp: Path, data: Path, jobs: int, count: int, rng: random.Random) -> None:
    late_total = 0
    for index in range(count):
        sig = (signal.SIGTERM, signal.SIGINT)[index % 2]
        server = Server("--latency", "0.3")
        out, env = tmp / f"stops-{index}", environment(tmp, data, f"stops-{index}")
        try:
            proc = subprocess.Popen(command(server, out, "--concurrency", "8"), env=env, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.PIPE, text=True)
            target = rng.randint(10, jobs // 2)
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and records(out) < target:
                time.sleep(0.02)
            sent_at = time.monotonic()
            proc.send_signal(sig)
            _, err = proc.communicate(timeout=60)
            took = time.monotonic() - sent_at
            stats = server.stats()
        finally:
            server.stop()
        late = [t for t in stats["arrivals"] if t > sent_at + 0.02]
        late_total += len(late)
        lines = [json.loads(line) for line in (out / "bench_bench_s00.jsonl").read_text().splitlines()]
        statuses = sorted({r["status"] for r in lines})
        print(f"  {signal.Signals(sig).name} after {target} records: exit {proc.returncode}, stopped in "
              f"{took:.2f} s, {len(late)} request(s) reached the server after the signal, records {statuses}, "
              f"{jobs - len(lines)} left to-do")
    print(f"  requests after a stop signal, all runs: {late_total} (target 0 beyond those in flight)")


def disk(tmp: Path, data: Path, jobs: int) -> None:
    server = Server()
    out, env = tmp / "disk", environment(tmp, data, "disk")
    limit = 1100 * 1024

    def small_disk() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    try:
        first = subprocess.run(command(server, out, "--concurrency", "4"), env=env, capture_output=True, text=True,
                               preexec_fn=small_disk)
        paid_first = server.stats()["paid"]
        stored = records(out)
        rerun = subprocess.run(command(server, out), env=env, capture_output=True, text=True)
        paid = server.stats()["paid"]
    finally:
        server.stop()
    error = [line for line in first.stderr.splitlines() if line.startswith("error:")]
    print(f"  file-size limit {limit // 1024} KiB: exit {first.returncode} after {paid_first} paid answers "
          f"({stored} recorded); {error[0][:150] if error else 'no error line'}...")
    print(f"  rerun without the limit: exit {rerun.returncode}, paid {paid - paid_first} more for "
          f"{jobs - stored} jobs left: {paid - jobs} paid twice")


def budget(tmp: Path, data: Path) -> None:
    server = Server()
    try:
        model = "claude-3-5-sonnet-latest"
        full = subprocess.run(command(server, tmp / "budget-full", "--json", provider="anthropic", model=model),
                              env=environment(tmp, data, "budget-full"), capture_output=True, text=True)
        summary = json.loads(full.stdout)
        per_request = summary["spend_usd"] / summary["jobs"]["total"]
        for k in (10, 25, 50):
            cap = k * per_request
            before = server.stats()["paid"]
            run = subprocess.run(command(server, tmp / f"budget-{k}", "--json", "--max-cost", f"{cap:.6f}",
                                         provider="anthropic", model=model),
                                 env=environment(tmp, data, f"budget-{k}"), capture_output=True, text=True)
            spent = json.loads(run.stdout)["spend_usd"] if run.stdout.strip() else float("nan")
            sent = server.stats()["paid"] - before
            print(f"  budget worth {k} requests (${cap:.4f}): {sent} sent, spent ${spent:.4f} "
                  f"({spent / cap:.3f} of the budget), exit {run.returncode}")
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", default="kills,stops,disk,budget,integrity,inputs,signals")
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    chosen = set(args.only.split(","))
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = tmp / "data"
        make_dataset(data, subsets=1, per_subset=args.jobs, size=96)
        if "kills" in chosen:
            print(f"[kills] {args.jobs} jobs, latency 0.2 s, kill -9 at random moments, then a final run")
            kills(tmp, data, args.jobs, 0, 5, rng)
            kills(tmp, data, args.jobs, 10, 5, rng)
        if "stops" in chosen:
            print(f"[stops] {args.jobs} jobs, latency 0.3 s, concurrency 8")
            stops(tmp, data, args.jobs, 4, rng)
        if "disk" in chosen:
            print(f"[disk] {args.jobs} jobs")
            disk(tmp, data, args.jobs)
        if "budget" in chosen:
            print(f"[budget] {args.jobs} jobs, claude-3-5-sonnet prices, the spend of a full run per request as k")
            budget(tmp, data)
        for name, title, case in (
                ("integrity", f"[integrity] {args.jobs} jobs: damaged answers, schema, images, a read-only disk",
                 lambda server: chaos_inputs.integrity(server, tmp, data, environment, args.jobs)),
                ("inputs", "[inputs] bad invocations, special files made in a temp dir",
                 lambda server: chaos_inputs.inputs(server, tmp, data, environment)),
                ("signals", "[signals] Ctrl-C at a random moment of the first 0.8 s of `mmad score`",
                 lambda server: chaos_inputs.early_signals(server, tmp, data, environment, 40, rng))):
            if name in chosen:
                print(title)
                server = Server()
                try:
                    case(server)
                finally:
                    server.stop()


if __name__ == "__main__":
    main()
