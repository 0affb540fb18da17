"""OpenAI chat completions, and any OpenAI-compatible server (vLLM, Ollama, LM Studio) via base_url.

Requests go through the real SDK client (auth, headers, error classes, connection pool), but the
body is built here as JSON bytes and posted with the client's low-level `post`: the SDK's
per-request transformation walks every content part of every request (~10 ms of CPU for four
images) and adds nothing to a body that is already in wire format. The megabytes of base64 are
not run through the JSON encoder either: base64 needs no escaping, so the body is encoded with a
short marker per image and the images' bytes are joined in (`encode_body`).
tests/test_pressure.py checks that what the server receives parses to exactly the JSON the SDK's
own `create` sends, with the same headers.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping

import httpx2
import openai

from mmad.data.images import EncodedImage, ImageRef
from mmad.errors import ConfigError
from mmad.providers.base import (
    Completion,
    Provider,
    ProviderFailure,
    Request,
    classify_status,
    error_message,
    json_answer,
    sdk_failure,
)
from mmad.providers.checks import check_base_url, check_key
from mmad.providers.headers import rate_limit_info

KEY_ENV = "OPENAI_API_KEY"
BASE_URL_ENV = "OPENAI_BASE_URL"
OPENAI_API_HOST = "api.openai.com"


def is_openai_api(url: str) -> bool:
    """Whether a base URL is the OpenAI API itself (the only server that knows `prompt_cache_key`)."""
    return httpx2.URL(str(url)).host == OPENAI_API_HOST
JSON_HEADERS = {"Content-Type": "application/json"}


def dumps(body: dict) -> bytes:
    """JSON as the SDK serialises it (compact, UTF-8, no ASCII escaping)."""
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


MARKER = "\x00mmad-image-{}\x00"  # cannot occur in a JSON text of ours: \x00 is escaped as \u0000
ENCODED_MARKER = re.compile(rb"\\u0000mmad-image-(\d+)\\u0000")


def encode_body(build, images: Mapping[str, EncodedImage]) -> bytes:
    """`build(images)` -> body dict, encoded as `dumps` would, with each image's base64 joined in
    after encoding instead of being scanned by the JSON encoder."""
    data = []
    stand_ins = {}
    for index, (sha, image) in enumerate(images.items()):
        data.append(image.data.encode("ascii"))
        stand_ins[sha] = EncodedImage(image.ref, image.media_type, MARKER.format(index), image.width, image.height,
                                      image.detail)
    pieces = ENCODED_MARKER.split(dumps(build(stand_ins)))  # text, index, text, index, ..., text
    for position in range(1, len(pieces), 2):
        pieces[position] = data[int(pieces[position])]
    return b"".join(pieces)


class OpenAIProvider(Provider):
    name = "openai"
    default_url = "https://api.openai.com/v1"

    def __init__(self, *, api_key: str | None = None, base_url: str | None = None,
                 timeout: float = 120.0, client: openai.AsyncOpenAI | None = None,
                 prompt_caching: bool = True) -> None:
        # The SDK itself falls back on $OPENAI_BASE_URL: a server named there is a custom server
        # like one given by --base-url (its answers are cached apart from the OpenAI API's).
        if base_url is not None:
            check_base_url(base_url)
        elif os.environ.get(BASE_URL_ENV) and not is_openai_api(check_base_url(os.environ[BASE_URL_ENV],
                                                                               f"${BASE_URL_ENV}")):
            base_url = os.environ[BASE_URL_ENV]
        self.base_url = base_url
        self.prompt_caching = prompt_caching
        self.timeout = timeout
        self._key = api_key or check_key(os.environ.get(KEY_ENV), KEY_ENV)
        if not self._key:
            if base_url is None:
                raise ConfigError(f"set {KEY_ENV} to use the openai provider "
                                  f"(any placeholder works for a local OpenAI-compatible server)")
            self._key = "placeholder"  # local servers accept any key
        # One layer retries: the engine. The SDK's own retries are off.
        self._client = client or openai.AsyncOpenAI(api_key=self._key, base_url=base_url,
                                                    max_retries=0, timeout=timeout)
        self._keys = self._idempotency_keys()

    def _content(self, parts, images: Mapping[str, EncodedImage]) -> list[dict]:
        content: list[dict] = []
        for part in parts:
            if isinstance(part, ImageRef):
                image = images[part.sha256]
                url = {"url": f"data:{image.media_type};base64,{image.data}"}
                if image.detail:  # part of the image's preparation spec (and so of the cache key)
                    url["detail"] = image.detail
                content.append({"type": "image_url", "image_url": url})
            else:
                content.append({"type": "text", "text": part})
        return content

    def body(self, request: Request, images: Mapping[str, EncodedImage]) -> dict:
        """The chat-completions body: system message, earlier turns, then the user message of
        texts and images."""
        messages: list[dict[str, object]] = ([] if request.system is None
                                             else [{"role": "system", "content": request.system}])
        for role, parts in request.history:
            messages.append({"role": role, "content": self._content(parts, images) if role == "user"
                             else "".join(p for p in parts if isinstance(p, str))})
        messages.append({"role": "user", "content": self._content(request.parts, images)})
        body: dict[str, object] = {"model": request.model, "messages": messages}
        if request.temperature is not None:  # None: not sent, the API's default applies
            body["temperature"] = request.temperature
        body["max_tokens"] = request.max_tokens
        # The prefix (system, instruction, references) is byte-identical across a subset's jobs;
        # the key routes them to the same cache. Only the OpenAI API itself knows the parameter:
        # decided by where the client really sends (--base-url, $OPENAI_BASE_URL or the default).
        if self.prompt_caching and request.cache_group and self.sends_to_openai_api:
            body["prompt_cache_key"] = request.cache_group
        return body

    @property
    def sends_to_openai_api(self) -> bool:
        return is_openai_api(str(self._client.base_url))

    async def complete(self, request: Request, images: Mapping[str, EncodedImage]) -> Completion:
        return await self.post_body(encode_body(lambda stand_ins: self.body(request, stand_ins), images))

    async def post_body(self, content: bytes) -> Completion:
        """POST a prebuilt chat-completions body through the SDK client; parse the answer."""
        try:
            # A key of our own: the SDK would draw a uuid4 (os.urandom) per request otherwise.
            response = await self.within_deadline(self._client.post(
                "/chat/completions", cast_to=httpx2.Response, content=content,
                options={"headers": JSON_HEADERS, "idempotency_key": next(self._keys)}))
        except (openai.APIStatusError, openai.APIConnectionError) as exc:
            raise self._failure(exc) from None
        data = json_answer(response, self.url)
        return self._completion(data, rate_limit_info(response.headers, "x-ratelimit-", "openai"))

    def _completion(self, data: dict, limits=None) -> Completion:
        choices = data.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            raise ProviderFailure("protocol", f"the server at {self.url} answered without choices")
        choice = choices[0]
        message = choice.get("message") or {}
        refusal = message.get("refusal")
        usage = {}
        raw_usage = data.get("usage")
        if isinstance(raw_usage, dict):
            usage = {"input_tokens": int(raw_usage.get("prompt_tokens") or 0),
                     "output_tokens": int(raw_usage.get("completion_tokens") or 0)}
            cached = (raw_usage.get("prompt_tokens_details") or {}).get("cached_tokens")
            if cached:
                usage["cached_input_tokens"] = int(cached)
        text = message.get("content")
        if isinstance(text, list):  # some compatible servers answer with content parts
            text = "".join(str(part.get("text", "")) for part in text if isinstance(part, dict))
        return Completion(text=text or refusal or "", usage=usage, finish_reason=choice.get("finish_reason"),
                          refused=bool(refusal) or choice.get("finish_reason") == "content_filter",
                          model=data.get("model"), limits=limits)

    # ----------------------------------------------------------------- Batch API

    batch_limits = (50_000, 190 * 2**20)  # the API allows 50,000 requests and 200 MB per input file

    def batch_line(self, custom_id: str, request: Request, images: Mapping[str, EncodedImage]) -> dict:
        return {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions",
                "body": self.body(request, images)}

    async def submit_batch(self, lines: list[dict], label: str) -> str:
        payload = "".join(json.dumps(line, separators=(",", ":")) + "\n" for line in lines).encode()
        try:
            uploaded = await self._client.files.create(file=(f"{label}.jsonl", payload), purpose="batch")
            batch = await self._client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions",
                                                      completion_window="24h", metadata={"mmad": label[:500]})
        except (openai.APIStatusError, openai.APIConnectionError) as exc:
            raise self._failure(exc) from None
        return batch.id

    async def batch_status(self, batch_id: str) -> tuple[bool, str]:
        try:
            batch = await self._client.batches.retrieve(batch_id)
        except (openai.APIStatusError, openai.APIConnectionError) as exc:
            raise self._failure(exc) from None
        return batch.status in ("completed", "failed", "expired", "cancelled"), batch.status

    async def batch_results(self, batch_id: str) -> list[tuple[str, Completion | ProviderFailure]]:
        try:
            batch = await self._client.batches.retrieve(batch_id)
            results: list[tuple[str, Completion | ProviderFailure]] = []
            for file_id in (batch.output_file_id, batch.error_file_id):
                if not file_id:
                    continue
                content = await self._client.files.content(file_id)
                for line in content.text.splitlines():
                    if line.strip():
                        results.append(self._batch_outcome(json.loads(line)))
        except (openai.APIStatusError, openai.APIConnectionError) as exc:
            raise self._failure(exc) from None
        return results

    def _batch_outcome(self, line: dict) -> tuple[str, Completion | ProviderFailure]:
        custom_id = line.get("custom_id", "")
        response = line.get("response") or {}
        if line.get("error") or response.get("status_code") != 200:
            body = response.get("body") or {"error": line.get("error") or {}}
            return custom_id, classify_status(int(response.get("status_code") or 500), {}, body,
                                              error_message(body, "batch request failed"))
        try:
            return custom_id, self._completion(response["body"])
        except ProviderFailure as failure:
            return custom_id, failure

    url_hint = "check --base-url (OpenAI-compatible servers usually end in /v1) and --model"

    def rejection_hint(self, request: Request) -> str | None:
        """A custom server that rejects the first request with several images most likely takes
        one image per message (vLLM's default)."""
        count = len(request.image_refs)
        if not self.base_url or count < 2:
            return None
        return (f"the server at {self.url} may not take {count} images in one message for model "
                f"{request.model!r}. Multi-image input is required (vLLM: start it with "
                f"--limit-mm-per-prompt '{{\"image\": {count}}}'); or use --refs 0 for zero-shot")

    def _failure(self, exc: Exception) -> ProviderFailure:
        return sdk_failure(exc, [self._key], "x-ratelimit-", "openai")

    async def aclose(self) -> None:
        await self._client.close()
