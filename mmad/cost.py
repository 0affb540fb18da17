"""Tokens and money: the price table, per-provider token counting, estimates, and the budget meter.

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
Output tokens: a per-domain default until live answers arrive, then their running mean.
"""

from __future__ import annotations

import math
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from mmad.config import asset
from mmad.errors import ConfigError
from mmad.images import MAX_HEIGHT, ImageRef
from mmad.providers.base import Request

PRICES_ENV = "MMAD_PRICES"
PACKAGED_PRICES = asset("prices.toml")
DEFAULT_OUTPUT_TOKENS = {"industrial": 90, "novelty": 110, "drd": 100, "covid19": 110, "skin-lesion": 100}
FALLBACK_OUTPUT_TOKENS = 100
MESSAGE_OVERHEAD = 3  # tokens per chat message
REPLY_OVERHEAD = 3


# --------------------------------------------------------------------------- prices

@dataclass(frozen=True)
class ModelPrice:
    """USD per million tokens for one model."""

    name: str
    input: float
    output: float
    cached_input: float
    cache_write: float
    batch: float = 1.0

    def cost(self, usage: Mapping[str, int], *, batch: bool = False) -> float:
        cached = usage.get("cached_input_tokens", 0)
        written = usage.get("cache_write_tokens", 0)
        plain = max(usage.get("input_tokens", 0) - cached - written, 0)
        dollars = (plain * self.input + cached * self.cached_input + written * self.cache_write
                   + usage.get("output_tokens", 0) * self.output) / 1e6
        return dollars * (self.batch if batch else 1.0)


@dataclass(frozen=True)
class PriceTable:
    path: Path
    version: int
    date: str
    source: str
    models: dict[str, ModelPrice]

    def lookup(self, model: str) -> ModelPrice | None:
        """Exact name, else the longest listed prefix; None when the model is not listed."""
        if model in self.models:
            return self.models[model]
        matches = [name for name in self.models if model.startswith(name)]
        return self.models[max(matches, key=len)] if matches else None

    def require(self, model: str) -> ModelPrice:
        price = self.lookup(model)
        if price is None:
            raise ConfigError(f"{self.path}: no price for model {model!r}; add a [models.\"{model}\"] entry "
                              f"or point --prices at a file that has one")
        return price


def load_prices(path: str | Path | None = None) -> PriceTable:
    """--prices FILE > $MMAD_PRICES > the packaged mmad/assets/prices.toml."""
    chosen = Path(path) if path else Path(os.environ[PRICES_ENV]) if os.environ.get(PRICES_ENV) else PACKAGED_PRICES
    try:
        data = tomllib.loads(chosen.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"price file {chosen} not found") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{chosen}: not valid TOML: {exc}") from None
    models = {}
    for name, entry in data.get("models", {}).items():
        try:
            models[name] = ModelPrice(name, float(entry["input"]), float(entry["output"]),
                                      float(entry.get("cached_input", entry["input"])),
                                      float(entry.get("cache_write", entry["input"])), float(entry.get("batch", 1.0)))
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"{chosen}: model {name!r} needs numeric input and output prices ({exc})") from None
    return PriceTable(chosen, int(data.get("version", 0)), str(data.get("date", "?")), str(data.get("source", "?")),
                      models)


# --------------------------------------------------------------------------- image tokens

def prepared_size(path: Path) -> tuple[int, int]:
    """The size an image is sent at (the 512-px height rule), from its header alone."""
    with Image.open(path) as image:
        width, height = image.size
    if height > MAX_HEIGHT:
        width, height = max(1, round(width * MAX_HEIGHT / height)), MAX_HEIGHT
    return width, height


def openai_image_tokens(width: int, height: int, model: str, detail: str = "high") -> int:
    """OpenAI's documented tile formula."""
    base, per_tile = (2833, 5667) if model.startswith("gpt-4o-mini") else (85, 170)
    if detail == "low":
        return base
    scale = min(1.0, 2048 / max(width, height))
    width, height = width * scale, height * scale
    scale = min(1.0, 768 / min(width, height))
    width, height = width * scale, height * scale
    return base + per_tile * math.ceil(width / 512) * math.ceil(height / 512)


def anthropic_image_tokens(width: int, height: int) -> int:
    """Anthropic's documented formula: pixels / 750 after its size caps."""
    scale = min(1.0, 1568 / max(width, height), math.sqrt(1_200_000 / (width * height)))
    return math.ceil((width * scale) * (height * scale) / 750)


def minimum_cacheable_tokens(provider: str, model: str) -> int:
    """Shorter prefixes are silently not cached by the provider."""
    if provider == "anthropic" and "haiku" in model:
        return 2048
    return 1024


# --------------------------------------------------------------------------- text tokens

class TokenCounter:
    """Counts a request's input tokens the way its provider bills them."""

    def __init__(self, provider: str, model: str, detail: str = "high") -> None:
        self.provider = provider
        self.model = model
        self.detail = detail
        self.text_scale = 1.0  # set by calibrate_text from a provider-side count
        self._encoding = None
        if provider == "openai":
            import quicktok
            name = "cl100k_base" if model.startswith(("gpt-4-", "gpt-3.5")) or model == "gpt-4" else "o200k_base"
            self._encoding = quicktok.get_encoding(name)

    def text(self, text: str) -> int:
        if self._encoding is not None:
            return len(self._encoding.encode_ordinary(text))
        return math.ceil(len(text) / 3.5 * self.text_scale)

    def text_only(self, request: Request) -> int:
        """The request's text tokens with the message overheads (what count_tokens sees without images)."""
        return (self.text(request.system) + sum(self.text(p) for p in request.parts if isinstance(p, str))
                + 2 * MESSAGE_OVERHEAD + REPLY_OVERHEAD)

    def calibrate_text(self, request: Request, counted: int) -> None:
        """Scale the character rule so this request's text comes out at the provider's own count."""
        self.text_scale = 1.0
        overhead = 2 * MESSAGE_OVERHEAD + REPLY_OVERHEAD
        ours = self.text_only(request) - overhead
        if ours > 0 and counted > overhead:
            self.text_scale = (counted - overhead) / ours

    def image(self, size: tuple[int, int]) -> int:
        if self.provider == "openai":
            return openai_image_tokens(*size, self.model, self.detail)
        return anthropic_image_tokens(*size)

    def request(self, request: Request, sizes: Mapping[str, tuple[int, int]]) -> tuple[int, int]:
        """(input tokens, tokens of the fixed prefix before the query's label and image)."""
        total = self.text(request.system) + 2 * MESSAGE_OVERHEAD + REPLY_OVERHEAD
        prefix = total
        boundary = request.prefix_parts if request.prefix_parts is not None else len(request.parts)
        for index, part in enumerate(request.parts):
            total += self.image(sizes[part.sha256]) if isinstance(part, ImageRef) else self.text(part)
            if index < boundary:
                prefix = total
        return total, prefix


# --------------------------------------------------------------------------- estimates

@dataclass
class Estimate:
    jobs: int = 0
    cached_jobs: int = 0  # already answered in the response cache: free
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0  # with prompt caching
    cache_write_tokens: int = 0
    below_cache_minimum: list[str] = field(default_factory=list)  # subsets whose prefix is too short
    plain: float | None = None
    with_caching: float | None = None
    with_batch: float | None = None
    with_both: float | None = None


def cacheable(prefix_tokens: int, provider: str, model: str) -> int:
    """Tokens a provider caches of a prefix: all of it (Anthropic) or 128-token steps (OpenAI)."""
    minimum = minimum_cacheable_tokens(provider, model)
    if prefix_tokens < minimum:
        return 0
    return prefix_tokens if provider == "anthropic" else minimum + 128 * ((prefix_tokens - minimum) // 128)


def output_default(family: str | None) -> int:
    return DEFAULT_OUTPUT_TOKENS.get(family or "", FALLBACK_OUTPUT_TOKENS)


@dataclass
class CostMeter:
    """Spend so far, money reserved by requests in flight, and the --max-cost stop.

    A request is admitted only if spent + reserved + its own estimate stays within the budget,
    so the run stops *before* a request that could pass it. Estimates use the per-domain output
    default until three live answers arrive, then the mean of the observed output tokens.
    """

    price: ModelPrice | None
    counter: TokenCounter
    max_cost: float | None = None
    batch: bool = False
    spent: float = 0.0
    reserved: float = 0.0
    estimated_done: float = 0.0  # what was estimated for the jobs that completed live
    _outputs: list[int] = field(default_factory=list)
    _reservations: dict[str, float] = field(default_factory=dict)

    def estimate(self, request: Request, sizes: Mapping[str, tuple[int, int]], family: str | None) -> float:
        if self.price is None:
            return 0.0
        input_tokens, _ = self.counter.request(request, sizes)
        output = (sum(self._outputs) / len(self._outputs)) if len(self._outputs) >= 3 else output_default(family)
        return self.price.cost({"input_tokens": input_tokens, "output_tokens": round(output)}, batch=self.batch)

    def admit(self, key: str, estimate: float) -> bool:
        if self.max_cost is not None and self.spent + self.reserved + estimate > self.max_cost + 1e-12:
            return False
        self._reservations[key] = estimate
        self.reserved += estimate
        return True

    def settle(self, key: str, usage: Mapping[str, int] | None) -> None:
        estimate = self._reservations.pop(key, 0.0)
        self.reserved -= estimate
        if usage and self.price is not None:
            self.spent += self.price.cost(usage, batch=self.batch)
            self.estimated_done += estimate
            if usage.get("output_tokens"):
                self._outputs.append(int(usage["output_tokens"]))


def estimate_plans(plans: list, provider: str, model: str, price: ModelPrice | None, cache,
                   *, detail: str = "high", counter: TokenCounter | None = None) -> Estimate:
    """Tokens and dollars for the jobs `mmad score` would send (jobs answered in the cache are free).

    Prompt caching: per subset the first request writes the fixed prefix and the rest read it
    (Anthropic caches the marked prefix whole; OpenAI in 128-token steps from 1,024). Batch: the
    price file's batch multiplier on everything. "Both" applies both.
    """
    counter = counter or TokenCounter(provider, model, detail)
    result = Estimate()
    for plan in plans:
        todo = [job for job in plan.jobs if job.key not in cache]
        result.cached_jobs += len(plan.jobs) - len(todo)
        if not todo:
            continue
        refs = todo[0].request.image_refs[:-1]
        ref_sizes = {ref.sha256: prepared_size(path) for ref, path in zip(refs, plan.references)}
        prefix = 0
        for job in todo:
            sizes = dict(ref_sizes)
            sizes[job.request.image_refs[-1].sha256] = prepared_size(job.query)
            total, prefix = counter.request(job.request, sizes)
            result.input_tokens += total
            result.output_tokens += output_default(job.family)
        result.jobs += len(todo)
        cached = cacheable(prefix, provider, model)
        if cached == 0:
            result.below_cache_minimum.append(plan.subset.label)
            continue
        result.cache_read_tokens += cached * (len(todo) - 1)
        if provider == "anthropic":
            result.cache_write_tokens += cached
    if price is not None:
        plain = {"input_tokens": result.input_tokens, "output_tokens": result.output_tokens}
        caching = dict(plain, cached_input_tokens=result.cache_read_tokens,
                       cache_write_tokens=result.cache_write_tokens)
        result.plain = price.cost(plain)
        result.with_caching = price.cost(caching)
        result.with_batch = price.cost(plain, batch=True)
        result.with_both = price.cost(caching, batch=True)
    return result
