"""`mmad classify` (anomaly classification on the shared engine) and `mmad eval --task classify`."""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import json
import math
from dataclasses import dataclass, replace
from pathlib import Path

from mmad import config
from mmad.cli.options import (
    HelpFormatter,
    add_base_url_option,
    add_data_options,
    add_engine_options,
    add_model_option,
    add_provider_option,
    cache_help,
    finite_float,
    max_tokens,
    nonneg_int,
    positive_float,
    run_name,
    temperature,
)
from mmad.cli.output import console, err_console, print_rows
from mmad.data import datasets
from mmad.errors import ConfigError, DataError

DEFAULT_OUT = "results-classify"


def register(sub) -> None:
    """`mmad classify`."""
    cl = sub.add_parser("classify", help="which anomaly class an image shows (VELM), with an MLLM and optionally "
                                         "a detector run's gate and contours", formatter_class=HelpFormatter)
    add_provider_option(cl, ("openai", "anthropic"), "the MLLM API")
    add_data_options(cl)
    cl.add_argument("--variant", choices=("raw", "conditioned"), default="raw",
                    help="raw: reference + query; conditioned: + the query with the detector's red contour")
    cl.add_argument("--detector-run", metavar="RUN", help="a detector run: images it calls normal are predicted "
                    "'good' by the gate (not sent); needed by the conditioned variant")
    cl.add_argument("--gate-threshold", type=finite_float, help="with --detector-run: one threshold for every subset "
                    "(default: per subset, the largest score of the detector's held-out normal images)")
    cl.add_argument("--classes", help="class descriptions: TOML, or VELM's own *_des.json (default: the packaged "
                                      "file of the dataset)")
    cl.add_argument("--prompt", default="velm", help="velm (VELM's paragraph, no system message, no image labels), "
                                                     "mmad (mmad's wording), or a prompt file")
    cl.add_argument("--images", choices=("velm", "mmad"), default="velm",
                    help="velm: every image 448x448 PNG; mmad: the MAD-Bench scripts' height rule")
    cl.add_argument("--reference", choices=("velm", "train"), default="velm",
                    help="velm: the category's test/good/000.png (as VELM); train: the first train/good image")
    cl.add_argument("--contour-source", choices=("detector", "masks"), default="detector",
                    help="conditioned variant: the contour of the detector's map, or of the ground-truth masks "
                         "(VELM's source)")
    cl.add_argument("--answer-mapping", choices=("velm", "mmad"), default="velm",
                    help="velm: the answer must be a class's display name (any case), else unknown; mmad: also "
                         "numbers, single mentions, close spellings")
    add_model_option(cl, "gpt-4o / claude-3-5-sonnet-latest")
    add_base_url_option(cl)
    cl.add_argument("--temperature", type=temperature, default=0.0, help="sampling temperature")
    cl.add_argument("--max-tokens", type=max_tokens, default=128, help="VELM allows Qwen2-VL 128 new tokens")
    cl.add_argument("--timeout", type=positive_float, default=120.0, help="seconds for a whole answer (a deadline per attempt, not per read)")
    cl.add_argument("--out", help=f"output folder (default {DEFAULT_OUT}/<run-name>)")
    cl.add_argument("--run-name", type=run_name, help="file-name prefix (default <model>+classify-<variant>[+<detector run>])")
    cl.add_argument("--cache-dir", help=cache_help())
    cl.add_argument("--prices", help="price file (default $MMAD_PRICES or the packaged prices)")
    cl.add_argument("--no-prompt-cache", dest="prompt_cache", action="store_false",
                    help="do not mark the fixed prefix for provider prompt caching")
    cl.add_argument("--estimate", dest="estimate_only", action="store_true",
                    help="tokens and USD the run would spend (cached jobs are free); send nothing")
    cl.add_argument("-v", "--verbose", action="store_true", help="with --estimate: a row per subset")
    add_engine_options(cl)
    cl.set_defaults(func=cmd_classify)


def add_eval_options(ev: argparse.ArgumentParser) -> None:
    group = ev.add_argument_group("--task classify")
    group.add_argument("--groups", help="negligible-vs-critical grouping: per subset two named lists of classes "
                                        "(TOML) (default: VELM's random grouping)")
    group.add_argument("--group-seeds", type=nonneg_int, default=5,
                       help="seeds of the random grouping (mean ± std over them); 0 = no grouping table")
    group.add_argument("--grouping-rule", choices=("velm", "mmad"), default="velm",
                       help="velm: VELM's draw (Python random.shuffle per seed), unknown answers counted as critical, "
                            "± = mean of per-category stds; mmad: numpy draw per category, unknown always wrong, "
                            "± = std of the category mean")


def _run_name(args: argparse.Namespace, model: str, gate) -> str:
    """<model>+classify-<variant>, then every non-default choice."""
    from mmad.engine.jobs import safe_name
    name = f"{safe_name(model)}+classify-{args.variant}"
    if gate:
        name += f"+{safe_name(gate.detector.name)}"
    if args.gate_threshold is not None:
        name += f"+gate{args.gate_threshold:g}"
    for option, default in (("prompt", "velm"), ("images", "velm"), ("reference", "velm"),
                            ("answer_mapping", "velm")):
        value = getattr(args, option)
        if value != default:
            name += f"+{option.replace('_', '-')}-{safe_name(Path(value).stem)}"
    if args.variant == "conditioned" and args.contour_source != "detector":
        name += f"+contour-{args.contour_source}"
    return name


@dataclass(frozen=True)
class ClassifyVariant:
    """What VariantRun and the meter need of a classification run."""

    model: str
    repeat: int = 0
    prompt: str | None = None


def resolve_subsets(args) -> tuple[list[datasets.Subset], bool]:
    """(subsets, folder layout?): MAD-Bench templates first, else the MVTec-AC / VisA-AC layout."""
    from mmad.classify.truth import folder_layout_subsets
    root = config.data_root(args.root)
    try:
        return datasets.resolve(root, args.dataset, args.subset), False
    except DataError as error:
        folders = folder_layout_subsets(root, args.dataset, args.subset)
        if folders is None:
            raise error from None
        return folders, True


def cmd_classify(args: argparse.Namespace) -> int:
    from mmad.cache.store import ResponseCache
    from mmad.classify.classes import load_class_file, packaged_class_file
    from mmad.classify.plan import ClassifyOptions, GateSettings, build_classify_plans
    from mmad.classify.prompt import load_classify_prompt
    from mmad.data.filememo import FileMemo
    from mmad.hybrid.gate import open_detector_run
    from mmad.providers.factory import DEFAULT_MODELS, make_provider
    from mmad.results.runinfo import make_run_info
    from mmad.scoring.runs import VariantRun

    subsets, folder_layout = resolve_subsets(args)
    class_path = Path(args.classes) if args.classes else packaged_class_file(args.dataset)
    if not args.classes and not class_path.is_file():
        raise ConfigError(f"no packaged class descriptions for dataset {args.dataset!r}; give --classes FILE")
    class_file = load_class_file(class_path)
    prompt = load_classify_prompt(args.variant, args.prompt)
    if args.gate_threshold is not None and not args.detector_run:
        raise ConfigError("--gate-threshold needs --detector-run RUN")
    if args.batch and args.detector_run:
        raise ConfigError("--batch with --detector-run: batch submission would send the gate's jobs too; run live")
    planning = args.estimate_only or args.dry_run
    provider = make_provider(args.provider, base_url=args.base_url, timeout=args.timeout, dry_run=planning,
                             prompt_caching=args.prompt_cache)
    cache_dir = config.cache_dir(args.cache_dir)
    gate = None
    if args.detector_run:
        gate = GateSettings(open_detector_run(args.detector_run), args.gate_threshold)
    model = args.model or DEFAULT_MODELS[args.provider]
    run_name = args.run_name or _run_name(args, model, gate)
    out_dir = Path(args.out) if args.out else Path(DEFAULT_OUT) / run_name
    opts = ClassifyOptions(provider.identity(), model, args.variant, args.temperature, args.max_tokens, args.images,
                           args.reference, args.contour_source, args.answer_mapping, contour_dir=cache_dir / "contours")
    plans, reports = build_classify_plans(subsets, class_file=class_file, prompt=prompt, opts=opts, out_dir=out_dir,
                                          run_name=run_name, gate=gate, folder_layout=folder_layout,
                                          memo=FileMemo(cache_dir))
    from mmad.config import asset
    published = {"prompt": prompt.source == asset("classify", f"velm-{args.variant}.toml"),
                 "images": args.images == "velm",
                 "reference": args.reference == "velm", "answer_mapping": args.answer_mapping == "velm",
                 "temperature": args.temperature == 0.0}
    if args.variant == "conditioned":
        published["contour_source"] = args.contour_source == "masks"
    settings = {"task": "classify", "provider": provider.name, "base_url": provider.base_url, "model": model,
                "variant": args.variant, "prompt": {"file": prompt.source.name, "layout": prompt.layout,
                                                    "system": prompt.system, "text": prompt.text,
                                                    "classes": prompt.classes_block}, "refs": prompt.refs,
                "temperature": args.temperature, "max_tokens": args.max_tokens, "images": args.images,
                "reference": args.reference, "references": {r.label: list(r.references) for r in reports},
                "contour_source": args.contour_source if args.variant == "conditioned" else None,
                "answer_mapping": args.answer_mapping,
                "protocol": {k: "published" if v else "mmad option" for k, v in published.items()},
                "classes": {"file": class_path.name, "sha256": class_file.sha256,
                            "names": {r.label: list(r.classes) for r in reports},
                            "order": class_file.order(), "display": class_file.display_names()},
                "hybrid": None if gate is None else {
                    "detector_run": gate.detector.name, "detector_settings": gate.detector.settings,
                    "maps_sha256": {r.label: r.maps_sha256 for r in reports},
                    "threshold_rule": "given" if args.gate_threshold is not None else
                    "max of held-out normal image scores",
                    "thresholds": {r.label: r.threshold.value for r in reports if r.threshold is not None}}}
    run = VariantRun(ClassifyVariant(model), run_name, out_dir, plans, make_run_info(run_name, "mllm", settings))
    _print_plan_report(run, reports, gate, to_stdout=planning and not getattr(args, "json", False),
                       quiet=args.quiet)
    cache = ResponseCache(cache_dir)
    try:
        if planning:
            kept = [replace(plan, jobs=tuple(j for j in plan.jobs if j.local is None)) for plan in plans]
            if not any(plan.jobs for plan in kept):
                raise ConfigError("nothing would be sent: every image is decided by the detector gate or left out")
            run = replace(run, plans=sorted(kept, key=lambda plan: not plan.jobs))
            if args.estimate_only:
                from mmad.cli.estimate import estimate
                return estimate(args, provider, cache, [run])
            from mmad.cli.estimate import dry_run
            return dry_run(provider, cache, [run], start_over=args.fresh)
        from mmad.cli.score import score_with_progress
        return asyncio.run(score_with_progress(args, provider, cache, [run]))
    finally:
        cache.close()


def _print_plan_report(run, reports, gate, *, to_stdout: bool, quiet: bool) -> None:
    if quiet and not to_stdout:
        return
    out = console if to_stdout else err_console
    for r in reports:
        parts = [f"{r.items} images"]
        if gate is None:
            parts.append(f"{r.left_out_normal} normal images left out (no --detector-run: only known anomalies are "
                         f"asked)")
        else:
            parts.append(f"{r.gated} predicted 'good' by the gate ({gate.detector.name}, threshold "
                         f"{r.threshold.describe()})")
            if r.missing:
                parts.append(f"{r.missing} without a detector score (error records)")
        asked = r.items - r.left_out_normal - r.gated - r.missing
        parts.append(f"{asked} to {run.variant.model}")
        out.print(f"classify {r.label}: " + "; ".join(parts), markup=False, highlight=False, soft_wrap=True)


# --------------------------------------------------------------------------- mmad eval --task classify

def eval_classify(args: argparse.Namespace) -> int:
    from mmad.classify.evaluate import find_classify_files, read_category, run_means
    from mmad.classify.grouping import grouping
    if getattr(args, "bootstrap", 0):
        raise ConfigError("--bootstrap is not implemented for --task classify")
    results = [read_category(path) for path in find_classify_files([Path(p) for p in args.paths])]
    results.sort(key=lambda r: (r.run, r.dataset, r.subset))
    means = run_means(results)
    seeds = getattr(args, "group_seeds", 5)
    groups_file = getattr(args, "groups", None)
    groups = grouping(results, groups_file=Path(groups_file) if groups_file else None, seeds=seeds,
                      rule=getattr(args, "grouping_rule", "velm")) if (seeds or groups_file) else []
    if args.json:
        print(json.dumps({"categories": [_category_json(r) for r in results],
                          "overall": [{k: _num(v) if isinstance(v, float) else v for k, v in m.__dict__.items()}
                                      for m in means],
                          "groups": [_group_json(g) for g in groups]}, indent=1))
        return 0
    header = ["run", "dataset", "subset", "n", "dropped", "gate", "accuracy", "macro-F1", "micro-F1", "kappa"]
    rows = [[r.run, r.dataset, r.subset, str(r.scores.n), str(r.dropped), str(r.gated), _fmt(r.scores.accuracy),
             _fmt(r.scores.macro_f1), _fmt(r.scores.micro_f1), _fmt(r.scores.kappa)] for r in results]
    mean_rows = [[m.run, "overall", f"mean of {m.categories}", "", "", "", _fmt(m.accuracy), _fmt(m.macro_f1),
                  _fmt(m.micro_f1), _fmt(m.kappa)] for m in means]
    if args.csv:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow([h.lower().replace("-", "_") for h in header])
        for r in results:
            writer.writerow([r.run, r.dataset, r.subset, r.scores.n, r.dropped, r.gated] + [
                "" if math.isnan(v) else repr(v) for v in (r.scores.accuracy, r.scores.macro_f1, r.scores.micro_f1,
                                                          r.scores.kappa)])
        for m in means:
            writer.writerow([m.run, "overall", f"mean of {m.categories}", "", "", ""] + [
                "" if math.isnan(v) else repr(v) for v in (m.accuracy, m.macro_f1, m.micro_f1, m.kappa)])
        print(buffer.getvalue(), end="")
        return 0
    print_rows("Anomaly classification (overall = mean over categories)", header, rows, mean_rows,
               markdown=args.markdown)
    for r in results:
        _print_confusion(r, markdown=args.markdown)
    for g in groups:
        how = (f"VELM's random grouping, mean ± mean per-category std over {g.seeds} seeds" if g.rule == "velm"
               else f"mmad's random grouping, mean ± std over {g.seeds} seeds" if g.seeds
               else f"grouping {groups_file}")
        text = ", ".join(f"{name} {_fmt(g.mean[name])}" + (f" ± {_fmt(g.std[name])}" if g.seeds else "")
                         for name in g.groups)
        print(f"{g.run}: negligible anomaly vs critical defect ({how}): accuracy {text}")
    dropped = sum(r.dropped for r in results)
    if dropped:
        err_console.print(f"note: {dropped} row(s) without a prediction were dropped (failed jobs), not imputed",
                          markup=False)
    gated = sum(r.gated for r in results)
    if gated:
        err_console.print(f"note: {gated} row(s) were predicted 'good' by the detector gate (Decided By = gate), "
                          f"not by the model", markup=False)
    return 0


def _print_confusion(r, *, markdown: bool) -> None:
    labels = list(r.scores.labels)
    width = max([len(x) for x in labels] + [4])
    print(f"\nconfusion matrix {r.run} {r.label} (rows: true, columns: predicted)")
    if markdown:
        print("| true \\ predicted | " + " | ".join(labels) + " |")
        print("|" + "---|" * (len(labels) + 1))
        for label, row in zip(labels, r.scores.matrix):
            print(f"| {label} | " + " | ".join(str(v) for v in row) + " |")
        return
    print(" " * width + "  " + "  ".join(f"{x:>{width}}" for x in labels))
    for label, row in zip(labels, r.scores.matrix):
        print(f"{label:>{width}}  " + "  ".join(f"{v:>{width}}" for v in row))


def _fmt(value: float) -> str:
    return "—" if value is None or math.isnan(value) else f"{value:.3f}"


def _num(value):
    return None if isinstance(value, float) and math.isnan(value) else value


def _category_json(r) -> dict:
    s = r.scores
    return {"run": r.run, "dataset": r.dataset, "subset": r.subset, "source": str(r.source), "n": s.n,
            "dropped": r.dropped, "gated": r.gated, "accuracy": _num(s.accuracy), "macro_f1": _num(s.macro_f1),
            "micro_f1": _num(s.micro_f1), "kappa": _num(s.kappa),
            "confusion": {"labels": list(s.labels), "matrix": s.matrix.tolist()}}


def _group_json(g) -> dict:
    return {"run": g.run, "seeds": g.seeds, "rule": g.rule, "groups": list(g.groups),
            "mean": {k: _num(v) for k, v in g.mean.items()}, "std": {k: _num(v) for k, v in g.std.items()}}
