# mypy: disable-error-code="attr-defined"
# (a mixin of Engine: the attributes it uses are the engine's, set in Engine.__init__)
"""One live job, from its slot to its record: the request, its retries and what each failure means.

A job takes a concurrency slot, prepares its images, and keeps both until it ends: a retry
waits out its backoff (or its 429 wait) holding the slot, so a failing server sees at most as
many retrying jobs as there are slots. Each attempt reserves its worst case within the budget,
waits for the run's first answer (`LeadGate`), is paced, and is sent with a total deadline
(`--timeout`, for the whole answer, not per read). When the run stops, requests in flight get a
grace period to finish (and be stored); a request still out after it is abandoned and its job
stays to-do.

Part of `Engine` (a mixin): it uses the engine's provider, settings, controls, meter, summary,
gate, breaker and records.
"""

from __future__ import annotations

import asyncio
import time

from mmad.engine.events import Retrying
from mmad.engine.failures import SERVER_TROUBLE, backoff, fatal_for_first_request, first_request_failure
from mmad.engine.preparation import ImagePreparationError
from mmad.engine.ratecontrol import RateControl, Stopped, Ticket
from mmad.engine.records import cause_of, now_iso
from mmad.engine.work import Job, SubsetPlan
from mmad.errors import StorageError
from mmad.providers.base import Completion, ProviderFailure

STOP_GRACE_MIN_S = 5.0  # requests in flight at a stop get this long to finish, or 3 typical latencies


class LiveCalls:
    """The engine's live path (see the module docstring)."""

    async def _live(self, plan: SubsetPlan, job: Job):
        """Run one job live to a record; None when the run stopped first (the job stays to-do);
        ELSEWHERE when another process is paying for the same request."""
        control = self.control(job.request.model)
        try:
            ticket = await control.admit_slot()
        except Stopped:
            return None
        try:
            claimed = self._claim(plan, job)
        except BaseException:
            control.release(ticket)
            raise
        if claimed is not None:
            control.release(ticket)
            return claimed
        try:
            try:
                images = await self._prepare(job)
            except Stopped:
                return None
            except ImagePreparationError as exc:  # an image that cannot be decoded is this job's failure
                return self._record(job, "error", source="not sent", attempts=0, error=str(exc),
                                    cause="image: cannot be decoded")
            return await self._attempts(plan, job, control, ticket, images)
        finally:
            self._unclaim(job)
            control.release(ticket)

    async def _attempts(self, plan: SubsetPlan, job: Job, control: RateControl, ticket: Ticket, images) -> dict | None:
        attempts = 0
        limited_since: float | None = None
        sizes = {sha: (image.width, image.height) for sha, image in images.items()}
        try:
            while True:
                lead = False
                try:
                    lead = await self._through_gate(job)
                    completion, latency = await self._call(job, control, ticket, images, sizes, lead)
                except Stopped:
                    return None
                except ProviderFailure as failure:
                    wait = failure.own_wait
                    if failure.kind == "rate_limit":
                        if limited_since is None:
                            limited_since = self._clock()
                        waited = self._clock() - limited_since
                        if waited + wait <= self.settings.rate_limit_timeout or not waited:
                            if await self._rest(wait, control):
                                continue  # the wait is this job's (or the shared pause); no attempt spent
                            return None
                    else:
                        attempts += 1
                    if self.stopping:
                        return None  # cut short by the stop: the job stays to-do
                    if self._stop_for(failure, job, lead, attempts):
                        return None
                    if failure.retryable and failure.kind != "rate_limit" and attempts < self.settings.max_attempts:
                        wait = backoff(attempts, failure, self.settings.backoff_initial, self.settings.backoff_max)
                        self._emit(Retrying(failure.kind, attempts, wait, str(failure)))
                        if await self._rest(wait, control):
                            continue
                        return None
                    if failure.kind == "rate_limit":
                        failure = ProviderFailure("rate_limit", f"still rate limited after "
                                                  f"{self.settings.rate_limit_timeout:.0f} s: {failure}")
                    return self._failed(job, failure, attempts)
                attempts += 1
                record = self._store_answer(plan, job, completion, latency, attempts)
                if record["status"] == "refused" and self._reasked[job.key] < plan.task.max_reasks:
                    self._reasked[job.key] += 1  # the paid refusal is logged; the question is asked again
                    self._logs.append(plan.jsonl_path, dict(record, status="reasked"))
                    if self.stopping:
                        return None  # cut short by the stop: asked again on resume, within the same limit
                    continue
                return record
        finally:
            if self._gate.leader == job.key and not self.stopping:
                self._gate.open()  # the lead job ended without stopping the run: the rest may go

    def _stop_for(self, failure: ProviderFailure, job: Job, lead: bool, attempts: int) -> bool:
        """Whether this failure stops the run (every later request would fail alike)."""
        wait = failure.retry_after or 0.0
        if failure.kind == "rate_limit" and wait > self.settings.rate_limit_timeout:
            until = time.strftime("%H:%M:%S", time.localtime(time.time() + wait))
            self._fatal(ProviderFailure("rate_limit", f"the server asks to wait {wait:.0f} s "
                                        f"(until {until}), longer than the rate-limit timeout "
                                        f"({self.settings.rate_limit_timeout:g} s): {failure}"))
            return True
        hint = self.provider.rejection_hint(job.request) if lead and failure.kind == "bad_request" else None
        if hint:  # the server cannot take this kind of request: every job would fail alike
            self._fatal(ProviderFailure("bad_request", f"{failure}; {hint}", status=failure.status))
            return True
        if failure.fatal or (lead and fatal_for_first_request(failure, attempts, self.settings.max_attempts)):
            self._fatal(first_request_failure(failure, self.provider) if lead else failure)
            return True
        return False

    async def _rest(self, seconds: float, control: RateControl) -> bool:
        """Wait before the next attempt (holding the slot); False when the run stopped meanwhile."""
        if seconds <= 0:
            return not self.stopping
        control.held(seconds)
        try:
            await self.nap(seconds)
        except Stopped:
            return False
        return True

    async def _through_gate(self, job: Job) -> bool:
        """Wait until the run's first request has an answer; True when this job is that request."""
        gate = self._gate
        if gate.opened or gate.leads(job.key):
            return not gate.opened
        await self._until(gate.wait())
        return False

    async def _call(self, job: Job, control: RateControl, ticket: Ticket, images, sizes, lead: bool
                    ) -> tuple[Completion, float]:
        """One request: the budget, the pacer, the call with its deadline, and what it teaches."""
        meter = self.meter
        reserved = False
        try:
            tokens = None
            if meter is not None and (meter.price is not None or control.tokens_per_minute()):
                tokens, _ = meter.counter.request(job.request, sizes)  # for token pacing and the budget
                if meter.price is not None:
                    await self._reserve(job, sizes)
                    reserved = True
            await control.pace(tokens, ticket)
            if self.stopping:
                raise Stopped()
            start = self._clock()
            self._summary.live_requests += 1
            if lead:
                self._gate.sent()
            try:
                completion = await self._send(job, images)
            except ProviderFailure as failure:
                self._summary.failures[failure.kind] += 1
                failure.own_wait = control.observe_failure(failure, ticket)
                control.held(self._clock() - start, request=True)
                self._count_request(failure)
                raise
            finally:
                if lead:
                    self._gate.answered()
            latency = self._clock() - start
            control.observe_success(latency, sum(completion.usage.get(k, 0) for k in ("input_tokens", "output_tokens")),
                                    completion.limits, ticket)
            self._count_request(None)
            if lead:
                self._gate.open()
            for key, value in completion.usage.items():
                self._summary.usage[key] += value
            if reserved:
                self._settle(job, completion.usage)
                reserved = False
            return completion, latency
        finally:
            if reserved:
                self._settle(job, None)

    async def _send(self, job: Job, images) -> Completion:
        """The provider call, abandoned (Stopped) when a stop's grace period ends before it."""
        call = asyncio.ensure_future(self.provider.complete(job.request, images))
        self._calls.add(call)
        try:
            return await call
        except asyncio.CancelledError:
            current = asyncio.current_task()
            assert current is not None, "a coroutine runs in a task"
            if call.cancelled() and not current.cancelling():
                raise Stopped() from None  # cut off by the stop: the job stays to-do
            raise
        finally:
            self._calls.discard(call)

    def _count_request(self, failure: ProviderFailure | None) -> None:
        """Feed the breaker: an answer, or a failure caused by server trouble."""
        if failure is not None and failure.kind not in SERVER_TROUBLE:
            return
        tripped = self._breaker.observe(None if failure is None else cause_of(failure))
        if tripped is not None and not self.stopping:
            self._fatal(ProviderFailure("transient", f"{tripped} at {self.provider.url}; stopped early"))

    def _stop_grace(self) -> float:
        """How long requests in flight may still take after a stop."""
        latencies = [c.latency for c in self._controls.values() if c.latency is not None]
        return max(STOP_GRACE_MIN_S, 3 * max(latencies, default=0.0))

    def _abandon_calls(self) -> None:
        for call in list(self._calls):
            call.cancel()

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

    def _store_answer(self, plan: SubsetPlan, job: Job, completion: Completion, latency: float,
                      attempts: int) -> dict:
        """Cache the raw answer (unless refused), then build its record."""
        value = {"text": completion.text, "usage": completion.usage, "latency_s": round(latency, 4),
                 "finish_reason": completion.finish_reason, "model": completion.model, "time": now_iso()}
        if completion.refused:
            return dict(self._record(job, "refused", source="live", attempts=attempts, raw=completion.text,
                                     usage=completion.usage, latency=latency, error="the model refused",
                                     cause="refused by the model"), model=completion.model)
        record = self._answer_record(plan, job, value, source="live", attempts=attempts)
        if record["status"] != "refused":
            try:
                self.cache.put(job.key, value)
            except StorageError as error:
                # The record (with the raw answer) may still be written: the rerun then needs no cache.
                self._storage_failed(error)
        return record
