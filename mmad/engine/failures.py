"""How failures are waited out or turned into a stop: backoff, the run's first request, the breaker.

The first request of a run goes alone: a server that cannot be reached, refuses the key,
answers 404 or answers with something that is not the API's JSON would fail every later request
the same way, so the run stops at once with one line naming the URL. The others wait at the
`LeadGate` with their slot taken and their images prepared, and leave as soon as it has an
answer, or once it has been out for `LEAD_PATIENCE_S` without one: a wrong URL, key or model
answers at once, so a slow first answer says nothing more.

Later, the breaker counts failed *requests* (server, connection, protocol and timeout trouble),
not jobs: `consecutive` of them without an answer between, or a failure share of `share` over the
last `window` requests, stop the run the same way. Retries wait out their backoff holding their
slot, so a server that starts failing everything draws the requests in flight and the few the
breaker needs, not a retry from every job of the run.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter, deque

from mmad.providers.base import Provider, ProviderFailure

CONNECT_TRIES_FIRST = 3  # the first request of a run gives up on an unreachable server quickly
SERVER_TROUBLE = ("transient", "connection", "protocol")  # failure kinds the breaker counts
LEAD_PATIENCE_S = 3.0  # a first request out this long without an answer has reached a working API


def backoff(attempt: int, failure: ProviderFailure, initial: float, maximum: float) -> float:
    """Exponential backoff with jitter; a server's retry-after is honoured when longer."""
    seconds = min(maximum, initial * 2 ** (attempt - 1)) + random.uniform(0, initial)
    if failure.retry_after:
        seconds = max(seconds, failure.retry_after)
    return seconds


def fatal_for_first_request(failure: ProviderFailure, attempts: int, max_attempts: int) -> bool:
    """An unusable server stops the run at its first request instead of being retried long."""
    if failure.kind == "protocol":
        return True
    if failure.kind == "connection":
        return attempts >= CONNECT_TRIES_FIRST
    return failure.kind == "transient" and attempts >= max_attempts


def first_request_failure(failure: ProviderFailure, provider: Provider) -> ProviderFailure:
    """A failure of the run's first request, as one line naming the URL and what to check."""
    url = provider.url
    text = {
        "connection": f"cannot reach {url}: {failure}; is the server up, and "
                      f"{'--base-url right' if provider.base_url else 'this machine online'}?",
        "protocol": f"{failure}; is {url} an OpenAI/Anthropic-compatible API (check --base-url)?",
        "not_found": f"{url} answered 404 ({failure}); {provider.url_hint}",
        "auth": f"{url} refused the key ({failure})",
        "transient": f"{url} failed on every attempt of the first request: {failure}",
    }.get(failure.kind, f"{url}: {failure}")
    return ProviderFailure(failure.kind, text, status=failure.status)


class Breaker:
    """Failed requests caused by server trouble: a streak without an answer between, and their
    share over a sliding window of requests."""

    def __init__(self, consecutive: int, window: int = 40, share: float = 0.75) -> None:
        self.consecutive = consecutive
        self.window = window
        self.share = share
        self._streak: list[str] = []
        self._recent: deque[str | None] = deque(maxlen=window)

    def observe(self, cause: str | None) -> str | None:
        """Count one request: `cause` of its failure ("server error (HTTP 500)"), None for an
        answer. Returns None, or why the run should stop ("the last 10 requests failed (...)")."""
        self._recent.append(cause)
        if cause is None:
            self._streak.clear()
            return None
        self._streak.append(cause)
        if len(self._streak) >= self.consecutive:
            return f"the last {len(self._streak)} requests failed ({self._causes(self._streak)})"
        failed = [c for c in self._recent if c is not None]
        if len(self._recent) == self.window and len(failed) >= self.share * self.window:
            return f"{len(failed)} of the last {self.window} requests failed ({self._causes(failed)})"
        return None

    @staticmethod
    def _causes(causes: list[str]) -> str:
        return "; ".join(f"{c} x{n}" for c, n in Counter(causes).most_common(2))


class LeadGate:
    """Holds every request but the run's first until that one has an answer (or has been out
    long enough that a wrong URL, key or model would have shown)."""

    def __init__(self, patience: float = LEAD_PATIENCE_S) -> None:
        self.patience = patience
        self.leader: str | None = None  # the cache key of the job that leads
        self._open = asyncio.Event()
        self._timer: asyncio.TimerHandle | None = None

    @property
    def opened(self) -> bool:
        return self._open.is_set()

    def leads(self, key: str) -> bool:
        """Whether the job with `key` goes first (the first to ask leads)."""
        if self.leader is None and not self.opened:
            self.leader = key
        return self.leader == key and not self.opened

    def sent(self) -> None:
        """The lead request left: open after `patience` unless its answer comes first."""
        self.answered()
        self._timer = asyncio.get_running_loop().call_later(self.patience, self.open)

    def answered(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def open(self) -> None:
        self.answered()
        self._open.set()

    async def wait(self) -> None:
        await self._open.wait()
