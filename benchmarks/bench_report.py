"""`mmad report` at the paper's scale: 14 runs x the 31 MAD-Bench subsets (simulated scores with
the published row counts, capped by --rows per subset), timed stage by stage.

    python benchmarks/bench_report.py [--runs 14] [--rows 400] [--keep DIR]

Prints seconds for reading + metrics, each analysis, the figures + HTML, and the page's size.
No masks (the real ones are not shipped), so RQ3 is the one-sentence "skipped" section.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mmad.data.datasets import REGISTRY  # noqa: E402
from tests.run_fixtures import write_run  # noqa: E402


def make_runs(root: Path, runs: int, rows: int) -> list[Path]:
    rng = np.random.default_rng(0)
    folders = []
    for r in range(runs):
        kind = "mllm" if r % 3 == 0 else "detector"
        subsets = {}
        for spec in REGISTRY.values():
            n = min(rows, spec.rows // len(spec.subsets))
            for name in spec.subsets:
                levels = rng.integers(0, spec.levels, n)
                noise = rng.normal(0, 1 + r / 5, n)
                scores = np.round(levels * 20 + 10 * noise, 0 if kind == "mllm" else 3)
                subsets[(spec.name, name)] = (levels.tolist(), scores.tolist())
        folders.append(write_run(root / f"run{r:02d}", f"run{r:02d}", subsets, kind=kind, settings={"model": f"m{r}"}))
    return folders


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=14)
    parser.add_argument("--rows", type=int, default=400, help="rows per subset at most")
    parser.add_argument("--keep", help="write the runs and the page here instead of a temporary folder")
    args = parser.parse_args()
    from mmad.report.data import build_report
    from mmad.report.html import render_html

    with tempfile.TemporaryDirectory(prefix="report-bench-") as tmp:
        root = Path(args.keep or tmp)
        folders = make_runs(root, args.runs, args.rows)
        start = time.perf_counter()
        data = build_report(folders, data_root=root / "no-data")
        built = time.perf_counter()
        page = render_html(data)
        rendered = time.perf_counter()
        (root / "report.html").write_text(page)
        rows = sum(len(t.paths) for run in data.runs for t in run.tables)
        print(f"{len(data.runs)} runs x {len({(r.dataset, r.subset) for r in data.records})} subsets, "
              f"{rows:,} scored rows")
        print(f"  read + every analysis (RQ1-RQ6, spend): {built - start:6.2f} s")
        print(f"  figures + HTML:                         {rendered - built:6.2f} s "
              f"({page.count('<img ')} figures, {len(page.encode()) / 2**20:.1f} MiB page)")


if __name__ == "__main__":
    main()
