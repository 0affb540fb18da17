"""Generated runs for the compare/noise tests, the benchmark and the docs' worked example.

A run folder gets what `mmad score` writes: per subset `<run>_<dataset>_<subset>.csv` and a JSONL
with one record per job (status, usage, latency, source), and a run.json. Scores follow the
severity level with a per-image difficulty shared by every run (the same image is hard for every
prompt) and independent per-run noise.

    python -m tests.run_factory OUT      # the docs' demo: two prompts, two repeats, a detector
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from mmad.data.templates import write_result_csv
from mmad.results.files import template_stem
from mmad.results.runinfo import make_run_info

# (dataset, subset) -> images per level, shaped like MAD-Bench (mvtec 14 x ~107, visa 9 x ~163,
# multidog 5 x 2,500, diabetic-retinopathy 3,500, covid19 661, skin-lesion 1,969)
MADBENCH_SHAPE: dict[tuple[str, str], tuple[int, ...]] = {
    **{("mvtec", f"object{i:02d}"): (32, 27, 27, 21) for i in range(14)},
    **{("visa", f"part{i}"): (70, 30, 33, 30) for i in range(9)},
    **{("multidog", f"breed{i}"): (500,) * 5 for i in range(5)},
    ("diabetic-retinopathy", "diabetic-retinopathy"): (700,) * 5,
    ("covid19", "covid19"): (80, 96, 60, 62, 90, 135, 138),
    ("skin-lesion", "skin-lesion"): (500, 642, 327, 500),
}


def subset_rows(shape: Sequence[int], prefix: str = "img") -> tuple[list[str], np.ndarray]:
    """Paths and severities of a subset with `shape[k]` images at level k."""
    levels = np.repeat(np.arange(len(shape)), shape)
    return [f"level_{lv}/{prefix}{i:05d}.png" for i, lv in enumerate(levels)], levels.astype(float)


def difficulty(key: tuple[str, str], n: int, seed: int = 0) -> np.ndarray:
    """The per-image difficulty every run shares (seeded by the subset's name)."""
    return np.random.default_rng([seed, sum(map(ord, "/".join(key)))]).normal(0, 1, n)


def simulate_scores(levels: np.ndarray, shared: np.ndarray, *, signal: float, noise: float,
                    rng: np.random.Generator, mllm: bool = True) -> np.ndarray:
    """signal x level + shared difficulty + run noise; MLLM-like = 0-100 in steps of 5 (many ties)."""
    raw = signal * levels + shared + rng.normal(0, noise, levels.size)
    return np.clip(np.round((raw * 12 + 20) / 5) * 5, 0, 100) if mllm else raw


def write_run(folder: Path, label: str, subsets: Mapping[tuple[str, str], tuple[list[str], np.ndarray, np.ndarray]],
              *, settings: dict | None = None, kind: str = "mllm", statuses: Mapping[tuple[str, str], dict] | None = None,
              seed: int = 0) -> Path:
    """Write a run: CSV + JSONL per subset (+ run.json when `settings` is given).

    `subsets[key] = (paths, severity, scores)`; NaN scores are failed jobs. `statuses[key][path]`
    names the failure (default parse_failed). A retried job leaves an `error` record before its `ok`.
    """
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    if settings is not None:
        (folder / "run.json").write_text(json.dumps(make_run_info(label, kind, settings)), encoding="utf-8")
    for key, (paths, severity, scores) in subsets.items():
        stem = folder / f"{label}_{template_stem(*key)}"
        write_result_csv(stem.with_suffix(".csv"),
                         [(p, float(s), None if not np.isfinite(v) else float(v)) for p, s, v in zip(paths, severity, scores)])
        lines = []
        for i, (path, sev, score) in enumerate(zip(paths, severity, scores)):
            usage = {"input_tokens": int(rng.integers(1400, 1600)), "output_tokens": int(rng.integers(60, 120)),
                     "cached_input_tokens": 1024}
            base = {"dataset": key[0], "subset": key[1], "path": path, "severity": float(sev), "usage": usage,
                    "latency_s": round(float(rng.lognormal(0.5, 0.3)), 4), "source": "live", "key": f"k{i}"}
            if i % 17 == 3:  # a retried job: an error first, then the answer that supersedes it
                lines.append({**base, "score": None, "status": "error", "usage": {}})
            if np.isfinite(score):
                lines.append({**base, "score": float(score), "status": "ok"})
            else:
                status = (statuses or {}).get(key, {}).get(path, "parse_failed")
                lines.append({**base, "score": None, "status": status})
        stem.with_suffix(".jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines), encoding="utf-8")
    return folder


def simulated_run(folder: Path, label: str, shape: Mapping[tuple[str, str], Sequence[int]], *, signal: float,
                  noise: float = 1.0, seed: int = 0, settings: dict | None = None, fail_every: int = 0,
                  mllm: bool = True, repeat: int = 0, jitter: float = 0.0) -> Path:
    """A whole run on the given subsets; every `fail_every`-th image fails (0 = none). Repeats of
    one setting share `seed` (its answers) and differ by `jitter` x N(0, 1) drawn per `repeat`
    (a hosted model at temperature 0 that still changes some answers)."""
    rng = np.random.default_rng(seed)
    wobble = np.random.default_rng([seed, repeat, 7])
    subsets = {}
    for key, levels_shape in shape.items():
        paths, severity = subset_rows(levels_shape)
        shared = difficulty(key, len(paths)) + jitter * wobble.normal(0, 1, len(paths))
        scores = simulate_scores(severity, shared, signal=signal, noise=noise, rng=rng, mllm=mllm)
        if fail_every:
            scores[fail_every - 1::fail_every] = np.nan
        subsets[key] = (paths, severity, scores)
    return write_run(folder, label, subsets, settings=settings, seed=seed)


DEMO_SHAPE = {key: MADBENCH_SHAPE[key] for key in (
    [("mvtec", f"object{i:02d}") for i in range(6)] + [("visa", f"part{i}") for i in range(4)]
    + [("covid19", "covid19")])}


def write_demo(out: Path) -> None:
    """The docs' demo: `industrial` (repeats 0, 1, 2) and `industrial-paper` (repeats 0, 1), whose
    scores carry more severity signal, both 'gpt-4o'."""
    settings = {"provider": "openai", "model": "gpt-4o", "prompt": "industrial", "refs": 3, "temperature": 0}
    for repeat in range(3):
        name = "industrial" + (f"+r{repeat}" if repeat else "")
        simulated_run(out / name, name, DEMO_SHAPE, signal=0.8, seed=10, fail_every=97, repeat=repeat,
                      jitter=0.3, settings={**settings, "repeat": repeat})
    paper = {**settings, "prompt": "industrial-paper"}
    for repeat in range(2):
        name = "industrial-paper" + (f"+r{repeat}" if repeat else "")
        simulated_run(out / name, name, DEMO_SHAPE, signal=0.95, seed=20, fail_every=61, repeat=repeat,
                      jitter=0.3, settings={**paper, "repeat": repeat})


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    write_demo(parser.parse_args().out)
