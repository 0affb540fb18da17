"""Anthropic messages API.

As for OpenAI, the body is built here as JSON bytes and posted through the real SDK client's
low-level `post` (auth, headers, version header, error classes stay the SDK's); the answer is
read from the JSON directly. The SDK has no `temperature` argument: it is in the body, always
(0.0 included).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import anthropic
import httpx2

from mmad.data.images import EncodedImage, ImageRef
from mmad.errors import ConfigError
from mmad.providers.base import (
    Completion,
    Provider,
    ProviderFailure,
    Request,
    json_answer,
    one_line,
    sdk_failure,
    status_phrase,
)
from mmad.providers.checks import check_base_url, check_key
from mmad.providers.headers import rate_limit_info
from mmad.providers.openai import JSON_HEADERS, dumps, encode_body

KEY_ENV = "ANTHROPIC_API_KEY"
BASE_URL_ENV = "ANTHROPIC_BASE_URL"
COUNT_TIMEOUT_S = 10.0  # the free count is a calibration: never worth a long wait before a run


class AnthropicProvider(Provider):
    name = "anthropic"
    default_url = "https://api.anthropic.com"
    url_hint = "check --base-url (without /v1: the SDK adds /v1/messages itself) and --model"

    def __init__(self, *, api_key: str | None = None, base_url: str | None = None,
                 timeout: float = 120.0, client: anthropic.AsyncAnthropic | None = None,
                 prompt_caching: bool = True) -> None:
        # The SDK falls back on $ANTHROPIC_BASE_URL: a server named there is a custom server like
        # one given by --base-url (its answers are cached apart from the Anthropic API's).
        env_url = os.environ.get(BASE_URL_ENV)
        if base_url is not None:
            check_base_url(base_url)
        elif env_url and httpx2.URL(check_base_url(env_url, f"${BASE_URL_ENV}")).host != "api.anthropic.com":
            base_url = env_url
        self.base_url = base_url
        if base_url and base_url.rstrip("/").endswith("/v1"):  # the SDK would post to .../v1/v1/messages
            self.url_hint = (f"--base-url ends in /v1, so the request went to {self.url}/v1/messages: drop the /v1 "
                             f"(the SDK adds /v1/messages itself)")
        self.prompt_caching = prompt_caching
        self.timeout = self._timeout = timeout
        self._key = api_key or check_key(os.environ.get(KEY_ENV), KEY_ENV)
        if not self._key:
            if base_url is None:
                raise ConfigError(f"set {KEY_ENV} to use the anthropic provider")
            self._key = "placeholder"
        self._client = client or anthropic.AsyncAnthropic(api_key=self._key, base_url=base_url,
                                                          max_retries=0, timeout=timeout)
        self._keys = self._idempotency_keys()

    def _blocks(self, parts, images: Mapping[str, EncodedImage]) -> list[dict]:
        blocks = []
        for part in parts:
            if isinstance(part, ImageRef):
                image = images[part.sha256]
                blocks.append({"type": "image", "source": {"type": "base64", "media_type": image.media_type,
                                                           "data": image.data}})
            else:
                blocks.append({"type": "text", "text": part})
        return blocks

    def content(self, request: Request, images: Mapping[str, EncodedImage]) -> list[dict]:
        """The last user message's blocks; the subset's fixed prefix is marked for prompt caching."""
        blocks = self._blocks(request.parts, images)
        if self.prompt_caching and request.prefix_parts:
            # Everything up to the last reference is identical for a subset: cache it.
            blocks[request.prefix_parts - 1]["cache_control"] = {"type": "ephemeral"}
        return blocks

    def messages(self, request: Request, images: Mapping[str, EncodedImage]) -> list[dict]:
        turns = [{"role": role, "content": self._blocks(parts, images)} for role, parts in request.history]
        return turns + [{"role": "user", "content": self.content(request, images)}]

    def body(self, request: Request, images: Mapping[str, EncodedImage]) -> dict:
        """The messages body; no `system` when the request has none, no `temperature` when it
        is None (0.0 is sent: the SDK's own `if temperature:` would drop it)."""
        body = {"model": request.model, "max_tokens": request.max_tokens}
        if request.system is not None:
            body["system"] = request.system
        body["messages"] = self.messages(request, images)
        if request.temperature is not None:
            body["temperature"] = request.temperature
        return body

    async def complete(self, request: Request, images: Mapping[str, EncodedImage]) -> Completion:
        return await self.post_body(encode_body(lambda stand_ins: self.body(request, stand_ins), images))

    async def post_body(self, content: bytes) -> Completion:
        try:
            response = await self.within_deadline(self._client.post(
                "/v1/messages", cast_to=httpx2.Response, content=content,
                options={"headers": JSON_HEADERS, "idempotency_key": next(self._keys)}))
        except (anthropic.APIStatusError, anthropic.APIConnectionError) as exc:
            raise self._failure(exc) from None
        data = json_answer(response, self.url)
        return self._completion(data, rate_limit_info(response.headers, "anthropic-ratelimit-", "anthropic"))

    def _completion(self, data: dict, limits=None) -> Completion:
        blocks = data.get("content")
        usage_in = data.get("usage")
        if not isinstance(blocks, list) or not isinstance(usage_in, dict):
            raise ProviderFailure("protocol", f"the server at {self.url} answered without content or usage")
        text = "".join(str(block.get("text", "")) for block in blocks if isinstance(block, dict))
        # Anthropic's input_tokens leaves out cache reads and writes; ours counts every input token.
        read = int(usage_in.get("cache_read_input_tokens") or 0)
        written = int(usage_in.get("cache_creation_input_tokens") or 0)
        usage = {"input_tokens": int(usage_in.get("input_tokens") or 0) + read + written,
                 "output_tokens": int(usage_in.get("output_tokens") or 0)}
        if read:
            usage["cached_input_tokens"] = read
        if written:
            usage["cache_write_tokens"] = written
        stop = data.get("stop_reason")
        return Completion(text=text, usage=usage, finish_reason=stop, refused=stop == "refusal",
                          model=data.get("model"), limits=limits)

    # ----------------------------------------------------------------- Message Batches

    batch_limits = (100_000, 240 * 2**20)  # the API allows 100,000 requests or 256 MB per batch

    def batch_line(self, custom_id: str, request: Request, images: Mapping[str, EncodedImage]) -> dict:
        return {"custom_id": custom_id, "params": self.body(request, images)}

    async def submit_batch(self, lines: list[dict], label: str) -> str:
        try:
            # our JSON bodies, built as plain dicts, are what the SDK's Request TypedDicts describe
            batch = await self._client.messages.batches.create(requests=lines)  # type: ignore[arg-type]
        except (anthropic.APIStatusError, anthropic.APIConnectionError) as exc:
            raise self._failure(exc) from None
        return batch.id

    async def batch_status(self, batch_id: str) -> tuple[bool, str]:
        try:
            batch = await self._client.messages.batches.retrieve(batch_id)
        except (anthropic.APIStatusError, anthropic.APIConnectionError) as exc:
            raise self._failure(exc) from None
        return batch.processing_status == "ended", batch.processing_status

    async def batch_results(self, batch_id: str) -> list[tuple[str, Completion | ProviderFailure]]:
        results: list[tuple[str, Completion | ProviderFailure]] = []
        async for entry in await self._client.messages.batches.results(batch_id):
            result = entry.result
            if result.type == "succeeded":
                try:
                    results.append((entry.custom_id, self._completion(result.message.model_dump())))
                except ProviderFailure as failure:
                    results.append((entry.custom_id, failure))
            else:
                error = getattr(result, "error", None)
                message = one_line(str(getattr(getattr(error, "error", None), "message", None) or result.type))
                results.append((entry.custom_id, ProviderFailure("bad_request" if result.type == "errored"
                                                                 else "transient", f"batch {result.type}: {message}")))
        return results

    async def count_text_tokens(self, request: Request) -> int:
        """Anthropic's free token-counting endpoint on the request's text alone (system + texts).
        Raises ProviderFailure whose message says in words why no count came (a compatible server
        without the endpoint, an unreachable server, a refused key)."""
        texts = [{"type": "text", "text": p} for p in request.parts if isinstance(p, str)]
        body = {"model": request.model, "messages": [{"role": "user", "content": texts}]}
        if request.system is not None:
            body["system"] = request.system
        # Posted like the messages themselves: the answer is read here, whatever it is (a server
        # without the endpoint may answer 200 with an HTML page, which the SDK returns as a str).
        try:
            response = await self._client.post("/v1/messages/count_tokens", cast_to=httpx2.Response,
                                               content=dumps(body), options={"headers": JSON_HEADERS,
                                                                             "idempotency_key": next(self._keys),
                                                                             "timeout": min(self._timeout, COUNT_TIMEOUT_S)})
        except (anthropic.APIStatusError, anthropic.APIConnectionError) as exc:
            raise self._count_failure(self._failure(exc)) from None
        try:
            data = json_answer(response, self.url)
        except ProviderFailure as failure:
            raise self._count_failure(failure) from None
        count = data.get("input_tokens")
        if not isinstance(count, int) or isinstance(count, bool) or count < 0:
            raise self._count_failure(ProviderFailure("protocol", "it answered without a token count"))
        return count

    def _count_failure(self, failure: ProviderFailure) -> ProviderFailure:
        """A failed count_tokens request, worded for the estimate's note."""
        what = (f"HTTP {failure.status} {status_phrase(failure.status)}".rstrip() if failure.status
                else str(failure).replace(f"the server at {self.url} ", "it ", 1))
        if failure.kind in ("not_found", "protocol"):  # 404/405/501, an HTML page, no count
            text = f"the server at {self.url} has no Anthropic count_tokens endpoint ({what})"
        elif failure.kind == "connection":
            text = f"cannot reach {self.url} ({failure})"
        elif failure.kind == "auth":
            text = f"{self.url} refused the key ({failure})"
        else:
            text = f"the count_tokens request to {self.url} failed ({failure})"
        return ProviderFailure(failure.kind, text, status=failure.status)

    def _failure(self, exc: Exception) -> ProviderFailure:
        return sdk_failure(exc, [self._key], "anthropic-ratelimit-", "anthropic")

    async def aclose(self) -> None:
        await self._client.close()
