"""Faults of real providers for tests/wire_server.py, drawn at random or after a point in a run.

    FaultMix({"429": 0.10})                            10 % of requests answered 429, at random
    FaultMix({"429": 0.05, "500": 0.05, "hang": 0.01}, hang_s=30)
    FailAfter(20)                                      every request after the 20th fails: a truncated
                                                       body, JSON without choices, a reset connection
    every request: Fault("trickle", rate=1.0)          the answer's body at 1 byte/s

Each is a `fault_rule` (received, number) -> Fault | None; `python -m tests.wire_server` builds
them from its command line (--fault-429 0.1 --fault-500 0.05 --fault-hang 0.01, --fail-after 20,
--trickle 1, --retry-after 3600).
"""

from __future__ import annotations

import random
import socket
import struct
import threading
import time
from dataclasses import dataclass


@dataclass
class Fault:
    """One injected outcome: ok (none), 429, 500, 529, hang, malformed, html, refusal, quota, bad_request,
    garbage, auth, not_found (the API's JSON 404, with `message` when given); html_404, html_501, html_405:
    that status with a multi-line HTML error page (a web server that is no API: a 404 page,
    `python -m http.server`'s 501 for POST), `message` (when given) inside the page; no_choices (200
    with JSON that has no choices), reset (the connection closed with a TCP reset, no answer),
    trickle (a good answer whose body comes at `rate` bytes/s), slow (a good answer after `seconds`). A 429 says `retry_after_ms`
    (retry-after-ms) or `retry_after_s` (retry-after, seconds) when given."""

    kind: str
    retry_after_ms: int | None = None
    seconds: float = 0.0
    message: str = ""
    retry_after_s: float | None = None
    rate: float = 0.0


class FaultMix:
    """Each request gets one of the kinds with its probability (independently of the pace: the
    provider's own load), from a seeded generator."""

    def __init__(self, shares: dict[str, float], *, hang_s: float = 30.0, retry_after_s: float | None = None,
                 seed: int = 0) -> None:
        self.shares = shares
        self.hang_s = hang_s
        self.retry_after_s = retry_after_s
        self._rng = random.Random(seed)
        self._lock = threading.Lock()

    def __call__(self, received, number: int) -> Fault | None:
        with self._lock:
            draw = self._rng.random()
        for kind, share in self.shares.items():
            if draw < share:
                return Fault(kind, seconds=self.hang_s, retry_after_s=self.retry_after_s)
            draw -= share
        return None


class FailAfter:
    """Every request after the first `good` fails, in turn: a truncated body, JSON without choices,
    a reset connection (what a broken upstream behind a proxy answers). `first_failed` is the
    number of the first failed request."""

    KINDS = ("malformed", "no_choices", "reset")

    def __init__(self, good: int) -> None:
        self.good = good
        self.first_failed = good + 1

    def __call__(self, received, number: int) -> Fault | None:
        return None if number <= self.good else Fault(self.KINDS[(number - self.good - 1) % len(self.KINDS)])


def reset_connection(handler) -> None:
    """Close the client's connection with a TCP reset (SO_LINGER 0) instead of an answer."""
    try:
        handler.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        handler.connection.close()
    except OSError:
        pass
    handler.close_connection = True


def trickle(handler, status: int, data: bytes, headers: dict, rate: float) -> None:
    """An answer whose headers come at once and whose body comes at `rate` bytes per second."""
    try:
        handler.send_response(status)
        handler.send_header("content-type", "application/json")
        handler.send_header("content-length", str(len(data)))
        for name, value in headers.items():
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.flush()
        for index in range(len(data)):
            handler.wfile.write(data[index:index + 1])
            handler.wfile.flush()
            time.sleep(1.0 / rate)
    except (BrokenPipeError, ConnectionResetError):
        pass
