"""Command line: parse arguments, call the library, print, and choose the exit code.

Only this module prints. Library errors (`MmadError`) become one line on stderr and a non-zero exit.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.table import Table

from mmad import config, datasets
from mmad.errors import ConfigError, MmadError

# Wide enough for the metric tables when output goes to a file or a pipe.
console = Console(width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 200)


def _percent(value: float) -> str:
    return "—" if value is None or math.isnan(value) else f"{100 * value:.2f}"


def _tau(value: float) -> str:
    return "—" if value is None or math.isnan(value) else f"{value:.3f}"


# --------------------------------------------------------------------------- data

def cmd_data_list(args: argparse.Namespace) -> int:
    root = config.data_root(args.root)
    present = {(s.dataset, s.subset): s for s in datasets.discover(root)}
    table = Table(title=f"MAD-Bench datasets (data root: {root})")
    for column in ("dataset", "domain", "prompt", "levels", "subsets", "test rows", "present locally"):
        table.add_column(column)
    for spec in datasets.REGISTRY.values():
        here = [s for s in spec.subsets if (spec.name, s) in present]
        table.add_row(spec.name, spec.domain, spec.prompt_family, str(spec.levels),
                      str(len(spec.subsets)), str(spec.rows), f"{len(here)}/{len(spec.subsets)}")
    extra: dict[str, list[datasets.Subset]] = {}
    for (name, _), subset in present.items():
        if name not in datasets.REGISTRY:
            extra.setdefault(name, []).append(subset)
    for name, subsets in sorted(extra.items()):
        templates = [datasets.read_template(s.template_path) for s in subsets]
        levels = max(int(t.levels.max()) for t in templates) + 1
        table.add_row(name, subsets[0].domain, subsets[0].prompt_family or "(set --prompt-family)",
                      str(levels), str(len(subsets)), str(sum(len(t) for t in templates)),
                      f"{len(subsets)}/{len(subsets)} (discovered)")
    console.print(table)
    if args.verbose:
        for (name, subset), item in sorted(present.items()):
            console.print(f"  {item.label}: {item.template_path}")
    return 0


def cmd_data_synth(args: argparse.Namespace) -> int:
    from mmad.synth import synthesize

    root = config.data_root(args.root)
    templates = synthesize(root, train=args.train, per_level=args.per_level, size=args.size, seed=args.seed)
    console.print(f"wrote demo dataset 'synth' ({len(templates)} subsets) under {root}")
    return 0


def cmd_data_fetch(args: argparse.Namespace) -> int:
    from mmad.fetch import load_records, write_records

    root = config.data_root(args.root)
    written, skipped = write_records(load_records(args.source), root)
    console.print(f"{written} images written, {skipped} already present, under {root}")
    return 0


def cmd_data_check(args: argparse.Namespace) -> int:
    root = config.data_root(args.root)
    for subset in datasets.resolve(root, args.dataset, args.subset):
        template = datasets.load_subset(subset)
        refs = datasets.reference_images(subset, args.refs)
        console.print(f"{subset.label}: {len(template)} rows, levels "
                      f"{sorted(set(template.levels.tolist()))}, references {[r.name for r in refs]}")
    return 0


# --------------------------------------------------------------------------- eval

def cmd_eval(args: argparse.Namespace) -> int:
    from mmad.analysis import dataset_means, evaluate_paths

    records = evaluate_paths([Path(p) for p in args.paths], data_root=config.data_root(args.root), ties=args.ties,
                             normal_up_to=args.normal_up_to, bootstrap=args.bootstrap, seed=args.seed)
    if args.json:
        print(json.dumps([r.as_json() for r in records], indent=2))
        return 0
    levels = sorted({level for r in records for level in r.auroc_by_level})
    # Several runs (models, prompt variants, methods) side by side: rows sorted by subset, then run.
    records = sorted(records, key=lambda r: (r.dataset, r.subset, r.run))
    header = ["run", "dataset", "subset", "n", "dropped", "AUC %", "Ken", "C %"] + [f"AUC L{lv} %" for lv in levels]
    rows = [[r.run, r.dataset, r.subset, str(r.n), str(r.dropped), _percent(r.auroc), _tau(r.kendall_tau_b),
             _percent(r.c_index)] + [_percent(r.auroc_by_level.get(lv, math.nan)) for lv in levels]
            for r in records]
    means = [[m.run, m.dataset, f"mean of {m.subsets}", "", "", _percent(m.auroc), _tau(m.kendall_tau_b),
              _percent(m.c_index)] + [""] * len(levels)
             for m in sorted(dataset_means(records), key=lambda m: (m.dataset, m.run))]
    if args.csv:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows + means)
        print(buffer.getvalue(), end="")
    elif args.markdown:
        print("| " + " | ".join(header) + " |")
        print("|" + "---|" * len(header))
        for row in rows + means:
            print("| " + " | ".join(row) + " |")
    else:
        table = Table(title=f"Multilevel AD performance (ties: {args.ties})")
        for column in header:
            table.add_column(column, justify="left" if column in ("run", "dataset", "subset") else "right")
        for row in rows:
            table.add_row(*row)
        table.add_section()
        for row in means:
            table.add_row(*row, style="bold")
        console.print(table)
    dropped = sum(r.dropped for r in records)
    if dropped:
        err_console.print(f"note: {dropped} row(s) without a score were dropped (failed jobs), not imputed")
    return 0


# --------------------------------------------------------------------------- score

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
        from conventional import run
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

    if args.provider in ("patchcore", "padim"):
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


# --------------------------------------------------------------------------- parser

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mmad", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="datasets: list, fetch, synth, check")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    for name, func, text in (("list", cmd_data_list, "known datasets and what is present locally"),
                             ("fetch", cmd_data_fetch, "download the published dataset into the layout"),
                             ("synth", cmd_data_synth, "write the offline demo dataset"),
                             ("check", cmd_data_check, "validate a dataset's templates and images")):
        p = data_sub.add_parser(name, help=text)
        p.add_argument("--root", help=f"data root (default ${config.DATA_ROOT_ENV} or ./data)")
        p.set_defaults(func=func)
        if name == "list":
            p.add_argument("-v", "--verbose", action="store_true")
        if name == "fetch":
            p.add_argument("--source", default="tricao1105/MultilevelADSet",
                           help="hub dataset id or a local folder saved with save_to_disk")
        if name == "synth":
            p.add_argument("--train", type=int, default=20, help="normal training images per subset")
            p.add_argument("--per-level", type=int, default=10, help="test images per level")
            p.add_argument("--size", type=int, default=224, help="image side in pixels")
            p.add_argument("--seed", type=int, default=0)
        if name == "check":
            p.add_argument("--dataset", required=True)
            p.add_argument("--subset")
            p.add_argument("--refs", type=int, default=3)

    ev = sub.add_parser("eval", help="metrics for result files (ours or the reference code's)")
    ev.add_argument("paths", nargs="+", help="result CSV files or folders")
    fmt = ev.add_mutually_exclusive_group()
    fmt.add_argument("--markdown", action="store_true")
    fmt.add_argument("--csv", action="store_true")
    fmt.add_argument("--json", action="store_true")
    ev.add_argument("--ties", choices=("half", "strict"), default="half",
                    help="tied scores across levels: half credit (reference stack, default) or none (paper)")
    ev.add_argument("--normal-up-to", type=int, default=0, metavar="K",
                    help="treat severity levels <= K as normal")
    ev.add_argument("--bootstrap", type=int, default=0, metavar="N",
                    help="add seeded bootstrap 95%% intervals from N resamples (--json)")
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument("--root", help="data root whose discovered datasets are recognised in file names")
    ev.set_defaults(func=cmd_eval)

    sc = sub.add_parser("score", help="score a dataset with a multimodal model or a conventional detector")
    _job_options(sc, providers=("openai", "anthropic", "patchcore", "padim"))
    sc.add_argument("--concurrency", type=int, help="requests in flight (default: enough for the rate limit)")
    sc.add_argument("--rpm", type=float, help="requests per minute cap (learned from headers when lower)")
    sc.add_argument("--tpm", type=float, help="tokens per minute cap (learned from headers when lower)")
    sc.add_argument("--max-attempts", type=int, default=6, help="tries per job, the first included")
    sc.add_argument("--image-workers", type=int, help="threads preparing images (default: all cores)")
    sc.add_argument("--retry-failed", action="store_true", help="redo jobs recorded as error/refused/parse_failed")
    sc.add_argument("--max-cost", type=float, metavar="USD",
                    help="stop before the next request could pass this spend; the run stays resumable")
    sc.add_argument("--batch", action="store_true",
                    help="use the provider's Batch API (half price, within 24 h); rerun the command to resume polling")
    sc.add_argument("--poll-interval", type=float, default=30.0, help="seconds between batch status checks")
    sc.add_argument("--batch-max-requests", type=int, help="split batches at this many requests")
    sc.add_argument("--batch-max-mb", type=float, help="split batches at this many MiB of requests")
    sc.add_argument("--dry-run", action="store_true", help="print the job count and the first request; send nothing")
    sc.add_argument("-q", "--quiet", action="store_true", help="no progress display")
    _detector_options(sc)
    sc.set_defaults(func=cmd_score, estimate_only=False)

    es = sub.add_parser("estimate", help="tokens and USD that `mmad score` would spend (cached jobs are free)")
    _job_options(es, providers=("openai", "anthropic"))
    es.set_defaults(func=cmd_score, estimate_only=True, dry_run=False, max_cost=None)

    bl = sub.add_parser("baseline", help="full-shot conventional detector on the whole normal train split")
    bl.add_argument("method", choices=("patchcore", "padim"))
    bl.add_argument("--dataset", required=True)
    bl.add_argument("--subset")
    bl.add_argument("--root", help=f"data root (default ${config.DATA_ROOT_ENV} or ./data)")
    bl.add_argument("--out", help="output folder (default results/<run-name>)")
    bl.add_argument("--run-name", help="file-name prefix (default <method>-fullshot)")
    bl.add_argument("-q", "--quiet", action="store_true")
    _detector_options(bl)
    bl.set_defaults(func=cmd_baseline)
    return parser


def _job_options(sc: argparse.ArgumentParser, providers: tuple[str, ...]) -> None:
    """What defines the jobs (shared by score and estimate, so both build the same requests)."""
    sc.add_argument("--provider", required=True, choices=providers,
                    help="an MLLM API, or a conventional detector fitted on the same few references")
    sc.add_argument("--model", help="model name (default: gpt-4o / claude-3-5-sonnet-latest, the paper's)")
    sc.add_argument("--dataset", required=True)
    sc.add_argument("--subset")
    sc.add_argument("--root", help=f"data root (default ${config.DATA_ROOT_ENV} or ./data)")
    sc.add_argument("--prompt", help="prompt name in prompts/ or a .toml file (default: the dataset's family)")
    sc.add_argument("--prompts-dir", help=f"prompt folder (default ${config.PROMPTS_DIR_ENV} or prompts/)")
    sc.add_argument("--refs", type=int, default=3, help="normal reference images per request (0 = zero-shot)")
    sc.add_argument("--prompt-family", choices=datasets.PROMPT_FAMILIES, help="for datasets it cannot be inferred for")
    sc.add_argument("--subject", help="object/class name put into the prompt")
    sc.add_argument("--base-url", help="OpenAI-compatible server (vLLM, Ollama, LM Studio) or API proxy")
    sc.add_argument("--out", help="output folder (default results/<run-name>)")
    sc.add_argument("--run-name", help="file-name prefix (default: the model name)")
    sc.add_argument("--cache-dir", help=f"response cache (default ${config.CACHE_DIR_ENV} or ./cache)")
    sc.add_argument("--timeout", type=float, default=120.0, help="seconds per request")
    sc.add_argument("--temperature", type=float, default=0.0)
    sc.add_argument("--max-tokens", type=int, default=300)
    sc.add_argument("--prices", help="price file (default $MMAD_PRICES or the packaged mmad/prices.toml)")
    sc.add_argument("--no-prompt-cache", dest="prompt_cache", action="store_false",
                    help="do not mark the fixed prefix for provider prompt caching")
    sc.add_argument("--detail", choices=("auto", "low", "high"),
                        help="OpenAI image detail (default: not sent = auto; estimates assume high)")


def _detector_options(parser: argparse.ArgumentParser) -> None:
    """PatchCore/PaDiM settings."""
    group = parser.add_argument_group("conventional detectors (patchcore, padim)")
    group.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto")
    group.add_argument("--image-size", type=int, default=224, help="images are resized to this square size")
    group.add_argument("--batch-size", type=int, default=16)
    group.add_argument("--seed", type=int, default=0)
    group.add_argument("--backbone", choices=("efficientnet_lite0", "wide_resnet50_2", "resnet50"),
                       default="efficientnet_lite0", help="feature extractor (default: EfficientNet-Lite0, weights bundled)")
    group.add_argument("--weights", help="a local state-dict file for the backbone (required for the ResNets)")
    group.add_argument("--coreset-ratio", type=float,
                       help="PatchCore memory bank kept (default 1.0 few-shot, 0.1 full-shot)")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except MmadError as exc:
        err_console.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
        return exc.exit_code
    except KeyboardInterrupt:
        err_console.print("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
