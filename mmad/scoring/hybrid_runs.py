"""`mmad score --hybrid DETECTOR_RUN`: every run becomes its gated version.

Images the detector calls normal get score 0 from the detector (recorded, never sent); the rest
go to the model, optionally with the detected region drawn as a contour. The run gets a new name,
folder and run.json settings; for an estimate or a dry run only the jobs that would be sent stay.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from mmad import config
from mmad.cache.store import ResponseCache, cache_key
from mmad.cost.estimate import TokenCounter, estimate_plan, load_prices
from mmad.errors import ConfigError
from mmad.hybrid.gate import DetectorRun, open_detector_run
from mmad.hybrid.plans import HybridOptions, check_not_contour_prompt, hybrid_plan, hybrid_settings, hybrid_suffix
from mmad.providers.base import Provider
from mmad.results.runinfo import make_run_info
from mmad.scoring.options import ScoreOptions
from mmad.scoring.runs import VariantRun


@dataclass
class GatedRun:
    """One run's gate outcome: the run it came from, its hybrid name, plans and per-subset counts."""

    source: VariantRun
    name: str
    plans: list
    counts: list


@dataclass
class GateReport:
    detector: DetectorRun
    runs: list[GatedRun]


def apply_hybrid(opts: ScoreOptions, provider: Provider, runs: list[VariantRun]) -> tuple[list[VariantRun],
                                                                                          GateReport | None]:
    """The runs as the options ask: unchanged without --hybrid, else gated (and the gate's report)."""
    prompts_dir = config.prompts_dir(opts.prompts_dir)
    mode = opts.hybrid_contour or "none"
    if not opts.hybrid:
        if opts.gate_threshold is not None or mode != "none":
            raise ConfigError("--gate-threshold and --hybrid-contour need --hybrid DETECTOR_RUN")
        for run in runs:
            check_not_contour_prompt(run.variant.prompt, prompts_dir)
        return runs, None
    detector = open_detector_run(opts.hybrid)
    contour_dir = config.cache_dir(opts.cache_dir) / "contours"
    hybrid_runs, report = [], GateReport(detector, [])
    for run in runs:
        if mode == "none":
            check_not_contour_prompt(run.variant.prompt, prompts_dir)
        options = HybridOptions(detector, opts.gate_threshold, mode, contour_dir, prompts_dir, run.variant.prompt,
                                provider.identity(), run.variant.repeat)
        name = run.run_name + hybrid_suffix(detector, mode, opts.gate_threshold)
        out_dir = Path(opts.out) if len(runs) == 1 and opts.out else Path(opts.out or "results") / name
        built = [hybrid_plan(plan, options, out_dir=out_dir, run_name=name) for plan in run.plans]
        plans, counts = [plan for plan, _ in built], [count for _, count in built]
        info = make_run_info(name, "mllm", dict(run.run_info["settings"], hybrid=hybrid_settings(options, counts)))
        hybrid_runs.append(replace(run, run_name=name, out_dir=out_dir, plans=plans, run_info=info))
        report.runs.append(GatedRun(run, name, plans, counts))
    if not opts.planning:
        return hybrid_runs, report
    kept = [replace(run, plans=[replace(plan, jobs=tuple(j for j in plan.jobs if j.local is None))
                                for plan in run.plans]) for run in hybrid_runs]
    if not any(plan.jobs for run in kept for plan in run.plans):
        raise ConfigError("every job is decided by the detector gate: nothing would be sent (run `mmad score` "
                          "without --dry-run to record the gate's decisions)")
    # the first plan of each run must have a job (the dry run prints its first request)
    return [replace(run, plans=sorted(run.plans, key=lambda plan: not plan.jobs)) for run in kept], report


def gate_savings(report: GateReport, provider: Provider, *, prices_path: str | None,
                 cache_dir: str | None) -> dict[str, tuple[float, float]]:
    """Per hybrid run: (what the gated jobs would have cost, what all jobs would), when priced."""
    prices = load_prices(prices_path)
    out = {}
    cache = ResponseCache(config.cache_dir(cache_dir))
    try:
        for gated_run in report.runs:
            model = gated_run.source.variant.model
            price = prices.lookup(model)
            if price is None:
                continue
            counter = TokenCounter(provider.name, model, "high")
            gated = sent = 0.0
            identity = provider.identity()
            repeat = gated_run.source.variant.repeat
            for plan in gated_run.plans:
                # a gate job carries the request it stands in for; its own key is the gate's
                gate_jobs = tuple(replace(j, key=cache_key(identity, j.request, repeat), local=None)
                                  for j in plan.jobs if j.local is not None and j.local.get("status") == "ok")
                live = tuple(j for j in plan.jobs if j.local is None)
                gated += estimate_plan(replace(plan, jobs=gate_jobs), provider.name, model, price, cache, counter).plain
                sent += estimate_plan(replace(plan, jobs=live), provider.name, model, price, cache, counter).plain
            out[gated_run.name] = (gated, gated + sent)
    finally:
        cache.close()
    return out
