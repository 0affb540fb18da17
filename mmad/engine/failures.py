"""How failures are waited out or turned into a stop: backoff, the run's first request, the breaker.

The first request of a run goes alone: a server that cannot be reached, refuses the key,
answers 404 or answers with something that is not the API's JSON would fail every later request
the same way, so the run stops at once with one line naming the URL. Later, `threshold`
consecutive jobs failing with server, connection, protocol or timeout trouble (no success in
between) stop the run the same way: a server that went down is not asked hundreds of times.
"""

from __future__ import annotations

import random
from collections import Counter, deque

from mmad.providers.base import Provider, ProviderFailure

CONNECT_TRIES_FIRST = 3  # the first request of a run gives up on an unreachable server quickly
SERVER_TROUBLE = ("server", "connection", "protocol", "timeout")  # record causes the breaker counts


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
    """Counts consecutive failed jobs caused by server trouble; any other outcome resets it."""

    def __init__(self, threshold: int) -> None:
        self.threshold = threshold
        self._streak: deque[str] = deque()

    def observe(self, record: dict) -> str | None:
        """None, or why the run should stop ("the last 12 jobs failed (server error (HTTP 500) x12)")."""
        cause = record.get("cause") or ""
        if record["status"] == "error" and record.get("source") == "live" and cause.startswith(SERVER_TROUBLE):
            self._streak.append(cause)
            if len(self._streak) >= self.threshold:
                text = "; ".join(f"{c} x{n}" for c, n in Counter(self._streak).most_common(2))
                return f"the last {len(self._streak)} jobs failed ({text})"
        elif record["status"] != "error":
            self._streak.clear()
        return None
