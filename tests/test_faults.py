"""Money under faults: a failing server draws few requests, a long retry-after does not park the
run, a trickling body gives up at the deadline, a stop does not wait on it, the run's first
request holds the rest only as long as it can tell something."""

import asyncio
from concurrent.futures import ThreadPoolExecutor

import pytest

from mmad.cache.store import ResponseCache
from mmad.config import PACKAGED_PROMPTS
from mmad.data import datasets
from mmad.engine.events import Paused
from mmad.engine.failures import Breaker
from mmad.engine.jobs import build_plan
from mmad.engine.runner import Engine, EngineSettings
from mmad.providers.base import ProviderFailure, Request
from mmad.providers.openai import OpenAIProvider
from mmad.results.files import JsonlLog
from tests.conftest import FakeClock, make_industry_subset, run_engine
from tests.wire_faults import FailAfter, Fault


@pytest.fixture
def root(tmp_path):
    make_industry_subset(tmp_path / "data", "toy", "widget", per_level=10)  # 40 jobs
    return tmp_path / "data"


def plans_for(root, provider, tmp_path):
    return build_plan(datasets.resolve(root, "toy", "widget"), identity=provider.identity(), model="m", refs=3,
                      prompt_choice=None, prompts_dir=PACKAGED_PROMPTS, out_dir=tmp_path / "out", run_name="m")


def test_breaker_counts_requests_and_the_failure_share():
    breaker = Breaker(consecutive=3, window=8, share=0.75)
    assert [breaker.observe(c) for c in ("a", "a", None, "b")] == [None] * 4  # an answer resets the streak
    assert breaker.observe("b") is None
    assert breaker.observe("a") == "the last 3 requests failed (b x2; a x1)"
    shared = Breaker(consecutive=100, window=8, share=0.75)
    verdicts = [shared.observe(c) for c in ("x", "x", None, "x", "x", None, "x", "x")]
    assert verdicts[-1] == "6 of the last 8 requests failed (x x6)" and not any(verdicts[:-1])


def test_a_server_that_starts_failing_everything_draws_few_requests(server, root, tmp_path):
    """Truncated bodies, JSON without choices, reset connections after the 5th request: retries
    hold their slot, the breaker counts requests; the run stops, the rest stays to-do."""
    rule = FailAfter(5)
    server.fault_rule = rule
    provider = OpenAIProvider(api_key="k", base_url=server.openai_url)
    summary = run_engine(provider, plans_for(root, provider, tmp_path), tmp_path / "cache", concurrency=4,
                         breaker_threshold=10)
    drawn_after = len(server.requests) - rule.good
    assert summary.fatal is not None and "requests failed" in str(summary.fatal)
    assert drawn_after <= 10 + 4  # the breaker's count plus the requests in flight
    assert summary.statuses["ok"] == 5 and summary.remaining >= 30


def test_retry_after_longer_than_the_timeout_waits_the_timeout_then_stops(server, root, tmp_path):
    server.fault_rule = lambda received, n: Fault("429", retry_after_s=3600)
    provider = OpenAIProvider(api_key="k", base_url=server.openai_url)
    clock = FakeClock()
    events = []
    cache = ResponseCache(tmp_path / "cache")

    async def go():
        engine = Engine(provider, cache, EngineSettings(rate_limit_timeout=20), clock=clock, sleep=clock.sleep,
                        on_event=events.append, executor=ThreadPoolExecutor(2))
        try:
            return await engine.run(plans_for(root, provider, tmp_path))
        finally:
            await provider.aclose()
    summary = asyncio.run(go())
    cache.close()
    pauses = [e for e in events if isinstance(e, Paused)]
    assert pauses and all(p.seconds <= 20 for p in pauses)  # never the hour the server asked for
    assert "asked for 3600 s, capped at the rate-limit timeout" in pauses[0].reason and pauses[0].until
    assert summary.fatal is not None and summary.fatal.kind == "rate_limit"
    assert "asks to wait 3600 s" in str(summary.fatal) and "rate-limit timeout (20 s)" in str(summary.fatal)
    assert summary.remaining == 40 and not summary.statuses  # nothing failed: every job stays to-do
    assert len(server.requests) == 2  # the first request, and its one retry after the capped wait


def test_a_trickling_body_gives_up_at_the_deadline(server):
    server.fault_rule = lambda received, n: Fault("trickle", rate=1.0)
    provider = OpenAIProvider(api_key="k", base_url=server.openai_url, timeout=1.0)

    async def go():
        try:
            await provider.complete(Request(system="s", parts=("hello",), model="m"), {})
        finally:
            await provider.aclose()
    with pytest.raises(ProviderFailure) as caught:
        asyncio.run(go())  # a body of hundreds of bytes at 1 byte/s: minutes without a total deadline
    assert caught.value.kind == "transient" and "no complete answer within 1 s" in str(caught.value)


def test_a_stop_does_not_wait_for_a_trickling_answer(server, root, tmp_path, monkeypatch):
    """Requests in flight at a stop get a grace period, not the whole --timeout; their jobs stay to-do."""
    import mmad.engine.live_calls
    monkeypatch.setattr(mmad.engine.live_calls, "STOP_GRACE_MIN_S", 0.3)
    server.fault_rule = lambda received, n: Fault("trickle", rate=1.0)
    provider = OpenAIProvider(api_key="k", base_url=server.openai_url, timeout=600.0)
    cache = ResponseCache(tmp_path / "cache")

    async def go():
        engine = Engine(provider, cache, EngineSettings(concurrency=2), executor=ThreadPoolExecutor(2))
        run = asyncio.ensure_future(engine.run(plans_for(root, provider, tmp_path)))
        while not server.requests:
            await asyncio.sleep(0.05)
        engine.request_stop("terminated (SIGTERM)")
        try:
            return await run
        finally:
            await provider.aclose()
    summary = asyncio.run(go())
    cache.close()
    assert summary.stopped.startswith("terminated") and summary.remaining == 40
    assert JsonlLog.read(tmp_path / "out" / "m_toy_widget.jsonl") == []  # cut off: to-do, never an error


def test_a_slow_first_answer_does_not_hold_the_rest(server, root, tmp_path, monkeypatch):
    """The run's first request answers after a long while: once it has been out longer than a
    wrong URL, key or model would take to fail, the others go."""
    from functools import partial

    import mmad.engine.failures
    import mmad.engine.runner
    monkeypatch.setattr(mmad.engine.runner, "LeadGate", partial(mmad.engine.failures.LeadGate, patience=0.2))
    server.fault_rule = lambda received, n: Fault("slow", seconds=3.0) if n == 1 else None
    provider = OpenAIProvider(api_key="k", base_url=server.openai_url)
    summary = run_engine(provider, plans_for(root, provider, tmp_path), tmp_path / "cache", concurrency=4)
    assert summary.statuses == {"ok": 40}
    records = JsonlLog.read(tmp_path / "out" / "m_toy_widget.jsonl")
    slow = [index for index, record in enumerate(records) if record["latency_s"] >= 3.0]
    assert slow and slow[0] > 10  # the others were answered while the first was still out
