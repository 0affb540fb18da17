"""Classification jobs: per test image one request (VELM's raw or conditioned prompt), or a
decision of the detector gate.

Which images are asked (documented in docs/hybrid.md):
  - with a detector run (`--detector-run`), as VELM does with its expert: images the detector
    calls normal (score below the gate threshold, mmad.hybrid.gate) are predicted `good` by the gate
    (recorded with source "gate", never sent); the rest go to the model;
  - without one, the model is asked about the images whose ground truth is anomalous
    (classification of known anomalies); the normal ones are left out and counted.

What a request holds (`ClassifyOptions`, defaults as VELM publishes them):
  - the prompt (mmad.classify.prompt): VELM's paragraph, or mmad's wording (`--prompt mmad`);
  - images (`--images`): `velm`, every image resized to 448x448 as PNG (mmad.data.recipes); `mmad`,
    the MAD-Bench scripts' height rule;
  - the reference (`--reference`): `velm`, the category's `test/good/000.png` (MAD-Bench's
    layout: `test/good_level_0/000.png`) — itself one of the evaluated test images, as in VELM —;
    `train`, the first image(s) of the sorted `train/good` folder (mmad's rule);
  - the conditioned variant's contour image (`--contour-source`): from the detector's map, or from
    the ground-truth masks as VELM draws them (mmad.hybrid.contours_velm); with `--images mmad` the
    detector contour is mmad's full-resolution drawing (mmad.hybrid.contours).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mmad.cache.store import cache_key
from mmad.classify.classes import NORMAL, ClassFile, SubsetClasses
from mmad.classify.prompt import ClassifyPrompt
from mmad.classify.task import ClassifyTask
from mmad.classify.truth import Item, load_items
from mmad.data import datasets
from mmad.data.filememo import FileMemo
from mmad.data.images import ImageRef, ImageSpec, spec_for_family
from mmad.engine.jobs import check_references, result_paths
from mmad.engine.work import ImageInput, Job, SubsetPlan
from mmad.errors import ConfigError, DataError
from mmad.hybrid.contours import ContourRequest, render_many
from mmad.hybrid.gate import DetectorRun, Threshold, decide, gate_fields, gate_key, gate_local, subset_threshold
from mmad.providers.base import Request
from mmad.reading import read_bytes

if TYPE_CHECKING:
    from mmad.hybrid.gate import GateDecision, SubsetMaps

VARIANTS = ("raw", "conditioned")


@dataclass(frozen=True)
class GateSettings:
    detector: DetectorRun
    threshold: float | None


@dataclass(frozen=True)
class ClassifyOptions:
    """Everything besides the data that defines the requests."""

    identity: dict
    model: str
    variant: str = "raw"
    temperature: float | None = 0.0
    max_tokens: int = 128
    images: str = "velm"  # or "mmad"
    reference: str = "velm"  # or "train"
    contour_source: str = "detector"  # or "masks"
    answer_mapping: str = "velm"  # or "mmad"
    repeat: int = 0
    contour_dir: Path = Path("cache/contours")


@dataclass
class PlanReport:
    """What building one subset's plan decided."""

    label: str
    items: int
    left_out_normal: int = 0  # no detector: ground-truth normal images are not asked
    gated: int = 0
    missing: int = 0
    threshold: Threshold | None = None
    maps_sha256: str | None = None
    classes: tuple[str, ...] = field(default_factory=tuple)
    references: tuple[str, ...] = ()


def velm_references(subset: datasets.Subset, count: int, folder_layout: bool) -> list[Path]:
    """VELM's `test/good/00{i}.png` of the category (`good_level_0` in MAD-Bench's layout)."""
    good = subset.test_root / ("good" if folder_layout else "good_level_0")
    paths = [good / f"00{i}.png" for i in range(count)]
    missing = [path for path in paths if not path.is_file()]
    if missing:
        raise DataError(f"{subset.label}: VELM's reference image {missing[0]} not found (VELM uses the category's "
                        f"test/good/000.png); `--reference train` takes the first training images instead")
    return paths


def _spec(opts: ClassifyOptions, subset: datasets.Subset) -> ImageSpec:
    if opts.images == "velm":
        return ImageSpec(max_height=None, recipe="velm")
    return spec_for_family(subset.prompt_family or "industrial")


def build_classify_plans(subsets: list[datasets.Subset], *, class_file: ClassFile, prompt: ClassifyPrompt,
                         opts: ClassifyOptions, out_dir: Path, run_name: str, gate: GateSettings | None,
                         folder_layout: bool, memo: FileMemo | None = None
                         ) -> tuple[list[SubsetPlan], list[PlanReport]]:
    """Validate everything, then build every subset's jobs before anything is sent."""
    conditioned = opts.variant == "conditioned"
    if conditioned and gate is None and opts.contour_source == "detector":
        raise ConfigError("the conditioned variant shows a contour: give --detector-run RUN, or --contour-source "
                          "masks (the ground-truth masks, as VELM)")
    if conditioned and opts.contour_source == "masks" and opts.images != "velm":
        raise ConfigError("--contour-source masks draws VELM's 448 px contour: it needs --images velm")
    memo = memo or FileMemo(None)
    prepared = []
    for subset in subsets:
        described = class_file.for_subset(subset.subset)
        items = load_items(subset, described.names, folder_layout=folder_layout)
        refs = (velm_references(subset, prompt.refs, folder_layout) if opts.reference == "velm"
                else datasets.reference_images(subset, prompt.refs))
        prepared.append((subset, described, items, refs))
    check_references({path for *_, refs in prepared for path in refs})
    plans, reports = [], []
    for subset, described, items, refs in prepared:
        plan, report = _subset_plan(subset, described, items, refs, prompt, opts, gate, memo, out_dir, run_name,
                                    folder_layout)
        plans.append(plan)
        reports.append(report)
    memo.flush()
    return plans, reports


def _subset_plan(subset, described: SubsetClasses, items: list[Item], refs: list[Path], prompt: ClassifyPrompt,
                 opts: ClassifyOptions, gate: GateSettings | None, memo: FileMemo, out_dir: Path, run_name: str,
                 folder_layout: bool) -> tuple[SubsetPlan, PlanReport]:
    spec = _spec(opts, subset)
    ref_inputs = [ImageInput(ImageRef(memo.sha256(p), spec.token), p, spec) for p in refs]
    text = prompt.render(subset.subset, subset.subject, described)
    report = PlanReport(subset.label, len(items), classes=described.names,
                        references=tuple(str(p.relative_to(subset.test_root.parent)) for p in refs))
    maps: SubsetMaps | None = None
    threshold: Threshold | None = None
    if gate is not None:
        maps = gate.detector.subset_maps(subset)
        threshold = report.threshold = subset_threshold(maps, gate.threshold, gate.detector)
        report.maps_sha256 = maps.sha256

    def job(item: Item, contour: ImageInput | None = None, extra: dict | None = None) -> Job:
        query_path = subset.test_root / item.path
        query = ImageInput(ImageRef(memo.sha256(query_path), spec.token), query_path, spec)
        parts = prompt.parts(text, [i.ref for i in ref_inputs], query.ref, contour.ref if contour else None)
        request = Request(prompt.system_message, parts, opts.model, opts.temperature, opts.max_tokens,
                          prefix_parts=prompt.prefix_parts(len(ref_inputs)),
                          cache_group=f"mmad-classify-{subset.dataset}-{subset.subset}")
        images = tuple(ref_inputs) + (query,) + ((contour,) if contour else ())
        return Job(subset.dataset, subset.subset, item.path, item.severity, query_path, request,
                   cache_key(opts.identity, request, opts.repeat), subset.prompt_family, images,
                   extra=extra if extra is not None else {"true_classes": list(item.truth)})

    base_jobs = [job(item) for item in items]
    decisions: list[GateDecision | None] = [None] * len(items)  # None: no gate
    if maps is not None and threshold is not None:
        decisions = [decide(maps, item.path, threshold) for item in items]
    asked = [d is None and not item.normal or d is not None and d.verdict == "anomalous"
             for item, d in zip(items, decisions)]
    drawn = {}
    if opts.variant == "conditioned":
        wanted = [(item, b, d) for item, b, d, a in zip(items, base_jobs, decisions, asked) if a]
        drawn = _contours(subset, wanted, maps, threshold, opts)
    jobs = []
    for item, base, decision, ask in zip(items, base_jobs, decisions, asked):
        if gate is None and not ask:
            report.left_out_normal += 1
            continue
        extra = dict(base.extra)
        image = drawn.get(item.path)
        if gate is not None:
            assert decision is not None and maps is not None, "with a gate, every image has its decision"
            extra.update(gate_fields(decision, gate.detector))
            if not ask or isinstance(image, OSError):
                if isinstance(image, OSError):
                    decision = replace(decision, verdict="missing",
                                       reason=f"cannot draw the contour on {base.query}: {image}")
                local = gate_local(decision, {"predicted": NORMAL, "answer": None, "match": "gate",
                                              "reason": decision.reason})
                jobs.append(replace(base, extra=extra, key=gate_key(gate.detector, maps, decision, base.key),
                                    local=local))
                report.gated += decision.normal
                report.missing += not decision.normal
                continue
        if isinstance(image, OSError):  # masks without a detector: this image cannot be drawn
            raise DataError(f"{subset.label}: cannot draw the contour on {base.query}: {image}")
        contour = None if image is None else ImageInput(ImageRef(image.sha256, spec.token), image.path, spec)
        jobs.append(job(item, contour, extra) if contour is not None else replace(base, extra=extra))
    csv_path, jsonl_path = result_paths(out_dir, run_name, subset)
    task = ClassifyTask(described.names, described.displays, opts.answer_mapping)
    return SubsetPlan(subset, prompt.name, tuple(refs), tuple(jobs), csv_path, jsonl_path, task), report


def _contours(subset, wanted, maps, threshold, opts: ClassifyOptions) -> dict:
    """The contour image of every asked image: {template path: ContourImage or OSError}."""
    if opts.images != "velm":  # mmad's full-resolution drawing of the detector's region
        rendered = render_many([ContourRequest(job.query, maps.maps[d.row], threshold.value, job.images[-1].ref.sha256,
                                               maps.map_digest(d.row)) for _, job, d in wanted], opts.contour_dir)
        return {job.path: image for (_, job, _), image in zip(wanted, rendered)}
    from mmad.hybrid import contours_velm
    subset_dir = subset.test_root.parent
    tasks: list[tuple[Job, Callable[[], np.ndarray], str]] = []
    if opts.contour_source == "masks":
        missing = []
        for item, job, _ in wanted:
            found = None if item.normal else contours_velm.find_mask(subset_dir, item.path)
            if found is None and not item.normal:
                missing.append(item.path)
                continue
            if found is None:  # a normal image the detector let through: no ground-truth region
                tasks.append((job, lambda: np.zeros((contours_velm.SIDE, contours_velm.SIDE), np.uint8),
                              f"masks|{job.images[-1].ref.sha256}|none"))
            else:
                path, level = found
                tasks.append((job, partial(contours_velm.mask_region, path, level),
                              f"masks|{job.images[-1].ref.sha256}|{path.name}|{_digest(path)}|>{level}"))
        if missing:
            raise DataError(f"{subset.label}: no ground-truth mask for {len(missing)} anomalous image(s) (e.g. "
                            f"{missing[0]}): --contour-source masks needs <category>/ground_truth/<type>/<name>_mask.png "
                            f"(MVTec) or <category>/groundtruth/<type>/<name>.png (VisA)")
    else:
        for _, job, d in wanted:
            grid = maps.maps[d.row]
            tasks.append((job, partial(contours_velm.detector_region, grid, threshold.value),
                          f"detector|{job.images[-1].ref.sha256}|{maps.map_digest(d.row)}|{float(threshold.value)!r}"))
    rendered = contours_velm.render_many([(job.query, region, identity) for job, region, identity in tasks],
                                         opts.contour_dir)
    return {job.path: image for (job, _, _), image in zip(tasks, rendered)}


def _digest(path: Path) -> str:
    return hashlib.sha256(read_bytes(path)).hexdigest()
