"""`mmad score` and `mmad estimate` for MLLM providers: options to runs (mmad.scoring), the live
progress view and signal handlers around the library's session, the summary and the exit code
(see mmad.errors for the codes). Detector providers go to `mmad.cli.detect`.
"""

from __future__ import annotations

import argparse
import asyncio

from mmad import config
from mmad.cli.detect import cmd_detect, is_detector
from mmad.cli.options import HelpFormatter, add_job_options, add_score_options
from mmad.cli.output import err_console
from mmad.errors import BudgetExceeded, ConfigError, ProviderError, QuotaExhausted, StorageError
from mmad.providers.factory import MLLM_PROVIDERS

# The library (engine, SDKs, images) is imported when a command runs, not for `--help`.


def register(sub) -> None:
    """`mmad score` and `mmad estimate` (the same job options, so both build the same requests)."""
    sc = sub.add_parser("score", help="score a dataset with a multimodal model or a conventional detector",
                        formatter_class=HelpFormatter)
    add_score_options(sc)
    sc.set_defaults(func=cmd_score, estimate_only=False)
    es = sub.add_parser("estimate", help="tokens and USD that `mmad score` would spend (cached jobs are free)",
                        formatter_class=HelpFormatter)
    add_job_options(es, providers=MLLM_PROVIDERS, detectors=False)
    es.add_argument("--json", action="store_true", help="per variant and subset, as JSON")
    es.add_argument("-v", "--verbose", action="store_true", help="a row per subset")
    es.set_defaults(func=cmd_score, estimate_only=True, dry_run=False, max_cost=None)


def cmd_score(args: argparse.Namespace) -> int:
    if is_detector(args.provider):
        if getattr(args, "hybrid", None):
            raise ConfigError("--hybrid gates an MLLM provider (openai, anthropic) with a detector run; "
                              f"--provider {args.provider} is itself a detector")
        return cmd_detect(args, args.provider, _single(args.refs, "refs", 3))
    from mmad.cache.store import ResponseCache
    from mmad.cli.estimate import dry_run, estimate
    from mmad.cli.hybrid import print_gate_report
    from mmad.data.filememo import FileMemo
    from mmad.providers.factory import make_provider
    from mmad.scoring.options import ScoreOptions
    from mmad.scoring.session import plan_runs
    estimate_only = getattr(args, "estimate_only", False)
    planning = args.dry_run or estimate_only
    opts = ScoreOptions.from_values(dict(vars(args), planning=planning))
    provider = make_provider(opts.provider, base_url=opts.base_url, timeout=opts.timeout, dry_run=planning,
                             prompt_caching=opts.prompt_cache)
    cache_dir = config.cache_dir(opts.cache_dir)
    runs, gate = plan_runs(opts, provider, FileMemo(cache_dir))
    if gate is not None:
        print_gate_report(args, provider, gate, to_stdout=planning and not args.json)
    cache = ResponseCache(cache_dir)
    try:
        if estimate_only:
            return estimate(args, provider, cache, runs)
        if args.dry_run:
            return dry_run(provider, cache, runs, start_over=args.fresh)
        return asyncio.run(score_with_progress(args, provider, cache, runs))
    finally:
        cache.close()


def _single(values, name: str, default):
    flat = [v for group in (values or []) for v in group]
    if len(flat) > 1:
        raise ConfigError(f"--{name} takes one value for conventional detectors")
    return flat[0] if flat else default


def say(line: str) -> None:
    err_console.print(line, markup=False, highlight=False, soft_wrap=True)


async def score_with_progress(args, provider, cache, runs: list) -> int:
    """The session with a progress view, and Ctrl-C/SIGTERM asking the engine to stop."""
    from mmad.cli.progress import ProgressView
    from mmad.cli.signals import install_stop_handlers
    from mmad.scoring.session import EngineOptions, run_session
    view = ProgressView(quiet=args.quiet, every=args.progress_every)
    main_task = asyncio.current_task()
    assert main_task is not None, "a coroutine runs in a task"

    def started(engine) -> None:
        view.meter = engine.meter

        def stop(reason: str) -> bool:
            engine.request_stop(reason)
            return True
        install_stop_handlers(stop, main_task.cancel)
    try:
        with view:
            result = await run_session(provider, cache, runs, EngineOptions.of(args), on_event=view,
                                       on_engine=started, notes=say, warn_uncacheable=not args.quiet)
    except asyncio.CancelledError:
        err_console.print("aborted; rerun the same command to resume")
        return 130
    return conclude(result, args)


def conclude(result, args) -> int:
    """The end of an MLLM run (score, qa run, classify): the JSON on request, the summary table, the exit code."""
    from mmad.cli.progress import print_json, print_summary
    if args.json:
        print_json(result.document)
    print_summary(result.summary, result.meter)
    return exit_code(result.summary, args)


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
