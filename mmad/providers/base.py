"""The provider seam: a request model, a completion, a classified failure, and the protocol.

No SDK imports here. Providers *classify* errors (`ProviderFailure.kind`); the engine *decides*
(retry, shared slow-down, stop). Providers never see the cache and never retry.

    ProviderFailure kinds
    ├── rate_limit   429: wait `retry_after` (shared by every worker), then retry; bounded by time,
    │                not by the job's attempts
    ├── transient    5xx, 529, 408/409, timeouts: backoff with jitter, retry
    ├── connection   the server cannot be reached (refused, DNS, reset): retry; a run whose first
    │                request cannot connect stops at once, naming the URL
    ├── protocol     an answer that is not the API's JSON (an HTML page, a truncated body): retry;
    │                fatal for the first request of a run. HTTP 405/501 (a web server that takes
    │                no POST: the URL is no API endpoint) are protocol failures that are never
    │                retried and stop the run like a 404
    ├── quota        billing/quota exhausted: stop the run cleanly, resumable
    ├── auth         bad or missing key, no permission: stop the run
    ├── not_found    404: wrong URL path or unknown model: stop the run
    └── bad_request  the request itself is wrong (400/413/422): this job fails, no retry
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import uuid
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import TYPE_CHECKING, Literal

from mmad.data.images import EncodedImage, ImageRef
from mmad.providers.headers import RateLimitInfo, rate_limit_info, retry_after_seconds
from mmad.redaction import public_url

if TYPE_CHECKING:
    import httpx2

FailureKind = Literal["rate_limit", "transient", "connection", "protocol", "quota", "auth", "not_found",
                      "bad_request"]


@dataclass(frozen=True)
class Request:
    """One job's request, provider-neutral. `parts` are texts and image identities in order (the
    last user message); `history` holds earlier turns as (role, parts), oldest first. `system`
    None sends no system message and `temperature` None sends no temperature (the API's default
    applies): what the MMAD and VELM scripts do."""

    system: str | None
    parts: tuple[str | ImageRef, ...]
    model: str
    temperature: float | None = 0.0
    max_tokens: int = 300
    # Prompt caching (never part of the response-cache key: it does not change the answer):
    prefix_parts: int | None = None  # parts[:prefix_parts] are the same for every job of a subset
    cache_group: str | None = None  # names that prefix (OpenAI prompt_cache_key)
    history: tuple[tuple[str, tuple[str | ImageRef, ...]], ...] = ()  # earlier (role, parts) turns

    @property
    def image_refs(self) -> list[ImageRef]:
        """Every image of the request in the order it is sent (earlier turns first)."""
        turns = [parts for _, parts in self.history] + [self.parts]
        return [p for parts in turns for p in parts if isinstance(p, ImageRef)]


@dataclass(frozen=True)
class Completion:
    """A provider's answer: raw text, normalised usage, and whether the model refused."""

    text: str
    usage: dict[str, int] = field(default_factory=dict)
    finish_reason: str | None = None
    refused: bool = False
    model: str | None = None
    limits: RateLimitInfo | None = None


class ProviderFailure(Exception):
    """A classified failure of one call. Messages never contain a key."""

    def __init__(self, kind: FailureKind, message: str, *, status: int | None = None,
                 retry_after: float | None = None, limits: RateLimitInfo | None = None,
                 fatal: bool | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.status = status
        self.retry_after = retry_after
        self.limits = limits
        self._fatal = fatal  # None: decided by the kind
        self.own_wait = 0.0  # seconds its job waits before trying again (the engine's rate control sets it)

    @property
    def retryable(self) -> bool:
        return not self.fatal and self.kind in ("rate_limit", "transient", "connection", "protocol")

    @property
    def fatal(self) -> bool:
        """The run cannot go on (every later call would fail the same way)."""
        if self._fatal is not None:
            return self._fatal
        return self.kind in ("quota", "auth", "not_found")


class Provider(ABC):
    """One coroutine to complete a request, plus identity and clean-up."""

    name: str = "provider"
    default_url: str = ""  # the vendor's API, for messages when no base_url is given

    @property
    def url(self) -> str:
        """Where requests go, for messages (never with credentials)."""
        return public_url(self.base_url) if self.base_url else self.default_url.rstrip("/")

    @abstractmethod
    async def complete(self, request: Request, images: Mapping[str, EncodedImage]) -> Completion:
        """Send `request` with `images` (by sha256) and return the answer or raise ProviderFailure."""

    base_url: str | None = None

    def identity(self) -> dict[str, str]:
        """What about this provider changes answers (goes into the cache key): its name, and the
        server for custom base URLs."""
        ident = {"provider": self.name}
        if self.base_url:
            ident["base_url"] = self.base_url.rstrip("/")
        return ident

    async def within_deadline(self, call):
        """Await an SDK call with `timeout` seconds for the whole answer: the SDK's own timeout is
        per read, so a body trickling a byte at a time would hold the request for ever."""
        try:
            async with asyncio.timeout(self.timeout):
                return await call
        except TimeoutError:
            raise ProviderFailure("transient", f"request timed out: no complete answer within {self.timeout:g} s "
                                               f"(--timeout)") from None

    timeout: float = 120.0  # seconds for a whole answer

    def _idempotency_keys(self):
        """Our own idempotency keys: the SDK would draw a uuid4 (os.urandom) per request otherwise."""
        prefix = f"mmad-{uuid.uuid4().hex[:12]}"
        return (f"{prefix}-{n}" for n in itertools.count())

    url_hint: str = "check --base-url"  # what a 404 on the first request most likely means

    def rejection_hint(self, request: Request) -> str | None:
        """What to tell the user when the run's first request is rejected as malformed (400), if
        the rejection most likely means the server cannot take this kind of request at all.
        None: the rejection is that one job's failure. (No probe request: it would be billed.)"""
        return None

    async def aclose(self) -> None:
        """Release connections."""

    # Batch APIs (optional): half price, answers within 24 h.
    batch_limits: tuple[int, int] = (0, 0)  # (requests, bytes) per batch; (0, 0) = no batch API

    def batch_line(self, custom_id: str, request: Request, images: Mapping[str, EncodedImage]) -> dict:
        """One request of a batch, as the vendor's batch input expects it."""
        raise NotImplementedError(f"{self.name} has no batch API")

    async def submit_batch(self, lines: list[dict], label: str) -> str:
        """Create a batch from `batch_line` dicts; returns its id."""
        raise NotImplementedError(f"{self.name} has no batch API")

    async def batch_status(self, batch_id: str) -> tuple[bool, str]:
        """(ended, the vendor's status word)."""
        raise NotImplementedError(f"{self.name} has no batch API")

    async def batch_results(self, batch_id: str) -> list[tuple[str, Completion | ProviderFailure]]:
        """(custom_id, answer or failure) for every request of an ended batch."""
        raise NotImplementedError(f"{self.name} has no batch API")


# --------------------------------------------------------------------------- header helpers

def redact(text: str, secrets: list[str | None]) -> str:
    """Remove secrets and anything that looks like a provider key from a message."""
    for secret in secrets:
        if secret and len(secret) >= 6:
            text = text.replace(secret, "***")
    return re.sub(r"\b(sk-[A-Za-z0-9_\-*]{6,})", "sk-***", text)


QUOTA_MARKERS = ("insufficient_quota", "billing", "credit balance", "quota", "spend limit")


NOT_AN_ENDPOINT = (405, 501)  # a web server that takes no POST here (python -m http.server: 501)


def classify_status(status: int, headers: Mapping[str, str], body: object, message: str,
                    limits: RateLimitInfo | None = None) -> ProviderFailure:
    """Map an HTTP error status (and the error body) to a failure kind; shared by both vendors.
    `message` is already one line (`answer_detail`)."""
    text = f"{body} {message}".lower()
    if status == 402 or (status in (400, 403, 429) and any(m in text for m in QUOTA_MARKERS)):
        return ProviderFailure("quota", f"quota or billing exhausted (HTTP {status}): {message}",
                               status=status, limits=limits)
    if status == 429:
        return ProviderFailure("rate_limit", f"rate limited (HTTP 429): {message}", status=status,
                               retry_after=retry_after_seconds(headers), limits=limits)
    if status in (401, 403):
        return ProviderFailure("auth", f"authentication failed (HTTP {status}): {message}", status=status)
    if status == 404:
        return ProviderFailure("not_found", f"not found (HTTP 404): {message}", status=status)
    if status in NOT_AN_ENDPOINT:  # the URL is no API endpoint: asking again cannot help
        return ProviderFailure("protocol", f"HTTP {status} {status_phrase(status)} ({message}): this URL "
                                           f"is not an API endpoint", status=status, fatal=True)
    if status in (408, 409) or status >= 500:
        return ProviderFailure("transient", f"server error (HTTP {status}): {message}", status=status,
                               retry_after=retry_after_seconds(headers))
    return ProviderFailure("bad_request", f"request rejected (HTTP {status}): {message}", status=status)


def status_phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


# --------------------------------------------------------------------------- answer text

MESSAGE_CAP = 300  # characters of a server's error message that make it into ours
_SPACE = re.compile(r"\s+")


def one_line(text: str, cap: int = MESSAGE_CAP) -> str:
    """Whitespace (newlines included) collapsed, and at most `cap` characters."""
    text = _SPACE.sub(" ", text).strip()
    return text if len(text) <= cap else text[:cap - 3].rstrip() + "..."


def body_kind(content_type: str, text: str) -> str:
    """What a body that is not the API's JSON is, in words ("an HTML page")."""
    start = text.lstrip()[:200].lower()
    if "html" in content_type or start.startswith("<"):
        return "an HTML page"
    if not start:
        return "an empty body"
    if "json" in content_type:
        return "JSON that is not the API's error object"
    return f"a body of type {content_type}" if content_type != "?" else "a body that is not JSON"


def _content_type(headers: object) -> str:
    get = getattr(headers, "get", None)  # httpx's Headers, a dict, or nothing (None)
    value = get("content-type") if callable(get) else None
    return str(value or "?").split(";")[0].strip().lower() or "?"


def _body_message(body: object) -> str | None:
    """The human part of a vendor error body: {"error": {"message": ...}} (both vendors),
    {"message": ...} (vLLM), {"error": "..."}, {"detail": "..."} (FastAPI servers)."""
    if not isinstance(body, Mapping):
        return None
    error = body.get("error", body)
    if isinstance(error, Mapping) and error.get("message"):
        return str(error["message"])
    if isinstance(error, str) and error.strip():
        return error
    for key in ("message", "detail"):
        if isinstance(body.get(key), str) and body[key].strip():
            return body[key]
    return None


def error_message(body: object, fallback: str, secrets: Sequence[str | None] = ()) -> str:
    """The human part of a vendor error body (or `fallback`): redacted, one line, capped."""
    return one_line(redact(_body_message(body) or fallback, list(secrets)))


def answer_detail(response: httpx2.Response, body: object, secrets: Sequence[str | None] = ()) -> str:
    """One line for an error answer: the API's own message when the body is its JSON error,
    otherwise what came instead, never the body itself ("an HTML page, not the API's JSON")."""
    if isinstance(body, Mapping):
        return error_message(body, "an error without a message", secrets)
    if body is not None and not isinstance(body, str):
        return "JSON that is not the API's error object"
    text = body or ""
    if body is None:
        try:
            text = response.text
        except Exception:  # a body that was never read, or is not text
            text = ""
    kind = body_kind(_content_type(getattr(response, "headers", None)), text)
    return kind if kind in ("an empty body", "JSON that is not the API's error object") \
        else f"{kind}, not the API's JSON"


def json_answer(response: httpx2.Response, url: str) -> dict:
    """The JSON object of an HTTP answer, or a `protocol` failure naming what came instead
    (an HTML page from a proxy, a truncated body)."""
    content_type = _content_type(response.headers)
    try:
        data = json.loads(response.content)
    except (ValueError, UnicodeDecodeError):
        if "json" in content_type:  # the API's own answer, cut short: worth another try
            raise ProviderFailure("transient", f"malformed JSON answer from {url} (truncated?)") from None
        kind = body_kind(content_type, response.content[:200].decode("utf-8", "replace"))
        raise ProviderFailure("protocol", f"the server at {url} answered HTTP {response.status_code} with "
                                          f"{kind}, not the API's JSON") from None
    if not isinstance(data, dict):
        raise ProviderFailure("protocol", f"the server at {url} answered JSON that is not an object")
    return data


def sdk_failure(exc: Exception, secrets: list[str | None], header_prefix: str, style: str) -> ProviderFailure:
    """Classify an exception of either SDK (both have the same shape: a status error carrying the
    response, a timeout, a connection error). Messages are one line and redacted."""
    status = getattr(exc, "status_code", None)
    response = getattr(exc, "response", None)
    if status is not None and response is not None:
        body = getattr(exc, "body", None)
        return classify_status(status, response.headers, body, answer_detail(response, body, secrets),
                               rate_limit_info(response.headers, header_prefix, style))
    if "timeout" in type(exc).__name__.lower():
        return ProviderFailure("transient", "request timed out")
    cause = exc.__cause__ or exc.__context__
    detail = connection_words(str(cause if cause is not None else exc) or type(cause or exc).__name__)
    return ProviderFailure("connection", f"connection error: {one_line(redact(detail, secrets), 200)}")


def connection_words(text: str) -> str:
    """What a failed connect means, in words (httpx says "All connection attempts failed")."""
    low = text.lower()
    if any(m in low for m in ("name or service not known", "nodename nor servname", "name resolution",
                              "no address associated")):
        return f"the host name does not resolve ({text})"
    if "all connection attempts failed" in low or "connection refused" in low:
        return "connection refused: nothing answers at that address and port"
    return text
