"""Turn subsets into jobs: one request per test image, keyed for the cache, with output paths.

Building a plan reads templates, picks the fixed references, renders the prompt strictly, and
hashes every image file (no decoding), so a cache hit is decided before any pixel is touched.
"""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from mmad import datasets
from mmad.cache import cache_key
from mmad.images import ImageRef, file_ref
from mmad.prompts import prompt_for
from mmad.providers.base import Request


@dataclass(frozen=True)
class Job:
    """One test image of one subset, and the exact request it sends."""

    dataset: str
    subset: str
    path: str  # as in the template
    severity: float
    query: Path
    request: Request
    key: str
    family: str | None = None  # prompt family (sets the default output-token estimate)


@dataclass(frozen=True)
class SubsetPlan:
    subset: datasets.Subset
    prompt_name: str
    references: tuple[Path, ...]
    jobs: tuple[Job, ...]
    csv_path: Path
    jsonl_path: Path


def safe_name(text: str) -> str:
    """A model name usable in a file name (`meta-llama/Llama-3` -> `meta-llama-Llama-3`)."""
    return re.sub(r"[^A-Za-z0-9._+-]+", "-", text).strip("-") or "run"


def result_paths(out_dir: Path, run_name: str, subset: datasets.Subset) -> tuple[Path, Path]:
    """`<out>/<run>_<dataset>_<subset>.csv` (the reference's naming) and the JSONL beside it."""
    stem = f"{run_name}_{datasets.template_name(subset.dataset, subset.subset)[:-len('_template.csv')]}"
    return out_dir / f"{stem}.csv", out_dir / f"{stem}.jsonl"


def build_parts(instruction: str, references: list[ImageRef], query: ImageRef) -> tuple[str | ImageRef, ...]:
    """The reference layout: instruction; 'Normal Image k:' + image per reference; 'Inference Image :' + query."""
    parts: list[str | ImageRef] = [instruction]
    for k, ref in enumerate(references, start=1):
        parts.extend((f"Normal Image {k}:", ref))
    parts.extend(("Inference Image :", query))
    return tuple(parts)


def build_plan(subsets: list[datasets.Subset], *, identity: dict[str, str], model: str, refs: int,
               prompt_choice: str | None, prompts_dir: Path, out_dir: Path, run_name: str,
               temperature: float = 0.0, max_tokens: int = 300, hash_workers: int = 8) -> list[SubsetPlan]:
    """Validate everything and build every job before anything is sent."""
    prepared = []
    for subset in subsets:
        template = datasets.load_subset(subset)
        references = datasets.reference_images(subset, refs)
        prompt = prompt_for(subset.prompt_family, refs, prompt_choice, prompts_dir)
        system, instruction = prompt.render(subject=subset.subject, dataset=subset.dataset, subset=subset.subset)
        prepared.append((subset, template, references, prompt.name, system, instruction))
    plans = []
    with ThreadPoolExecutor(max_workers=hash_workers) as pool:
        for subset, template, references, prompt_name, system, instruction in prepared:
            queries = [subset.test_root / rel for rel in template.paths]
            ref_ids = list(pool.map(file_ref, references))
            query_ids = list(pool.map(file_ref, queries))
            jobs = []
            group = f"mmad-{subset.dataset}-{subset.subset}"
            for rel, severity, query, query_id in zip(template.paths, template.severity, queries, query_ids):
                parts = build_parts(instruction, ref_ids, query_id)
                request = Request(system, parts, model, temperature, max_tokens,
                                  prefix_parts=len(parts) - 2, cache_group=group)
                jobs.append(Job(subset.dataset, subset.subset, rel, float(severity), query, request,
                                cache_key(identity, request), subset.prompt_family))
            csv_path, jsonl_path = result_paths(out_dir, run_name, subset)
            plans.append(SubsetPlan(subset, prompt_name, tuple(references), tuple(jobs), csv_path, jsonl_path))
    return plans
