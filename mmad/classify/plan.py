"""Classification jobs: per test image one request (VELM's raw or conditioned prompt), or a
decision of the detector gate.

Which images are asked (documented in docs/hybrid.md):
  - with a detector run (`--detector-run`), as VELM does with its expert: images the detector
    calls normal (score below the gate threshold, mmad.gate) are predicted `good` by the gate
    (recorded with source "gate", never sent); the rest go to the model, with the contour image
    for the conditioned variant (mmad.contours: the same region the hybrid scoring draws);
  - without one, only the raw variant is possible and the model is asked about the images whose
    ground truth is anomalous (classification of known anomalies); the normal ones are left out
    and counted.
"""

from __future__ import annotations

import string
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path

from mmad.cache.store import cache_key
from mmad.classify.classes import NORMAL, ClassFile
from mmad.classify.task import ClassifyTask
from mmad.classify.truth import Item, load_items
from mmad.config import asset
from mmad.data import datasets
from mmad.data.filememo import FileMemo
from mmad.data.images import ImageRef, spec_for_family
from mmad.engine.jobs import check_references, result_paths
from mmad.engine.work import ImageInput, Job, SubsetPlan
from mmad.errors import ConfigError
from mmad.hybrid.contours import ContourRequest, render_many
from mmad.hybrid.gate import DetectorRun, Threshold, decide, gate_fields, gate_key, gate_local, subset_threshold
from mmad.providers.base import Request

VARIANTS = ("raw", "conditioned")


@dataclass(frozen=True)
class ClassifyPrompt:
    name: str
    source: Path
    system: str
    instruction: str
    refs: int

    def render(self, subject: str, normal: str, classes: tuple[tuple[str, str], ...]) -> str:
        numbered = "\n".join(f"{k}. {name}: {description}" for k, (name, description) in enumerate(classes, start=1))
        try:
            return string.Template(self.instruction).substitute(subject=subject, normal=normal, classes=numbered)
        except (KeyError, ValueError) as exc:
            raise ConfigError(f"{self.source}: unknown or malformed variable {exc} (known: $subject, $normal, "
                              f"$classes)") from None


def load_classify_prompt(variant: str, path: str | None = None) -> ClassifyPrompt:
    """The packaged prompt of a variant, or a file of the same form."""
    source = Path(path) if path else asset("classify", f"{variant}.toml")
    try:
        data = tomllib.loads(source.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"classification prompt {source}: cannot read ({exc.strerror or exc})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from None
    for key in ("system", "instruction"):
        if not isinstance(data.get(key), str) or not data[key].strip():
            raise ConfigError(f"{source}: field {key!r} is missing or empty")
    if data.get("variant", variant) != variant:
        raise ConfigError(f"{source} is a {data.get('variant')!r} prompt, not {variant!r}")
    refs = data.get("refs", 1)
    if not isinstance(refs, int) or refs < 0:
        raise ConfigError(f"{source}: `refs` must be a non-negative integer")
    return ClassifyPrompt(source.stem, source, data["system"], data["instruction"], refs)


def classify_parts(text: str, refs: list[ImageRef], query: ImageRef, contour: ImageRef | None) -> tuple:
    """The text, then "Image k:" + each image: references, the query, the contour image."""
    parts: list = [text]
    images = list(refs) + [query] + ([contour] if contour is not None else [])
    for k, image in enumerate(images, start=1):
        parts.extend((f"Image {k}:", image))
    return tuple(parts)


@dataclass(frozen=True)
class GateSettings:
    detector: DetectorRun
    threshold: float | None
    contour_dir: Path


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


def build_classify_plans(subsets: list[datasets.Subset], *, class_file: ClassFile, variant: str,
                         prompt: ClassifyPrompt, identity: dict, model: str, temperature: float, max_tokens: int,
                         out_dir: Path, run_name: str, gate: GateSettings | None, folder_layout: bool,
                         memo: FileMemo | None = None, repeat: int = 0) -> tuple[list[SubsetPlan], list[PlanReport]]:
    """Validate everything, then build every subset's jobs before anything is sent."""
    if variant == "conditioned" and gate is None:
        raise ConfigError("the conditioned variant shows the detector's contour: give --detector-run RUN")
    memo = memo or FileMemo(None)
    prepared = []
    for subset in subsets:
        described = class_file.for_subset(subset.subset)
        items = load_items(subset, described.names, folder_layout=folder_layout)
        refs = datasets.reference_images(subset, prompt.refs)
        prepared.append((subset, described, items, refs))
    check_references({path for *_, refs in prepared for path in refs})
    plans, reports = [], []
    for subset, described, items, refs in prepared:
        spec = spec_for_family(subset.prompt_family or "industrial")
        ref_inputs = [ImageInput(ImageRef(memo.sha256(p), spec.token), p, spec) for p in refs]
        text = prompt.render(subset.subject, described.normal, described.classes)
        report = PlanReport(subset.label, len(items), classes=described.names)
        maps = None
        if gate is not None:
            maps = gate.detector.subset_maps(subset)
            report.threshold = subset_threshold(maps, gate.threshold, gate.detector)
            report.maps_sha256 = maps.sha256
        base_jobs = [_job(subset, item, text, prompt, ref_inputs, spec, memo, identity, model, temperature,
                          max_tokens, repeat) for item in items]
        decisions = [decide(maps, item.path, report.threshold) for item in items] if gate else [None] * len(items)
        drawn = {}
        if variant == "conditioned":
            wanted = [(job, d) for job, d in zip(base_jobs, decisions) if d.verdict == "anomalous"]
            rendered = render_many([ContourRequest(job.query, maps.maps[d.row], report.threshold.value,
                                                   job.images[-1].ref.sha256, maps.map_digest(d.row))
                                    for job, d in wanted], gate.contour_dir)
            drawn = {job.path: image for (job, _), image in zip(wanted, rendered)}
        jobs = []
        for item, job, decision in zip(items, base_jobs, decisions):
            if gate is None:
                if item.normal:
                    report.left_out_normal += 1
                    continue
                jobs.append(job)
                continue
            job = replace(job, extra={**job.extra, **gate_fields(decision, gate.detector)})
            image = drawn.get(item.path)
            if decision.verdict != "anomalous" or isinstance(image, OSError):
                if isinstance(image, OSError):
                    decision = replace(decision, verdict="missing",
                                       reason=f"cannot draw the contour on {job.query}: {image}")
                local = gate_local(decision, {"predicted": NORMAL, "answer": None, "match": "gate",
                                              "reason": decision.reason})
                jobs.append(replace(job, key=gate_key(gate.detector, maps, decision, job.key), local=local))
                report.gated += decision.normal
                report.missing += not decision.normal
                continue
            if image is not None:
                contour = ImageInput(ImageRef(image.sha256, spec.token), image.path, spec)
                job = _job(subset, item, text, prompt, ref_inputs, spec, memo, identity, model, temperature,
                           max_tokens, repeat, contour=contour, extra=job.extra)
            jobs.append(job)
        csv_path, jsonl_path = result_paths(out_dir, run_name, subset)
        plans.append(SubsetPlan(subset, prompt.name, tuple(refs), tuple(jobs), csv_path, jsonl_path,
                                ClassifyTask(described.names)))
        reports.append(report)
    memo.flush()
    return plans, reports


def _job(subset, item: Item, text: str, prompt: ClassifyPrompt, ref_inputs, spec, memo, identity, model, temperature,
         max_tokens, repeat, *, contour: ImageInput | None = None, extra: dict | None = None) -> Job:
    query_path = subset.test_root / item.path
    query = ImageInput(ImageRef(memo.sha256(query_path), spec.token), query_path, spec)
    parts = classify_parts(text, [i.ref for i in ref_inputs], query.ref, contour.ref if contour else None)
    prefix = 1 + 2 * len(ref_inputs)
    request = Request(prompt.system, parts, model, temperature, max_tokens, prefix_parts=prefix,
                      cache_group=f"mmad-classify-{subset.dataset}-{subset.subset}")
    images = tuple(ref_inputs) + (query,) + ((contour,) if contour else ())
    return Job(subset.dataset, subset.subset, item.path, item.severity, query_path, request,
               cache_key(identity, request, repeat), subset.prompt_family, images,
               extra=extra if extra is not None else {"true_classes": list(item.truth)})
