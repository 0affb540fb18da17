"""The scheduler: cache first, then rate-limited, retried calls; every job ends in a definite status.

How a job runs:
  1. its cache key (computed from file hashes when the plan was built) is looked up; a hit is
     parsed and recorded with source "cache" without decoding any image;
  2. on a miss the query image is prepared on a worker thread (the event loop never encodes),
     the subset's references are prepared once and reused;
  3. the call waits for any shared pause (a 429 slows every worker down, not just the one that
     got it), a concurrency slot, and the requests/min and tokens/min limiters;
  4. tenacity retries rate limits and transient failures with exponential backoff and jitter;
     the SDKs' own retries are off, so exactly one layer retries;
  5. the raw answer is cached (never an error or a refusal), then parsed, then appended to the
     subset's JSONL. Quota or auth failures stop the run cleanly; it resumes where it stopped.

Statuses: ok (score set), parse_failed (answer without a usable score; raw kept), refused,
error (failed after retries, or the request was rejected). Only `ok` has a score.
"""

from __future__ import annotations

import asyncio
import math
import os
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import partial
from pathlib import Path

from aiolimiter import AsyncLimiter
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from mmad.batch import BatchOptions, run_batches
from mmad.cache import ResponseCache
from mmad.cost import CostMeter, prepared_size
from mmad.images import EncodedImage, encode_file
from mmad.jobs import Job, SubsetPlan
from mmad.parsing import parse_answer
from mmad.providers.base import Completion, Provider, ProviderFailure, RateLimitInfo, Request
from mmad.results import JsonlLog, write_result_csv

FINAL_STATUSES = ("ok", "parse_failed", "refused", "error")


@dataclass
class EngineSettings:
    """How hard to push a provider. None means: learn it or choose it."""

    concurrency: int | None = None  # in-flight requests; None = enough for the rate limit
    requests_per_minute: float | None = None  # client-side cap; lowered to the provider's header
    tokens_per_minute: float | None = None
    max_attempts: int = 6  # per job, first try included
    backoff_initial: float = 1.0  # seconds, doubled per attempt, with jitter
    backoff_max: float = 60.0
    image_workers: int | None = None  # threads preparing query images; None = all cores
    compress_level: int = 1  # PNG zlib level: lossless at any level; 1 is ~2.5x faster than 6
    retry_failed: bool = False  # redo jobs recorded as error / refused / parse_failed
    auto_concurrency_cap: int = 256
    default_concurrency: int = 16  # auto, when no rate limit is known yet


# --------------------------------------------------------------------------- events

@dataclass(frozen=True)
class RunStarted:
    total: int
    todo: int
    already_done: int


@dataclass(frozen=True)
class JobFinished:
    record: dict


@dataclass(frozen=True)
class Retrying:
    kind: str
    attempt: int
    wait_s: float
    message: str


@dataclass(frozen=True)
class Paused:
    seconds: float
    reason: str


@dataclass(frozen=True)
class RunStopped:
    reason: str


@dataclass(frozen=True)
class BatchSubmitted:
    batch_id: str
    requests: int


Event = RunStarted | JobFinished | Retrying | Paused | RunStopped | BatchSubmitted


@dataclass
class RunSummary:
    total: int = 0
    already_done: int = 0
    statuses: Counter = field(default_factory=Counter)  # this run's records
    sources: Counter = field(default_factory=Counter)  # live / cache
    usage: Counter = field(default_factory=Counter)  # live tokens this run
    failures: Counter = field(default_factory=Counter)  # failed attempts by kind (retried or not)
    live_requests: int = 0  # HTTP calls made, retries included
    elapsed_s: float = 0.0
    stopped: str | None = None  # why the run ended early
    fatal: ProviderFailure | None = None
    remaining: int = 0  # jobs left for a later run
    csv_paths: list = field(default_factory=list)
    spent: float = 0.0  # USD for this run's live answers (when the model has a price)
    estimated: float = 0.0  # what was estimated beforehand for those same answers
    budget_stop: bool = False


class _Stopped(Exception):
    """The run is stopping; this job stays to-do."""


class _Gate:
    """A semaphore whose size can change while it is in use."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.active = 0
        self._cond = asyncio.Condition()

    async def acquire(self) -> None:
        async with self._cond:
            await self._cond.wait_for(lambda: self.active < self.limit)
            self.active += 1

    async def release(self) -> None:
        async with self._cond:
            self.active -= 1
            self._cond.notify_all()

    async def resize(self, limit: int) -> None:
        async with self._cond:
            self.limit = max(1, limit)
            self._cond.notify_all()


def _limiter(per_minute: float, amount: float = 1.0) -> AsyncLimiter:
    """A leaky bucket that drains per_minute/60 per second, with a burst of at least `amount`."""
    period = max(1.0, 60.0 * amount / per_minute)
    return AsyncLimiter(per_minute * period / 60.0, period)


def image_executor(workers: int | None = None) -> Executor:
    """Threads for image preparation: Pillow releases the GIL while it decodes, resizes and
    encodes, so threads scale across cores without the pickling a process pool pays per image."""
    return ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1, thread_name_prefix="mmad-image")


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def latest_records(records: list[dict]) -> dict[str, dict]:
    """The last record per template path (a retried job's newest outcome wins)."""
    return {r["path"]: r for r in records if r.get("status") in FINAL_STATUSES and "path" in r}


class Engine:
    """Runs plans against one provider through one cache."""

    def __init__(self, provider: Provider, cache: ResponseCache, settings: EngineSettings | None = None, *,
                 on_event: Callable[[Event], None] | None = None,
                 sleep: Callable[[float], object] = asyncio.sleep,
                 clock: Callable[[], float] = time.monotonic,
                 executor: Executor | None = None, meter: CostMeter | None = None,
                 batch: BatchOptions | None = None) -> None:
        self.provider = provider
        self.meter = meter
        self.batch = batch
        self._ref_sizes: dict[Path, tuple[int, int]] = {}
        self.cache = cache
        self.settings = settings or EngineSettings()
        self._emit = on_event or (lambda event: None)
        self._sleep = sleep
        self._clock = clock
        self._executor = executor
        self._own_executor = executor is None
        self._stopping = False
        self._summary = RunSummary()
        self._pause_until = 0.0
        self._rate_limited_streak = 0
        self._latency = None  # EWMA seconds
        self._tokens_per_request = None  # EWMA input+output tokens
        self._rpm = self.settings.requests_per_minute
        self._tpm = self.settings.tokens_per_minute
        self._rpm_limiter = _limiter(self._rpm) if self._rpm else None
        self._tpm_limiter = None
        self._gate: _Gate | None = None
        self._references: dict[str, asyncio.Future] = {}
        self._inflight: dict[str, asyncio.Future] = {}  # cache key -> done when its live call ends
        self._logs: dict[tuple[str, str], JsonlLog] = {}

    # ----------------------------------------------------------------- control

    def request_stop(self, reason: str = "stopped by the user") -> None:
        """Finish in-flight jobs, take no new ones; the run stays resumable."""
        if not self._stopping:
            self._stopping = True
            self._summary.stopped = reason
            self._emit(RunStopped(reason))

    # ----------------------------------------------------------------- run

    async def run(self, plans: list[SubsetPlan]) -> RunSummary:
        started = self._clock()
        summary = self._summary
        previous = {id(plan): latest_records(JsonlLog.read(plan.jsonl_path)) for plan in plans}
        todo: list[tuple[SubsetPlan, Job]] = []
        for plan in plans:
            done = previous[id(plan)]
            for job in plan.jobs:
                record = done.get(job.path)
                if record is None or (self.settings.retry_failed and record["status"] != "ok"):
                    todo.append((plan, job))
        summary.total = sum(len(plan.jobs) for plan in plans)
        summary.already_done = summary.total - len(todo)
        self._emit(RunStarted(summary.total, len(todo), summary.already_done))
        for plan in plans:
            self._logs[(plan.subset.dataset, plan.subset.subset)] = JsonlLog(plan.jsonl_path)
        queue: asyncio.Queue = asyncio.Queue()
        for item in todo:
            queue.put_nowait(item)
        try:
            if self.batch is not None:
                await run_batches(self, todo, self.batch)
                return summary
            first_miss = next((job for _, job in todo if job.key not in self.cache), None)
            if first_miss is not None:
                await self._preflight(first_miss, next(p for p, j in todo if j is first_miss))
            concurrency = self._initial_concurrency()
            self._gate = _Gate(concurrency)
            workers = self.settings.concurrency or self.settings.auto_concurrency_cap
            tasks = [asyncio.create_task(self._worker(queue)) for _ in range(min(workers, max(1, len(todo))))]
            try:
                await asyncio.gather(*tasks)
            except asyncio.CancelledError:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                summary.stopped = summary.stopped or "cancelled"
                raise
        finally:
            for log in self._logs.values():
                log.close()
            for plan in plans:
                done = latest_records(JsonlLog.read(plan.jsonl_path))
                summary.csv_paths.append(self._write_csv(plan, done))
                summary.remaining += sum(1 for job in plan.jobs if job.path not in done)
            if self._executor is not None and self._own_executor:
                self._executor.shutdown(wait=False, cancel_futures=True)
            summary.elapsed_s = self._clock() - started
        return summary

    async def _preflight(self, job: Job, plan: SubsetPlan) -> None:
        images = await self._images_for(job, plan)
        await self.provider.preflight(job.request, images)

    def _initial_concurrency(self) -> int:
        if self.settings.concurrency:
            return self.settings.concurrency
        return self._auto_concurrency() or self.settings.default_concurrency

    def _auto_concurrency(self) -> int | None:
        """Little's law: in flight = rate x latency, with headroom for latency jitter."""
        if not self._rpm or self._latency is None:
            return None
        needed = math.ceil(self._rpm / 60.0 * self._latency * 1.5) + 2
        return max(1, min(self.settings.auto_concurrency_cap, needed))

    async def _worker(self, queue: asyncio.Queue) -> None:
        while not self._stopping:
            try:
                plan, job = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            record = await self._run_job(plan, job)
            if record is not None:
                self._finish(job, record)

    def _finish(self, job: Job, record: dict) -> None:
        """Append a job's final record, count it, and tell the listener."""
        self._logs[(job.dataset, job.subset)].append(record)
        self._summary.statuses[record["status"]] += 1
        self._summary.sources[record["source"]] += 1
        self._emit(JobFinished(record))

    def _finish_batch_outcome(self, plan: SubsetPlan, job: Job, outcome: Completion | ProviderFailure) -> None:
        """A batch answer goes through the same cache, parser and records as a live one."""
        if isinstance(outcome, ProviderFailure):
            self._settle(job, None)
            self._summary.failures[outcome.kind] += 1
            self._finish(job, self._record(job, "error", source="batch", attempts=1, error=f"{outcome.kind}: {outcome}"))
            return
        self._settle(job, outcome.usage)
        for key, value in outcome.usage.items():
            self._summary.usage[key] += value
        if outcome.refused:
            self._finish(job, self._record(job, "refused", source="batch", attempts=1, raw=outcome.text,
                                           usage=outcome.usage, error="the model refused"))
            return
        value = {"text": outcome.text, "usage": outcome.usage, "latency_s": None,
                 "finish_reason": outcome.finish_reason, "model": outcome.model, "time": _now_iso()}
        self.cache.put(job.key, value)
        self._finish(job, self._answer_record(job, value, source="batch", attempts=1))

    def _emit_batch_submitted(self, batch_id: str, requests: int) -> None:
        self._summary.live_requests += 1
        self._emit(BatchSubmitted(batch_id, requests))

    # ----------------------------------------------------------------- one job

    async def _run_job(self, plan: SubsetPlan, job: Job) -> dict | None:
        cached = self.cache.get(job.key)
        if cached is not None:
            return self._answer_record(job, cached, source="cache", attempts=0)
        twin = self._inflight.get(job.key)
        if twin is not None:  # the same request (identical image bytes) is being paid for right now
            await asyncio.wait([twin])
            cached = self.cache.get(job.key)
            if cached is not None:
                return self._answer_record(job, cached, source="cache", attempts=0)
        done = asyncio.get_running_loop().create_future()
        self._inflight[job.key] = done
        try:
            return await self._run_live(plan, job)
        finally:
            if self._inflight.get(job.key) is done:
                del self._inflight[job.key]
            done.set_result(None)

    async def _run_live(self, plan: SubsetPlan, job: Job) -> dict | None:
        if self.meter is not None and not self._within_budget(job, plan):
            return None
        try:
            images = await self._images_for(job, plan)
        except _Stopped:
            return None
        except Exception as exc:  # an image that cannot be decoded is this job's failure
            return self._record(job, "error", source="live", attempts=0,
                                error=f"cannot prepare image {job.query}: {type(exc).__name__}: {exc}")
        attempts = 0

        async def attempt_once() -> tuple[Completion, float]:
            nonlocal attempts
            attempts += 1
            return await self._call(job.request, images)

        try:
            completion, latency = await self._with_retries(attempt_once)
        except _Stopped:
            self._settle(job, None)
            return None
        except ProviderFailure as failure:
            self._settle(job, None)
            if failure.fatal:
                self._summary.fatal = self._summary.fatal or failure
                self.request_stop(f"{failure.kind}: {failure}")
                return None
            return self._record(job, "error", source="live", attempts=attempts, error=f"{failure.kind}: {failure}")
        self._settle(job, completion.usage)
        value = {"text": completion.text, "usage": completion.usage, "latency_s": round(latency, 4),
                 "finish_reason": completion.finish_reason, "model": completion.model, "time": _now_iso()}
        if completion.refused:
            return self._record(job, "refused", source="live", attempts=attempts, raw=completion.text,
                                usage=completion.usage, latency=latency, error="the model refused")
        self.cache.put(job.key, value)
        return self._answer_record(job, value, source="live", attempts=attempts)

    def _within_budget(self, job: Job, plan: SubsetPlan) -> bool:
        """Reserve this job's estimated cost, or stop the run before it could pass --max-cost."""
        if self.meter.price is None:
            return True  # no price for this model: nothing to estimate or cap
        sizes = {}
        for ref, path in zip(job.request.image_refs, list(plan.references) + [job.query]):
            if path == job.query:
                sizes[ref.sha256] = prepared_size(path)
            else:
                if path not in self._ref_sizes:
                    self._ref_sizes[path] = prepared_size(path)
                sizes[ref.sha256] = self._ref_sizes[path]
        estimate = self.meter.estimate(job.request, sizes, job.family)
        if self.meter.admit(job.key, estimate):
            return True
        self._summary.budget_stop = True
        self.request_stop(f"budget: the next request (~${estimate:.4f}) could pass --max-cost "
                          f"${self.meter.max_cost:.2f} (spent ${self.meter.spent:.4f})")
        return False

    def _settle(self, job: Job, usage: dict | None) -> None:
        if self.meter is not None:
            self.meter.settle(job.key, usage)
            self._summary.spent = self.meter.spent
            self._summary.estimated = self.meter.estimated_done

    async def _with_retries(self, attempt_once: Callable) -> tuple[Completion, float]:
        backoff = wait_exponential_jitter(multiplier=self.settings.backoff_initial, max=self.settings.backoff_max,
                                          jitter=self.settings.backoff_initial)

        def wait(state) -> float:
            failure = state.outcome.exception()
            if isinstance(failure, ProviderFailure) and failure.kind == "rate_limit":
                return 0.0  # the shared pause set by _observe_failure does the waiting
            seconds = backoff(state)
            if isinstance(failure, ProviderFailure) and failure.retry_after:
                seconds = max(seconds, failure.retry_after)
            return seconds

        def before_sleep(state) -> None:
            failure = state.outcome.exception()
            self._emit(Retrying(getattr(failure, "kind", "error"), state.attempt_number,
                                state.upcoming_sleep, str(failure)))

        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.settings.max_attempts),
            wait=wait,
            retry=retry_if_exception(lambda exc: isinstance(exc, ProviderFailure) and exc.retryable
                                     and not self._stopping),
            sleep=self._sleep,
            before_sleep=before_sleep,
            reraise=True,
        )
        return await retrying(attempt_once)

    async def _call(self, request: Request, images: dict[str, EncodedImage]) -> tuple[Completion, float]:
        await self._admit()
        start = self._clock()
        try:
            self._summary.live_requests += 1
            completion = await self.provider.complete(request, images)
        except ProviderFailure as failure:
            self._summary.failures[failure.kind] += 1
            self._observe_failure(failure)
            raise
        finally:
            await self._gate.release()
        latency = self._clock() - start
        await self._observe(completion, latency)
        return completion, latency

    async def _admit(self) -> None:
        """Wait for the shared pause, a concurrency slot, and the rate limiters."""
        while True:
            if self._stopping:
                raise _Stopped()
            wait = self._pause_until - self._clock()
            if wait <= 0:
                break
            await self._sleep(min(wait, 1.0))
        await self._gate.acquire()
        try:
            if self._rpm_limiter is not None:
                await self._rpm_limiter.acquire()
            if self._tpm_limiter is not None:
                amount = min(self._tokens_per_request or 1.0, self._tpm_limiter.max_rate)
                await self._tpm_limiter.acquire(amount)
        except BaseException:
            await self._gate.release()
            raise

    # ----------------------------------------------------------------- learning from responses

    def _pause(self, seconds: float, reason: str) -> None:
        until = self._clock() + seconds
        if until > self._pause_until:
            self._pause_until = until
            self._emit(Paused(seconds, reason))

    def _observe_failure(self, failure: ProviderFailure) -> None:
        if failure.limits:
            self._learn_limits(failure.limits)
        if failure.kind == "rate_limit":
            self._rate_limited_streak += 1
            seconds = failure.retry_after
            if seconds is None:
                seconds = min(self.settings.backoff_max,
                              self.settings.backoff_initial * 2 ** (self._rate_limited_streak - 1))
            self._pause(seconds, "rate limited (429)")

    async def _observe(self, completion: Completion, latency: float) -> None:
        self._rate_limited_streak = 0
        self._latency = latency if self._latency is None else 0.8 * self._latency + 0.2 * latency
        tokens = sum(completion.usage.get(k, 0) for k in ("input_tokens", "output_tokens"))
        for key, value in completion.usage.items():
            self._summary.usage[key] += value
        if tokens:
            self._tokens_per_request = tokens if self._tokens_per_request is None else \
                0.8 * self._tokens_per_request + 0.2 * tokens
            if self._tpm and self._tpm_limiter is None:
                self._tpm_limiter = _limiter(self._tpm, self._tokens_per_request)
        if completion.limits:
            self._learn_limits(completion.limits)
        if not self.settings.concurrency:
            target = self._auto_concurrency()
            if target and self._gate is not None and target != self._gate.limit:
                await self._gate.resize(target)

    def _learn_limits(self, limits: RateLimitInfo) -> None:
        """Adopt the provider's own limits when they are tighter than ours."""
        if limits.requests_limit and (self._rpm is None or limits.requests_limit < self._rpm):
            self._rpm = limits.requests_limit
            self._rpm_limiter = _limiter(self._rpm)
        if limits.tokens_limit and (self._tpm is None or limits.tokens_limit < self._tpm):
            self._tpm = limits.tokens_limit
            self._tpm_limiter = _limiter(self._tpm, self._tokens_per_request or 1.0)
        if limits.requests_remaining == 0 and limits.requests_reset_s:
            self._pause(limits.requests_reset_s, "request limit reached until reset")
        if (limits.tokens_remaining is not None and self._tokens_per_request
                and limits.tokens_remaining < self._tokens_per_request and limits.tokens_reset_s):
            self._pause(limits.tokens_reset_s, "token limit reached until reset")

    # ----------------------------------------------------------------- images

    def _pool(self) -> Executor:
        if self._executor is None:
            self._executor = image_executor(self.settings.image_workers)
        return self._executor

    async def _encode(self, path) -> EncodedImage:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool(), partial(encode_file, str(path), self.settings.compress_level))

    async def _images_for(self, job: Job, plan: SubsetPlan) -> dict[str, EncodedImage]:
        """The job's images by sha256: references prepared once per run, the query per job."""
        refs = job.request.image_refs
        images: dict[str, EncodedImage] = {}
        for ref, path in zip(refs[:-1], plan.references):
            future = self._references.get(ref.sha256)
            if future is None:
                future = asyncio.ensure_future(self._encode(path))
                self._references[ref.sha256] = future
            images[ref.sha256] = await asyncio.shield(future)
        query = await self._encode(job.query)
        images[refs[-1].sha256] = query
        return images

    # ----------------------------------------------------------------- records

    def _answer_record(self, job: Job, value: dict, *, source: str, attempts: int) -> dict:
        parsed = parse_answer(value.get("text"))
        status = "ok" if parsed.ok else "parse_failed"
        return self._record(job, status, source=source, attempts=attempts, score=parsed.score,
                            reason=parsed.reason, raw=value.get("text"), usage=value.get("usage"),
                            latency=value.get("latency_s"), error=parsed.error)

    def _record(self, job: Job, status: str, *, source: str, attempts: int, score: float | None = None,
                reason: str | None = None, raw: str | None = None, usage: dict | None = None,
                latency: float | None = None, error: str | None = None) -> dict:
        return {
            "dataset": job.dataset, "subset": job.subset, "path": job.path, "severity": job.severity,
            "score": score, "status": status, "reason": reason, "raw": raw, "usage": usage or {},
            "latency_s": None if latency is None else round(latency, 4), "attempts": attempts,
            "source": source, "error": error, "key": job.key, "time": _now_iso(),
        }

    def _write_csv(self, plan: SubsetPlan, done: dict[str, dict]):
        rows = []
        for job in plan.jobs:
            record = done.get(job.path)
            score = record["score"] if record and record["status"] == "ok" else None
            rows.append((job.path, job.severity, score))
        write_result_csv(plan.csv_path, rows)
        return plan.csv_path
