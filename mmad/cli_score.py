"""`mmad score` and `mmad estimate` for MLLM providers: build every variant's jobs, run them
through one engine, report, and choose the exit code (see mmad.errors for the codes).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from dataclasses import dataclass, replace
from pathlib import Path

from mmad import config, datasets
from mmad.cli_output import console, err_console
from mmad.errors import (BudgetExceeded, ConfigError, MmadError, ProviderError, QuotaExhausted, StorageError,
                         describe_os_error)
from mmad.runinfo import RUN_FILE, make_run_info, read_run_info, setting_differences
from mmad.value_checks import ANOMALIB_PREFIX

DEFAULT_MODELS = {"openai": "gpt-4o", "anthropic": "claude-3-5-sonnet-latest"}
DETECTORS = ("patchcore", "padim", "rd")


def make_provider(name: str, *, base_url: str | None, timeout: float, dry_run: bool = False,
                  prompt_caching: bool = True):
    """The provider for --provider; keys come from the environment only (a dry run needs none)."""
    import os
    if name == "openai":
        from mmad.providers.openai import KEY_ENV, OpenAIProvider
        key = "dry-run" if dry_run and not os.environ.get(KEY_ENV) else None
        return OpenAIProvider(base_url=base_url, timeout=timeout, api_key=key, prompt_caching=prompt_caching)
    if name == "anthropic":
        from mmad.providers.anthropic import KEY_ENV, AnthropicProvider
        key = "dry-run" if dry_run and not os.environ.get(KEY_ENV) else None
        return AnthropicProvider(base_url=base_url, timeout=timeout, api_key=key, prompt_caching=prompt_caching)
    raise ConfigError(f"unknown provider {name!r}")


@dataclass
class VariantRun:
    """One variant of the grid, ready to run: its name, folder, jobs and run.json."""

    variant: object
    run_name: str
    out_dir: Path
    plans: list
    run_info: dict


def _grid(args: argparse.Namespace) -> dict:
    from mmad.variants import GRID_FIELDS
    flat = {name: [v for group in getattr(args, name) for v in group] for name in GRID_FIELDS
            if isinstance(getattr(args, name, None), list)}
    return {name: values for name, values in flat.items() if values}


def build_variants(args: argparse.Namespace, provider_name: str) -> list:
    """The variants the options ask for (a cross product of grid values, or an experiment file)."""
    from mmad.prompts import load_prompt
    from mmad.variants import Variant, expand, read_experiment
    grid = _grid(args)
    base = Variant(model=DEFAULT_MODELS.get(provider_name, ""), max_tokens=args.max_tokens,
                   corrupt_references=args.corrupt_references, sample=args.sample, sample_seed=args.seed)
    if "detail" in grid and provider_name != "openai":
        raise ConfigError("--detail is an OpenAI option (Anthropic has no image detail setting)")
    if args.experiment:  # the file's variants over every combination the flags give
        experiment = read_experiment(Path(args.experiment))  # read and checked once
        variants = []
        for flags in expand(base, grid):
            for variant in experiment.over(flags):
                overridden = [name for name in grid if getattr(variant, name) != getattr(flags, name)]
                if overridden:  # the file would silently win over a flag the user typed
                    flag = "--" + overridden[0].replace("_", "-")
                    raise ConfigError(f"{args.experiment}: sets {overridden[0]} that {flag} also sets; "
                                      f"set it in one place (the file's variants apply over the flags)")
                variants.append(variant)
        prompts_dir = config.prompts_dir(args.prompts_dir)
        for prompt in dict.fromkeys(v.prompt for v in variants if v.prompt and v.prompt not in grid.get("prompt", ())):
            try:  # a prompt the file names: the error says where it came from
                load_prompt(prompt, prompts_dir)
            except ConfigError as exc:
                raise ConfigError(f"{args.experiment}: prompt: {exc}") from None
        variants = [replace(v, repeat=r) for v in variants for r in range(args.repeats)]
    else:
        explicit_refs = "refs" in grid
        variants = expand(base, grid, args.repeats)
        if not explicit_refs:  # the prompt file's own `refs` is the default
            prompts_dir = config.prompts_dir(args.prompts_dir)
            variants = [replace(v, refs=load_prompt(v.prompt, prompts_dir).refs)
                        if v.prompt and load_prompt(v.prompt, prompts_dir).refs is not None else v for v in variants]
    return variants


def prepare_runs(args: argparse.Namespace, provider, memo) -> list[VariantRun]:
    from mmad.jobs import build_plans
    root = config.data_root(args.root)
    subsets = datasets.resolve(root, args.dataset, args.subset, prompt_family=args.prompt_family,
                               subject=args.subject)
    variants = build_variants(args, provider.name)
    families = {subset.prompt_family for subset in subsets}
    if len(families) == 1:  # naming the family's own default prompt is the default, not a variant
        variants = [replace(v, prompt=None) if v.prompt in families else v for v in variants]
    prompts_dir = config.prompts_dir(args.prompts_dir)
    runs = []
    for variant in variants:
        run_name = variant.run_name(args.run_name)
        if len(variants) == 1 and args.out:
            out_dir = Path(args.out)
        else:
            out_dir = Path(args.out or "results") / run_name
        plans = build_plans(subsets, variant.plan_options(provider.identity(), prompts_dir), out_dir=out_dir,
                            run_name=run_name, memo=memo)
        info = make_run_info(run_name, "mllm", variant.settings(provider.name, provider.base_url))
        runs.append(VariantRun(variant, run_name, out_dir, plans, info))
    # --- hybrid (mmad/hybrid.py via mmad/cli_hybrid.py): --hybrid DETECTOR_RUN turns plans into gated plans ---
    from mmad.cli_hybrid import apply_hybrid
    runs = apply_hybrid(args, provider, runs, memo)
    # --- end hybrid ---
    seen: dict[Path, VariantRun] = {}
    for run in runs:
        other = seen.setdefault(run.out_dir, run)
        if other is run:
            continue
        if other.variant == run.variant:
            where = f"{args.experiment}: " if args.experiment else ""
            raise ConfigError(f"{where}the variant {run.run_name!r} is listed twice (a [[variant]] repeating "
                              f"another, or one the flags' grid already gives); list each once")
        raise ConfigError(f"the variants {other.run_name!r} and {run.run_name!r} would share the output folder "
                          f"{run.out_dir}; drop --run-name (each variant then gets its own folder)")
    return runs


def folder_conflict(run: VariantRun) -> str | None:
    """Why this run may not write into its folder (another run's settings or results), or None."""
    from mmad.records import best_records
    from mmad.results import JsonlLog
    existing = read_run_info(run.out_dir)
    if existing is not None:
        changed = setting_differences(existing, run.run_info)
        if changed:
            return (f"{run.out_dir} holds the run {existing.get('run')!r} made with other settings "
                    f"({'; '.join(changed)}); use another --out or --run-name, or remove that folder")
        return None
    keys = {job.key for plan in run.plans for job in plan.jobs}
    recorded = {key for plan in run.plans for key in best_records(JsonlLog.read(plan.jsonl_path))}
    if recorded and not recorded & keys:
        return (f"{run.out_dir} holds {len(recorded)} results made with other settings (none matches "
                f"this run's requests); use another --out or --run-name, or remove that folder")
    return None


def check_run_folder(run: VariantRun) -> None:
    """Refuse to mix runs made with other settings into this folder; then (re)write run.json."""
    from mmad.results import atomic_write_text
    conflict = folder_conflict(run)
    if conflict:
        raise ConfigError(conflict)
    existing = read_run_info(run.out_dir)
    if existing is None or existing.get("settings") != run.run_info["settings"]:
        try:
            atomic_write_text(run.out_dir / RUN_FILE, json.dumps(run.run_info, indent=1))
        except OSError as exc:
            raise StorageError(f"cannot write {describe_os_error(run.out_dir / RUN_FILE, exc)}") from None


def cmd_score(args: argparse.Namespace) -> int:
    if args.provider in DETECTORS or args.provider.startswith(ANOMALIB_PREFIX):
        if getattr(args, "hybrid", None):
            raise ConfigError("--hybrid gates an MLLM provider (openai, anthropic) with a detector run; "
                              f"--provider {args.provider} is itself a detector")
        from mmad.cli_detect import cmd_detect
        refs = _single(args.refs, "refs", 3)
        return cmd_detect(args, args.provider, refs)
    from mmad.cache import ResponseCache
    from mmad.filememo import FileMemo
    estimate_only = getattr(args, "estimate_only", False)
    provider = make_provider(args.provider, base_url=args.base_url, timeout=args.timeout,
                             dry_run=args.dry_run or estimate_only, prompt_caching=args.prompt_cache)
    cache_dir = config.cache_dir(args.cache_dir)
    memo = FileMemo(cache_dir)
    runs = prepare_runs(args, provider, memo)
    cache = ResponseCache(cache_dir)
    try:
        if estimate_only:
            from mmad.cli_estimate import estimate
            return estimate(args, provider, cache, runs)
        if args.dry_run:
            from mmad.cli_estimate import dry_run
            return dry_run(provider, cache, runs)
        return asyncio.run(_score(args, provider, cache, runs))
    finally:
        cache.close()


def _single(values, name: str, default):
    flat = [v for group in (values or []) for v in group]
    if len(flat) > 1:
        raise ConfigError(f"--{name} takes one value for conventional detectors")
    return flat[0] if flat else default


async def make_meter(args, provider, runs):
    """The budget meter (prices, token counter calibrated for Anthropic when reachable)."""
    from mmad.cost import CostMeter, TokenCounter, load_prices
    prices = load_prices(args.prices)
    models = {run.variant.model for run in runs}
    if args.max_cost is not None and len(models) > 1:
        raise ConfigError("--max-cost with several models: run the models one at a time")
    model = next(iter(models))
    price = prices.require(model) if args.max_cost is not None else prices.lookup(model)
    counter = TokenCounter(provider.name, model, "high")
    # Anthropic's free count_tokens calibrates the text estimate; only worth a request when priced.
    if (price is not None or getattr(args, "estimate_only", False)) and hasattr(provider, "count_text_tokens") \
            and runs[0].plans and runs[0].plans[0].jobs:
        request = runs[0].plans[0].jobs[0].request
        try:
            counter.calibrate_text(request, await provider.count_text_tokens(request))
        except Exception as exc:  # offline, no key, no such endpoint: the documented character rule stands
            from mmad.providers.base import ProviderFailure, one_line
            why = str(exc) if isinstance(exc, ProviderFailure) else f"unexpected error: {one_line(str(exc), 200)}"
            err_console.print(f"note: exact token counting not possible: {why}; "
                              f"text tokens estimated at ~3.5 characters per token", markup=False, soft_wrap=True)
    return CostMeter(price, counter, max_cost=args.max_cost, provider=provider.name, caching=args.prompt_cache)


async def _score(args, provider, cache, runs: list[VariantRun]) -> int:
    from mmad.cli_signals import install_stop_handlers

    from mmad.cli_progress import ProgressView, store_summary, summary_document
    from mmad.engine import Engine, EngineSettings
    from mmad.runlock import lock_folders

    settings = EngineSettings(concurrency=args.concurrency, requests_per_minute=args.rpm, tokens_per_minute=args.tpm,
                              max_attempts=args.max_attempts, rate_limit_timeout=args.rate_limit_timeout,
                              image_workers=args.image_workers, retry_failed=args.retry_failed)
    plans = [plan for run in runs for plan in run.plans]
    locks = lock_folders({run.out_dir for run in runs})
    try:
        for run in runs:
            check_run_folder(run)
        meter = await make_meter(args, provider, runs)
        if not args.quiet:
            warn_uncacheable(args, provider, meter, plans)
        batch = None
        if args.batch:
            from mmad.batch import BatchOptions
            if len(runs) > 1:
                raise ConfigError("--batch runs one variant at a time; drop the grid or run each variant")
            meter.batch = True
            batch = BatchOptions(runs[0].out_dir / "batches.json", poll_interval=args.poll_interval,
                                 max_requests=args.batch_max_requests,
                                 max_bytes=int(args.batch_max_mb * 2**20) if args.batch_max_mb else None)
        view = ProgressView(quiet=args.quiet, every=args.progress_every, meter=meter)
        engine = Engine(provider, cache, settings, on_event=view, meter=meter, batch=batch)
        main_task = asyncio.current_task()

        def stop(reason: str) -> bool:
            engine.request_stop(reason)
            return True
        install_stop_handlers(stop, main_task.cancel)
        try:
            with view:
                summary = await engine.run(plans, locked=True)
        except asyncio.CancelledError:
            err_console.print("aborted; rerun the same command to resume")
            return 130
        finally:
            await provider.aclose()
        document = summary_document(summary, meter, runs, command=sys.argv)
        store_summary(summary, document, [run.out_dir for run in runs])
    finally:
        locks.release()
    return conclude(summary, meter, document, args)


def conclude(summary, meter, document: dict, args) -> int:
    """The end of an MLLM run (score, qa run): the JSON on request, the summary table, the exit code."""
    from mmad.cli_progress import print_json, print_summary
    if args.json:
        print_json(document)
    print_summary(summary, meter)
    return exit_code(summary, args)


def exit_code(summary, args) -> int:
    """Fatal provider trouble 3/4 > storage 7 > budget 5 > stopped with jobs left 1 > failed jobs 6 > 0."""
    left = f"{summary.remaining} job(s) left" + (f", {summary.failed} failed" if summary.failed else "")
    if summary.fatal is not None:
        redo = " (add --retry-failed to redo the failed)" if summary.failed and not args.retry_failed else ""
        error = QuotaExhausted if summary.fatal.kind == "quota" else ProviderError
        raise error(f"{summary.fatal}; {left}: rerun the same command to resume{redo}")
    if summary.storage_error is not None:
        lost = f"; {summary.unstored} paid answer(s) could not be stored" if summary.unstored else ""
        raise StorageError(f"{summary.storage_error}; stopped, nothing more was sent{lost}; {left}: free space "
                           f"(or fix the permissions) and rerun the same command to resume")
    if summary.budget_stop:
        raise BudgetExceeded(f"stopped before passing --max-cost ${args.max_cost:g} (spent ${summary.spent:.4f}); "
                             f"{left}: rerun with a higher --max-cost to resume")
    if summary.remaining:
        why = f"{summary.stopped.split(';')[0]}: " if summary.stopped else ""
        err_console.print(f"{why}{left}; rerun the same command to resume", markup=False, highlight=False)
        return 1
    if summary.failed:
        return 6
    return 0


def warn_uncacheable(args, provider, meter, plans) -> None:
    """A prefix below the provider's minimum is silently not cached: say so before paying."""
    from mmad.images import prepared_size
    from mmad.tokens import minimum_cacheable_tokens
    if not args.prompt_cache or not plans or provider.base_url:
        return  # custom servers (vLLM, Ollama) have their own prefix caching, or none
    for plan in plans:
        if not plan.jobs or not plan.references:
            continue
        job = plan.jobs[0]
        sizes = {image.ref.sha256: prepared_size(image.path, image.spec) for image in job.images}
        _, prefix = meter.counter.request(job.request, sizes)
        minimum = minimum_cacheable_tokens(provider.name, job.request.model)
        if prefix < minimum:
            err_console.print(f"warning: {plan.subset.label}: the fixed prefix is ~{prefix} tokens, below the "
                              f"{minimum} the provider caches; prompt caching will not apply", markup=False)


__all__ = ["cmd_score", "make_provider", "MmadError", "console"]
