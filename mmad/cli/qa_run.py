"""`mmad qa run` / `mmad qa estimate`: MMAD-QA through the engine, with the same limits, cache,
resume, budget, batch mode, run.json, summary.json and exit codes as `mmad score`.

The engine runs in rounds: round 1 holds every question that can be built (in conversation mode,
each image's next turn, whose follow-ups the engine builds as replies arrive; in the other modes
every question); after it the plans are rebuilt from the records and another round runs while
questions are left and the previous round answered something. Batch mode needs this (batches carry no follow-ups: turn i of every
image goes in round i; the not-asked records of a chain that ended are written by a live engine
first, since they need no request), and it also picks up any chain the engine did not continue.
Only round 1 honours --retry-failed, so a failure is retried once per command, not once per round.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from mmad.cli.estimate import dry_run, estimate
from mmad.cli.output import console, err_console
from mmad.cli.progress import ProgressView
from mmad.cli.score import conclude, say
from mmad.cli.signals import install_stop_handlers
from mmad.engine.events import RunStarted, RunSummary
from mmad.engine.lock import lock_folders
from mmad.engine.records import RunLogs, best_records
from mmad.engine.runner import Engine
from mmad.qa.jobs import QAPlan
from mmad.qa.task import QATask
from mmad.scoring.runs import VariantRun, check_run_folder
from mmad.scoring.session import EngineOptions, SessionResult, make_meter
from mmad.scoring.summary import store_summary, summary_document


@dataclass(frozen=True)
class QAVariant:
    """What the shared CLI helpers need of a variant (the budget meter reads `.model`)."""

    model: str


@dataclass
class Progress:
    """Where every question of the plans stands, from the records."""

    questions: int = 0
    answered: int = 0  # with a final record
    remaining: int = 0
    failed: int = 0
    statuses: Counter = field(default_factory=Counter)
    causes: Counter = field(default_factory=Counter)
    reasks: int = 0


@dataclass
class _RoundState:
    """What the stop handler and the rounds share: the round's engine, and whether a stop came."""

    engine: Engine | None = None
    stopped: bool = False


def progress_of(plans: Sequence[QAPlan]) -> Progress:
    out = Progress()
    logs = RunLogs()
    for plan in plans:
        records = logs.read(plan.jsonl_path)
        out.reasks += sum(1 for record in records if record.get("status") == "reasked")
        for _, record in plan.resolve(best_records(records)):
            out.questions += 1
            if record is None:
                out.remaining += 1
                continue
            out.answered += 1
            out.statuses[record["status"]] += 1
            if record["status"] != "ok":
                out.failed += 1
                out.causes[record.get("cause") or record.get("error") or record["status"]] += 1
    return out


def _merge(total, part) -> None:
    """Add one round's summary into the run's."""
    for name in ("statuses", "sources", "usage", "failures"):
        getattr(total, name).update(getattr(part, name))
    total.live_requests += part.live_requests
    total.elapsed_s += part.elapsed_s
    total.unstored += part.unstored
    total.stopped = part.stopped or total.stopped
    total.fatal = total.fatal or part.fatal
    total.storage_error = total.storage_error or part.storage_error
    total.budget_stop = total.budget_stop or part.budget_stop
    total.spent, total.estimated = part.spent or total.spent, part.estimated or total.estimated
    total.csv_paths = part.csv_paths or total.csv_paths


class _QuestionEvents:
    """Forwards engine events to the progress view, counting questions rather than plan jobs."""

    def __init__(self, view, questions: int, answered: int) -> None:
        self.view, self.questions, self.answered = view, questions, answered

    def __call__(self, event) -> None:
        if isinstance(event, RunStarted):
            event = RunStarted(self.questions, self.questions - self.answered, self.answered)
        self.view(event)


async def run_qa(args: argparse.Namespace, provider, cache, run, rebuild: Callable[[], list[QAPlan]]) -> int:
    options = EngineOptions.of(args)
    settings = options.engine_settings()
    plans = run.plans
    locks = lock_folders({run.out_dir})
    try:
        note = check_run_folder(run, fresh=args.fresh)
        if note:
            say(note)
        meter = await make_meter(provider, [run], prices=args.prices, max_cost=args.max_cost,
                                 prompt_caching=args.prompt_cache, notes=say)
        batch = options.batch_options([run])
        meter.batch = batch is not None
        before = progress_of(plans)
        view = ProgressView(quiet=args.quiet, every=args.progress_every, meter=meter)
        total = RunSummary(url=provider.url)
        state = _RoundState()
        main_task = asyncio.current_task()
        assert main_task is not None, "a coroutine runs in a task"

        def stop(reason: str) -> bool:
            state.stopped = True  # no further round starts
            if state.engine is not None:
                state.engine.request_stop(reason)
            return True
        install_stop_handlers(stop, main_task.cancel)
        rounds = max((len(c.entry.questions) for p in plans for c in p.chains), default=1) + 2
        answered = before.answered
        try:
            with view:
                for number in range(rounds):
                    if state.stopped:
                        break
                    events = _QuestionEvents(view, before.questions, answered)
                    recorded = sum(total.statuses.values())
                    round_settings = replace(settings, retry_failed=args.retry_failed and number == 0)
                    if batch is not None:  # batches would send the not-asked records: record them first
                        local = [replace(p, jobs=tuple(j for j in p.jobs if j.local)) for p in plans]
                        if any(p.jobs for p in local):
                            state.engine = Engine(provider, cache, round_settings, on_event=events, meter=meter)
                            _merge(total, await state.engine.run(local, locked=True))
                            if state.stopped:
                                break
                        plans = [replace(p, jobs=tuple(j for j in p.jobs if not j.local)) for p in plans]
                    engine = Engine(provider, cache, round_settings, on_event=events, meter=meter, batch=batch)
                    state.engine = engine
                    part = await engine.run(plans, locked=True)
                    _merge(total, part)
                    if engine.stopping or state.stopped or sum(total.statuses.values()) == recorded:
                        break
                    plans = rebuild()
                    now = progress_of(plans)
                    if not now.remaining:
                        break
                    answered = now.answered
        except asyncio.CancelledError:
            err_console.print("aborted; rerun the same command to resume")
            return 130
        finally:
            await provider.aclose()
        after = progress_of(plans)
        total.total, total.already_done = after.questions, before.answered
        total.remaining, total.failed = after.remaining, after.failed
        total.final_statuses, total.causes = after.statuses, after.causes
        document = summary_document(total, meter, [run], command=sys.argv)
        document["qa"] = {"questions": after.questions, "reasks": after.reasks}
        store_summary(total, document, [run.out_dir])
    finally:
        locks.release()
    return conclude(SessionResult(total, meter, document), args)


def estimate_qa(args: argparse.Namespace, provider, cache, run, pending: list) -> int:
    """`mmad estimate`'s table for the requests still to send, plus what it cannot know."""
    estimate(args, provider, cache, [VariantRun(run.variant, run.run_name, run.out_dir, pending, run.run_info)])
    so_far = progress_of(run.plans)
    note = err_console.print if args.json else console.print
    reasks = QATask.max_reasks
    note(f"re-asks: a refused reply is asked again up to {reasks} times ({reasks + 1} requests in all, as published), "
         f"each a new paid request; the figures above assume none, so at most {reasks + 1}x them",
         markup=False, highlight=False)
    if so_far.answered:
        rate = so_far.reasks / so_far.answered
        note(f"this run folder so far: {so_far.reasks} re-ask(s) over {so_far.answered} answered question(s): "
             f"expect about +{100 * rate:.1f}% on the figures above", markup=False, highlight=False)
    if args.mode == "conversation":
        note("conversation: replies not given yet are priced as one-letter replies in the later turns' history; "
             "output tokens use mmad's default of 100 per request", markup=False, highlight=False)
    return 0


def dry_run_qa(provider, cache, run, pending: list, *, start_over: bool = False) -> int:
    pending = sorted(pending, key=lambda plan: not plan.jobs)  # the first request shown is a real one
    if not pending or not pending[0].jobs:
        console.print("dry run: every question of this run is answered already; nothing would be sent")
        return 0
    return dry_run(provider, cache, [VariantRun(run.variant, run.run_name, run.out_dir, pending, run.run_info)],
                   start_over=start_over)
