"""Scoring-engine figures against the local wire-format server (tests/wire_server.py).

1. throughput: latency L, limit R requests/min (sent in the rate-limit headers and enforced);
   achieved req/s / the ceiling R/60, with the engine choosing its own concurrency, side by
   side with a one-at-a-time loop (what the reference scripts do).           target >= 0.95
2. query-image preparation (the engine's worker threads): images/s on 1 vs all cores; PNG level 1 vs 6.
   target >= 1.8x
3. per-request overhead apart from image preparation (engine + SDK + HTTP to a zero-latency
   server, images pre-encoded).                                               target <= 5 ms
4. a fully cached rerun of 21,603 jobs through `mmad score`, end to end.      target <= 20 s

    python benchmarks/bench_engine.py [--only throughput,images,overhead,cached]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import Executor, Future
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mmad import datasets  # noqa: E402
from mmad.cache import ResponseCache  # noqa: E402
from mmad.config import PACKAGED_PROMPTS  # noqa: E402
from mmad.engine import Engine, EngineSettings, image_executor  # noqa: E402
from mmad.images import encode_file  # noqa: E402
from mmad.jobs import build_plan  # noqa: E402
from mmad.providers.openai import OpenAIProvider  # noqa: E402
from mmad.results import write_result_csv  # noqa: E402
from tests.wire_server import WireServer  # noqa: E402


def make_dataset(root: Path, subsets: int, per_subset: int, size: int = 64, train: int = 3) -> None:
    """A dataset `bench` in the Industry layout with unique small images."""
    rng = np.random.default_rng(0)
    for s in range(subsets):
        base = root / "Industry" / "bench" / f"s{s:02d}"
        for i in range(train):
            (base / "train" / "good").mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(base / "train" / "good" / f"{i}.png")
        rows = []
        for i in range(per_subset):
            level = i % 4
            rel = f"level_{level}/{i:05d}.png"
            (base / "test" / f"level_{level}").mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(base / "test" / rel,
                                                                                         compress_level=1)
            rows.append((rel, float(level), None))
        write_result_csv(root / "template" / f"bench_s{s:02d}_template.csv", rows)


def plans_for(root: Path, provider, out: Path):
    return build_plan(datasets.resolve(root, "bench"), identity=provider.identity(), model="bench", refs=3,
                      prompt_choice=None, prompts_dir=PACKAGED_PROMPTS, out_dir=out, run_name="bench")


class PreEncoded(Executor):
    """An executor that returns images encoded beforehand (to leave image preparation out)."""

    def __init__(self, encoded: dict) -> None:
        self.encoded = encoded

    def submit(self, fn, *args, **kwargs):
        future: Future = Future()
        future.set_result(self.encoded[str(fn.args[0])] if hasattr(fn, "args") else self.encoded[str(args[0])])
        return future


def throughput(tmp: Path, latency: float, rpm: float, jobs: int) -> None:
    make_dataset(tmp / "tp", subsets=1, per_subset=jobs)
    server = WireServer(latency=latency, limit_headers={"requests": int(rpm)}, enforce_rpm=rpm).start()
    try:
        provider = OpenAIProvider(api_key="bench", base_url=server.openai_url)
        plans = plans_for(tmp / "tp", provider, tmp / "tp-out")
        cache = ResponseCache(tmp / "tp-cache")
        times = []

        def on_event(event):
            if type(event).__name__ == "JobFinished":
                times.append(time.monotonic())

        async def go():
            engine = Engine(provider, cache, EngineSettings(), on_event=on_event)
            summary = await engine.run(plans)
            await provider.aclose()
            return engine, summary
        start = time.monotonic()
        engine, summary = asyncio.run(go())
        elapsed = time.monotonic() - start
        cache.close()
        done = summary.statuses.get("ok", 0)
        skip = len(times) // 10  # steady state: the start-up burst, before the limit is learned, is left out
        rate = (len(times) - 1 - skip) / (times[-1] - times[skip])
        ceiling = rpm / 60
        rate_limited = summary.failures.get("rate_limit", 0)
        # one at a time, as the reference scripts do (a short sample)
        sample = 10
        import openai
        client = openai.OpenAI(api_key="bench", base_url=server.openai_url, max_retries=0)
        body = provider.body(plans[0].jobs[0].request, {r.sha256: encode_file(p) for r, p in zip(
            plans[0].jobs[0].request.image_refs, list(plans[0].references) + [plans[0].jobs[0].query])})
        t0 = time.monotonic()
        for _ in range(sample):
            client.chat.completions.create(**body)
        sequential = sample / (time.monotonic() - t0)
    finally:
        server.stop()
    print(f"[throughput] latency {latency}s, limit {rpm:.0f}/min (ceiling {ceiling:.1f} req/s), {done} jobs")
    print(f"  engine (auto concurrency, limit learned from headers): {rate:.2f} req/s = "
          f"{rate / ceiling:.3f} of the ceiling (target >= 0.95) in steady state (after the first 10% of jobs); "
          f"{done / elapsed:.2f} req/s including start-up (capability probe, ramp-up); "
          f"429s received: {rate_limited}; final concurrency {engine._gate.limit}")
    print(f"  one-at-a-time loop: {sequential:.2f} req/s = {sequential / ceiling:.3f} of the ceiling; "
          f"engine is {rate / sequential:.1f}x faster")


def images(tmp: Path, count: int) -> None:
    from skimage import data
    folder = tmp / "photos"
    folder.mkdir(parents=True, exist_ok=True)
    photo = Image.fromarray(data.astronaut()).resize((1024, 1024), Image.Resampling.BICUBIC)
    for i in range(count):
        photo.rotate(i).save(folder / f"{i:03d}.jpg", quality=92)
    paths = sorted(str(p) for p in folder.glob("*.jpg"))
    cores = os.cpu_count() or 1
    results = {}
    for level in (1, 6):
        for workers in (1, cores):
            with image_executor(workers) as pool:
                list(pool.map(encode_file, paths[:workers]))  # warm the workers
                best = 0.0
                for _ in range(3):  # best of three: a shared 2-core machine is noisy
                    t0 = time.perf_counter()
                    list(pool.map(encode_file, paths, [level] * len(paths)))
                    best = max(best, len(paths) / (time.perf_counter() - t0))
                results[(level, workers)] = best
    print(f"[images] {count} JPEG photos 1024x1024 -> 512x512 PNG, {cores} cores")
    for level in (1, 6):
        one, all_ = results[(level, 1)], results[(level, cores)]
        print(f"  compress_level {level}: 1 worker thread {one:.1f} img/s ({1000 / one:.0f} ms each), "
              f"{cores} worker threads {all_:.1f} img/s: scaling {all_ / one:.2f}x (target >= 1.8x on 2 cores)")
    print(f"  level 1 vs 6 on one thread: {results[(1, 1)] / results[(6, 1)]:.2f}x faster")


class InstantProvider(OpenAIProvider):
    """Answers at once, in process: what is left is the engine's own work per job."""

    async def complete(self, request, images):
        from mmad.providers.base import Completion
        return Completion("Anomaly Score: 5\nReason: instant", {"input_tokens": 10, "output_tokens": 5})


def overhead(tmp: Path, jobs: int) -> None:
    make_dataset(tmp / "oh", subsets=1, per_subset=jobs)
    # the server in its own process, so its work does not share our interpreter
    server = subprocess.Popen([sys.executable, "-m", "tests.wire_server"], stdout=subprocess.PIPE, text=True,
                              cwd=str(Path(__file__).resolve().parents[1]))
    port = int(server.stdout.readline())
    results = {}
    try:
        for label, provider in (("engine only (instant in-process provider)", InstantProvider(api_key="bench")),
                                ("engine + openai SDK + HTTP to a zero-latency local server",
                                 OpenAIProvider(api_key="bench", base_url=f"http://127.0.0.1:{port}/v1"))):
            plans = plans_for(tmp / "oh", provider, tmp / f"oh-out-{len(results)}")
            encoded = {str(p): encode_file(p) for p in plans[0].references}
            encoded.update({str(j.query): encode_file(j.query) for j in plans[0].jobs})
            cache = ResponseCache(tmp / f"oh-cache-{len(results)}")

            async def go():
                engine = Engine(provider, cache, EngineSettings(concurrency=1), executor=PreEncoded(encoded))
                try:
                    return await engine.run(plans)
                finally:
                    await provider.aclose()

            t0 = time.perf_counter()
            summary = asyncio.run(go())
            results[label] = (time.perf_counter() - t0) / summary.statuses["ok"] * 1000
            cache.close()
    finally:
        server.kill()
    print(f"[overhead] {jobs} jobs one at a time, images pre-encoded (image preparation left out)")
    for label, ms in results.items():
        print(f"  {label}: {ms:.2f} ms per request (target <= 5 ms)")


def cached_rerun(tmp: Path, jobs: int) -> None:
    subsets = 31
    per = jobs // subsets
    extra = jobs - per * subsets
    root = tmp / "cr"
    t0 = time.perf_counter()
    make_dataset(root, subsets=subsets, per_subset=per, size=32)
    if extra:
        make_dataset(tmp / "cr-extra", subsets=1, per_subset=per + extra, size=32)
        import shutil
        shutil.rmtree(root / "Industry" / "bench" / "s00")
        shutil.copytree(tmp / "cr-extra" / "Industry" / "bench" / "s00", root / "Industry" / "bench" / "s00")
        shutil.copy(tmp / "cr-extra" / "template" / "bench_s00_template.csv", root / "template")
    provider = OpenAIProvider(api_key="bench", base_url="http://127.0.0.1:9/v1")
    plans = plans_for(root, provider, tmp / "unused")
    total = sum(len(p.jobs) for p in plans)
    cache = ResponseCache(tmp / "cr-cache")
    for plan in plans:
        for job in plan.jobs:
            cache.put(job.key, {"text": f"Anomaly Score: {int(job.severity) * 20}\nReason: cached", "usage": {},
                                "latency_s": 0.5})
    cache.close()
    setup = time.perf_counter() - t0
    env = dict(os.environ, OPENAI_API_KEY="bench", MMAD_CACHE_DIR=str(tmp / "cr-cache"), MMAD_DATA_ROOT=str(root))
    command = [sys.executable, "-m", "mmad.cli", "score", "--provider", "openai", "--model", "bench",
               "--base-url", "http://127.0.0.1:9/v1", "--dataset", "bench", "--run-name", "bench",
               "--out", str(tmp / "cr-out"), "--quiet"]
    t0 = time.perf_counter()
    run = subprocess.run(command, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - t0
    if run.returncode != 0:
        raise SystemExit(run.stderr)
    print(f"[cached rerun] {total:,} jobs in {subsets} subsets (setup {setup:.0f} s, not counted)")
    print(f"  `mmad score` end to end, every answer from the cache: {elapsed:.1f} s "
          f"({elapsed / total * 1000:.2f} ms/job); target <= 20 s")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", default="throughput,images,overhead,cached")
    parser.add_argument("--latency", type=float, default=0.5)
    parser.add_argument("--rpm", type=float, default=1200)
    parser.add_argument("--jobs", type=int, default=400)
    parser.add_argument("--cached-jobs", type=int, default=21603)
    args = parser.parse_args()
    chosen = set(args.only.split(","))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if "throughput" in chosen:
            throughput(tmp, args.latency, args.rpm, args.jobs)
        if "images" in chosen:
            images(tmp, 80)
        if "overhead" in chosen:
            overhead(tmp, 300)
        if "cached" in chosen:
            cached_rerun(tmp, args.cached_jobs)


if __name__ == "__main__":
    main()
