"""OpenAI chat completions, and any OpenAI-compatible server (vLLM, Ollama, LM Studio) via base_url."""

from __future__ import annotations

import base64
import io
import json
import os
from collections.abc import Mapping

import openai
from openai.types.chat import ChatCompletion

from mmad.errors import ConfigError, ProviderError
from mmad.images import EncodedImage, ImageRef
from mmad.providers.base import (Completion, Provider, ProviderFailure, Request, classify_status,
                                 error_message, parse_raw, rate_limit_info, sdk_failure)

KEY_ENV = "OPENAI_API_KEY"


class OpenAIProvider(Provider):
    name = "openai"

    def __init__(self, *, api_key: str | None = None, base_url: str | None = None,
                 timeout: float = 120.0, client: openai.AsyncOpenAI | None = None,
                 prompt_caching: bool = True, detail: str | None = None) -> None:
        self.base_url = base_url
        self.prompt_caching = prompt_caching
        self.detail = detail  # None/"auto": not sent
        self._key = api_key or os.environ.get(KEY_ENV)
        if not self._key:
            if base_url is None:
                raise ConfigError(f"set {KEY_ENV} to use the openai provider "
                                  f"(any placeholder works for a local OpenAI-compatible server)")
            self._key = "placeholder"  # local servers accept any key
        # One layer retries: the engine (tenacity). The SDK's own retries are off.
        self._client = client or openai.AsyncOpenAI(api_key=self._key, base_url=base_url,
                                                    max_retries=0, timeout=timeout)

    def identity(self) -> dict[str, str]:
        ident = {"provider": self.name}
        if self.base_url:
            ident["base_url"] = self.base_url.rstrip("/")
        if self.detail and self.detail != "auto":
            ident["detail"] = self.detail  # changes what the model sees
        return ident

    def body(self, request: Request, images: Mapping[str, EncodedImage]) -> dict:
        """The chat-completions body: system message, then one user message of texts and images."""
        content = []
        for part in request.parts:
            if isinstance(part, ImageRef):
                image = images[part.sha256]
                url = {"url": f"data:{image.media_type};base64,{image.data}"}
                if self.detail and self.detail != "auto":
                    url["detail"] = self.detail
                content.append({"type": "image_url", "image_url": url})
            else:
                content.append({"type": "text", "text": part})
        body = {
            "model": request.model,
            "messages": [{"role": "system", "content": request.system},
                         {"role": "user", "content": content}],
            "temperature": request.temperature,
            "max_tokens": request.max_tokens,
        }
        # The prefix (system, instruction, references) is byte-identical across a subset's jobs;
        # the key routes them to the same cache. Only the OpenAI API itself knows the parameter.
        if self.prompt_caching and request.cache_group and not self.base_url:
            body["prompt_cache_key"] = request.cache_group
        return body

    async def complete(self, request: Request, images: Mapping[str, EncodedImage]) -> Completion:
        try:
            raw = await self._client.chat.completions.with_raw_response.create(**self.body(request, images))
        except (openai.APIStatusError, openai.APIConnectionError) as exc:
            raise self._failure(exc) from None
        response = await parse_raw(raw)
        return self._completion(response, rate_limit_info(raw.headers, "x-ratelimit-", "openai"))

    def _completion(self, response, limits=None) -> Completion:
        if not response.choices:
            raise ProviderFailure("transient", "response without choices")
        choice = response.choices[0]
        message = choice.message
        refusal = getattr(message, "refusal", None)
        usage = {}
        if response.usage is not None:
            usage = {"input_tokens": response.usage.prompt_tokens or 0,
                     "output_tokens": response.usage.completion_tokens or 0}
            details = getattr(response.usage, "prompt_tokens_details", None)
            cached = getattr(details, "cached_tokens", None) if details else None
            if cached:
                usage["cached_input_tokens"] = cached
        return Completion(text=message.content or refusal or "", usage=usage,
                          finish_reason=choice.finish_reason,
                          refused=bool(refusal) or choice.finish_reason == "content_filter",
                          model=response.model, limits=limits)

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
        batch = await self._client.batches.retrieve(batch_id)
        return batch.status in ("completed", "failed", "expired", "cancelled"), batch.status

    async def batch_results(self, batch_id: str) -> list[tuple[str, Completion | ProviderFailure]]:
        batch = await self._client.batches.retrieve(batch_id)
        results: list[tuple[str, Completion | ProviderFailure]] = []
        for file_id in (batch.output_file_id, batch.error_file_id):
            if not file_id:
                continue
            content = await self._client.files.content(file_id)
            for line in content.text.splitlines():
                if line.strip():
                    results.append(self._batch_outcome(json.loads(line)))
        return results

    def _batch_outcome(self, line: dict) -> tuple[str, Completion | ProviderFailure]:
        custom_id = line.get("custom_id", "")
        response = line.get("response") or {}
        if line.get("error") or response.get("status_code") != 200:
            body = response.get("body") or {"error": line.get("error") or {}}
            return custom_id, classify_status(int(response.get("status_code") or 500), {}, body,
                                              error_message(body, "batch request failed"))
        return custom_id, self._completion(ChatCompletion.model_validate(response["body"]))

    async def preflight(self, request: Request, images: Mapping[str, EncodedImage]) -> None:
        """Against a custom server, check it takes this many images in one message."""
        if not self.base_url:
            return
        count = len(request.image_refs)
        if count == 0:
            return
        tiny = _tiny_png()
        probe_refs = tuple(ImageRef(f"probe-{i}") for i in range(count))
        parts: list[str | ImageRef] = ["Reply with the word OK."]
        parts.extend(probe_refs)
        probe = Request(request.system, tuple(parts), request.model, 0.0, 5)
        probe_images = {ref.sha256: EncodedImage(ref, "image/png", tiny, 16, 16) for ref in probe_refs}
        try:
            await self.complete(probe, probe_images)
        except ProviderFailure as failure:
            if failure.kind == "bad_request":
                raise ProviderError(
                    f"the server at {self.base_url} rejected one message with {count} images for model "
                    f"{request.model!r}: {failure}. Multi-image input is required (vLLM: start it with "
                    f"--limit-mm-per-prompt '{{\"image\": {count}}}'); or use --refs 0 for zero-shot") from None
            # Anything else (auth, quota, transient trouble) is left to the run, which stops or
            # retries as it would for any job.

    def _failure(self, exc: Exception) -> ProviderFailure:
        return sdk_failure(exc, [self._key], "x-ratelimit-", "openai")

    async def aclose(self) -> None:
        await self._client.close()


def _tiny_png() -> str:
    from PIL import Image
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (128, 128, 128)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")
