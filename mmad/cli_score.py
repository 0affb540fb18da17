"""`mmad score`, `mmad estimate` and `mmad baseline`: build the jobs, run them, report.

Only the CLI prints; these commands turn engine events into a progress line and a summary.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.table import Table

from mmad import config, datasets
from mmad.cli_output import console, err_console
from mmad.errors import ConfigError, MmadError

DEFAULT_MODELS = {"openai": "gpt-4o", "anthropic": "claude-3-5-sonnet-latest"}


def make_provider(name: str, *, base_url: str | None, timeout: float, dry_run: bool = False,
                  prompt_caching: bool = True, detail: str | None = None):
    """The provider for --provider; keys come from the environment only (a dry run needs none)."""
    if name == "openai":
        from mmad.providers.openai import KEY_ENV, OpenAIProvider
        key = "dry-run" if dry_run and not _env_key(KEY_ENV) else None
        return OpenAIProvider(base_url=base_url, timeout=timeout, api_key=key, prompt_caching=prompt_caching,
                              detail=detail)
    if name == "anthropic":
        from mmad.providers.anthropic import KEY_ENV, AnthropicProvider
        key = "dry-run" if dry_run and not _env_key(KEY_ENV) else None
        return AnthropicProvider(base_url=base_url, timeout=timeout, api_key=key, prompt_caching=prompt_caching)
    raise MmadError(f"unknown provider {name!r}")


def _env_key(name: str) -> str | None:
    import os
    return os.environ.get(name) or None


def _conventional():
    """The torch side, imported only when asked for (mmad itself never imports torch)."""
    try:
        from mmad_conventional import run
    except ImportError as exc:
        raise ConfigError(f"conventional detectors need torch: pip install -e '.[conventional]' ({exc.name} missing)") from None
    return run


def cmd_detect(args: argparse.Namespace, method: str, refs: int | None) -> int:
    run = _conventional()
    root = config.data_root(args.root)
    subsets = datasets.resolve(root, args.dataset, args.subset, prompt_family=getattr(args, "prompt_family", None),
                               subject=getattr(args, "subject", None))
    shots = f"{refs}shot" if refs is not None else "fullshot"
    run_name = args.run_name or f"{method}-{shots}"
    out_dir = Path(args.out) if args.out else Path("results") / run_name
    settings = run.DetectorSettings(method=method, device=args.device, image_size=args.image_size,
                                    batch_size=args.batch_size, seed=args.seed, coreset_ratio=args.coreset_ratio,
                                    epochs=args.epochs,
                                    backbone=args.backbone, weights=Path(args.weights) if args.weights else None)

    def on_subset(timing) -> None:
        if not args.quiet:
            err_console.print(f"{timing.label}: fit {timing.train_images} images in {timing.fit_s:.1f}s, "
                              f"scored {timing.test_images} in {timing.score_s:.1f}s on {timing.device}")
    report = run.run_detector(subsets, settings, out_dir=out_dir, run_name=run_name, refs=refs, on_subset=on_subset)
    for path in report.csv_paths:
        err_console.print(f"results: {path}")
    return 0


def cmd_baseline(args: argparse.Namespace) -> int:
    return cmd_detect(args, args.method, None)


def cmd_score(args: argparse.Namespace) -> int:
    import asyncio

    if args.provider in ("patchcore", "padim", "rd"):
        return cmd_detect(args, args.provider, args.refs)

    from mmad.cache import ResponseCache
    from mmad.jobs import build_plan, safe_name

    root = config.data_root(args.root)
    subsets = datasets.resolve(root, args.dataset, args.subset, prompt_family=args.prompt_family,
                               subject=args.subject)
    model = args.model or DEFAULT_MODELS.get(args.provider, "")
    provider = make_provider(args.provider, base_url=args.base_url, timeout=args.timeout,
                             dry_run=args.dry_run or getattr(args, "estimate_only", False),
                             prompt_caching=args.prompt_cache, detail=args.detail)
    run_name = args.run_name or safe_name(model)
    out_dir = Path(args.out) if args.out else Path("results") / run_name
    plans = build_plan(subsets, identity=provider.identity(), model=model, refs=args.refs,
                       prompt_choice=args.prompt, prompts_dir=config.prompts_dir(args.prompts_dir),
                       out_dir=out_dir, run_name=run_name, temperature=args.temperature,
                       max_tokens=args.max_tokens)
    cache = ResponseCache(config.cache_dir(args.cache_dir))
    try:
        if getattr(args, "estimate_only", False):
            return _estimate(args, provider, model, cache, plans)
        if args.dry_run:
            return _dry_run(plans, provider, cache)
        return asyncio.run(_score(args, provider, cache, plans, model))
    finally:
        cache.close()


async def _counter(provider, model: str, detail: str | None, plans):
    """A token counter; for Anthropic calibrated on the free count_tokens endpoint when reachable."""
    from mmad.cost import TokenCounter
    counter = TokenCounter(provider.name, model, detail or "high")
    if hasattr(provider, "count_text_tokens") and plans and plans[0].jobs:
        request = plans[0].jobs[0].request
        try:
            counter.calibrate_text(request, await provider.count_text_tokens(request))
        except Exception as exc:  # offline or no key: the documented character rule stands
            err_console.print(f"note: Anthropic token counting unavailable ({type(exc).__name__}); "
                              f"text tokens estimated at ~3.5 characters per token")
    return counter


async def _meter(args, provider, model: str, plans):
    from mmad.cost import CostMeter, load_prices
    prices = load_prices(args.prices)
    price = prices.require(model) if args.max_cost is not None else prices.lookup(model)
    return CostMeter(price, await _counter(provider, model, args.detail, plans), max_cost=args.max_cost)


def _estimate(args, provider, model: str, cache, plans) -> int:
    import asyncio

    from mmad.cost import estimate_plans, load_prices
    prices = load_prices(args.prices)

    async def counted():
        try:
            return await _counter(provider, model, args.detail, plans)
        finally:
            await provider.aclose()
    result = estimate_plans(plans, provider.name, model, prices.lookup(model), cache, counter=asyncio.run(counted()))
    table = Table(title=f"estimate: {args.provider} {model}, {len(plans)} subset(s)")
    for column in ("", "input tokens", "output tokens", "USD"):
        table.add_column(column, justify="left" if not column else "right")

    def usd(value):
        return "no price" if value is None else f"${value:,.2f}"
    table.add_row("plain", f"{result.input_tokens:,}", f"{result.output_tokens:,}", usd(result.plain))
    table.add_row("with prompt caching", f"{result.input_tokens:,} ({result.cache_read_tokens:,} cached reads, "
                  f"{result.cache_write_tokens:,} writes)", f"{result.output_tokens:,}", usd(result.with_caching))
    table.add_row("with batch", f"{result.input_tokens:,}", f"{result.output_tokens:,}", usd(result.with_batch))
    table.add_row("with both", "", "", usd(result.with_both))
    console.print(table)
    console.print(f"{result.jobs} jobs to send ({result.cached_jobs} more already in the response cache: free); "
                  f"prices: {prices.path} (dated {prices.date})")
    if prices.lookup(model) is None:
        console.print(f"no price for {model!r} in {prices.path}: tokens only")
    for label in result.below_cache_minimum:
        err_console.print(f"warning: {label}: the fixed prefix is below the provider's minimum cacheable "
                          f"length; prompt caching will not apply")
    return 0


def _dry_run(plans, provider, cache) -> int:
    from dataclasses import replace

    from mmad.images import EncodedImage, ImageRef

    jobs = [job for plan in plans for job in plan.jobs]
    hits = sum(1 for job in jobs if job.key in cache)
    console.print(f"{len(jobs)} jobs in {len(plans)} subset(s); {hits} already cached, "
                  f"{len(jobs) - hits} would be sent")
    first, plan = plans[0].jobs[0], plans[0]
    # Number each image position so identical files (same sha256) still show where they go.
    labels = [p.name for p in plan.references] + [str(first.query)]
    parts = []
    images = {}
    for index, part in enumerate(first.request.parts):
        if isinstance(part, ImageRef):
            label = labels[len(images)]
            placeholder = ImageRef(f"{part.sha256}#{len(images)}", part.spec)
            images[placeholder.sha256] = EncodedImage(
                placeholder, "image/png", f"<elided: {label} sha256={part.sha256[:12]}>", 0, 0)
            part = placeholder
        parts.append(part)
    request = replace(first.request, parts=tuple(parts))
    if hasattr(provider, "body"):
        body = provider.body(request, images)
    else:
        body = {"model": request.model, "max_tokens": request.max_tokens,
                "temperature": request.temperature, "system": request.system,
                "messages": [{"role": "user", "content": provider.content(request, images)}]}
    console.print(f"first request ({plan.subset.label}, prompt {plan.prompt_name}):")
    print(json.dumps(body, indent=2, ensure_ascii=False))
    return 0


async def _score(args, provider, cache, plans, model: str) -> int:
    import asyncio
    import signal

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from mmad.engine import (BatchSubmitted, Engine, EngineSettings, JobFinished, Paused, Retrying, RunStarted,
                             RunStopped)

    settings = EngineSettings(concurrency=args.concurrency, requests_per_minute=args.rpm,
                              tokens_per_minute=args.tpm, max_attempts=args.max_attempts,
                              image_workers=args.image_workers, retry_failed=args.retry_failed)
    progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), TextColumn("{task.fields[stats]}"), console=err_console,
                        transient=False, disable=args.quiet)
    task = progress.add_task("scoring", total=None, stats="")
    counts: dict[str, int] = {}
    started = {"t": None}

    def on_event(event) -> None:
        import time
        if isinstance(event, RunStarted):
            started["t"] = time.monotonic()
            progress.update(task, total=event.total, completed=event.already_done)
        elif isinstance(event, JobFinished):
            record = event.record
            counts[record["status"]] = counts.get(record["status"], 0) + 1
            counts[record["source"]] = counts.get(record["source"], 0) + 1
            elapsed = max(time.monotonic() - started["t"], 1e-9)
            failures = " ".join(f"{k}={counts[k]}" for k in ("parse_failed", "refused", "error") if counts.get(k))
            tokens = sum(engine._summary.usage.get(k, 0) for k in ("input_tokens", "output_tokens"))
            spend = f"${meter.spent:,.4f}  " if meter.price is not None else ""
            progress.update(task, advance=1, stats=(
                f"{counts.get('live', 0) / elapsed:.1f} req/s  cache {counts.get('cache', 0)}  "
                f"tokens {tokens:,}  {spend}{failures}"))
        elif isinstance(event, (Paused, Retrying, RunStopped, BatchSubmitted)) and not args.quiet:
            text = (f"pause {event.seconds:.1f}s: {event.reason}" if isinstance(event, Paused) else
                    f"retry ({event.kind}) in {event.wait_s:.1f}s" if isinstance(event, Retrying) else
                    f"batch {event.batch_id} submitted: {event.requests} requests" if isinstance(event, BatchSubmitted)
                    else f"stopping: {event.reason}")
            progress.console.print(f"[dim]{text}[/dim]", markup=True, highlight=False)

    meter = await _meter(args, provider, model, plans)
    _warn_uncacheable_prefix(args, provider, meter, plans)
    batch = None
    if args.batch:
        from mmad.batch import BatchOptions
        meter.batch = True
        batch = BatchOptions(plans[0].csv_path.parent / "batches.json", poll_interval=args.poll_interval,
                             max_requests=args.batch_max_requests,
                             max_bytes=int(args.batch_max_mb * 2**20) if args.batch_max_mb else None)
    engine = Engine(provider, cache, settings, on_event=on_event, meter=meter, batch=batch)
    loop = asyncio.get_running_loop()
    main_task = asyncio.current_task()
    interrupts = {"n": 0}

    def on_signal() -> None:
        interrupts["n"] += 1
        if interrupts["n"] == 1:
            engine.request_stop("interrupted; finishing requests in flight (press again to abort)")
        else:
            main_task.cancel()

    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, on_signal)
        except (NotImplementedError, RuntimeError):
            pass
    try:
        with progress:
            summary = await engine.run(plans)
    except asyncio.CancelledError:
        err_console.print("aborted; rerun the same command to resume")
        return 130
    finally:
        await provider.aclose()
    _print_summary(summary, meter)
    if summary.budget_stop:
        from mmad.errors import BudgetExceeded
        raise BudgetExceeded(f"stopped before passing --max-cost ${args.max_cost:.2f} (spent ${summary.spent:.4f}); "
                             f"{summary.remaining} job(s) left: rerun with a higher --max-cost to resume")
    if summary.fatal is not None:
        from mmad.errors import ProviderError, QuotaExhausted
        error = QuotaExhausted if summary.fatal.kind == "quota" else ProviderError
        raise error(f"{summary.fatal}; {summary.remaining} job(s) left: rerun the same command to resume")
    if summary.remaining:
        err_console.print(f"{summary.remaining} job(s) not done; rerun the same command to resume")
        return 1
    return 0


def _warn_uncacheable_prefix(args, provider, meter, plans) -> None:
    """A prefix below the provider's minimum is silently not cached: say so before paying."""
    from mmad.cost import minimum_cacheable_tokens, prepared_size
    if not args.prompt_cache or not plans or provider.base_url:
        return  # custom servers (vLLM, Ollama) have their own prefix caching, or none
    for plan in plans:
        if not plan.jobs:
            continue
        job = plan.jobs[0]
        paths = list(plan.references) + [job.query]
        sizes = {ref.sha256: prepared_size(path) for ref, path in zip(job.request.image_refs, paths)}
        _, prefix = meter.counter.request(job.request, sizes)
        minimum = minimum_cacheable_tokens(provider.name, job.request.model)
        if prefix < minimum:
            err_console.print(f"warning: {plan.subset.label}: the fixed prefix is ~{prefix} tokens, below the "
                              f"{minimum} the provider caches; prompt caching will not apply")


def _print_summary(summary, meter=None) -> None:
    table = Table(title="run summary", show_header=False)
    table.add_row("jobs", f"{summary.total} ({summary.already_done} done before this run, {summary.remaining} left)")
    table.add_row("this run", ", ".join(f"{k} {v}" for k, v in sorted(summary.statuses.items())) or "nothing to do")
    table.add_row("sources", ", ".join(f"{k} {v}" for k, v in sorted(summary.sources.items())) or "—")
    table.add_row("HTTP calls", f"{summary.live_requests} (failed attempts: "
                  f"{', '.join(f'{k} {v}' for k, v in sorted(summary.failures.items())) or 'none'})")
    table.add_row("tokens (live)", ", ".join(f"{k} {v:,}" for k, v in sorted(summary.usage.items())) or "0")
    if meter is not None and meter.price is not None:
        table.add_row("spend (live)", f"${summary.spent:,.4f} actual vs ${summary.estimated:,.4f} estimated "
                      f"for the same requests")
    table.add_row("time", f"{summary.elapsed_s:.1f} s")
    for path in summary.csv_paths:
        table.add_row("results", str(path))
    err_console.print(table)
