"""MMAD-QA at full size: 8,366 images and 39,672 questions (the published counts), offline.

Writes tiny stand-in images and an mmad.json of the published size under a temporary folder,
then times what a run does before and after the requests: validation, plan building (cold and
with the file memo warm), the cumulative chain walk with every question answered (what CSV
writing and resume do), the evaluation table with 1,000 bootstrap resamples, and a paired
comparison with 1,000 resamples.

    python benchmarks/bench_qa.py [--images 8366] [--questions 39672]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from PIL import Image

from mmad.data.filememo import FileMemo
from mmad.qa.compare import compare_rows
from mmad.qa.data import load_benchmark
from mmad.qa.jobs import QAOptions, build_qa_plans
from mmad.qa.metrics import SUBTASKS, evaluate_run
from mmad.qa.prompt import load_qa_prompt
from mmad.qa.results import QARow

DATASETS = ("DS-MVTec", "MVTec-LOCO", "VisA", "GoodsAD")


def write_set(root: Path, images: int, questions: int, rng) -> None:
    entries = {}
    per_image = np.full(images, questions // images)
    per_image[: questions - per_image.sum()] += 1
    for i in range(images):
        dataset = DATASETS[i % len(DATASETS)]
        category = f"c{i % 9}"
        folder = "good" if i % 3 == 0 else "broken"
        rel = f"{dataset}/{category}/test/{folder}/{i:05d}.png"
        template = f"{dataset}/{category}/train/good/000.png"
        for path in (rel, template):
            if not (root / path).exists():
                (root / path).parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)).save(root / path)
        conversation = [{"Question": f"Question text {q} about this image?",
                         "Options": {"A": "first option", "B": "second option", "C": "third", "D": "fourth"},
                         "Answer": "ABCD"[(i + q) % 4], "type": SUBTASKS[q % len(SUBTASKS)]}
                        for q in range(per_image[i])]
        entries[rel] = {"conversation": conversation, "mask_path": None, "similar_templates": [template],
                        "random_templates": [template]}
    (root / "mmad.json").write_text(json.dumps(entries))


class AllAnswered(Mapping):
    """Every key answered "A": walks build every turn of every conversation."""

    def __getitem__(self, key):
        return {"status": "ok", "raw": "A", "letter": "A"}

    def __iter__(self):
        return iter(())

    def __len__(self):
        return 0


def timed(label: str, func):
    start = time.perf_counter()
    result = func()
    print(f"{label:<58} {time.perf_counter() - start:8.2f} s")
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=8366)
    parser.add_argument("--questions", type=int, default=39672)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(prefix="qa-bench-") as folder:
        root = Path(folder)
        timed(f"write {args.images} stand-in images + mmad.json", lambda: write_set(root, args.images, args.questions, rng))
        bench = timed("load + validate mmad.json, check every file", lambda: load_benchmark(root))
        prompt = load_qa_prompt()
        memo_dir = root / "memo"
        for mode in ("single", "cumulative"):
            opts = QAOptions({"provider": "openai"}, "gpt-4o", mode)
            plans = timed(f"build plans, {mode}, file memo cold" if mode == "single" else
                          f"build plans, {mode}, file memo warm",
                          lambda: build_qa_plans(bench, opts, prompt, out_dir=root / mode, run_name="r",
                                                 memo=FileMemo(memo_dir)))
            jobs = sum(len(p.jobs) for p in plans)
            resolved = timed(f"  walk every question answered ({jobs} jobs in the plans)",
                             lambda: sum(len(p.resolve(AllAnswered())) for p in plans))
            assert resolved == bench.questions
        rows = [QARow(q.qid, q.image, q.subtask, q.answer, "ABCD"[int(rng.integers(4))], "ok")
                for entry in bench.entries for q in entry.questions]
        other = [QARow(r.question_id, r.image, r.subtask, r.correct, "ABCD"[int(rng.integers(4))], "ok")
                 for r in rows]
        timed(f"evaluation table, {len(rows)} answers, 1000 bootstrap resamples",
              lambda: evaluate_run("r", rows, bootstrap=1000, seed=0))
        timed(f"paired comparison, {len(rows)} pairs, 1000 paired resamples",
              lambda: compare_rows(rows, other, bootstrap=1000, seed=0))


if __name__ == "__main__":
    main()
