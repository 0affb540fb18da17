"""The request an item sent, rebuilt from its run.json and today's files with the library's own job
builders (mmad.jobs, mmad.hybrid, mmad.classify.plan, mmad.qa.jobs), one item at a time.

The rebuilt request's cache key is compared with the key in the item's record: equal means the
images and text shown are byte for byte what was sent (the key hashes every part); different means
the data, a prompt file or the settings changed since, and the page says so. Images are prepared
exactly as the engine prepares them (mmad.images.encode_file: resized, re-encoded, corrupted; a
hybrid's contour drawn). Nothing is written beside the results: a one-row template and any contour
go to the view's own temporary folder.
"""

from __future__ import annotations

import base64
import csv
import dataclasses
import io
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from mmad.data import datasets
from mmad.data.filememo import FileMemo
from mmad.data.images import ImageRef, ImageSpec, encode_file
from mmad.errors import MmadError
from mmad.view.catalog import ResultFile, RunFiles

if TYPE_CHECKING:
    from mmad.engine.work import ImageInput
    from mmad.providers.base import Request


class Unavailable(Exception):
    """Why the request cannot be rebuilt (one line for the item page)."""


@dataclass(frozen=True)
class SentImage:
    label: str  # the text before it in the message ("Normal Image 1:", "Inference Image :", ...)
    path: Path
    spec: ImageSpec


@dataclass
class Rebuilt:
    system: str
    parts: list[dict]  # {"text": str} or {"image": index into images}
    images: list[SentImage]
    key: str | None
    history: list[dict] = field(default_factory=list)  # earlier turns (QA cumulative): role, parts
    note: str = ""
    sent: bool = True  # False: decided without a request (a gate), or a detector run
    extra: dict = field(default_factory=dict)  # QA: the question, its options, the right letter

    def matches(self, record: dict | None) -> bool | None:
        recorded = (record or {}).get("key")
        return None if not recorded or self.key is None else recorded == self.key


@dataclass
class Context:
    """What rebuilding needs besides the run: where the data, prompts and QA set are, a scratch
    folder, and the detector runs (by name) a hybrid or classify run was gated by."""

    data_root: Path
    prompts_dir: Path
    qa_root: Path
    scratch: Path
    detectors: dict[str, Path] = field(default_factory=dict)
    _benchmarks: dict = field(default_factory=dict, repr=False)


def identity(settings: dict) -> dict[str, str]:
    ident = {"provider": str(settings.get("provider"))}
    if settings.get("base_url"):
        ident["base_url"] = str(settings["base_url"]).rstrip("/")
    return ident


def _images_and_parts(request: Request, images: Sequence[ImageInput]) -> tuple[list[dict], list[SentImage]]:
    """The request's parts in order, images by index; an image is labelled by the text before it
    ("Normal Image 1:"), or by its place when none precedes it (QA: the templates, then the query)."""
    parts: list[dict[str, str | int]] = []
    sent: list[SentImage] = []
    previous = ""
    by_ref: dict[tuple[str, str], ImageInput] = {}
    for image in images:
        by_ref.setdefault((image.ref.sha256, image.ref.spec), image)
    count = sum(isinstance(part, ImageRef) for part in request.parts)
    for part in request.parts:
        if isinstance(part, ImageRef):
            source = by_ref[(part.sha256, part.spec)]
            place = "query image" if len(sent) == count - 1 else f"template image {len(sent) + 1}"
            sent.append(SentImage(previous.strip() or place, source.path, source.spec))
            parts.append({"image": len(sent) - 1})
            previous = ""
        else:
            parts.append({"text": str(part)})
            previous = str(part)
    return parts, sent


def _from_job(job, note: str = "") -> Rebuilt:
    parts, images = _images_and_parts(job.request, job.images)
    history = [{"role": role, "parts": [{"text": p} if isinstance(p, str) else {"text": "[image]"} for p in turn]}
               for role, turn in job.request.history]
    local = job.local is not None
    return Rebuilt(job.request.system, parts, images, None if local else job.key, history,
                   note or ("decided by the detector gate: not sent; shown is what would have been sent"
                            if local else ""), sent=not local)


def _subset(ctx: Context, result: ResultFile) -> datasets.Subset:
    try:
        return datasets.resolve(ctx.data_root, result.dataset, result.subset)[0]
    except MmadError as exc:
        raise Unavailable(f"{exc} (the view's data root is {ctx.data_root}: give --root)") from None


def _one_row(ctx: Context, subset: datasets.Subset, path: str) -> datasets.Subset:
    """The subset with a template holding only this item's row (so only its job is built)."""
    template = datasets.load_subset(subset, check_images=False)
    try:
        row = template.paths.index(path)
    except ValueError:
        raise Unavailable(f"{path} is no longer in {subset.template_path}") from None
    folder = ctx.scratch / "templates" / re.sub(r"[^A-Za-z0-9._-]+", "_", f"{subset.label}-{row}")
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / subset.template_path.name
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(("Path", "Severity"))
    writer.writerow((path, repr(float(template.severity[row]))))
    target.write_text(buffer.getvalue(), encoding="utf-8")
    return dataclasses.replace(subset, template_path=target)


def _detector(ctx: Context, hybrid: dict):
    from mmad.hybrid.gate import open_detector_run
    name = str(hybrid.get("detector_run"))
    folder = ctx.detectors.get(name)
    if folder is None:
        raise Unavailable(f"the gate's detector run {name!r} is not among the results the view reads; "
                          f"add its folder to the command line")
    return open_detector_run(folder)


def _threshold(hybrid: dict) -> float | None:
    if hybrid.get("threshold_rule") != "given":
        return None
    values = list((hybrid.get("thresholds") or {}).values())
    return float(values[0]) if values else None


def score_request(ctx: Context, run: RunFiles, result: ResultFile, path: str) -> Rebuilt:
    from mmad.engine.jobs import build_plans
    from mmad.scoring.variants import Variant
    settings = run.settings
    fields = {f.name for f in dataclasses.fields(Variant)}
    variant = Variant(**{k: v for k, v in settings.items() if k in fields and v is not None})
    subset = _one_row(ctx, _subset(ctx, result), path)
    plans = build_plans([subset], variant.plan_options(identity(settings), ctx.prompts_dir),
                        out_dir=ctx.scratch / "out", run_name="view", memo=FileMemo(None), hash_workers=2)
    plan = plans[0]
    hybrid = settings.get("hybrid")
    if isinstance(hybrid, dict):
        from mmad.hybrid.plans import HybridOptions, hybrid_plan
        options = HybridOptions(_detector(ctx, hybrid), _threshold(hybrid), str(hybrid.get("contour") or "none"),
                                ctx.scratch / "contours", ctx.prompts_dir, variant.prompt, identity(settings),
                                variant.repeat)
        plan, _ = hybrid_plan(plan, options, out_dir=ctx.scratch / "out", run_name="view")
    return _from_job(plan.jobs[0])


def classify_request(ctx: Context, run: RunFiles, result: ResultFile, path: str) -> Rebuilt:
    from mmad.classify.classes import load_class_file, packaged_class_file
    from mmad.classify.plan import ClassifyOptions, GateSettings, build_classify_plans
    from mmad.classify.prompt import ClassifyPrompt
    settings = run.settings
    classes = settings.get("classes") or {}
    packaged = packaged_class_file(result.dataset)
    if classes.get("file") != packaged.name or not packaged.is_file():
        raise Unavailable(f"the run's class file {classes.get('file')!r} is not a packaged one; the view rebuilds "
                          f"requests of packaged class files only")
    class_file = load_class_file(packaged)
    if classes.get("sha256") and class_file.sha256 != classes["sha256"]:
        raise Unavailable(f"the packaged class file {packaged.name} changed since the run")
    kept = settings.get("prompt") or {}  # run.json keeps the prompt's text whole
    prompt = ClassifyPrompt(Path(str(kept.get("file", "prompt"))).stem, Path(str(kept.get("file", "prompt"))),
                            str(kept.get("layout", "mmad")), str(kept.get("system", "")), str(kept.get("text", "")),
                            str(kept.get("classes", "")), int(settings.get("refs", 1)))
    opts = ClassifyOptions(identity(settings), str(settings.get("model")), str(settings.get("variant", "raw")),
                           settings.get("temperature"), int(settings.get("max_tokens", 128)),
                           str(settings.get("images", "velm")), str(settings.get("reference", "velm")),
                           str(settings.get("contour_source") or "detector"),
                           str(settings.get("answer_mapping", "velm")), contour_dir=ctx.scratch / "contours")
    hybrid = settings.get("hybrid")
    gate = GateSettings(_detector(ctx, hybrid), _threshold(hybrid)) if isinstance(hybrid, dict) else None
    subset = _one_row(ctx, _subset(ctx, result), path)
    plans, _ = build_classify_plans([subset], class_file=class_file, prompt=prompt, opts=opts,
                                    out_dir=ctx.scratch / "out", run_name="view", gate=gate, folder_layout=False,
                                    memo=FileMemo(None))
    jobs = [job for job in plans[0].jobs if job.path == path]
    if not jobs:
        raise Unavailable("a normal image of a run without a detector gate is not asked")
    return _from_job(jobs[0])


def qa_request(ctx: Context, run: RunFiles, result: ResultFile, question_id: str, record: dict | None) -> Rebuilt:
    from mmad.engine.records import best_records
    from mmad.qa.data import load_benchmark
    from mmad.qa.jobs import QAOptions, build_qa_plans
    from mmad.qa.prompt import load_qa_prompt
    from mmad.results.files import JsonlLog
    s = run.settings
    marker = (str(ctx.qa_root), s.get("templates", "random"), int(s.get("shots", 1)), bool(s.get("domain_knowledge")))
    if marker not in ctx._benchmarks:
        try:
            ctx._benchmarks[marker] = load_benchmark(ctx.qa_root, templates=marker[1], shots=marker[2],
                                                     knowledge=marker[3])
        except MmadError as exc:
            raise Unavailable(f"{exc} (the view's MMAD-QA root is {ctx.qa_root}: give --qa-root)") from None
    bench = ctx._benchmarks[marker]
    image, _, number = question_id.rpartition("#")
    entry = next((e for e in bench.entries if e.image == image), None)
    if entry is None or not number.isdigit():
        raise Unavailable(f"{image} is not in {bench.annotation}")
    published = (s.get("protocol") or {}).get("images", "published") == "published"
    options = QAOptions(identity(s), str(s.get("model")), str(s.get("mode", "cumulative")), marker[1], marker[2],
                        marker[3], s.get("detail"), int(s.get("max_tokens", 200)), s.get("temperature"),
                        "published" if published else "mmad", true_media_type=s.get("provider") == "anthropic")
    prompt = load_qa_prompt(s.get("prompt"))
    plan = build_qa_plans(dataclasses.replace(bench, entries=(entry,)), options, prompt, out_dir=ctx.scratch / "qa",
                          run_name="view", memo=FileMemo(None), workers=2,
                          answer_parsing=str(s.get("answer_parsing", "official")))[0]
    chain, index = plan.chains[0], int(number) - 1
    best = best_records(JsonlLog.read(result.jsonl)) if result.jsonl else {}
    jobs, _ = plan.builder.walk(chain, best)  # a conversation's turns carry the model's earlier replies
    job = next((j for j in jobs if j.extra.get("question_id") == question_id and j.local is None), None)
    if job is None:
        raise Unavailable("an earlier turn of this conversation failed, so this question was not asked")
    rebuilt = _from_job(job)
    question = entry.questions[index]
    rebuilt.extra = {"question": question.text, "options": [list(o) for o in question.options],
                     "correct": question.answer, "subtask": question.subtask}
    return rebuilt


def detector_images(ctx: Context, run: RunFiles, result: ResultFile, path: str) -> Rebuilt:
    from mmad.data.images import ORIGINAL_SPEC
    subset = _subset(ctx, result)
    refs = datasets.reference_images(subset, int(run.settings.get("refs", 3))) if run.settings.get("refs") else []
    size = run.settings.get("image_size", 224)
    images = [SentImage(f"Normal Image {k}", p, ORIGINAL_SPEC) for k, p in enumerate(refs, start=1)]
    images.append(SentImage("Query", subset.test_root / path, ORIGINAL_SPEC))
    return Rebuilt("", [{"image": i} for i in range(len(images))], images, None,
                   note=f"a detector run sends nothing: the files as read, which the detector resizes to "
                        f"{size}×{size} px" + (" (few-shot: fitted on the normal images shown)" if refs else ""),
                   sent=False)


def rebuild(ctx: Context, run: RunFiles, result: ResultFile, key: str, path: str, record: dict | None) -> Rebuilt:
    """The item's request (see the module docstring); Unavailable says why it cannot be rebuilt."""
    try:
        if run.kind == "detector":
            return detector_images(ctx, run, result, path)
        if run.kind == "qa":
            return qa_request(ctx, run, result, key, record)
        if run.kind == "classify":
            return classify_request(ctx, run, result, path)
        if not run.settings.get("provider"):
            raise Unavailable("no run.json with the run's settings (the reference scripts' results): nothing to rebuild")
        return score_request(ctx, run, result, path)
    except MmadError as exc:
        raise Unavailable(str(exc)) from None
    except OSError as exc:
        raise Unavailable(f"{exc.filename or 'a file'}: {exc.strerror or exc}") from None


def image_bytes(image: SentImage) -> tuple[bytes, str, int, int]:
    """The image as sent: (bytes, media type, width, height)."""
    encoded = encode_file(image.path, image.spec)
    return base64.b64decode(encoded.data), encoded.media_type, encoded.width, encoded.height


def request_text(rebuilt: Rebuilt) -> str:
    """The request as one text, images as `[image n: label]` (what `--dry-run` shows, minus bytes)."""
    lines = [f"[system]\n{rebuilt.system}"] if rebuilt.system else []
    for turn in rebuilt.history:
        lines.append(f"[{turn['role']}]\n" + "\n".join(p["text"] for p in turn["parts"]))
    body, after_text = [], False
    for part in rebuilt.parts:
        if "text" in part:
            body.append(part["text"])
        else:  # an image the text before it names ("Normal Image 1:") needs no label of its own
            index = part["image"]
            body.append(f"[image {index + 1}]" if after_text else f"[image {index + 1}: {rebuilt.images[index].label}]")
        after_text = "text" in part
    lines.append("[user]\n" + "\n".join(body))
    return "\n\n".join(lines)
