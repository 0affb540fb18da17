"""The job lifecycle: cache -> prepare -> admit -> call -> record. Every job ends in a definite
record, or stays to-do for the next run; nothing paid is lost or paid twice.

How a job runs:
  1. a job counts as done when the out folder's JSONL holds a final record with its cache key
     (an `ok` record is never overridden by a later failure of the same job); `--retry-failed`
     redoes the rest;
  2. its cache key is looked up; a hit is interpreted and recorded (source "cache") without
     decoding any image; an identical request already in flight is waited for, not paid twice;
  3. on a miss the job takes a slot (so prepared-but-unsent requests never outnumber the slots),
     its images are prepared on a worker thread, the budget reserves its worst case, and the rate
     controller paces it (`mmad.ratecontrol`);
  4. the answer is stored at once (response cache, then the JSONL), before anything else is
     prepared; refusals and errors are never cached;
  5. failures: a 429 waits (shared pause) without spending an attempt, bounded by
     `rate_limit_timeout`; transient, connection and protocol failures are retried with
     exponential backoff and jitter up to `max_attempts`; quota, auth and not-found stop the run.

The first live request of a run goes alone (with the capability probe first for custom
servers): if it cannot connect, is refused (401/403/404) or answered with something that is
not the API's JSON, the run stops with one line naming the URL and nothing else is sent. During
the run, `breaker_threshold` consecutive failed jobs without a success stop it the same way.
A stop (Ctrl-C, SIGTERM, budget, storage) lets requests in flight finish and sends nothing new;
a job cut short stays to-do. A write that fails (disk full, read-only) stops admission at once.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass

from mmad.cache.store import ResponseCache
from mmad.cost.estimate import CostMeter
from mmad.data.images import EncodedImage
from mmad.engine.events import BatchSubmitted, Event, JobFinished, Paused, Retrying, RunStarted, RunStopped, RunSummary  # noqa: F401
from mmad.engine.failures import Breaker, backoff, fatal_for_first_request, first_request_failure
from mmad.engine.lock import lock_folders
from mmad.engine.preparation import ImagePreparationError, ImagePreparer, image_executor  # noqa: F401  (re-exported)
from mmad.engine.ratecontrol import RateControl, Stopped
from mmad.engine.records import (
    RunLogs,
    account,
    answer_record,
    best_records,
    cause_of,
    interleave,
    make_record,
    merge_record,
    now_iso,
)
from mmad.engine.work import Job, SubsetPlan
from mmad.errors import StorageError, describe_os_error
from mmad.providers.base import Completion, Provider, ProviderFailure


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
    breaker_threshold: int = 12  # consecutive failed jobs (no success between) that stop a run
    shared_images: int = 256  # encoded images kept for reuse (references)


class Engine:
    """Runs plans against one provider through one cache."""

    def __init__(self, provider: Provider, cache: ResponseCache, settings: EngineSettings | None = None, *,
                 on_event: Callable[[Event], None] | None = None,
                 sleep: Callable[[float], object] = asyncio.sleep,
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
        self._breaker = Breaker(self.settings.breaker_threshold)
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
            self._emit(RunStopped(reason))

    def control(self, model: str) -> RateControl:
        """The rate controller of a model (created on first use)."""
        control = self._controls.get(model)
        if control is None:
            control = self._controls[model] = RateControl(
                concurrency=self.settings.concurrency, rpm=self.settings.requests_per_minute,
                tpm=self.settings.tokens_per_minute, default_concurrency=self.settings.default_concurrency,
                concurrency_cap=self.settings.auto_concurrency_cap, clock=self._clock, sleep=self._sleep,
                on_pause=lambda s, r: self._emit(Paused(s, r)), stop_event=self._stop_event)
        return control

    async def nap(self, seconds: float) -> None:
        """Sleep, waking at once (Stopped) when the run stops."""
        await self.control("").nap(seconds)

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
            self._images.close()
        return summary

    def _is_todo(self, record: dict | None) -> bool:
        return record is None or (self.settings.retry_failed and record["status"] != "ok")

    async def _run_live(self, todo: list[tuple[SubsetPlan, Job]]) -> None:
        queue: deque[tuple[SubsetPlan, Job]] = deque(todo)
        lead = next((item for item in queue if item[1].local is None and self.cache.get(item[1].key) is None), None)
        if lead is not None:
            queue.remove(lead)
            usable, follow = await self._lead_request(*lead)
            if not usable:
                return
            if follow is not None:
                queue.appendleft((lead[0], follow))
        workers = self.settings.concurrency or self.settings.auto_concurrency_cap
        outstanding = {"n": len(queue)}
        wake = asyncio.Event()

        async def worker() -> None:
            while not self.stopping:
                if not queue:
                    if outstanding["n"] <= 0:
                        return
                    wake.clear()
                    await wake.wait()
                    continue
                plan, job = queue.popleft()
                try:
                    follow = await self._job(plan, job)
                    if follow is not None:
                        queue.append((plan, follow))
                        outstanding["n"] += 1
                finally:
                    outstanding["n"] -= 1
                    wake.set()

        tasks = [asyncio.create_task(worker()) for _ in range(min(workers, max(1, len(queue))))]
        try:
            await asyncio.gather(*tasks)
        except asyncio.CancelledError:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._summary.stopped = self._summary.stopped or "cancelled"
            raise

    async def _lead_request(self, plan: SubsetPlan, job: Job) -> tuple[bool, Job | None]:
        """The first live request goes alone; returns (can the run go on, its follow-up job)."""
        follow = await self._job(plan, job, lead=True)
        return not self.stopping, follow


    # ----------------------------------------------------------------- one job

    async def _job(self, plan: SubsetPlan, job: Job, *, lead: bool = False) -> Job | None:
        """Run one job to a record (or leave it to-do); returns its follow-up job, if any."""
        try:
            record = await self._outcome(plan, job, lead)
        except StorageError as error:
            self._storage_failed(error)
            return None
        if record is None:
            return None
        try:
            self._finish(plan, job, record)
        except StorageError as error:
            self._storage_failed(error)
            return None
        return job.follow_up(record) if job.follow_up is not None and not self.stopping else None

    async def _outcome(self, plan: SubsetPlan, job: Job, lead: bool) -> dict | None:
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
            return await self._live(plan, job, lead)
        finally:
            if self._inflight.get(job.key) is done:
                del self._inflight[job.key]
            done.set_result(None)

    async def _live(self, plan: SubsetPlan, job: Job, lead: bool) -> dict | None:
        attempts = 0
        rate_limited_since: float | None = None
        while True:
            try:
                outcome = await self._attempt(job)
            except Stopped:
                return None
            except StorageError:
                raise
            except ProviderFailure as failure:
                if failure.kind == "rate_limit":
                    rate_limited_since = rate_limited_since or self._clock()
                    if self._clock() - rate_limited_since <= self.settings.rate_limit_timeout:
                        continue  # the shared pause does the waiting; no attempt spent
                else:
                    attempts += 1
                if self.stopping:
                    return None  # cut short by the stop: the job stays to-do
                hint = self.provider.rejection_hint(job.request) if lead and failure.kind == "bad_request" else None
                if hint:  # the server cannot take this kind of request: every job would fail alike
                    self._fatal(ProviderFailure("bad_request", f"{failure}; {hint}", status=failure.status))
                    return None
                if failure.fatal or (lead and fatal_for_first_request(failure, attempts, self.settings.max_attempts)):
                    self._fatal(first_request_failure(failure, self.provider) if lead else failure)
                    return None
                if failure.retryable and failure.kind != "rate_limit" and attempts < self.settings.max_attempts:
                    wait = backoff(attempts, failure, self.settings.backoff_initial, self.settings.backoff_max)
                    self._emit(Retrying(failure.kind, attempts, wait, str(failure)))
                    try:
                        await self.nap(wait)
                    except Stopped:
                        return None
                    continue
                if failure.kind == "rate_limit":
                    failure = ProviderFailure("rate_limit", f"still rate limited after "
                                              f"{self.settings.rate_limit_timeout:.0f} s: {failure}")
                return self._failed(job, failure, attempts)
            if isinstance(outcome, dict):  # the image could not be prepared
                return outcome
            completion, latency = outcome
            attempts += 1
            record = self._store_answer(plan, job, completion, latency, attempts)
            if record["status"] == "refused" and self._reasked[job.key] < plan.task.max_reasks:
                self._reasked[job.key] += 1  # the paid refusal is logged; the question is asked again
                self._logs.append(plan.jsonl_path, dict(record, status="reasked"))
                if self.stopping:
                    return None  # cut short by the stop: asked again on resume, within the same limit
                continue
            return record

    async def _attempt(self, job: Job):
        """One call: a slot, the images, the budget, the pacer, the request."""
        control = self.control(job.request.model)
        meter = self.meter
        ticket = await control.admit_slot()
        reserved = False
        try:
            try:
                images = await self._prepare(job)
            except Stopped:
                raise
            except ImagePreparationError as exc:  # an image that cannot be decoded is this job's failure
                return self._record(job, "error", source="live", attempts=0, error=str(exc),
                                    cause="image: cannot be decoded")
            sizes = {sha: (image.width, image.height) for sha, image in images.items()}
            tokens = None
            if meter is not None and (meter.price is not None or control.tokens_per_minute()):
                tokens, _ = meter.counter.request(job.request, sizes)  # for token pacing and the budget
                if meter.price is not None:
                    await self._reserve(job, sizes)
                    reserved = True
            await control.pace(tokens)
            if self.stopping:
                raise Stopped()
            start = self._clock()
            self._summary.live_requests += 1
            try:
                completion = await self.provider.complete(job.request, images)
            except ProviderFailure as failure:
                self._summary.failures[failure.kind] += 1
                control.observe_failure(failure)
                raise
            latency = self._clock() - start
            control.observe_success(latency, sum(completion.usage.get(k, 0) for k in ("input_tokens", "output_tokens")),
                                    completion.limits)
            for key, value in completion.usage.items():
                self._summary.usage[key] += value
            if reserved:
                self._settle(job, completion.usage)
                reserved = False
            return completion, latency
        finally:
            if reserved:
                self._settle(job, None)
            control.release(ticket)

    async def _reserve(self, job: Job, sizes) -> None:
        """Hold this request's worst case within --max-cost; wait for settlements near the budget;
        stop when nothing is in flight and it still does not fit."""
        meter = self.meter
        worst = meter.worst_case(job.request, sizes)
        expected = meter.expected(job.request, sizes, job.family, job.prefix_id)
        while not meter.reserve(job.key, worst, expected, job.prefix_id):
            if meter.in_flight == 0:
                self._summary.budget_stop = True
                self.request_stop(f"budget: the next request (up to ${worst:.4f}) could pass --max-cost "
                                  f"${meter.max_cost:g} (spent ${meter.spent:.4f})")
                raise Stopped()
            self._settled.clear()
            await self._settled.wait()
            if self.stopping:
                raise Stopped()

    def _settle(self, job: Job, usage: dict | None) -> None:
        if self.meter is not None:
            self.meter.settle(job.key, usage)
            self._summary.spent = self.meter.spent
            self._summary.estimated = self.meter.estimated_done
            self._settled.set()

    # ----------------------------------------------------------------- answers and records

    def _store_answer(self, plan: SubsetPlan, job: Job, completion: Completion, latency: float,
                      attempts: int) -> dict:
        """Cache the raw answer (unless refused), then build its record."""
        value = {"text": completion.text, "usage": completion.usage, "latency_s": round(latency, 4),
                 "finish_reason": completion.finish_reason, "model": completion.model, "time": now_iso()}
        if completion.refused:
            return self._record(job, "refused", source="live", attempts=attempts, raw=completion.text,
                                usage=completion.usage, latency=latency, error="the model refused",
                                cause="refused by the model")
        record = self._answer_record(plan, job, value, source="live", attempts=attempts)
        if record["status"] != "refused":
            try:
                self.cache.put(job.key, value)
            except StorageError as error:
                # The record (with the raw answer) may still be written: the rerun then needs no cache.
                self._storage_failed(error)
        return record

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
        self._emit(JobFinished(record))
        tripped = self._breaker.observe(record)
        if tripped is not None:
            self._fatal(ProviderFailure("transient", f"{tripped} at {self.provider.url}; stopped early"))


    # ----------------------------------------------------------------- images

    async def _prepare(self, job: Job) -> dict[str, EncodedImage]:
        return await self._images.prepare(job)

    # ----------------------------------------------------------------- the end

    def _finish_run(self, plans: list[SubsetPlan], started: float) -> None:
        """Result files from every plan's best records; what is left, what failed and why."""
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
