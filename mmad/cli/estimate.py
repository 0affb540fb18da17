"""`mmad estimate` and `mmad score --dry-run`: what a run would send and cost, per variant."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace

from rich.table import Table

from mmad.cli.output import console, err_console
from mmad.cost.estimate import Estimate, TokenCounter, estimate_plan, load_prices
from mmad.data.images import EncodedImage, ImageRef
from mmad.errors import ConfigError
from mmad.scoring.runs import folder_conflict
from mmad.scoring.session import make_meter


def _usd(value) -> str:
    return "no price" if value is None else f"${value:,.2f}"


def estimate(args, provider, cache, runs) -> int:
    prices = load_prices(args.prices)

    async def counted():
        try:  # an estimate never enforces a budget
            meter = await make_meter(provider, runs, prices=args.prices, max_cost=None,
                                     prompt_caching=args.prompt_cache, calibrate=True, notes=_note)
            return meter.counter
        finally:
            await provider.aclose()
    calibrated = asyncio.run(counted())
    per_variant = []
    total = Estimate(label="total")
    seen: set[str] = set()  # identical requests in two variants are paid once
    for run in runs:
        model = run.variant.model
        counter = TokenCounter(provider.name, model, "high")
        counter.text_scale = calibrated.text_scale
        price = prices.lookup(model)
        subsets = [estimate_plan(plan, provider.name, model, price, cache, counter, seen) for plan in run.plans]
        for item in subsets:
            item.below_cache_minimum = [f"{run.run_name} {label}" for label in item.below_cache_minimum]
        variant_total = Estimate(label=run.run_name)
        if price is not None:
            variant_total.plain = variant_total.with_caching = variant_total.with_batch = variant_total.with_both = 0.0
        for item in subsets:
            variant_total.add(item)
        per_variant.append((run, variant_total, subsets, price))
        total.add(variant_total)
    if args.json:
        print(json.dumps({
            "provider": provider.name, "prices": {"file": str(prices.path), "date": prices.date, "source": prices.source},
            "variants": [dict(v.as_json(), model=run.variant.model, priced=price is not None,
                              subsets=[s.as_json() for s in subsets]) for run, v, subsets, price in per_variant],
            "total": total.as_json()}, indent=1))
        return 0
    table = Table(title=f"estimate: {provider.name}, {len(runs)} run(s), {len(runs[0].plans)} subset(s) each")
    for column in ("run / subset", "jobs", "cached", "input tokens", "output tokens", "cache reads", "plain",
                   "with caching", "batch", "both"):
        table.add_column(column, justify="left" if column == "run / subset" else "right")

    def row(label, e, style=None):
        table.add_row(label, f"{e.jobs:,}", f"{e.cached_jobs:,}", f"{e.input_tokens:,}", f"{e.output_tokens:,}",
                      f"{e.cache_read_tokens:,}", _usd(e.plain), _usd(e.with_caching), _usd(e.with_batch),
                      _usd(e.with_both), style=style)
    for run, variant_total, subsets, price in per_variant:
        if getattr(args, "verbose", False):
            for item in subsets:
                row(f"  {item.label}", item)
        row(run.run_name, variant_total, style="bold" if len(runs) > 1 else None)
    if len(runs) > 1:
        table.add_section()
        row("total", total, style="bold")
    console.print(table)
    console.print(f"{total.jobs} jobs to send ({total.cached_jobs} more already in the response cache or identical "
                  f"to an earlier variant's: free); prices: {prices.path} (dated {prices.date})")
    for run, variant_total, _, price in per_variant:
        if price is None:
            console.print(f"no price for {run.variant.model!r} in {prices.path}: tokens only")
        if variant_total.jobs and variant_total.distinct_prefixes > len(run.plans):
            console.print(f"{run.run_name}: {variant_total.distinct_prefixes} distinct prompt prefixes "
                          f"(references chosen per query): prompt caching mostly does not apply")
    for label in sorted(set(total.below_cache_minimum)):
        err_console.print(f"warning: {label}: the fixed prefix is below the provider's minimum cacheable "
                          f"length; prompt caching will not apply", markup=False)
    return 0


def _note(line: str) -> None:
    err_console.print(line, markup=False, soft_wrap=True)


def dry_run(provider, cache, runs, *, start_over: bool = False) -> int:
    table = Table(title="dry run: nothing is sent")
    for column in ("run", "folder", "jobs", "cached", "identical", "would send"):
        table.add_column(column, justify="left" if column in ("run", "folder") else "right")
    seen: set[str] = set()
    for run in runs:
        keys = [job.key for plan in run.plans for job in plan.jobs]
        hits = sum(1 for key in keys if key in cache)
        fresh = {key for key in keys if key not in cache}
        identical = len([key for key in keys if key not in cache]) - len(fresh - seen)  # paid once, by another job
        seen |= fresh
        table.add_row(run.run_name, str(run.out_dir), str(len(keys)), str(hits), str(identical),
                      str(len(keys) - hits - identical))
    console.print(table)
    total = sum(len(plan.jobs) for run in runs for plan in run.plans)
    console.print(f"{total} jobs in {len(runs)} run(s) x {len(runs[0].plans)} subset(s); identical = the same "
                  f"request as an earlier job of this run (paid once)")
    plan = runs[0].plans[0]
    first = plan.jobs[0]
    # Number each image position so identical files (same sha256) still show where they go.
    parts: list[str | ImageRef] = []
    images: dict[str, EncodedImage] = {}
    for part in first.request.parts:
        if isinstance(part, ImageRef):
            source = first.images[len(images)]
            placeholder = ImageRef(f"{part.sha256}#{len(images)}", part.spec)
            label = source.path.name if source.path != first.query else str(first.query)
            images[placeholder.sha256] = EncodedImage(
                placeholder, "image/png", f"<elided: {label} sha256={part.sha256[:12]} prep={part.spec}>", 0, 0,
                part.detail)
            part = placeholder
        parts.append(part)
    body = provider.body(replace(first.request, parts=tuple(parts)), images)
    console.print(f"first request ({runs[0].run_name}, {plan.subset.label}, prompt {plan.prompt_name}):")
    print(json.dumps(body, indent=2, ensure_ascii=False))
    conflicts = [] if start_over else [c.refusal(run.out_dir) for run in runs
                                       if (c := folder_conflict(run)) is not None and not c.takeover]
    if conflicts:  # the real run would stop here: say so now, with the same exit code
        more = f" (and {len(conflicts) - 1} more folder(s))" if len(conflicts) > 1 else ""
        raise ConfigError(f"the run would be refused: {conflicts[0]}{more}")
    return 0
