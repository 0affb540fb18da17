"""Turn subsets into jobs: one request per test image, keyed for the cache, with output paths.

Building a plan reads templates, picks the references, renders the prompt strictly, and hashes
every image file (no decoding; a memo of (path, size, mtime) makes reruns cost a `stat` per file),
so a cache hit is decided before any pixel is touched. References must decode fully: a broken
one is a one-line error before any work. A query that cannot be decoded becomes that job's
`error` record when its turn comes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from mmad.cache.store import KeyTemplate, cache_key
from mmad.config import PACKAGED_PROMPTS
from mmad.data import datasets, references, templates
from mmad.data.filememo import FileMemo
from mmad.data.images import ImageRef, decode_check, spec_for_family
from mmad.engine.tasks import SCORE
from mmad.engine.work import ImageInput, Job, SubsetPlan
from mmad.errors import DataError
from mmad.prompts.templates import prompt_for
from mmad.providers.base import Request


def safe_name(text: str) -> str:
    """A model name usable in a file name (`meta-llama/Llama-3` -> `meta-llama-Llama-3`)."""
    return re.sub(r"[^A-Za-z0-9._+-]+", "-", text).strip("-") or "run"


def result_paths(out_dir: Path, run_name: str, subset: datasets.Subset) -> tuple[Path, Path]:
    """`<out>/<run>_<dataset>_<subset>.csv` (the reference's naming) and the JSONL beside it."""
    stem = f"{run_name}_{datasets.template_name(subset.dataset, subset.subset)[:-len('_template.csv')]}"
    return out_dir / f"{stem}.csv", out_dir / f"{stem}.jsonl"


def build_parts(instruction: str, refs: list[ImageRef], query: ImageRef) -> tuple[str | ImageRef, ...]:
    """The reference layout: instruction; 'Normal Image k:' + image per reference; 'Inference Image :' + query."""
    parts: list[str | ImageRef] = [instruction]
    for k, ref in enumerate(refs, start=1):
        parts.extend((f"Normal Image {k}:", ref))
    parts.extend(("Inference Image :", query))
    return tuple(parts)


def hash_files(paths: list[Path], memo: FileMemo, pool: ThreadPoolExecutor, subset: datasets.Subset,
                template: templates.Template | None = None) -> list[str]:
    """sha256 of every file: from the memo when unchanged (a stat each), the rest hashed in threads.
    A missing file is a one-line error naming the template lines (before any work)."""
    digests: list[str | None] = []
    missing: list[int] = []
    for index, path in enumerate(paths):
        try:
            digests.append(memo.known(path))
        except FileNotFoundError:
            digests.append(None)
            missing.append(index)
    if missing:
        if template is None:
            raise DataError(f"{subset.label}: reference image {paths[missing[0]]} not found")
        lines = [index + 2 for index in missing]
        raise DataError(f"{template.source}: {len(missing)} missing image(s) at line(s) "
                        f"{templates.first_rows(lines)} (e.g. {paths[missing[0]]})")
    todo = [index for index, digest in enumerate(digests) if digest is None]
    for index, digest in zip(todo, pool.map(memo.sha256, [paths[i] for i in todo])):
        digests[index] = digest
    return digests  # type: ignore[return-value]


def check_references(paths: set[Path]) -> None:
    """Every reference must decode fully; a broken one stops everything before any work."""
    for path in sorted(paths):
        problem = decode_check(path)
        if problem is not None:
            raise DataError(f"reference image {path} cannot be decoded ({problem}); replace it or choose "
                            f"other references")


@dataclass(frozen=True)
class PlanOptions:
    """Everything besides the subsets that defines the requests."""

    identity: Mapping[str, str]
    model: str
    refs: int = 3
    prompt_choice: str | None = None
    prompts_dir: Path = PACKAGED_PROMPTS  # (the commands pass --prompts-dir or $MMAD_PROMPTS_DIR, resolved)
    temperature: float = 0.0
    max_tokens: int = 300
    max_height: str | None = None  # None/"auto": the scripts' rule per family; "original"; or pixels
    corrupt: str | None = None
    corrupt_references: bool = False
    reference_choice: str = "first"
    repeat: int = 0
    detail: str | None = None  # OpenAI image detail (part of the image spec)
    sample: int | None = None  # a stratified sample of this many rows per subset
    sample_seed: int = 0


def stratified_sample(levels, n: int, seed: int, label: str) -> list[int]:
    """Row indices of a sample of `n` rows drawn per level in proportion to its size (every level
    keeps at least one row), seeded by `seed` and the subset's name; in template order."""
    import hashlib

    import numpy as np
    levels = np.asarray(levels)
    if n >= len(levels):
        return list(range(len(levels)))
    rng = np.random.default_rng(int.from_bytes(hashlib.sha256(f"{seed}|{label}".encode()).digest()[:8], "little"))
    values, counts = np.unique(levels, return_counts=True)
    share = np.maximum(1, np.floor(counts / counts.sum() * n)).astype(int)
    while share.sum() > n:
        share[np.argmax(share)] -= 1
    order = np.argsort(-(counts / counts.sum() * n - share))
    for index in order[: n - share.sum()]:
        share[index] += 1
    chosen = []
    for value, take in zip(values, share):
        rows = np.flatnonzero(levels == value)
        chosen.extend(rng.choice(rows, size=min(take, rows.size), replace=False).tolist())
    return sorted(chosen)


def build_plan(subsets: list[datasets.Subset], *, identity: Mapping[str, str], model: str, refs: int,
               prompt_choice: str | None, prompts_dir: Path, out_dir: Path, run_name: str,
               temperature: float = 0.0, max_tokens: int = 300, memo: FileMemo | None = None,
               **options) -> list[SubsetPlan]:
    """Validate everything and build every job before anything is sent."""
    opts = PlanOptions(identity, model, refs, prompt_choice, prompts_dir, temperature, max_tokens, **options)
    return build_plans(subsets, opts, out_dir=out_dir, run_name=run_name, memo=memo)


def build_plans(subsets: list[datasets.Subset], opts: PlanOptions, *, out_dir: Path, run_name: str,
                memo: FileMemo | None = None, hash_workers: int = 8) -> list[SubsetPlan]:
    memo = memo or FileMemo(None)
    prepared = []
    for subset in subsets:
        template = datasets.load_subset(subset, check_images=False)  # missing files: found while hashing
        if opts.sample:
            keep = stratified_sample(template.levels, opts.sample, opts.sample_seed, subset.label)
            template = templates.Template(template.source, tuple(template.paths[i] for i in keep),
                                         template.severity[keep])
        prompt = prompt_for(subset.prompt_family, opts.refs, opts.prompt_choice, opts.prompts_dir)
        system, instruction = prompt.render(refs=opts.refs, subject=subset.subject, dataset=subset.dataset,
                                            subset=subset.subset)
        queries = [subset.test_root / rel for rel in template.paths]
        chosen = references.choose(subset, opts.refs, opts.reference_choice, queries)
        prepared.append((subset, template, queries, chosen, prompt.name, system, instruction))
    check_references({path for item in prepared for refs in item[3] for path in refs})
    plans = []
    with ThreadPoolExecutor(max_workers=hash_workers) as pool:
        for subset, template, queries, chosen, prompt_name, system, instruction in prepared:
            spec = spec_for_family(subset.prompt_family, opts.max_height, opts.detail)
            query_spec = spec.with_corruption(opts.corrupt)
            ref_spec = query_spec if opts.corrupt_references else spec
            ref_paths = sorted({path for refs in chosen for path in refs})
            ref_hashes = dict(zip(ref_paths, hash_files(ref_paths, memo, pool, subset)))
            query_hashes = hash_files(queries, memo, pool, subset, template)
            group = f"mmad-{subset.dataset}-{subset.subset}"
            identity = dict(opts.identity)
            keys = None  # one key template per subset when the references are fixed
            ref_token, query_token = ref_spec.token, query_spec.token
            inputs = {p: ImageInput(ImageRef(ref_hashes[p], ref_token), p, ref_spec) for p in ref_paths}
            jobs = []
            for rel, severity, query, digest, refs in zip(template.paths, template.severity, queries,
                                                           query_hashes, chosen):
                ref_inputs = [inputs[p] for p in refs]
                query_input = ImageInput(ImageRef(digest, query_token), query, query_spec)
                parts = build_parts(instruction, [i.ref for i in ref_inputs], query_input.ref)
                request = Request(system, parts, opts.model, opts.temperature, opts.max_tokens,
                                  prefix_parts=len(parts) - 2, cache_group=group)
                if opts.reference_choice == "similar":
                    key = cache_key(identity, request, opts.repeat)
                else:
                    keys = keys or KeyTemplate(identity, request, opts.repeat)
                    key = keys.key(digest)
                jobs.append(Job(subset.dataset, subset.subset, rel, float(severity), query, request, key,
                                subset.prompt_family, tuple(ref_inputs) + (query_input,)))
            csv_path, jsonl_path = result_paths(out_dir, run_name, subset)
            fixed = chosen[0] if chosen and all(c == chosen[0] for c in chosen) else ()
            plans.append(SubsetPlan(subset, prompt_name, tuple(fixed), tuple(jobs), csv_path, jsonl_path, SCORE))
    memo.flush()
    return plans
