"""Demo runs for the report: the synth dataset (with masks) and result files written the way mmad
writes them, for an MLLM-like run and a prompt variant, two detector-like runs (one without
run.json, recognised by its `source: local` records), and two corrupted variants.

The scores are simulated, not produced by models: MLLM-like scores follow the risk level in steps
of 5 (many ties); detector-like scores follow the defect's area (the bias RQ3 looks for).

    python -m tests.report_demo OUT_DIR [--screenshot docs/report-screenshot.png]

writes OUT_DIR/data, OUT_DIR/results, OUT_DIR/report.html (and a screenshot when asked).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from mmad.analysis.area import mask_area
from mmad.atomic import atomic_write_text
from mmad.data.datasets import load_subset, resolve
from mmad.data.synth import synthesize
from mmad.data.templates import write_result_csv
from mmad.results.runinfo import make_run_info

MLLM = {"provider": "openai", "model": "gpt-4o", "prompt": "industrial", "refs": 3}
DETECTOR = {"provider": "patchcore", "method": "patchcore", "refs": 3, "image": "224:bilinear"}
RUNS = {  # name -> (kind or None = no run.json, settings, score model, seed)
    "gpt-4o-demo": ("mllm", MLLM, "mllm", 1),
    "gpt-4o-paper-demo": ("mllm", {**MLLM, "prompt": "industrial-paper"}, "mllm", 2),
    "patchcore-3shot": ("detector", DETECTOR, "area", 3),
    "padim-3shot": (None, {}, "area", 4),
    "patchcore-3shot-brightness-3": ("detector", {**DETECTOR, "corrupt": "brightness:3"}, "area-brightness", 5),
    "patchcore-3shot-noise-3": ("detector", {**DETECTOR, "corrupt": "gaussian_noise:3"}, "area-noise", 6),
}


def _scores(model: str, levels: np.ndarray, areas: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    if model == "mllm":  # follows severity; now and then a false alarm on a normal image
        raw = 6 + 28 * levels + rng.normal(0, 12, levels.size)
        raw[(levels == 0) & (rng.random(levels.size) < 0.15)] += 35
        return np.clip(np.round(raw / 5) * 5, 0, 100)
    spread = {"area": 0.35, "area-brightness": 0.45, "area-noise": 0.7}[model]
    return 1.0 + np.sqrt(areas) / 25 + rng.normal(0, spread, levels.size)


def write_demo(out: Path) -> list[Path]:
    """Data under out/data, runs under out/results/<run>; returns the run folders."""
    root = out / "data"
    synthesize(root, train=3, per_level=8, size=96)
    folders = []
    for name, (kind, settings, model, seed) in RUNS.items():
        rng = np.random.default_rng(seed)
        folder = out / "results" / name
        folder.mkdir(parents=True, exist_ok=True)
        if kind:
            atomic_write_text(folder / "run.json", json.dumps(make_run_info(name, kind, settings), indent=2))
        for subset in resolve(root, "synth"):
            template = load_subset(subset, check_images=False)
            base = subset.test_root.parent / "ground_truth"
            areas = np.array([mask_area(base / Path(rel).parent / f"{Path(rel).stem}_mask.png") if lv else 0
                              for rel, lv in zip(template.paths, template.levels)], dtype=float)
            scores = _scores(model, template.levels, areas, rng)
            records = []
            for i, (rel, sev, score) in enumerate(zip(template.paths, template.severity, scores)):
                records.append(_record(subset, rel, float(sev), float(score), model, i))
            stem = folder / f"{name}_synth_{subset.subset}"
            write_result_csv(stem.with_suffix(".csv"),
                             [(r["path"], r["severity"], r["score"]) for r in records])
            atomic_write_text(stem.with_suffix(".jsonl"), "".join(json.dumps(r) + "\n" for r in records))
        folders.append(folder)
    return folders


def _record(subset, rel: str, severity: float, score: float, model: str, i: int) -> dict:
    record = {"dataset": subset.dataset, "subset": subset.subset, "path": rel, "severity": severity,
              "score": score, "status": "ok"}
    if model != "mllm":
        return {**record, "source": "local"}
    usage = {"input_tokens": 3300, "cached_input_tokens": 2800 if i else 0, "output_tokens": 85}
    record.update(source="cache" if i % 10 == 9 else "live", usage=usage, raw=f"Anomaly Score: {score:g}")
    if i == 5 and subset.subset == "grass":
        record.update(status="parse_failed", score=None, raw="I cannot tell.")
    if i == 17 and subset.subset == "brick":
        record.update(status="error", score=None, usage={}, error="timeout")
    return record


def main(argv: list[str]) -> int:
    from mmad import cli

    out = Path(argv[0])
    folders = write_demo(out)
    code = cli.main(["report", *map(str, folders), "--root", str(out / "data"), "-o", str(out / "report.html"),
                     "--title", "mmad report: demo runs on the synth dataset"])
    if code == 0 and "--screenshot" in argv:
        from tests.browser import screenshot
        screenshot(out / "report.html", Path(argv[argv.index("--screenshot") + 1]))
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
