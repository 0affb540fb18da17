"""Anthropic messages API."""

from __future__ import annotations

import os
from collections.abc import Mapping

import anthropic

from mmad.errors import ConfigError
from mmad.images import EncodedImage, ImageRef
from mmad.providers.base import (Completion, Provider, ProviderFailure, Request, parse_raw,
                                 rate_limit_info, sdk_failure)

KEY_ENV = "ANTHROPIC_API_KEY"


class AnthropicProvider(Provider):
    name = "anthropic"

    def __init__(self, *, api_key: str | None = None, base_url: str | None = None,
                 timeout: float = 120.0, client: anthropic.AsyncAnthropic | None = None,
                 prompt_caching: bool = True) -> None:
        self.base_url = base_url
        self.prompt_caching = prompt_caching
        self._key = api_key or os.environ.get(KEY_ENV)
        if not self._key:
            if base_url is None:
                raise ConfigError(f"set {KEY_ENV} to use the anthropic provider")
            self._key = "placeholder"
        self._client = client or anthropic.AsyncAnthropic(api_key=self._key, base_url=base_url,
                                                          max_retries=0, timeout=timeout)

    def identity(self) -> dict[str, str]:
        ident = {"provider": self.name}
        if self.base_url:
            ident["base_url"] = self.base_url.rstrip("/")
        return ident

    def content(self, request: Request, images: Mapping[str, EncodedImage]) -> list[dict]:
        blocks = []
        for part in request.parts:
            if isinstance(part, ImageRef):
                image = images[part.sha256]
                blocks.append({"type": "image", "source": {"type": "base64", "media_type": image.media_type,
                                                           "data": image.data}})
            else:
                blocks.append({"type": "text", "text": part})
        if self.prompt_caching and request.prefix_parts:
            # Everything up to the last reference is identical for a subset: cache it.
            blocks[request.prefix_parts - 1]["cache_control"] = {"type": "ephemeral"}
        return blocks

    async def complete(self, request: Request, images: Mapping[str, EncodedImage]) -> Completion:
        try:
            # The SDK has no `temperature` argument: it goes in the body, always (0.0 included).
            raw = await self._client.messages.with_raw_response.create(
                model=request.model, max_tokens=request.max_tokens, system=request.system,
                messages=[{"role": "user", "content": self.content(request, images)}],
                extra_body={"temperature": request.temperature})
        except (anthropic.APIStatusError, anthropic.APIConnectionError) as exc:
            raise self._failure(exc) from None
        message = await parse_raw(raw)
        return self._completion(message, rate_limit_info(raw.headers, "anthropic-ratelimit-", "anthropic"))

    def _completion(self, message, limits=None) -> Completion:
        text = "".join(getattr(block, "text", "") for block in message.content)
        # Anthropic's input_tokens leaves out cache reads and writes; ours counts every input token.
        read = getattr(message.usage, "cache_read_input_tokens", None) or 0
        written = getattr(message.usage, "cache_creation_input_tokens", None) or 0
        usage = {"input_tokens": (message.usage.input_tokens or 0) + read + written,
                 "output_tokens": message.usage.output_tokens or 0}
        if read:
            usage["cached_input_tokens"] = read
        if written:
            usage["cache_write_tokens"] = written
        return Completion(text=text, usage=usage, finish_reason=message.stop_reason,
                          refused=message.stop_reason == "refusal", model=message.model, limits=limits)

    # ----------------------------------------------------------------- Message Batches

    batch_limits = (100_000, 240 * 2**20)  # the API allows 100,000 requests or 256 MB per batch

    def batch_line(self, custom_id: str, request: Request, images: Mapping[str, EncodedImage]) -> dict:
        return {"custom_id": custom_id, "params": {
            "model": request.model, "max_tokens": request.max_tokens, "system": request.system,
            "temperature": request.temperature,
            "messages": [{"role": "user", "content": self.content(request, images)}]}}

    async def submit_batch(self, lines: list[dict], label: str) -> str:
        try:
            batch = await self._client.messages.batches.create(requests=lines)
        except (anthropic.APIStatusError, anthropic.APIConnectionError) as exc:
            raise self._failure(exc) from None
        return batch.id

    async def batch_status(self, batch_id: str) -> tuple[bool, str]:
        batch = await self._client.messages.batches.retrieve(batch_id)
        return batch.processing_status == "ended", batch.processing_status

    async def batch_results(self, batch_id: str) -> list[tuple[str, Completion | ProviderFailure]]:
        results: list[tuple[str, Completion | ProviderFailure]] = []
        async for entry in await self._client.messages.batches.results(batch_id):
            result = entry.result
            if result.type == "succeeded":
                results.append((entry.custom_id, self._completion(result.message)))
            else:
                error = getattr(result, "error", None)
                message = str(getattr(getattr(error, "error", None), "message", None) or result.type)
                results.append((entry.custom_id, ProviderFailure("bad_request" if result.type == "errored"
                                                                 else "transient", f"batch {result.type}: {message}")))
        return results

    async def count_text_tokens(self, request: Request) -> int:
        """Anthropic's free token-counting endpoint on the request's text alone (system + texts)."""
        texts = [{"type": "text", "text": p} for p in request.parts if isinstance(p, str)]
        try:
            result = await self._client.messages.count_tokens(
                model=request.model, system=request.system, messages=[{"role": "user", "content": texts}])
        except (anthropic.APIStatusError, anthropic.APIConnectionError) as exc:
            raise self._failure(exc) from None
        return result.input_tokens

    def _failure(self, exc: Exception) -> ProviderFailure:
        return sdk_failure(exc, [self._key], "anthropic-ratelimit-", "anthropic")

    async def aclose(self) -> None:
        await self._client.close()
