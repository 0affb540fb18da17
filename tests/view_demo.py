"""Runs of every kind for the view's tests, the docs' screenshots and a by-hand look, made the way a
user makes them: `mmad score`, `mmad classify` and `mmad qa run` against the local wire server on
the demo data (the `synth` set and a generated MMAD-QA set), plus a detector run written by hand
(no torch: tests.hybrid_helpers) that gates a hybrid and a classify run.

    python -m tests.view_demo OUT [--screenshots DIR]     # then: cd OUT && mmad view

The answers come from the wire server's stand-ins (not a model): scores that follow the synthetic
defects, a class name from the prompt's list, an option letter chosen by a hash.
"""

from __future__ import annotations

import hashlib
import os
import sys
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from mmad.atomic import atomic_write_text
from mmad.data import datasets
from mmad.data.synth import synthesize
from mmad.data.templates import write_result_csv
from tests.hybrid_helpers import write_detector_run
from tests.wire_server import Received, WireServer, classify_answer, severity_answer

SCORE_RUNS = ("gpt-4o", "gpt-4o+industrial-paper")
DETECTOR = "det-3shot"


def demo_answer(received: Received) -> str:
    """Classification and QA prompts get their stand-in answers; everything else a severity score."""
    text = "\n".join(received.texts())
    if "Only return the class name" in text:
        return classify_answer(received)
    if "Question" in text and "A." in text:
        letter = "ABCD"[int(hashlib.sha256(text.encode()).hexdigest()[:4], 16) % 4]
        return f"{letter}"
    return severity_answer(received)


def write_detector(root: Path, folder: Path) -> Path:
    """A detector run whose scores follow the level, with maps (for the gate) and result files."""
    rng = np.random.default_rng(5)
    for subset in datasets.resolve(root, "synth"):
        template = datasets.load_subset(subset)
        scores = {rel: float(max(level + 1 + rng.normal(0, 0.45), 0.05)) for rel, level in zip(template.paths, template.levels)}
        write_detector_run(folder, subset, scores, [1.1, 1.4, 1.5, 1.3], name=DETECTOR,
                           settings={"method": "patchcore", "refs": 3, "task": "score"})
        stem = folder / f"{DETECTOR}_synth_{subset.subset}"
        write_result_csv(stem.with_suffix(".csv"), [(rel, float(sev), scores[rel])
                                                   for rel, sev in zip(template.paths, template.severity)])
        atomic_write_text(stem.with_suffix(".jsonl"), "".join(
            f'{{"dataset": "synth", "subset": "{subset.subset}", "path": "{rel}", "severity": {float(sev)}, '
            f'"score": {scores[rel]}, "status": "ok", "source": "local", "method": "patchcore"}}\n'
            for rel, sev in zip(template.paths, template.severity)))
    return folder


@contextmanager
def environment(**values: str):
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def build(out: Path, server: WireServer) -> dict[str, Path]:
    """Data, QA set and runs under `out`; returns the run folders by name."""
    from mmad import cli
    root, qa_root, results = out / "data", out / "mmad-qa", out / "results"
    synthesize(root, train=4, per_level=3, size=96)
    detector = write_detector(root, results / DETECTOR)
    url = server.openai_url
    common = ["--provider", "openai", "--base-url", url, "-q"]
    with environment(OPENAI_API_KEY="demo", MMAD_CACHE_DIR=str(out / "cache"), MMAD_DATA_ROOT=str(root)):
        steps = [
            ["score", *common, "--dataset", "synth", "--prompt", "industrial,industrial-paper", "--out", str(results)],
            ["score", *common, "--dataset", "synth", "--hybrid", str(detector), "--hybrid-contour", "separate",
             "--out", str(results / "gpt-4o+hybrid")],
            ["classify", *common, "--dataset", "synth", "--variant", "conditioned", "--detector-run", str(detector),
             "--out", str(results / "classify-conditioned")],
            ["qa", "synth", "--root", str(qa_root), "--normal", "2", "--defective", "2", "--train", "3"],
            ["qa", "run", *common, "--root", str(qa_root), "--out", str(results / "gpt-4o-qa")],
        ]
        for step in steps:
            code = cli.main(step)
            if code not in (0, 6):
                raise RuntimeError(f"mmad {' '.join(step)} exited {code}")
    folders = {name: results / name for name in SCORE_RUNS}
    folders.update({DETECTOR: detector, "hybrid": results / "gpt-4o+hybrid",
                    "classify": results / "classify-conditioned", "qa": results / "gpt-4o-qa"})
    return folders


def main(argv: list[str]) -> int:
    out = Path(argv[0])
    server = WireServer(answer=demo_answer).start()
    try:
        build(out, server)
    finally:
        server.stop()
    print(f"demo runs in {out / 'results'}; view them: cd {out} && mmad view")
    if "--screenshots" in argv:
        from tests.view_shots import docs_screenshots
        docs_screenshots(out, Path(argv[argv.index("--screenshots") + 1]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))


# --------------------------------------------------------------------------- the tests' fixture

class Demo:
    """The demo's folder, its runs by name, and every request the wire server received."""

    def __init__(self, out: Path, folders: dict[str, Path], received: list) -> None:
        self.out, self.folders, self.received = out, folders, received


def view_demo_fixture(tmp_path_factory) -> Demo:
    out = tmp_path_factory.mktemp("view-demo")
    server = WireServer(answer=demo_answer).start()
    try:
        folders = build(out, server)
    finally:
        server.stop()
    return Demo(out, folders, list(server.requests))
