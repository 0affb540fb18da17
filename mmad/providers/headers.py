"""What a provider's response headers say: its rate limits (both vendors' names) and how long a
429 asks to wait (`retry-after-ms`, `retry-after` in seconds or as an HTTP date, OpenAI's `6m0s`)."""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime


@dataclass(frozen=True)
class RateLimitInfo:
    """What a response's headers say about the account's limits (None where absent)."""

    requests_limit: float | None = None
    tokens_limit: float | None = None
    requests_remaining: float | None = None
    tokens_remaining: float | None = None
    requests_reset_s: float | None = None
    tokens_reset_s: float | None = None


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")


def parse_duration(value: str | None) -> float | None:
    """Seconds from '20ms', '1s', '6m0s', '1h2m3.5s', a plain number, or an RFC 3339/HTTP date."""
    if value is None or not str(value).strip():
        return None
    value = str(value).strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    parts = _DURATION.findall(value)
    if parts and "".join(n + u for n, u in parts) == value.replace(" ", ""):
        scale = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
        return sum(float(n) * scale[u] for n, u in parts)
    try:
        from datetime import datetime
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        try:
            moment = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
    return max(0.0, moment.timestamp() - time.time())


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """`retry-after-ms` or `retry-after` (seconds or an HTTP date)."""
    ms = headers.get("retry-after-ms")
    if ms is not None:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    return parse_duration(headers.get("retry-after"))


def _number(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def rate_limit_info(headers: Mapping[str, str], prefix: str, style: str) -> RateLimitInfo | None:
    """Read the limit headers of either vendor.

    OpenAI: x-ratelimit-{limit,remaining,reset}-{requests,tokens}.
    Anthropic: anthropic-ratelimit-{requests,tokens}-{limit,remaining,reset}.
    """
    def get(kind: str, what: str) -> str | None:
        name = f"{prefix}{what}-{kind}" if style == "openai" else f"{prefix}{kind}-{what}"
        return headers.get(name)

    info = RateLimitInfo(
        _number(get("requests", "limit")), _number(get("tokens", "limit")),
        _number(get("requests", "remaining")), _number(get("tokens", "remaining")),
        parse_duration(get("requests", "reset")), parse_duration(get("tokens", "reset")),
    )
    return None if info == RateLimitInfo() else info
