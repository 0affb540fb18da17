"""Admission control for one provider and model: how many requests are in flight, how fast they
leave, and how the client backs off when the server answers 429.

The engine sees only this interface:

    ticket = await control.admit(tokens)     # shared pause, a slot, the pacers; raises Stopped
    control.release(ticket)                  # when the call has ended, whatever its outcome
    control.observe_success(latency, tokens, limits)
    control.observe_failure(failure)         # a 429 pauses everyone and lowers the rate
    control.stop()                           # wakes every waiter; nothing is admitted afterwards

Pacing is a GCRA ("virtual scheduling"): a request may leave when the clock has reached the
theoretical time `tat` of the previous one plus one interval; `tat` moves from the moment a
request is actually admitted, never from when it asked. A client whose event loop was starved
therefore cannot send the requests it "missed" in a burst: after a stall the first waiter
leaves and the next one waits a full interval again. Requests leave at most at the paced rate,
measured by admission time.

The paced rate is the tightest of: `--rpm`, 97 % of the limit the provider's headers announce,
and, after 429s, an adaptive factor (multiplicative decrease x0.7 at most once per cool-down,
then a slow linear recovery of 0.5 % of the rate per second without 429s). When no limit is
known, the first 429 adopts the measured send rate of the last 10 s (when at least 10 requests
were sent in it) as the base to decrease from. 429s do not count as failed attempts of a job; the engine bounds them by time.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from mmad.providers.base import ProviderFailure, RateLimitInfo

HEADROOM = 0.97  # pace at this share of a limit the provider announces
DECREASE = 0.7  # multiplicative decrease on a 429
MIN_FACTOR = 0.05
RECOVERY_PER_S = 0.005  # linear recovery of the factor per second without 429s
MEASURE_WINDOW_S = 10.0
MEASURE_MIN_SENDS = 10  # fewer sends say nothing about the rate; the shared pause alone then acts


class Stopped(Exception):
    """The run is stopping: nothing more is admitted."""


@dataclass
class Ticket:
    admitted_at: float


class Pacer:
    """GCRA at `rate` units per second; `tat` advances from the actual admission time."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.tat = 0.0

    def delay(self, now: float) -> float:
        return self.tat - now

    def take(self, now: float, cost: float = 1.0) -> None:
        self.tat = max(self.tat, now) + cost / self.rate


class RateControl:
    """Concurrency slots, request and token pacing, shared pauses and adaptive back-off."""

    def __init__(self, *, concurrency: int | None = None, rpm: float | None = None, tpm: float | None = None,
                 default_concurrency: int = 16, concurrency_cap: int = 256,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
                 on_pause: Callable[[float, str], None] | None = None,
                 stop_event: asyncio.Event | None = None) -> None:
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
        self.factor = 1.0
        self.active = 0
        self.limit = concurrency or default_concurrency
        self.latency: float | None = None  # EWMA seconds
        self.tokens_per_request: float | None = None  # EWMA
        self.pause_until = 0.0
        self.rate_limited = 0  # 429s seen
        self._last_decrease = -math.inf
        self._last_429 = -math.inf
        self._last_recovery = -math.inf
        self._sends: deque[float] = deque()
        self._requests = Pacer(1.0)
        self._tokens = Pacer(1.0)
        self._waiting: deque[asyncio.Future] = deque()  # workers waiting for a slot
        self._stop = stop_event or asyncio.Event()  # shared when one run has several controls

    # ----------------------------------------------------------------- rates

    def requests_per_minute(self) -> float | None:
        """The rate requests are paced at now (None: not paced)."""
        limits = [r for r in (self.user_rpm, self.learned_rpm and self.learned_rpm * HEADROOM, self.measured_rpm) if r]
        return min(limits) * self.factor if limits else None

    def tokens_per_minute(self) -> float | None:
        limits = [r for r in (self.user_tpm, self.learned_tpm and self.learned_tpm * HEADROOM) if r]
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
            await self.pace(tokens)
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

    async def pace(self, tokens: float | None = None) -> None:
        """Wait until the request (and its tokens) may leave; the time of leaving is recorded."""
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

    def pause(self, seconds: float, reason: str) -> None:
        until = self._clock() + seconds
        if until > self.pause_until:
            self.pause_until = until
            self._on_pause(seconds, reason)

    def observe_success(self, latency: float, tokens: float | None = None,
                        limits: RateLimitInfo | None = None) -> None:
        self.latency = latency if self.latency is None else 0.8 * self.latency + 0.2 * latency
        if tokens:
            self.tokens_per_request = tokens if self.tokens_per_request is None else \
                0.8 * self.tokens_per_request + 0.2 * tokens
        if limits:
            self._learn(limits)
        self._recover()
        if not self.fixed_concurrency:
            target = self.auto_concurrency()
            if target and target != self.limit:
                self.limit = target
                self._wake()

    def observe_failure(self, failure: ProviderFailure) -> None:
        if failure.limits:
            self._learn(failure.limits)
        if failure.kind != "rate_limit":
            return
        now = self._clock()
        self.rate_limited += 1
        self._last_429 = now
        if self.requests_per_minute() is None and len(self._sends) >= MEASURE_MIN_SENDS:
            span = max(now - self._sends[0], 1.0)
            self.measured_rpm = 60.0 * len(self._sends) / span
        cooldown = max(1.0, self.latency or 0.0)
        if now - self._last_decrease >= cooldown:
            self.factor = max(MIN_FACTOR, self.factor * DECREASE)
            self._last_decrease = now
        seconds = failure.retry_after
        if seconds is None:
            seconds = min(60.0, 2.0 ** min(self.rate_limited, 6) * 0.5)
        self.pause(seconds, "rate limited (429)")

    def _recover(self) -> None:
        """Linear recovery for the time since the last recovery step, counting from one second
        after the last 429."""
        now = self._clock()
        if self.factor < 1.0:
            since = max(self._last_recovery, self._last_429 + 1.0)
            if now > since:
                self.factor = min(1.0, self.factor + RECOVERY_PER_S * (now - since))
        self._last_recovery = now

    def _learn(self, limits: RateLimitInfo) -> None:
        """Adopt the provider's announced limits; pause until reset when one is exhausted."""
        if limits.requests_limit:
            self.learned_rpm = limits.requests_limit
        if limits.tokens_limit:
            self.learned_tpm = limits.tokens_limit
        if limits.requests_remaining == 0 and limits.requests_reset_s:
            self.pause(limits.requests_reset_s, "request limit reached until reset")
        if (limits.tokens_remaining is not None and self.tokens_per_request
                and limits.tokens_remaining < self.tokens_per_request and limits.tokens_reset_s):
            self.pause(limits.tokens_reset_s, "token limit reached until reset")

    def auto_concurrency(self) -> int | None:
        """Little's law: in flight = rate x latency, with headroom for latency jitter."""
        rpm = self.requests_per_minute()
        if not rpm or self.latency is None:
            return None
        needed = math.ceil(rpm / 60.0 * self.latency * 1.5) + 2
        return max(1, min(self.concurrency_cap, needed))
