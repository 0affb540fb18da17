"""`compare_runs` on a MAD-Bench-sized grid: 31 subsets (mvtec 14 x ~107, visa 9 x ~163, multidog
5 x 2,500, diabetic-retinopathy 3,500, covid19 661, skin-lesion 1,969; 21,600 images) x 5 runs
(a base and 4 others), 2,000 paired resamples. Target: <= 10 s on 2 cores, end to end (reading
the result files, bootstrap, pooled bootstrap, tests, run summaries).

    python benchmarks/bench_compare.py [--scores mllm|continuous] [--resamples 2000] [--runs 5] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mmad.comparison.compare import compare_runs  # noqa: E402
from tests.run_factory import MADBENCH_SHAPE, simulated_run  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--resamples", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--scores", choices=("mllm", "continuous"), default="mllm",
                        help="MLLM-like 0-100 in steps of 5 (many ties; default) or detector-like continuous")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="compare-bench-"))
    try:
        settings = {"provider": "openai", "model": "gpt-4o", "refs": 3, "temperature": 0}
        runs = [simulated_run(folder / f"run{i}", f"run{i}", MADBENCH_SHAPE, signal=0.6 + 0.1 * i, seed=i,
                              settings={**settings, "prompt": f"variant{i}"}, fail_every=101,
                              mllm=args.scores == "mllm")
                for i in range(args.runs)]
        images = sum(sum(shape) for shape in MADBENCH_SHAPE.values())
        load = os.getloadavg()[0]
        times, cpu = [], []
        for _ in range(args.repeat):
            start, start_cpu = time.perf_counter(), time.process_time()
            report = compare_runs(runs[0], runs[1:], n_boot=args.resamples, seed=0)
            times.append(time.perf_counter() - start)
            cpu.append(time.process_time() - start_cpu)
        overall = next(p for p in report.comparisons[-1].pooled if p.scope == ("overall",)).metrics["c_index"]
        print(f"{len(MADBENCH_SHAPE)} subsets, {images:,} images, {args.scores} scores, {args.runs} runs "
              f"({args.runs - 1} comparisons), {args.resamples:,} resamples")
        print(f"compare_runs end to end: best {min(times):.2f} s, median {sorted(times)[len(times) // 2]:.2f} s "
              f"of {args.repeat} (target <= 10 s on 2 cores); CPU time {min(cpu):.2f} s "
              f"(load average before: {load:.1f})")
        print(f"sanity: last comparison overall C-index diff {100 * overall.diff:+.2f} points "
              f"[{100 * overall.low:+.2f}, {100 * overall.high:+.2f}], Holm family {report.comparisons[-1].family}")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
