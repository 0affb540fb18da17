"""What 429s do to the paced rate, on a fake clock: a simulated client with always a job ready
sends at the controller's rate (after any shared pause); each request is answered `latency` later
by a simulated server (random 429s at a fixed share, a token bucket, or both)."""

import heapq
import random

import pytest

from mmad.engine.limit_probe import HIGH_SHARE, LimitProbe, Tally, Verdict, above
from mmad.engine.ratecontrol import RateControl, Ticket
from mmad.providers.base import ProviderFailure
from tests.conftest import FakeClock


class Bucket:
    """A token bucket at `rpm` per minute holding `burst_s` seconds of it; `rpm` may change."""

    def __init__(self, rpm: float, burst_s: float = 2.0) -> None:
        self.rpm = rpm
        self.burst_s = burst_s
        self.tokens = rpm / 60 * burst_s
        self.then = 0.0

    def refuses(self, now: float) -> bool:
        rate = self.rpm / 60
        self.tokens = min(rate * self.burst_s, self.tokens + (now - self.then) * rate)
        self.then = now
        if self.tokens < 1:
            return True
        self.tokens -= 1
        return False


def simulate(control: RateControl, clock: FakeClock, refuses, seconds: float, latency: float = 0.3,
             retry_after: float | None = 1.0):
    """Run the client for `seconds`; returns [(sent at, answered 429)] in sending order."""
    answers: list = []
    sent: list = []
    last = -1e9
    while True:
        rpm = control.requests_per_minute()
        leave = max(last + 60.0 / rpm, control.pause_until, clock.now)
        if answers and answers[0][0] <= leave:
            at, _, ticket, limited = heapq.heappop(answers)
            clock.now = at
            if limited:
                control.observe_failure(ProviderFailure("rate_limit", "429", retry_after=retry_after), ticket)
            else:
                control.observe_success(latency, None, None, ticket)
            continue
        if leave >= seconds:
            return sent
        clock.now = last = leave
        limited = refuses(leave)
        sent.append((leave, limited))
        heapq.heappush(answers, (leave + latency, len(sent), Ticket(leave, control.probe.epoch), limited))


def ok_per_second(sent, start: float, end: float) -> float:
    return sum(1 for t, limited in sent if start <= t < end and not limited) / (end - start)


def share(sent, start: float, end: float) -> float:
    window = [limited for t, limited in sent if start <= t < end]
    return sum(window) / len(window)


def make(rpm: float, **kw):
    clock = FakeClock()
    pauses = []
    control = RateControl(rpm=rpm, clock=clock, sleep=clock.sleep, on_pause=lambda s, r: pauses.append((clock.now, s)),
                          **kw)
    return control, clock, pauses


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_429s_at_a_flat_share_keep_the_rate(seed):
    """10 % random 429s (the server's load, not our pace): the one probe finds the share flat, the
    rate goes back up, and later 429s only make their own job wait."""
    rng = random.Random(seed)
    control, clock, pauses = make(600)
    sent = simulate(control, clock, lambda now: rng.random() < 0.10, 600)
    assert ok_per_second(sent, 0, 600) >= 0.85 * 10  # 0.9 x 10/s at most; the target is 0.80
    assert control.factor == pytest.approx(1.0) and control.probe.undone >= 1
    assert control.probe.background == pytest.approx(0.10, abs=0.07)  # counted from a 429: a little high
    assert len(pauses) <= 6  # ~60 x 429 a minute; everyone paused only at the first and at each decrease


def test_429s_that_rise_with_the_rate_lower_it():
    """A client that believes in 1,200/min against a bucket at 600/min: the decreases lower the
    share, are kept, and the rate settles just under the real limit."""
    bucket = Bucket(600)
    control, clock, _ = make(1200)
    sent = simulate(control, clock, bucket.refuses, 300)
    assert control.probe.undone == 0 and control.probe.decreases >= 1
    assert share(sent, 150, 300) <= 0.05  # few 429s once settled
    assert ok_per_second(sent, 150, 300) >= 0.80 * 10


def test_pace_429s_are_found_under_random_ones():
    """Both at once: 5 % random 429s, and a client at twice the bucket's rate."""
    rng = random.Random(7)
    bucket = Bucket(600)
    control, clock, _ = make(1200)
    sent = simulate(control, clock, lambda now: bucket.refuses(now) or rng.random() < 0.05, 400)
    assert sum(1 for t, _ in sent if t >= 200) / 200 <= 1.1 * 10  # sending about at the real limit
    assert ok_per_second(sent, 200, 400) >= 0.75 * 10
    assert share(sent, 200, 400) <= 0.15


def test_the_rate_recovers_when_the_limit_comes_back():
    """Another client shares the key for a minute (the bucket gives us half): we slow down, then
    recover once it has gone."""
    bucket = Bucket(300)
    control, clock, _ = make(600)
    simulate(control, clock, bucket.refuses, 60)
    assert control.factor <= 0.6
    bucket.rpm = 600
    sent = simulate(control, clock, bucket.refuses, 250)
    assert control.factor >= 0.95 and control.requests_per_minute() >= 570
    assert share(sent, 60, 250) <= 0.05


def test_an_undone_probe_also_undoes_earlier_flat_decreases():
    """A probe that kept a decrease by chance is undone with the next one that finds the share flat."""
    probe = LimitProbe()
    probe.factor = 0.49  # two decreases a probe kept at a share of 10 % (by chance)
    for factor in (1.0, 0.7):
        tally = Tally()
        for index in range(100):
            tally.add(index % 10 == 0)
        probe._kept.append((factor, tally))
    verdicts = [probe.record(probe.epoch, index % 10 == 0, 0.0) for index in range(51)]
    assert verdicts.index(Verdict.SLOWER) == 50 and probe.probing  # the first 429 after 50 answers: evidence
    now = 1.0
    for index in range(200):  # 10 % again at the lower rate: flat
        verdict = probe.record(probe.epoch, index % 10 == 0, now)
        if verdict is Verdict.UNDONE:
            break
    assert verdict is Verdict.UNDONE and probe.factor == pytest.approx(1.0) and not probe._kept


def test_answers_to_requests_sent_before_a_change_are_stale():
    probe = LimitProbe()
    for _ in range(10):
        probe.record(0, True, 0.0)
    assert probe.factor == pytest.approx(0.3) and probe.epoch == 1  # 100 % refused: the largest step
    assert probe.record(0, True, 0.1) is Verdict.STALE and probe.factor == pytest.approx(0.3)  # in flight before


def test_a_share_over_high_is_never_background():
    probe = LimitProbe()
    probe.background = 0.1
    verdicts = [probe.record(probe.epoch, i % 2 == 0, 0.0) for i in range(12)]  # 50 % 429s
    assert Verdict.SLOWER in verdicts and 0.5 > HIGH_SHARE


def test_significance_against_the_background():
    assert not above(14, 100, 0.10)  # 14 % of 100 at a 10 % background: chance
    assert above(25, 100, 0.10)
    assert above(1, 10, 0.0) and not above(0, 10, 0.1)
