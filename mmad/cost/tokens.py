"""Token counting the way each provider bills a request.

Usage is normalised by the providers to: input_tokens (every input token, cached or not),
cached_input_tokens (read from a prompt cache), cache_write_tokens (written to it), output_tokens.

Token counting:
  - OpenAI text: the model's real tokenizer (o200k_base for the gpt-4o/4.1/o-series families,
    cl100k_base for gpt-4/3.5) from the offline `quicktok-v1` package, plus the chat format's
    3 tokens per message and 3 for the reply.
  - OpenAI images: the tile formula (fit 2048 square, shortest side to 768, 512-px tiles:
    85 + 170 per tile for gpt-4o/4.1; 2833 + 5667 for gpt-4o-mini; `detail=low` = the base).
  - Anthropic images: width x height / 750 after fitting a 1568-px long edge and ~1,600 tokens (1.2 MP).
  - Anthropic text: no offline tokenizer exists. mmad asks Anthropic's free count_tokens endpoint
    for one request's text and scales its own count to it (`calibrate_text`); offline it falls
    back to Anthropic's documented rule of thumb, about 3.5 characters per token.
Prompt caching: a prefix shorter than the provider's minimum is not cached; Anthropic caches the
marked prefix whole, OpenAI in 128-token steps from 1,024.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Protocol

from mmad.data.images import ImageRef
from mmad.providers.base import Request

MESSAGE_OVERHEAD = 3  # tokens per chat message
REPLY_OVERHEAD = 3


def openai_image_tokens(width: int, height: int, model: str, detail: str = "high") -> int:
    """OpenAI's documented tile formula."""
    base, per_tile = (2833, 5667) if model.startswith("gpt-4o-mini") else (85, 170)
    if detail == "low":
        return base
    scale = min(1.0, 2048 / max(width, height))
    w, h = width * scale, height * scale
    scale = min(1.0, 768 / min(w, h))
    w, h = w * scale, h * scale
    return base + per_tile * math.ceil(w / 512) * math.ceil(h / 512)


def anthropic_image_tokens(width: int, height: int) -> int:
    """Anthropic's documented formula: pixels / 750 after its size caps."""
    scale = min(1.0, 1568 / max(width, height), math.sqrt(1_200_000 / (width * height)))
    return math.ceil((width * scale) * (height * scale) / 750)


def minimum_cacheable_tokens(provider: str, model: str) -> int:
    """Shorter prefixes are silently not cached by the provider."""
    if provider == "anthropic" and "haiku" in model:
        return 2048
    return 1024


class _Encoding(Protocol):  # quicktok's (tiktoken's) Encoding
    def encode_ordinary(self, text: str) -> Sequence[int]: ...


class TokenCounter:
    """Counts a request's input tokens the way its provider bills them."""

    def __init__(self, provider: str, model: str, detail: str = "high") -> None:
        self.provider = provider
        self.model = model
        self.detail = detail
        self.text_scale = 1.0  # set by calibrate_text from a provider-side count
        self._encoding: _Encoding | None = None  # loaded on first use (~1 s)

    def text(self, text: str) -> int:
        if self.provider == "openai":
            if self._encoding is None:
                import quicktok
                name = ("cl100k_base" if self.model.startswith(("gpt-4-", "gpt-3.5")) or self.model == "gpt-4"
                        else "o200k_base")
                self._encoding = quicktok.get_encoding(name)
            return len(self._encoding.encode_ordinary(text))
        return math.ceil(len(text) / 3.5 * self.text_scale)

    def text_only(self, request: Request) -> int:
        """The request's text tokens with the message overheads (what count_tokens sees without images)."""
        return (self.text(request.system or "") + sum(self.text(p) for p in request.parts if isinstance(p, str))
                + 2 * MESSAGE_OVERHEAD + REPLY_OVERHEAD)

    def calibrate_text(self, request: Request, counted: int) -> None:
        """Scale the character rule so this request's text comes out at the provider's own count."""
        self.text_scale = 1.0
        overhead = 2 * MESSAGE_OVERHEAD + REPLY_OVERHEAD
        ours = self.text_only(request) - overhead
        if ours > 0 and counted > overhead:
            self.text_scale = (counted - overhead) / ours

    def image(self, size: tuple[int, int], detail: str | None = None) -> int:
        if self.provider == "openai":
            return openai_image_tokens(*size, self.model, detail or self.detail)
        return anthropic_image_tokens(*size)

    def _part(self, part, sizes: Mapping[str, tuple[int, int]]) -> int:
        return self.image(sizes[part.sha256], part.detail) if isinstance(part, ImageRef) else self.text(part)

    def _parts(self, parts, sizes: Mapping[str, tuple[int, int]]) -> int:
        return sum(self._part(p, sizes) for p in parts)

    def request(self, request: Request, sizes: Mapping[str, tuple[int, int]]) -> tuple[int, int]:
        """(input tokens, tokens of the fixed prefix before the query's label and image)."""
        messages = 1 + (request.system is not None) + len(request.history)
        total = (self.text(request.system or "") + messages * MESSAGE_OVERHEAD + REPLY_OVERHEAD
                 + sum(self._parts(parts, sizes) for _, parts in request.history))
        prefix = total
        boundary = request.prefix_parts if request.prefix_parts is not None else len(request.parts)
        for index, part in enumerate(request.parts):
            total += self._part(part, sizes)
            if index < boundary:
                prefix = total
        return total, prefix


def cacheable(prefix_tokens: int, provider: str, model: str) -> int:
    """Tokens a provider caches of a prefix: all of it (Anthropic) or 128-token steps (OpenAI)."""
    minimum = minimum_cacheable_tokens(provider, model)
    if prefix_tokens < minimum:
        return 0
    return prefix_tokens if provider == "anthropic" else minimum + 128 * ((prefix_tokens - minimum) // 128)
