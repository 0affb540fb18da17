"""CLI of the detector + MLLM hybrid: `mmad contour`, `mmad classify`, the `--hybrid` hook of
`mmad score` / `mmad estimate` (`apply_hybrid`, called from cli_score.prepare_runs), and the
gate note of `mmad eval` (`print_gate_notes`).
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from mmad import config
from mmad.cli_options import HelpFormatter, add_data_options, finite_float
from mmad.cli_output import console, err_console
from mmad.errors import ConfigError


def register(sub) -> None:
    """`mmad contour`, `mmad classify`, and the classify options of `mmad eval`."""
    from mmad.classify.cli import add_classify_parser, add_eval_options
    co = sub.add_parser("contour", help="draw a detector run's detected regions on the test images (PNG files)",
                        formatter_class=HelpFormatter)
    co.add_argument("detector_run", metavar="DETECTOR_RUN", help="a detector run folder (mmad score --provider patchcore)")
    add_data_options(co)
    co.add_argument("--out", required=True, help="folder for the PNGs (<out>/<dataset>/<subset>/<template path>)")
    co.add_argument("--gate-threshold", type=finite_float,
                    help="one threshold for every subset (default: per subset, the largest image score of the "
                         "detector's held-out normal images)")
    co.set_defaults(func=cmd_contour)
    add_classify_parser(sub)
    if "eval" in sub.choices:
        add_eval_options(sub.choices["eval"])


# --------------------------------------------------------------------------- mmad contour

def cmd_contour(args: argparse.Namespace) -> int:
    import csv
    import io

    from mmad import datasets
    from mmad.contours import contour_png, write_bytes_atomic
    from mmad.gate import decide, open_detector_run, subset_threshold
    from mmad.results import atomic_write_text
    detector = open_detector_run(args.detector_run)
    subsets = datasets.resolve(config.data_root(args.root), args.dataset, args.subset)
    out = Path(args.out)
    for subset in subsets:
        maps = detector.subset_maps(subset)
        threshold = subset_threshold(maps, args.gate_threshold, detector)
        template = datasets.load_subset(subset)
        folder = out / subset.dataset / subset.subset
        rows, drawn, below, missing = [], 0, 0, 0
        for rel in template.paths:
            decision = decide(maps, rel, threshold)
            if decision.verdict != "anomalous":
                below += decision.normal
                missing += not decision.normal
                rows.append((rel, "" if decision.score is None else repr(decision.score), decision.verdict, "", ""))
                continue
            data, pixels = contour_png(subset.test_root / rel, maps.maps[decision.row], threshold.value)
            target = folder / Path(rel).with_suffix(".png")
            write_bytes_atomic(target, data)
            drawn += 1
            rows.append((rel, repr(decision.score), decision.verdict, str(pixels), str(target.relative_to(folder))))
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(("path", "detector_score", "gate", "red_pixels", "contour_file"))
        writer.writerows(rows)
        atomic_write_text(folder / "contours.csv", buffer.getvalue())
        note = f", {missing} without a detector score" if missing else ""
        console.print(f"{subset.label}: threshold {threshold.describe()}; {drawn} of {len(template.paths)} images at "
                      f"or above it -> {drawn} contour PNGs in {folder} ({below} below: none drawn{note}); "
                      f"index {folder / 'contours.csv'}", markup=False, highlight=False, soft_wrap=True)
    return 0


# --------------------------------------------------------------------------- mmad score --hybrid

def apply_hybrid(args: argparse.Namespace, provider, runs: list, memo) -> list:
    """The hook of `prepare_runs`: with --hybrid, every run becomes its hybrid version (new name,
    folder, plans, run.json settings), and what the gate saves is printed; for an estimate or a
    dry run, only the jobs that would be sent stay in the plans."""
    from mmad.hybrid import HybridOptions, check_not_contour_prompt, hybrid_plan, hybrid_settings, hybrid_suffix
    from mmad.runinfo import make_run_info
    prompts_dir = config.prompts_dir(args.prompts_dir)
    detector_dir = getattr(args, "hybrid", None)
    mode = getattr(args, "hybrid_contour", "none") or "none"
    if not detector_dir:
        if getattr(args, "gate_threshold", None) is not None or mode != "none":
            raise ConfigError("--gate-threshold and --hybrid-contour need --hybrid DETECTOR_RUN")
        for run in runs:
            check_not_contour_prompt(run.variant.prompt, prompts_dir)
        return runs
    from mmad.gate import open_detector_run
    detector = open_detector_run(detector_dir)
    contour_dir = config.cache_dir(args.cache_dir) / "contours"
    hybrid_runs, report = [], []
    for run in runs:
        if mode == "none":
            check_not_contour_prompt(run.variant.prompt, prompts_dir)
        options = HybridOptions(detector, args.gate_threshold, mode, contour_dir, prompts_dir, run.variant.prompt,
                                provider.identity(), run.variant.repeat)
        name = run.run_name + hybrid_suffix(detector, mode, args.gate_threshold)
        out_dir = Path(args.out) if len(runs) == 1 and args.out else Path(args.out or "results") / name
        built = [hybrid_plan(plan, options, out_dir=out_dir, run_name=name) for plan in run.plans]
        plans, counts = [plan for plan, _ in built], [count for _, count in built]
        info = make_run_info(name, "mllm", dict(run.run_info["settings"], hybrid=hybrid_settings(options, counts)))
        hybrid_runs.append(replace(run, run_name=name, out_dir=out_dir, plans=plans, run_info=info))
        report.append((run, name, plans, counts))
    planning = getattr(args, "estimate_only", False) or getattr(args, "dry_run", False)
    _print_gate_report(args, provider, detector, report, to_stdout=planning and not getattr(args, "json", False))
    if not planning:
        return hybrid_runs
    kept = [replace(run, plans=[replace(plan, jobs=tuple(j for j in plan.jobs if j.local is None))
                                for plan in run.plans]) for run in hybrid_runs]
    if not any(plan.jobs for run in kept for plan in run.plans):
        raise ConfigError("every job is decided by the detector gate: nothing would be sent (run `mmad score` "
                          "without --dry-run to record the gate's decisions)")
    # the first plan of each run must have a job (the dry run prints its first request)
    return [replace(run, plans=sorted(run.plans, key=lambda plan: not plan.jobs)) for run in kept]


def _print_gate_report(args, provider, detector, report, *, to_stdout: bool) -> None:
    if getattr(args, "quiet", False) and not to_stdout:
        return
    out = console if to_stdout else err_console
    saved = _saved_usd(args, provider, report) if to_stdout else {}
    for run, name, plans, counts in report:
        out.print(f"hybrid {name}: gate = detector run {detector.name} ({detector.folder})", markup=False,
                  highlight=False)
        for count in counts:
            missing = f", {count.missing} without a detector score (error records)" if count.missing else ""
            out.print(f"  {count.label}: threshold {count.threshold.describe()}: {count.gated} of "
                      f"{count.gated + count.sent + count.missing} jobs gated (score 0 from the detector, not sent), "
                      f"{count.sent} to {run.variant.model}{missing}", markup=False, highlight=False, soft_wrap=True)
        gated = sum(c.gated for c in counts)
        total = sum(c.gated + c.sent + c.missing for c in counts)
        money = saved.get(name)
        dollars = f"; saves ~${money[0]:,.4f} of ~${money[1]:,.4f} (plain prices, jobs not already in the " \
                  f"response cache)" if money else ""
        out.print(f"  total: {gated} of {total} jobs decided by the gate, {total - gated} calls to the model"
                  f"{dollars}", markup=False, highlight=False, soft_wrap=True)


def _saved_usd(args, provider, report) -> dict[str, tuple[float, float]]:
    """Per run: (what the gated jobs would have cost, what all jobs would), when the model is priced."""
    from mmad.cache import ResponseCache, cache_key
    from mmad.cost import TokenCounter, estimate_plan, load_prices
    prices = load_prices(getattr(args, "prices", None))
    out = {}
    cache = ResponseCache(config.cache_dir(args.cache_dir))
    try:
        for run, name, plans, _ in report:
            model = run.variant.model
            price = prices.lookup(model)
            if price is None:
                continue
            counter = TokenCounter(provider.name, model, "high")
            gated = sent = 0.0
            identity = provider.identity()
            for plan in plans:
                # a gate job carries the request it stands in for; its own key is the gate's
                gate_jobs = tuple(replace(j, key=cache_key(identity, j.request, run.variant.repeat), local=None)
                                  for j in plan.jobs if j.local is not None and j.local.get("status") == "ok")
                live = tuple(j for j in plan.jobs if j.local is None)
                gated += estimate_plan(replace(plan, jobs=gate_jobs), provider.name, model, price, cache, counter).plain
                sent += estimate_plan(replace(plan, jobs=live), provider.name, model, price, cache, counter).plain
            out[name] = (gated, gated + sent)
    finally:
        cache.close()
    return out


# --------------------------------------------------------------------------- mmad eval

def print_gate_notes(records) -> None:
    """After `mmad eval`: per hybrid run, how many rows the detector gate decided (from the JSONL)."""
    from mmad.hybrid import gate_counts
    for run, (gated, total, detector) in gate_counts([Path(r.source) for r in records if r.source]).items():
        err_console.print(f"note: {run}: {gated} of {total} row(s) decided by the detector gate (score 0 from "
                          f"{detector}; source \"gate\" in the JSONL, \"gate\" in the CSV's Decided By)",
                          markup=False, highlight=False, soft_wrap=True)
