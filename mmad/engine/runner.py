"""The job lifecycle: cache -> claim -> prepare -> admit -> call -> record. Every job ends in a
definite record, or stays to-do for the next run; nothing paid is lost or paid twice.

How a job runs:
  1. a job counts as done when the out folder's JSONL holds a final record with its cache key
     (an `ok` record is never overridden by a later failure of the same job); `--retry-failed`
     redoes the rest;
  2. its cache key is looked up; a hit is interpreted and recorded (source "cache") without
     decoding any image; an identical request already in flight in this process is waited for,
     and one that another process on the same cache is paying for (`mmad.cache.claims`) is put aside
     and looked up again later: either way it is paid once;
  3. on a miss the job takes a slot (so prepared-but-unsent requests never outnumber the slots)
     and keeps it until it ends, its images are prepared on a worker thread, the budget reserves
     its worst case, and the rate controller paces it (`mmad.engine.ratecontrol`);
  4. the answer is stored at once (response cache, then the JSONL), before anything else is
     prepared; refusals and errors are never cached;
  5. failures (`mmad.engine.live_calls`): a 429 waits without spending an attempt, bounded by
     `rate_limit_timeout`; transient, connection and protocol failures are retried with
     exponential backoff and jitter up to `max_attempts`; quota, auth and not-found stop the run.

The first live request of a run goes first (`mmad.engine.failures.LeadGate`): if it cannot connect, is
refused (401/403/404) or answered with something that is not the API's JSON, the run stops with
one line naming the URL and nothing else is sent. During the run, the breaker on failed requests
stops it the same way. A stop (Ctrl-C, SIGTERM, budget, storage) sends nothing new and gives
requests in flight a grace period to finish; a job cut short stays to-do. A write that fails
(disk full, read-only) stops admission at once.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from dataclasses import dataclass

from mmad.cache.claims import RENEW_EVERY_S, ClaimStore
from mmad.cache.store import ResponseCache
from mmad.cost.estimate import CostMeter
from mmad.data.images import EncodedImage
from mmad.engine.events import Event, JobFinished, Paused, RunStarted, RunStopped, RunSummary
from mmad.engine.failures import Breaker, LeadGate
from mmad.engine.live_calls import LiveCalls
from mmad.engine.lock import lock_folders
from mmad.engine.preparation import ImagePreparer
from mmad.engine.ratecontrol import RateControl, Stopped
from mmad.engine.records import (
    RunLogs,
    account,
    answer_record,
    best_records,
    cause_of,
    check_records,
    interleave,
    make_record,
    merge_record,
    note_model,
)
from mmad.engine.work import Job, SubsetPlan
from mmad.errors import StorageError, describe_os_error
from mmad.providers.base import Provider, ProviderFailure

ELSEWHERE = object()  # the outcome of a job another process is paying for right now
CLAIM_POLL_S = 0.5  # how often a job put aside for another process is looked up again


@dataclass
class EngineSettings:
    """How hard to push a provider. None means: learn it or choose it."""

    concurrency: int | None = None  # in-flight requests; None = enough for the rate limit
    requests_per_minute: float | None = None  # client-side cap; the provider's header limit also applies
    tokens_per_minute: float | None = None
    max_attempts: int = 6  # per job, first try included; 429s do not count
    rate_limit_timeout: float = 900.0  # seconds a job may spend waiting out 429s before it fails
    backoff_initial: float = 1.0  # seconds, doubled per attempt, with jitter
    backoff_max: float = 60.0
    image_workers: int | None = None  # threads preparing images; None = all cores
    compress_level: int = 1  # PNG zlib level: lossless at any level; 1 is ~2.5x faster than 6
    retry_failed: bool = False  # redo jobs whose best record is error / refused / parse_failed
    auto_concurrency_cap: int = 256
    default_concurrency: int = 16  # auto, when no rate limit is known yet
    breaker_threshold: int = 10  # consecutive failed requests (server trouble, no answer between) that stop a run
    breaker_window: int = 40  # ... or this many requests of which breaker_share failed
    breaker_share: float = 0.75
    shared_images: int = 256  # encoded images kept for reuse (references)
    share_claims: bool = True  # claim requests in the cache's claims file (runs on one cache pay once)


class Engine(LiveCalls):
    """Runs plans against one provider through one cache."""

    def __init__(self, provider: Provider, cache: ResponseCache, settings: EngineSettings | None = None, *,
                 on_event: Callable[[Event], None] | None = None,
                 sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
                 clock: Callable[[], float] = time.monotonic,
                 executor: Executor | None = None, meter: CostMeter | None = None,
                 batch=None) -> None:
        self.provider = provider
        self.cache = cache
        self.meter = meter
        self.batch = batch
        self.settings = settings or EngineSettings()
        self._emit = on_event or (lambda event: None)
        self._sleep = sleep
        self._clock = clock
        self._images = ImagePreparer(executor, self.settings.image_workers, self.settings.compress_level,
                                     self.settings.shared_images)
        self._summary = RunSummary(url=provider.url)
        self._controls: dict[str, RateControl] = {}  # one per model: vendors limit per model
        self._stop_event = asyncio.Event()
        self._stop_reason: str | None = None
        self._inflight: dict[str, asyncio.Future] = {}  # cache key -> done when its live call ends
        self._settled = asyncio.Event()
        self._logs: RunLogs | None = None
        self._plan_of: dict[str, SubsetPlan] = {}
        self._breaker = Breaker(self.settings.breaker_threshold, self.settings.breaker_window,
                                self.settings.breaker_share)
        self._gate = LeadGate()
        self._claims: ClaimStore | None = None
        self._calls: set[asyncio.Future] = set()  # provider calls in flight
        self._best: dict[int, dict[str, dict]] = {}  # per plan: job key -> the record that counts
        self._reasked: Counter[str] = Counter()  # job key -> refusals already asked again (earlier runs too)

    # ----------------------------------------------------------------- control

    @property
    def stopping(self) -> bool:
        return self._stop_reason is not None

    def request_stop(self, reason: str = "stopped by the user") -> None:
        """Finish requests in flight, send nothing new; the run stays resumable."""
        if self._stop_reason is None:
            self._stop_reason = reason
            self._summary.stopped = reason
            self._stop_event.set()
            for control in self._controls.values():
                control.wake_all()
            self._settled.set()
            try:  # requests in flight get a grace period to finish, then are abandoned (to-do)
                asyncio.get_running_loop().call_later(self._stop_grace(), self._abandon_calls)
            except RuntimeError:
                pass
            self._emit(RunStopped(reason))

    def control(self, model: str) -> RateControl:
        """The rate controller of a model (created on first use)."""
        control = self._controls.get(model)
        if control is None:
            control = self._controls[model] = RateControl(
                concurrency=self.settings.concurrency, rpm=self.settings.requests_per_minute,
                tpm=self.settings.tokens_per_minute, default_concurrency=self.settings.default_concurrency,
                concurrency_cap=self.settings.auto_concurrency_cap, clock=self._clock, sleep=self._sleep,
                on_pause=lambda s, r: self._emit(Paused(s, r, time.time() + s)), stop_event=self._stop_event,
                max_wait=self.settings.rate_limit_timeout)
        return control

    async def nap(self, seconds: float) -> None:
        """Sleep, waking at once (Stopped) when the run stops."""
        await self.control("").nap(seconds)

    async def _until(self, awaitable: Awaitable) -> None:
        """Await, but raise Stopped at once when the run stops."""
        waiter = asyncio.ensure_future(awaitable)
        stopper = asyncio.ensure_future(self._stop_event.wait())
        try:
            await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
            stopper.cancel()
        if self.stopping:
            raise Stopped()

    def _fatal(self, failure: ProviderFailure) -> None:
        self._summary.fatal = self._summary.fatal or failure
        self.request_stop(f"{failure.kind}: {failure}")

    def _storage_failed(self, error: StorageError) -> None:
        if self._summary.storage_error is None:
            self._summary.storage_error = str(error)
        self.request_stop(f"storage: {error}")

    # ----------------------------------------------------------------- run

    async def run(self, plans: list[SubsetPlan], *, locked: bool = False) -> RunSummary:
        """Run every plan's jobs; `locked`: the caller already holds the output folders' locks."""
        started = self._clock()
        summary = self._summary
        locks = lock_folders({plan.out_dir for plan in plans}) if not locked else None
        try:
            self._logs = RunLogs()
            previous = self._best
            for plan in plans:
                records = self._logs.read(plan.jsonl_path)
                check_records(plan, records)
                previous[id(plan)] = best_records(records)
                self._reasked.update(r["key"] for r in records if r.get("status") == "reasked")
                if self.settings.retry_failed:  # a retried refusal gets a fresh allowance of re-asks
                    for key, record in previous[id(plan)].items():
                        if record["status"] == "refused":
                            self._reasked.pop(key, None)
                for job in plan.jobs:
                    self._plan_of[job.key] = plan
            todo_per_plan = []
            for plan in plans:
                done = previous[id(plan)]
                todo_per_plan.append([(plan, job) for job in plan.jobs if self._is_todo(done.get(job.key))])
            todo = interleave(todo_per_plan)
            summary.total = sum(len(plan.jobs) for plan in plans)
            summary.already_done = summary.total - len(todo)
            self._emit(RunStarted(summary.total, len(todo), summary.already_done))
            counts = Counter(image.ref.sha256 for _, job in todo for image in job.images)
            self._images.shared = {sha for sha, n in counts.items() if n > 1}
            try:
                if self.batch is not None:
                    from mmad.engine.batch import run_batches
                    await run_batches(self, todo, self.batch)
                elif todo:
                    await self._run_live(todo)
            finally:
                self._finish_run(plans, started)
        finally:
            if self._logs is not None:
                self._logs.close()
            if locks is not None:
                locks.release()
            if self._claims is not None:
                self._claims.close()
            self._images.close()
        return summary

    def _is_todo(self, record: dict | None) -> bool:
        return record is None or (self.settings.retry_failed and record["status"] != "ok")

    async def _run_live(self, todo: list[tuple[SubsetPlan, Job]]) -> None:
        queue: deque[tuple[SubsetPlan, Job]] = deque(todo)
        aside: deque[tuple[float, SubsetPlan, Job]] = deque()  # jobs another process is paying for
        workers = self.settings.concurrency or self.settings.auto_concurrency_cap
        outstanding = {"n": len(queue)}
        wake = asyncio.Event()

        async def next_job() -> tuple[SubsetPlan, Job] | None:
            """The next job to run: the queue first, then a job put aside whose time has come."""
            while not self.stopping and outstanding["n"] > 0:
                if queue:
                    return queue.popleft()
                try:
                    if aside:
                        delay = aside[0][0] - self._clock()
                        if delay <= 0:
                            return aside.popleft()[1:]
                        await self.nap(delay)
                    else:  # a job in progress sets `wake` when it ends, stop or not
                        wake.clear()
                        await wake.wait()
                except Stopped:
                    return None
            return None

        async def worker() -> None:
            while (item := await next_job()) is not None:
                plan, job = item
                follow = await self._job(plan, job)
                if follow is ELSEWHERE:
                    aside.append((self._clock() + CLAIM_POLL_S, plan, job))
                    continue
                if follow is not None:
                    queue.append((plan, follow))
                    outstanding["n"] += 1
                outstanding["n"] -= 1
                wake.set()

        renewer = asyncio.ensure_future(self._renew_claims())
        tasks = [asyncio.create_task(worker()) for _ in range(min(workers, max(1, len(queue))))]
        try:
            await asyncio.gather(*tasks)
        except asyncio.CancelledError:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._summary.stopped = self._summary.stopped or "cancelled"
            raise
        finally:
            renewer.cancel()

    async def _renew_claims(self) -> None:
        while True:
            await asyncio.sleep(RENEW_EVERY_S)
            try:
                if self._claims is not None:
                    self._claims.renew()
            except StorageError as error:
                self._storage_failed(error)
                return

    def _claim_store(self) -> ClaimStore | None:
        """The claims beside the cache, opened when the first request is about to be paid for
        (a run whose answers are all cached never writes there)."""
        if self._claims is None and self.settings.share_claims:
            self._claims = ClaimStore(self.cache.directory)
        return self._claims

    # ----------------------------------------------------------------- one job

    async def _job(self, plan: SubsetPlan, job: Job):
        """Run one job to a record (or leave it to-do); returns its follow-up job, if any, or
        ELSEWHERE when another process is paying for it right now."""
        try:
            record = await self._outcome(plan, job)
        except StorageError as error:
            self._storage_failed(error)
            return None
        if record is None or record is ELSEWHERE:
            return record
        try:
            self._finish(plan, job, record)
        except StorageError as error:
            self._storage_failed(error)
            return None
        return job.follow_up(record) if job.follow_up is not None and not self.stopping else None

    async def _outcome(self, plan: SubsetPlan, job: Job):
        if job.local is not None:  # decided without a request (e.g. a detector's gate)
            local = job.local
            return self._record(job, local.get("status", "ok"), source=local.get("source", "local"), attempts=0,
                                fields=local.get("fields"), error=local.get("reason"))
        cached = self.cache.get(job.key)
        if cached is not None:
            return self._answer_record(plan, job, cached, source="cache", attempts=0)
        twin = self._inflight.get(job.key)
        if twin is not None:  # the same request (identical image bytes) is being paid for right now
            await asyncio.wait([twin])
            cached = self.cache.get(job.key)
            if cached is not None:
                return self._answer_record(plan, job, cached, source="cache", attempts=0)
        if self.stopping:
            return None
        done = asyncio.get_running_loop().create_future()
        self._inflight[job.key] = done
        try:
            return await self._live(plan, job)
        finally:
            if self._inflight.get(job.key) is done:
                del self._inflight[job.key]
            done.set_result(None)

    def _claim(self, plan: SubsetPlan, job: Job):
        """Claim the job's request for this process (`mmad.cache.claims`), once it has its slot (so a run
        holds no more claims than slots). None: go ahead and pay; a record: the answer another
        process stored meanwhile; ELSEWHERE: another process is paying for it right now."""
        claims = self._claim_store()
        if claims is None or job.key in claims.held:
            return None
        if not claims.claim(job.key):
            return ELSEWHERE
        cached = self.cache.get(job.key)  # stored by another process just before it let go
        if cached is not None:
            claims.release(job.key)
            return self._answer_record(plan, job, cached, source="cache", attempts=0)
        return None

    def _unclaim(self, job: Job) -> None:
        if self._claims is not None:
            try:
                self._claims.release(job.key)
            except StorageError as error:
                self._storage_failed(error)

    def _answer_record(self, plan: SubsetPlan, job: Job, value: dict, *, source: str, attempts: int) -> dict:
        return answer_record(job, plan.task, value, source=source, attempts=attempts)

    def _failed(self, job: Job, failure: ProviderFailure, attempts: int) -> dict:
        return self._record(job, "error", source="live", attempts=attempts, error=f"{failure.kind}: {failure}",
                            cause=cause_of(failure))

    def _record(self, job: Job, status: str, **details) -> dict:
        plan = self._plan_of.get(job.key)
        return make_record(job, plan.task.empty if plan is not None else {}, status, **details)

    def _finish(self, plan: SubsetPlan, job: Job, record: dict) -> None:
        """Append a job's final record, count it, watch for a failing server, tell the listener."""
        assert self._logs is not None, "records are appended during `run` only"
        try:
            self._logs.append(plan.jsonl_path, record)
        except StorageError:
            if record.get("source") == "live" and record.get("raw") is not None and job.key not in self.cache:
                self._summary.unstored += 1
            raise
        best = self._best.setdefault(id(plan), {})
        merge_record(best, record)  # kept in memory: the end of the run needs no second read of the file
        self._summary.statuses[record["status"]] += 1
        self._summary.sources[record["source"]] += 1
        if (other := note_model(self._summary, job.request.model, record)) is not None:
            self._emit(other)
        self._emit(JobFinished(record))


    # ----------------------------------------------------------------- images

    async def _prepare(self, job: Job) -> dict[str, EncodedImage]:
        return await self._images.prepare(job)

    # ----------------------------------------------------------------- the end

    def _finish_run(self, plans: list[SubsetPlan], started: float) -> None:
        """Result files from every plan's best records; what is left, what failed and why."""
        assert self._logs is not None, "a run ends inside `run` only"
        for plan in plans:
            try:
                self._logs.flush(plan.jsonl_path)
                best = self._best.get(id(plan), {})
                account(self._summary, plan, best)
                self._summary.csv_paths.append(plan.task.write(plan, best))
            except OSError as exc:
                self._storage_failed(StorageError(describe_os_error(plan.csv_path, exc)))
            except StorageError as error:
                self._storage_failed(error)
        self._summary.elapsed_s = self._clock() - started
        self._summary.pacing = {model: control.report() for model, control in self._controls.items() if model}
