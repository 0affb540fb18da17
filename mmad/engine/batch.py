"""Batch mode: the same jobs through the vendors' Batch APIs (half price, answers within 24 h).

How it works:
  1. jobs already answered in the response cache are recorded at once (free);
  2. jobs already inside a batch submitted by an earlier process are left alone: their batch
     is polled, never resubmitted (ids live in `<out>/batches.json`, written atomically right
     after each submission);
  3. the rest are encoded and packed into batches split by request count and by bytes (four
     base64 images per request fill the size limit after a few hundred requests);
  4. ended batches are downloaded; answers go into the same cache and result files as live calls.
A killed process resumes polling when the same command runs again. Jobs decided without a request
(`Job.local`) are recorded at once; follow-up jobs (`Job.follow_up`) are not built in batch mode: a
caller that needs them runs batches in rounds (as `mmad qa run` does).
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from pathlib import Path

from mmad.atomic import atomic_write_text
from mmad.engine.events import BatchSubmitted
from mmad.engine.preparation import ImagePreparationError
from mmad.engine.ratecontrol import Stopped
from mmad.engine.records import cause_of
from mmad.errors import StorageError
from mmad.providers.base import Completion, ProviderFailure
from mmad.reading import read_text


@dataclass
class BatchOptions:
    state_path: Path
    poll_interval: float = 30.0
    max_requests: int | None = None  # None: the provider's own limit
    max_bytes: int | None = None


@dataclass
class BatchState:
    """Submitted batches: {"id", "keys", "done"}; persisted after every change."""

    path: Path
    batches: list[dict] = field(default_factory=list)

    @classmethod
    def load(cls, path: Path) -> BatchState:
        if not path.exists():
            return cls(path)
        return cls(path, json.loads(read_text(path, "utf-8")).get("batches", []))

    def save(self) -> None:
        try:
            atomic_write_text(self.path, json.dumps({"batches": self.batches}, indent=1))
        except OSError as exc:
            from mmad.errors import describe_os_error
            raise StorageError(f"cannot write {describe_os_error(self.path, exc)}") from None

    def pending_keys(self) -> set[str]:
        return {key for batch in self.batches if not batch["done"] for key in batch["keys"]}


async def run_batches(engine, todo: list, options: BatchOptions) -> None:
    """Submit what is not yet submitted, then poll until every batch has ended (or a stop)."""
    provider = engine.provider
    state = BatchState.load(options.state_path)
    by_key: dict[str, list] = {}  # identical requests (same image bytes) share one custom_id
    for plan, job in todo:
        if job.local is not None:  # decided without a request: recorded, never sent
            engine._finish(plan, job, await engine._outcome(plan, job))
            continue
        by_key.setdefault(job.key, []).append((plan, job))
    pending = state.pending_keys()
    to_submit = []
    for key, jobs in by_key.items():
        cached = engine.cache.get(key)
        if cached is not None:
            for plan, job in jobs:
                engine._finish(plan, job, engine._answer_record(plan, job, cached, source="cache", attempts=0))
        elif key not in pending:
            to_submit.append(jobs[0])
    try:
        await _submit(engine, provider, state, to_submit, options)
        while not engine.stopping and any(not batch["done"] for batch in state.batches):
            for batch in state.batches:
                if batch["done"] or engine.stopping:
                    continue
                ended, status = await provider.batch_status(batch["id"])
                batch["status"] = status
                if not ended:
                    continue
                for custom_id, outcome in await provider.batch_results(batch["id"]):
                    for index, (plan, job) in enumerate(by_key.get(custom_id, [])):
                        if index == 0:
                            _finish_outcome(engine, plan, job, outcome)
                        else:  # a twin: the same answer, from the cache it was just written to
                            cached = engine.cache.get(job.key)
                            engine._finish(plan, job, engine._answer_record(plan, job, cached, source="cache",
                                                                            attempts=0)
                                           if cached is not None else
                                           engine._record(job, "error", source="batch", attempts=1,
                                                          error=f"{outcome}"))
                batch["done"] = True
                state.save()
            if any(not batch["done"] for batch in state.batches) and not engine.stopping:
                try:
                    await engine.nap(options.poll_interval)
                except Stopped:
                    break
    except ProviderFailure as failure:
        engine._fatal(failure)
    except StorageError as error:
        engine._storage_failed(error)
    if any(not batch["done"] for batch in state.batches):
        engine.request_stop("batches still processing; rerun the same command to collect them")


def _finish_outcome(engine, plan, job, outcome: Completion | ProviderFailure) -> None:
    """A batch answer goes through the same cache, interpretation and records as a live one."""
    if isinstance(outcome, ProviderFailure):
        engine._settle(job, None)
        engine._summary.failures[outcome.kind] += 1
        engine._finish(plan, job, engine._record(job, "error", source="batch", attempts=1,
                                                 error=f"{outcome.kind}: {outcome}", cause=cause_of(outcome)))
        return
    engine._settle(job, outcome.usage)
    for key, value in outcome.usage.items():
        engine._summary.usage[key] += value
    record = engine._store_answer(plan, job, outcome, 0.0, 1)
    record.update(source="batch", latency_s=None)
    engine._finish(plan, job, record)


async def _submit(engine, provider, state: BatchState, jobs: list, options: BatchOptions) -> None:
    limit_requests, limit_bytes = provider.batch_limits
    max_requests = min(options.max_requests or limit_requests, limit_requests)
    max_bytes = min(options.max_bytes or limit_bytes, limit_bytes)
    lines: list[dict] = []
    keys: list[str] = []
    size = 0

    async def flush() -> None:
        nonlocal lines, keys, size
        if lines:
            label = f"mmad-{len(state.batches) + 1}"
            batch_id = await provider.submit_batch(lines, label)
            state.batches.append({"id": batch_id, "keys": keys, "done": False, "status": "submitted"})
            state.save()  # at once: a restart polls this batch instead of submitting it again
            engine._summary.live_requests += 1
            engine._emit(BatchSubmitted(batch_id, len(keys)))
        lines, keys, size = [], [], 0

    for plan, job in jobs:
        if engine.stopping:
            break
        try:
            images = await engine._prepare(job)
        except ImagePreparationError as exc:  # an undecodable image is this job's failure
            engine._finish(plan, job, engine._record(job, "error", source="not sent", attempts=0, error=str(exc),
                                                     cause="image: cannot be decoded"))
            continue
        if engine.meter is not None and engine.meter.price is not None:
            sizes = {sha: (image.width, image.height) for sha, image in images.items()}
            if not engine.meter.admit(job.key, engine.meter.expected(job.request, sizes, job.family, job.prefix_id)):
                engine._summary.budget_stop = True
                engine.request_stop(f"budget: the next batch request could pass --max-cost ${engine.meter.max_cost:g}")
                break
        line = provider.batch_line(job.key, job.request, images)
        line_bytes = len(json.dumps(line, separators=(",", ":"))) + 1
        if lines and (len(lines) >= max_requests or size + line_bytes > max_bytes):
            await flush()
        lines.append(line)
        keys.append(job.key)
        size += line_bytes
        await asyncio.sleep(0)
    await flush()
