"""Admission control for one provider and model: how many requests are in flight, how fast they
leave, and how the client backs off when the server answers 429.

The engine sees only this interface:

    ticket = await control.admit(tokens)     # shared pause, a slot, the pacers; raises Stopped
    control.release(ticket)                  # when the call has ended, whatever its outcome
    control.observe_success(latency, tokens, limits, ticket)
    wait = control.observe_failure(failure, ticket)  # what a 429 means (mmad.engine.limit_probe); `wait`:
                                             # seconds its job waits on its own before retrying
    control.stop()                           # wakes every waiter; nothing is admitted afterwards

Pacing is a GCRA ("virtual scheduling"): a request may leave when the clock has reached the
theoretical time `tat` of the previous one plus one interval; `tat` moves from the moment a
request is actually admitted, never from when it asked. A client whose event loop was starved
therefore cannot send the requests it "missed" in a burst: after a stall the first waiter
leaves and the next one waits a full interval again. Requests leave at most at the paced rate,
measured by admission time.

The paced rate is the tightest of: `--rpm`, 97 % of the limit the provider's headers announce,
and, after 429s, an adaptive factor (`mmad.engine.limit_probe`: a decrease x0.7 is kept only when it
lowers the 429 share; 429s at the server's own background share make only their job wait; a
slow linear recovery of 0.5 % of the rate per second after a kept decrease). When no limit is
known, the first 429 adopts the measured send rate of the last 10 s (when at least 10 requests
were sent in it) as the rate to pace at. A 429 that is news (the first at this rate, or one that
lowers it) pauses everyone for its retry-after; every wait is capped at `max_wait` (the engine's
rate-limit timeout). 429s do not count as failed attempts of a job; the engine bounds them by time.

When the provider's first answer announces both its limit and how many requests remain, up to
one second of the paced rate (never more than remain) may leave at once: the start-up burst the
limit allows, and no other burst.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from mmad.engine.limit_probe import LimitProbe, Verdict
from mmad.providers.base import ProviderFailure
from mmad.providers.headers import RateLimitInfo

HEADROOM = 0.99  # pace requests at this share of a limit the provider announces
TOKEN_HEADROOM = 0.97  # tokens keep more: mmad's count of a request's tokens is an estimate
START_BURST_S = 1.0  # seconds of the paced rate that may leave at once when the first answer says they remain
MEASURE_WINDOW_S = 10.0
HOLD_WINDOW = 100  # requests over which failed calls and retry waits are averaged (slots they hold)
MEASURE_MIN_SENDS = 10  # fewer sends say nothing about the rate; the shared pause alone then acts


class Stopped(Exception):
    """The run is stopping: nothing more is admitted."""


@dataclass
class Ticket:
    admitted_at: float
    epoch: int = -1  # the rate epoch the request left in (mmad.engine.limit_probe); -1: not sent yet


class Pacer:
    """GCRA at `rate` units per second; `tat` advances from the actual admission time. `credit`:
    requests that may leave at once (the start-up burst a provider says remains)."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.tat = 0.0
        self.credit = 0

    def delay(self, now: float) -> float:
        return 0.0 if self.credit > 0 else self.tat - now

    def take(self, now: float, cost: float = 1.0) -> None:
        if self.credit > 0:
            self.credit -= 1
            self.tat = max(self.tat, now)
            return
        self.tat = max(self.tat, now) + cost / self.rate


class RateControl:
    """Concurrency slots, request and token pacing, shared pauses and adaptive back-off."""

    def __init__(self, *, concurrency: int | None = None, rpm: float | None = None, tpm: float | None = None,
                 default_concurrency: int = 16, concurrency_cap: int = 256,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
                 on_pause: Callable[[float, str], None] | None = None,
                 stop_event: asyncio.Event | None = None, max_wait: float = math.inf) -> None:
        self._clock = clock
        self._sleep = sleep
        self._on_pause = on_pause or (lambda seconds, reason: None)
        self.fixed_concurrency = concurrency
        self.concurrency_cap = concurrency_cap
        self.user_rpm = rpm
        self.user_tpm = tpm
        self.learned_rpm: float | None = None
        self.learned_tpm: float | None = None
        self.measured_rpm: float | None = None  # adopted after a 429 when no limit is known
        self.probe = LimitProbe()
        self.max_wait = max_wait  # no pause or 429 wait is longer (the rate-limit timeout)
        self.active = 0
        self.limit = concurrency or default_concurrency
        self.latency: float | None = None  # EWMA seconds
        self.tokens_per_request: float | None = None  # EWMA
        self.pause_until = 0.0
        self.rate_limited = 0  # 429s seen
        self._streak = 0  # 429s since the last success
        self._held: deque[float] = deque(maxlen=HOLD_WINDOW)  # per request: slot-seconds beyond an answer's latency
        self._sends: deque[float] = deque()
        self._requests = Pacer(1.0)
        self._tokens = Pacer(1.0)
        self._waiting: deque[asyncio.Future] = deque()  # workers waiting for a slot
        self._stop = stop_event or asyncio.Event()  # shared when one run has several controls

    # ----------------------------------------------------------------- rates

    @property
    def factor(self) -> float:
        """The adaptive factor of the paced rate (1.0: no 429 lowered it)."""
        return self.probe.factor

    def requests_per_minute(self) -> float | None:
        """The rate requests are paced at now (None: not paced)."""
        limits = [r for r in (self.user_rpm, self.learned_rpm and self.learned_rpm * HEADROOM, self.measured_rpm) if r]
        return min(limits) * self.factor if limits else None

    def tokens_per_minute(self) -> float | None:
        limits = [r for r in (self.user_tpm, self.learned_tpm and self.learned_tpm * TOKEN_HEADROOM) if r]
        return min(limits) * self.factor if limits else None

    # ----------------------------------------------------------------- admission

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def stop(self) -> None:
        """Nothing is admitted after this; every waiter wakes up and raises Stopped."""
        self._stop.set()
        self.wake_all()

    def wake_all(self) -> None:
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(None)

    async def nap(self, seconds: float) -> None:
        """Sleep, but wake at once (raising Stopped) when the run stops."""
        if self._stop.is_set():
            raise Stopped()
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        sleeper = asyncio.ensure_future(self._sleep(seconds))
        stopper = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait({sleeper, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeper.cancel()
            stopper.cancel()
        if self._stop.is_set():
            raise Stopped()

    async def admit(self, tokens: float | None = None) -> Ticket:
        """Wait for the shared pause, a concurrency slot, then the request and token pacers."""
        ticket = await self.admit_slot()
        try:
            await self.pace(tokens, ticket)
        except BaseException:
            self.release(ticket)
            raise
        return ticket

    async def admit_slot(self) -> Ticket:
        """Wait for the shared pause and a concurrency slot (the engine prepares images holding it)."""
        while (wait := self.pause_until - self._clock()) > 0:
            await self.nap(wait)
        while self.active >= self.limit and not self._stop.is_set():
            waiter = asyncio.get_running_loop().create_future()
            self._waiting.append(waiter)
            await waiter
        if self._stop.is_set():
            raise Stopped()
        self.active += 1
        return Ticket(self._clock())

    async def pace(self, tokens: float | None = None, ticket: Ticket | None = None) -> None:
        """Wait until the request (and its tokens) may leave; the time (and the ticket's epoch) of
        leaving is recorded."""
        while True:
            if self._stop.is_set():
                raise Stopped()
            now = self._clock()
            if self.pause_until > now:
                await self.nap(self.pause_until - now)
                continue
            rpm, tpm = self.requests_per_minute(), self.tokens_per_minute()
            cost = tokens or self.tokens_per_request
            wait = 0.0
            if rpm:
                self._requests.rate = rpm / 60.0
                wait = max(wait, self._requests.delay(now))
            if tpm and cost:
                self._tokens.rate = tpm / 60.0
                wait = max(wait, self._tokens.delay(now))
            if wait <= 1e-4:
                if rpm:
                    self._requests.take(now)
                if tpm and cost:
                    self._tokens.take(now, min(cost, tpm))  # one request never waits over a minute of tokens
                self._sends.append(now)
                while self._sends and now - self._sends[0] > MEASURE_WINDOW_S:
                    self._sends.popleft()
                if ticket is not None:
                    ticket.epoch = self.probe.epoch
                return
            await self.nap(wait)

    def release(self, ticket: Ticket | None) -> None:
        self.active -= 1
        self._wake()

    def _wake(self) -> None:
        """Let waiting workers re-check for a free slot (as many as there are free slots)."""
        free = self.limit - self.active
        while free > 0 and self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(None)
                free -= 1

    # ----------------------------------------------------------------- learning

    def pause(self, seconds: float, reason: str, asked: float | None = None) -> None:
        """Nobody is admitted for `seconds` (at most `max_wait`); `asked`: what the server asked for."""
        wait = min(seconds, self.max_wait)
        until = self._clock() + wait
        if until > self.pause_until:
            self.pause_until = until
            if wait < seconds:
                reason = f"{reason}; the server asked for {seconds:.0f} s, capped at the rate-limit timeout"
            self._on_pause(wait, reason)

    def observe_success(self, latency: float, tokens: float | None = None,
                        limits: RateLimitInfo | None = None, ticket: Ticket | None = None) -> None:
        self.latency = latency if self.latency is None else 0.8 * self.latency + 0.2 * latency
        if tokens:
            self.tokens_per_request = tokens if self.tokens_per_request is None else \
                0.8 * self.tokens_per_request + 0.2 * tokens
        if limits:
            self._learn(limits)
        now = self._clock()
        self._streak = 0
        self.probe.record(ticket.epoch if ticket is not None else self.probe.epoch, False, now)
        self.probe.recover(now)
        self._held.append(0.0)
        self._adapt()

    def observe_failure(self, failure: ProviderFailure, ticket: Ticket | None = None) -> float:
        """Learn from a failed call. Returns the seconds its job waits on its own before trying
        again (0: nothing, or the shared pause this 429 set)."""
        if failure.limits:
            self._learn(failure.limits)
        if failure.kind != "rate_limit":
            return 0.0
        now = self._clock()
        self.rate_limited += 1
        self._streak += 1
        if self.requests_per_minute() is None and len(self._sends) >= MEASURE_MIN_SENDS:
            span = max(now - self._sends[0], 1.0)
            self.measured_rpm = 60.0 * len(self._sends) / span  # pace at what was sent, then lower that
        verdict = self.probe.record(ticket.epoch if ticket is not None else self.probe.epoch, True, now)
        seconds = failure.retry_after
        if seconds is None:
            seconds = min(60.0, 0.5 * 2.0 ** min(self._streak, 7))
        if verdict in (Verdict.NEWS, Verdict.SLOWER):
            self.pause(seconds, "rate limited (429)" if verdict is Verdict.NEWS else
                       f"rate limited (429); paced rate lowered to x{self.factor:.2f}", failure.retry_after)
            return 0.0
        return min(seconds, self.max_wait)

    def _learn(self, limits: RateLimitInfo) -> None:
        """Adopt the provider's announced limits; pause until reset when one is exhausted."""
        if limits.requests_limit:
            first = self.learned_rpm is None and self.user_rpm is None
            self.learned_rpm = limits.requests_limit
            if first and limits.requests_remaining and limits.requests_remaining <= limits.requests_limit:
                rpm = self.requests_per_minute() or 0.0
                self._requests.credit = int(min(limits.requests_remaining - 1, rpm / 60.0 * START_BURST_S))
        if limits.tokens_limit:
            self.learned_tpm = limits.tokens_limit
        if limits.requests_remaining == 0 and limits.requests_reset_s:
            self.pause(limits.requests_reset_s, "request limit reached until reset")
        if (limits.tokens_remaining is not None and self.tokens_per_request
                and limits.tokens_remaining < self.tokens_per_request and limits.tokens_reset_s):
            self.pause(limits.tokens_reset_s, "token limit reached until reset")

    def report(self) -> dict:
        """What the controller ended at and did, for the run's summary."""
        rpm = self.requests_per_minute()
        return {"paced_rpm": None if rpm is None else round(rpm, 1), "factor": round(self.factor, 3),
                "concurrency": self.limit, "rate_limited": self.rate_limited, "decreases": self.probe.decreases,
                "decreases_undone": self.probe.undone,
                "background_429_share": None if self.probe.background is None else round(self.probe.background, 3)}

    def held(self, seconds: float, request: bool = False) -> None:
        """A slot was held `seconds` without an answer: a failed call (`request`), or a wait
        before a retry (added to the last request). Slots held so are added to Little's law."""
        if request or not self._held:
            self._held.append(seconds)
        else:
            self._held[-1] += seconds
        self._adapt()

    def _adapt(self) -> None:
        if not self.fixed_concurrency:
            target = self.auto_concurrency()
            if target and target != self.limit:
                self.limit = target
                self._wake()

    def auto_concurrency(self) -> int | None:
        """Little's law: in flight = rate x (latency with headroom for its jitter + the slot-seconds
        failed calls and retry waits take per request), plus two."""
        rpm = self.requests_per_minute()
        if not rpm or self.latency is None:
            return None
        extra = sum(self._held) / len(self._held) if self._held else 0.0
        needed = math.ceil(rpm / 60.0 * (self.latency * 1.5 + extra)) + 2
        return max(1, min(self.concurrency_cap, needed))
