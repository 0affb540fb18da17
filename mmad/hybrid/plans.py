"""Two-stage hybrid severity scoring: a conventional detector gates, an MLLM judges the rest.

`hybrid_plan` turns one subset's MLLM plan into a hybrid plan, job by job (mmad.hybrid.gate decides):

  - detector score below the subset's threshold: the job becomes a gate decision, recorded with
    severity score 0 *from the detector* and never sent: `local = {"source": "gate", "status":
    "ok", "fields": {"score": 0.0, "reason": "detector score 0.12 < threshold 0.31"}}`;
  - no detector score for the image (it failed on it, or is not in its maps): an `error` record
    from the gate that says so (never a silent 0);
  - at or above it: the MLLM request, unchanged (contour "none": the pure MLLM run's cache
    entries answer it for free), or contour-conditioned (mmad.hybrid.contours) with the prompt
    `<family>-contour` (references, the contour image, then the query) or
    `<family>-contour-on-query` (references, then the query with the contour drawn on it).

Every record of a hybrid run carries `detector_run`, `detector_score`, `gate_threshold` and
`gate` (normal / anomalous / missing); the CSV gets a fourth column, `Decided By` (`gate` or
`mllm`; empty for a failed row), which readers of the three template columns ignore.
"""

from __future__ import annotations

import csv
import io
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from mmad.atomic import atomic_write_text
from mmad.cache.store import cache_key
from mmad.data import datasets
from mmad.data.images import ImageRef
from mmad.data.templates import format_score, format_severity
from mmad.engine.jobs import result_paths
from mmad.engine.tasks import ScoreTask
from mmad.engine.work import ImageInput, Job, SubsetPlan
from mmad.errors import ConfigError
from mmad.hybrid.contours import ContourRequest, render_many
from mmad.hybrid.gate import DetectorRun, Threshold, decide, gate_fields, gate_key, gate_local, subset_threshold
from mmad.prompts.templates import load_prompt
from mmad.providers.base import Request
from mmad.reading import open_file, read_text

CONTOUR_MODES = ("none", "separate", "on-query")
PROMPT_SUFFIX = {"separate": "contour", "on-query": "contour-on-query"}
CONTOUR_LABEL = "Contour Image :"
QUERY_LABEL = "Inference Image :"
HYBRID_HEADER = ("Path", "Severity", "Anomaly Score", "Decided By")


class HybridScoreTask(ScoreTask):
    """Scores as usual; the CSV says which rows the gate decided."""

    def write(self, plan: SubsetPlan, best: Mapping[str, dict]) -> Path:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(HYBRID_HEADER)
        for job in plan.jobs:
            assert job.severity is not None, "a score job's severity is its template row's"
            record = best.get(job.key) or {}
            ok = record.get("status") == "ok"
            score = record.get("score") if ok else None
            source = ("gate" if record.get("source") == "gate" else "mllm") if ok else ""
            writer.writerow((job.path, format_severity(job.severity), format_score(score), source))
        atomic_write_text(plan.csv_path, buffer.getvalue())
        return plan.csv_path


HYBRID_SCORE = HybridScoreTask()


@dataclass(frozen=True)
class HybridOptions:
    detector: DetectorRun
    threshold: float | None  # --gate-threshold (None: calibrated per subset)
    contour: str  # none | separate | on-query
    contour_dir: Path  # where contour PNGs are rendered (once; named by their inputs)
    prompts_dir: Path
    prompt_choice: str | None  # the variant's --prompt, if any
    identity: Mapping[str, str]
    repeat: int = 0


@dataclass(frozen=True)
class GateCount:
    """What the gate did to one plan."""

    label: str
    threshold: Threshold
    maps_sha256: str
    gated: int
    sent: int
    missing: int


def prompt_layout(prompt_source: Path) -> str | None:
    """The `layout` field of a prompt file ("contour" / "contour-on-query"), None for the plain one."""
    try:
        return tomllib.loads(read_text(Path(prompt_source), "utf-8")).get("layout")
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError):
        return None


def contour_prompt(subset: datasets.Subset, options: HybridOptions, refs: int):
    """(name, system, instruction) of the contour prompt for a subset, checked against the mode."""
    expected = PROMPT_SUFFIX[options.contour]
    name = options.prompt_choice or f"{subset.prompt_family}-{expected}"
    if subset.prompt_family is None and options.prompt_choice is None:
        raise ConfigError(f"{subset.label}: the prompt family cannot be inferred; pass --prompt-family or --prompt")
    prompt = load_prompt(name, options.prompts_dir)
    layout = prompt_layout(prompt.source)
    if layout != expected:
        raise ConfigError(f"prompt {prompt.name!r} has layout {layout!r}, but --hybrid-contour {options.contour} "
                          f"needs a prompt with layout = {expected!r} (e.g. {subset.prompt_family}-{expected})")
    if prompt.refs is not None and prompt.refs != refs:
        raise ConfigError(f"prompt {prompt.name!r} describes {prompt.refs} reference image(s) but the run uses {refs}")
    system, instruction = prompt.render(subject=subset.subject, dataset=subset.dataset, subset=subset.subset)
    return prompt.name, system, instruction


def contour_parts(mode: str, instruction: str, refs: list[ImageRef], query: ImageRef,
                  contour: ImageRef) -> tuple[tuple, int]:
    """(parts, prefix_parts): the reference layout, then the contour image and/or the query."""
    parts: list = [instruction]
    for k, ref in enumerate(refs, start=1):
        parts.extend((f"Normal Image {k}:", ref))
    prefix = len(parts)
    if mode == "separate":
        parts.extend((CONTOUR_LABEL, contour, QUERY_LABEL, query))
    else:
        parts.extend((QUERY_LABEL, contour))
    return tuple(parts), prefix


def _contour_job(job: Job, mode: str, system: str, instruction: str, contour_path: Path, contour_sha: str,
                 options: HybridOptions) -> Job:
    refs, query = list(job.images[:-1]), job.images[-1]
    spec = query.spec if mode == "on-query" else replace(query.spec, corrupt=None)
    contour = ImageInput(ImageRef(contour_sha, spec.token), contour_path, spec)
    parts, prefix = contour_parts(mode, instruction, [i.ref for i in refs], query.ref, contour.ref)
    old = job.request
    request = Request(system, parts, old.model, old.temperature, old.max_tokens, prefix_parts=prefix,
                      cache_group=old.cache_group)
    images = tuple(refs) + ((contour, query) if mode == "separate" else (contour,))
    return replace(job, request=request, images=images, key=cache_key(dict(options.identity), request, options.repeat))


def _stand_in(job: Job, mode: str, system: str, instruction: str, options: HybridOptions) -> Job:
    """The request a gated job would have sent, with the query standing in for its contour image
    (same size, same tokens): what the estimate prices as saved."""
    if mode == "none":
        return job
    query = job.images[-1]
    return _contour_job(job, mode, system, instruction, query.path, query.ref.sha256, options)


def hybrid_plan(plan: SubsetPlan, options: HybridOptions, *, out_dir: Path, run_name: str) -> tuple[SubsetPlan, GateCount]:
    """The hybrid version of one MLLM plan (see the module docstring), writing to `out_dir`."""
    maps = options.detector.subset_maps(plan.subset)
    threshold = subset_threshold(maps, options.threshold, options.detector)
    prompt_name, system, instruction = plan.prompt_name, "", ""
    refs = len(plan.jobs[0].images) - 1 if plan.jobs else 0
    if options.contour != "none" and plan.jobs:
        prompt_name, system, instruction = contour_prompt(plan.subset, options, refs)
    decisions = [decide(maps, job.path, threshold) for job in plan.jobs]
    drawn = {}
    if options.contour != "none":
        # (an anomalous decision always has its map's row)
        wanted = [(job, d.row) for job, d in zip(plan.jobs, decisions) if d.verdict == "anomalous" and d.row is not None]
        rendered = render_many([ContourRequest(job.query, maps.maps[row], threshold.value, job.images[-1].ref.sha256,
                                               maps.map_digest(row)) for job, row in wanted], options.contour_dir)
        drawn = {job.key: image for (job, _), image in zip(wanted, rendered)}
    jobs, gated, missing = [], 0, 0
    for job, decision in zip(plan.jobs, decisions):
        extra = {**job.extra, **gate_fields(decision, options.detector)}
        if decision.verdict != "anomalous":
            stand_in = _stand_in(job, options.contour, system, instruction, options)
            local = gate_local(decision, {"score": 0.0, "reason": decision.reason})
            jobs.append(replace(stand_in, key=gate_key(options.detector, maps, decision, stand_in.key), extra=extra,
                                local=local))
            gated += decision.normal
            missing += not decision.normal
            continue
        if options.contour == "none":
            jobs.append(replace(job, extra=extra))
            continue
        image = drawn[job.key]
        if isinstance(image, OSError):  # the detector read it, so this is rare: say so in the record
            reason = f"cannot draw the contour on {job.query}: {type(image).__name__}: {image}"
            jobs.append(replace(job, key=gate_key(options.detector, maps, decision, job.key), extra=extra,
                                local={"source": "gate", "status": "error", "fields": {}, "reason": reason}))
            missing += 1
            continue
        jobs.append(replace(_contour_job(job, options.contour, system, instruction, image.path, image.sha256,
                                         options), extra=extra))
    csv_path, jsonl_path = result_paths(out_dir, run_name, plan.subset)
    hybrid = replace(plan, prompt_name=prompt_name, jobs=tuple(jobs), csv_path=csv_path, jsonl_path=jsonl_path,
                     task=HYBRID_SCORE)
    return hybrid, GateCount(plan.subset.label, threshold, maps.sha256, gated, len(jobs) - gated - missing, missing)


def hybrid_suffix(detector: DetectorRun, contour: str, threshold: float | None) -> str:
    """What the run name gains: `+hybrid-<detector run>[-contour|-onquery][+gate<t>]`."""
    from mmad.engine.jobs import safe_name
    mode = {"none": "", "separate": "-contour", "on-query": "-onquery"}[contour]
    gate = f"+gate{threshold:g}" if threshold is not None else ""
    return f"+hybrid-{safe_name(detector.name)}{mode}{gate}"


def hybrid_settings(options: HybridOptions, counts: list[GateCount]) -> dict:
    """What run.json records of the hybrid (a change in any of it is another run)."""
    return {"detector_run": options.detector.name, "detector_settings": options.detector.settings,
            "maps_sha256": {c.label: c.maps_sha256 for c in counts},
            "threshold_rule": "given" if options.threshold is not None else "max of held-out normal image scores",
            "thresholds": {c.label: c.threshold.value for c in counts}, "contour": options.contour}


def check_not_contour_prompt(prompt_choice: str | None, prompts_dir: Path) -> None:
    """A contour prompt without --hybrid would describe an image that is never sent: refuse."""
    if not prompt_choice:
        return
    layout = prompt_layout(load_prompt(prompt_choice, prompts_dir).source)
    if layout in PROMPT_SUFFIX.values():
        mode = "separate" if layout == "contour" else "on-query"
        raise ConfigError(f"prompt {prompt_choice!r} shows a detector's contour image; it needs "
                          f"--hybrid DETECTOR_RUN --hybrid-contour {mode}")


def gate_counts(csv_paths: list[Path]) -> dict[str, tuple[int, int, str]]:
    """Per hybrid run: (rows decided by the gate, rows, the detector run's name), from the
    `Decided By` column of its CSVs (files without it are not hybrid results and are skipped)."""
    from mmad.results.runinfo import read_run_info
    out: dict[str, tuple[int, int, str]] = {}
    for path in csv_paths:
        try:
            with open_file(path, "r", encoding="utf-8", newline="") as handle:
                rows = list(csv.reader(handle))
        except (OSError, UnicodeDecodeError):
            continue
        if not rows or HYBRID_HEADER[-1] not in rows[0]:
            continue
        column = rows[0].index(HYBRID_HEADER[-1])
        gated = sum(1 for row in rows[1:] if len(row) > column and row[column] == "gate")
        info = read_run_info(path.parent) or {}
        run = str(info.get("run") or path.parent.name)
        detector = str((info.get("settings") or {}).get("hybrid", {}).get("detector_run", "the detector"))
        before = out.get(run, (0, 0, detector))
        out[run] = (before[0] + gated, before[1] + len(rows) - 1, detector)
    return out
