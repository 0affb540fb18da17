"""`mmad view` at the paper's scale: 14 runs x the 31 MAD-Bench subsets (86,310 items: the published
row counts capped at 400 per subset, as bench_report.py), plus one run at the full size (21,603
items), with MLLM-like records (answer text, usage, latency, cache key). Timed in headless Chromium
against the real server (`mmad view` in a subprocess):

  - first paint of the runs page (its table drawn) and until every run's summary has arrived;
  - first paint of the 21,603-item run (its item table drawn: read, metrics, columns, first page);
  - the mis-ranked sort and a text filter on that run, in the page;
  - the server's resident memory (VmRSS) after that, and its peak (VmHWM).

    python benchmarks/bench_view.py [--runs 14] [--rows 400] [--keep DIR]

Targets: <= 2 s first paint of each page on 2 cores. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mmad.data.datasets import REGISTRY  # noqa: E402
from mmad.data.templates import write_result_csv  # noqa: E402
from mmad.results.runinfo import make_run_info  # noqa: E402

WORDS = ("scratch surface texture defect visible region edge stain crack dent minor severe normal pattern "
         "uniform colour deviation area left right centre upper lower").split()


def write_run(folder: Path, name: str, rows_cap: int | None, seed: int, mllm: bool) -> int:
    """One run over all 31 subsets; returns its item count."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    settings = {"provider": "openai", "model": "gpt-4o", "prompt": f"p{seed}", "task": "score"} if mllm else \
        {"method": "patchcore", "refs": 3, "task": "score"}
    (folder / "run.json").write_text(json.dumps(make_run_info(name, "mllm" if mllm else "detector", settings)))
    total = 0
    for spec in REGISTRY.values():
        per, extra = divmod(spec.rows, len(spec.subsets))
        for index, subset in enumerate(spec.subsets):
            n = per + (index < extra) if rows_cap is None else min(rows_cap, per)
            levels = rng.integers(0, spec.levels, n)
            scores = np.clip(np.round(levels * 20 + rng.normal(0, 15, n) + 10), 0, 100) if mllm else \
                levels + rng.normal(0, 1, n)
            paths = [f"level_{lv}/img{i:05d}.png" for i, lv in enumerate(levels)]
            stem = folder / f"{name}_{spec.name}_{subset}" if spec.name != subset else folder / f"{name}_{spec.name}"
            write_result_csv(stem.with_suffix(".csv"), zip(paths, levels.astype(float), scores.astype(float)))
            with open(stem.with_suffix(".jsonl"), "w", encoding="utf-8") as handle:
                for path, level, score in zip(paths, levels, scores):
                    record = {"dataset": spec.name, "subset": subset, "path": path, "severity": float(level),
                              "score": float(score), "status": "ok", "source": "live" if mllm else "local"}
                    if mllm:
                        reason = " ".join(rng.choice(WORDS, 24))
                        record.update(reason=reason, raw=f"Anomaly Score: {score:g}\nReason: {reason}.",
                                      usage={"input_tokens": 1500, "output_tokens": 60, "cached_input_tokens": 1024},
                                      latency_s=round(float(rng.lognormal(0.5, 0.3)), 4), attempts=1,
                                      key=f"{rng.integers(1 << 62):064x}", time="2026-01-01T00:00:00+00:00")
                    handle.write(json.dumps(record, separators=(",", ":")) + "\n")
            total += n
    return total


def server(folder: Path) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-m", "mmad.cli", "view", str(folder), "--no-open", "--port", "0",
                             "--root", str(folder / "no-data")], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    line = proc.stdout.readline()
    url = re.search(r"http://127\.0\.0\.1:\d+/", line)
    if not url:
        proc.kill()
        raise SystemExit(f"mmad view did not start: {line}{proc.stderr.read()}")
    return proc, url.group(0)


def memory(pid: int) -> dict[str, float]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024
    return fields


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=14)
    parser.add_argument("--rows", type=int, default=400, help="rows per subset at most (the full run has all)")
    parser.add_argument("--keep", help="write the runs here instead of a temporary folder")
    args = parser.parse_args()
    from tests.browser import browser_page, why_no_browser
    if why_no_browser():
        raise SystemExit(f"no headless browser: {why_no_browser()}")
    with tempfile.TemporaryDirectory(prefix="view-bench-") as tmp:
        root = Path(args.keep or tmp) / "results"
        start = time.perf_counter()
        capped = sum(write_run(root / f"run{r:02d}", f"run{r:02d}", args.rows, r, mllm=r % 3 == 0)
                     for r in range(args.runs))
        full = write_run(root / "full-size", "full-size", None, 99, mllm=True)
        print(f"wrote {args.runs} runs x 31 subsets = {capped:,} items, plus one run of {full:,} items, in "
              f"{time.perf_counter() - start:.1f} s")
        proc, url = server(root)
        try:
            runs = json.loads(subprocess.run(["curl", "-s", url + "api/runs.json"], capture_output=True,
                                             text=True).stdout)["runs"]
            full_id = next(r["rid"] for r in runs if r["name"] == "full-size")
            with browser_page(1400, 900) as page:
                t0 = time.perf_counter()  # first: the big run on a server that has read nothing yet
                page.goto(url + f"#/run/{full_id}")
                page.wait_for_selector("main[data-ready='1'] table.items tbody tr", timeout=600_000)
                print(f"run of {full:,} items, cold server: first paint {time.perf_counter() - t0:.2f} s")
                for what, action in (("mis-ranked sort", lambda: page.select_option("select[name=sort]", "mis")),
                                     ("text filter (answer texts loaded first)",
                                      lambda: page.fill("#itemfilter", "severe crack")),
                                     ("text filter again", lambda: page.fill("#itemfilter", "minor dent"))):
                    shown = ("() => document.querySelector('p.count').textContent + '|' + "
                             "[...document.querySelectorAll('a.itemlink')].slice(0, 5).map(a => a.href).join()")
                    before = page.evaluate(shown)
                    t0 = time.perf_counter()
                    action()
                    page.wait_for_function(f"([old]) => {{ const now = ({shown})(); "
                                           f"return now !== old && !/loading/.test(now); }}", arg=[before])
                    pause = 0.15 if "filter" in what else 0.0  # the filter waits 150 ms for typing to pause
                    print(f"{what} over {full:,} items: {time.perf_counter() - t0 - pause:.3f} s "
                          f"({page.locator('p.count').inner_text()})")
                t0 = time.perf_counter()
                page.goto(url + "#/runs")
                page.wait_for_selector("table.runs tbody tr")
                painted = time.perf_counter() - t0
                page.wait_for_selector("main[data-ready='1']", timeout=600_000)
                filled = time.perf_counter() - t0
                print(f"runs page ({len(runs)} runs, {capped + full:,} items): first paint {painted:.2f} s; "
                      f"every run's summary (all result files read) in {filled:.2f} s")
                page.evaluate("MV.cache.clear()")
                t0 = time.perf_counter()
                page.goto(url + f"#/run/{full_id}")
                page.wait_for_selector("main[data-ready='1'] table.items tbody tr", timeout=600_000)
                print(f"run of {full:,} items, again (server holds its payload): first paint "
                      f"{time.perf_counter() - t0:.2f} s")
            used = memory(proc.pid)
            print(f"server memory: {used.get('VmRSS', 0):.0f} MiB resident, peak {used.get('VmHWM', 0):.0f} MiB "
                  f"(items of the last {6} runs opened kept in memory)")
        finally:
            proc.terminate()
            proc.wait(timeout=10)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
