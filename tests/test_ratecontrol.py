"""Rate control on a fake clock: pacing by admission time, no bursts after a stall, shared pauses,
decreases on evidence and slow recovery, capped waits, learned limits, the start-up burst, stop.
What 429s mean for the rate over time: tests/test_limit_probe.py."""

import asyncio

import pytest

from mmad.engine.ratecontrol import HEADROOM, TOKEN_HEADROOM, RateControl, Stopped, Ticket
from mmad.providers.base import ProviderFailure
from mmad.providers.headers import RateLimitInfo
from tests.conftest import FakeClock


def control(clock, **kw) -> RateControl:
    return RateControl(clock=clock, sleep=clock.sleep, **kw)


def admit_times(control_, clock, n, tokens=None):
    async def go():
        times = []
        for _ in range(n):
            ticket = await control_.admit(tokens)
            times.append(clock.now)
            control_.release(ticket)
        return times
    return asyncio.run(go())


def test_requests_are_spaced_by_the_paced_rate():
    clock = FakeClock()
    rc = control(clock, rpm=600, concurrency=10)
    times = admit_times(rc, clock, 21)
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert all(gap == pytest.approx(0.1) for gap in gaps)  # 600/min = one every 0.1 s, exactly


def test_a_starved_client_does_not_burst_after_a_stall():
    clock = FakeClock()
    rc = control(clock, rpm=600, concurrency=50)

    async def go():
        first = await rc.admit()
        rc.release(first)
        clock.now += 5.0  # the event loop was starved for 5 s: 50 slots "missed"
        times = []
        for _ in range(10):
            ticket = await rc.admit()
            times.append(clock.now)
            rc.release(ticket)
        return times
    times = asyncio.run(go())
    assert times[0] == pytest.approx(5.0)
    assert all(b - a == pytest.approx(0.1) for a, b in zip(times, times[1:]))  # no catch-up burst


def test_concurrent_waiters_never_leave_together():
    clock = FakeClock()
    rc = control(clock, rpm=1200, concurrency=20)

    async def go():
        times = []

        async def one():
            ticket = await rc.admit()
            times.append(clock.now)
            await clock.sleep(0.5)  # in flight
            rc.release(ticket)
        await asyncio.gather(*(one() for _ in range(30)))
        return sorted(times)
    times = asyncio.run(go())
    assert min(b - a for a, b in zip(times, times[1:])) >= 0.05 - 1e-9


def test_the_first_429_pauses_everyone_and_evidence_lowers_the_rate():
    clock = FakeClock()
    paused = []
    rc = control(clock, rpm=600, concurrency=10, on_pause=lambda s, r: paused.append((s, r)))
    assert rc.requests_per_minute() == 600
    assert rc.observe_failure(ProviderFailure("rate_limit", "429", retry_after=2.0)) == 0.0  # the shared pause waits
    assert paused == [(2.0, "rate limited (429)")] and rc.pause_until == pytest.approx(2.0)
    assert rc.requests_per_minute() == 600  # one 429 says nothing about the cause yet
    times = admit_times(rc, clock, 2)
    assert times[0] >= 2.0  # waited out the shared pause
    ticket = Ticket(clock.now, rc.probe.epoch)
    for _ in range(9):  # every answer a 429: far over a limit
        rc.observe_failure(ProviderFailure("rate_limit", "429", retry_after=0.5), ticket)
    assert rc.requests_per_minute() == pytest.approx(600 * 0.3)  # to what got through (nothing): the largest step
    assert "paced rate lowered" in paused[-1][1]
    clock.now += 30
    rc.observe_success(0.5)
    rc.observe_success(0.5)
    assert 180 < rc.requests_per_minute() < 600  # linear recovery, 0.5 % per second
    clock.now += 200
    rc.observe_success(0.5)
    assert rc.requests_per_minute() == pytest.approx(600)


def test_429s_with_no_known_limit_adopt_the_measured_rate():
    clock = FakeClock()
    rc = control(clock, concurrency=4)
    assert rc.requests_per_minute() is None
    admit_times(rc, clock, 20)  # unpaced: all at t=0
    clock.now = 2.0
    rc.observe_failure(ProviderFailure("rate_limit", "429", retry_after=0.1))
    assert rc.requests_per_minute() == pytest.approx(60 * 20 / 2.0)  # paced at what was sent, lowered on evidence


def test_a_wait_is_capped_at_the_rate_limit_timeout():
    clock = FakeClock()
    paused = []
    rc = control(clock, rpm=600, max_wait=20, on_pause=lambda s, r: paused.append((s, r)))
    rc.observe_failure(ProviderFailure("rate_limit", "429", retry_after=3600))
    assert rc.pause_until == pytest.approx(20) and paused[0][0] == 20
    assert "the server asked for 3600 s, capped at the rate-limit timeout" in paused[0][1]
    assert rc.observe_failure(ProviderFailure("rate_limit", "429", retry_after=3600)) == 20  # the job's own wait too


def test_a_429_at_the_background_share_makes_only_its_job_wait():
    clock = FakeClock()
    rc = control(clock, rpm=600)
    rc.probe.background = 0.1
    ticket = Ticket(0.0, rc.probe.epoch)
    for _ in range(30):
        rc.observe_success(0.3, None, None, ticket)
    assert rc.observe_failure(ProviderFailure("rate_limit", "429", retry_after=1.5), ticket) == 1.5
    assert rc.pause_until == 0.0 and rc.requests_per_minute() == 600


def test_the_first_answer_may_start_a_burst_the_server_says_remains():
    clock = FakeClock()
    rc = control(clock, concurrency=20)
    rc.observe_success(0.05, None, RateLimitInfo(requests_limit=600, requests_remaining=19))
    times = admit_times(rc, clock, 14)
    burst = int(600 * HEADROOM / 60)  # one second of the paced rate (9), fewer than the 18 remaining
    assert times[:burst] == [0.0] * burst
    assert all(b - a == pytest.approx(60 / (600 * HEADROOM)) for a, b in zip(times[burst:], times[burst + 1:]))
    rc = control(FakeClock(), concurrency=20)
    rc.observe_success(0.05, None, RateLimitInfo(requests_limit=600))  # nothing said to remain: no burst
    assert rc._requests.credit == 0


def test_learned_limits_pace_a_little_under_them():
    clock = FakeClock()
    rc = control(clock, rpm=10_000)
    rc.observe_success(0.2, 1000, RateLimitInfo(requests_limit=600, tokens_limit=30_000))
    assert rc.requests_per_minute() == pytest.approx(600 * HEADROOM)
    assert rc.tokens_per_minute() == pytest.approx(30_000 * TOKEN_HEADROOM)
    times = admit_times(rc, clock, 4, tokens=1000)  # tokens bind: 1000 tokens at 485/s
    assert times[-1] - times[0] == pytest.approx(3 * 1000 / (30_000 * TOKEN_HEADROOM / 60))


def test_exhausted_limit_pauses_until_reset():
    clock = FakeClock()
    rc = control(clock)
    rc.observe_success(0.1, None, RateLimitInfo(requests_remaining=0, requests_reset_s=7.0))
    assert rc.pause_until == pytest.approx(7.0)


def test_auto_concurrency_follows_littles_law():
    clock = FakeClock()
    rc = control(clock, rpm=1200)
    rc.observe_success(2.0)
    assert rc.limit == 20 * 2 * 1.5 + 2  # rate x latency x headroom + 2


def test_stop_wakes_every_waiter():
    clock = FakeClock()
    rc = control(clock, concurrency=1)

    async def go():
        held = await rc.admit()
        waiters = [asyncio.ensure_future(rc.admit()) for _ in range(3)]
        await asyncio.sleep(0)
        rc.stop()
        results = await asyncio.gather(*waiters, return_exceptions=True)
        rc.release(held)
        return results
    assert all(isinstance(r, Stopped) for r in asyncio.run(go()))


def test_stop_interrupts_a_long_pause():
    async def go():
        rc = RateControl(concurrency=2)
        rc.pause(3600, "test")
        task = asyncio.ensure_future(rc.admit())
        await asyncio.sleep(0.05)
        rc.stop()
        return await asyncio.wait_for(asyncio.gather(task, return_exceptions=True), timeout=2)
    [result] = asyncio.run(go())
    assert isinstance(result, Stopped)
