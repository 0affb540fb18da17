"""Money before and during a run: estimates of what `mmad score` would spend, and the budget meter.

Both price every request with the prompt caching it will get: per shared prefix (a subset's
system text, instruction and references) the first request writes the provider's prompt cache
(Anthropic: at the cache-write price; OpenAI: at the plain price) and the rest read it.
Token counting lives in `mmad.tokens`, prices in `mmad.prices`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from mmad.cost.prices import ModelPrice, PriceTable, load_prices  # noqa: F401  (re-exported)
from mmad.cost.tokens import TokenCounter, anthropic_image_tokens, cacheable, minimum_cacheable_tokens  # noqa: F401
from mmad.data.images import prepared_size
from mmad.providers.base import Request

DEFAULT_OUTPUT_TOKENS = {"industrial": 90, "novelty": 110, "drd": 100, "covid19": 110, "skin-lesion": 100}
FALLBACK_OUTPUT_TOKENS = 100


def output_default(family: str | None) -> int:
    return DEFAULT_OUTPUT_TOKENS.get(family or "", FALLBACK_OUTPUT_TOKENS)


def priced_usage(total: int, prefix: int, output: int, *, provider: str, model: str, caching: bool,
                 prefix_seen: bool) -> dict[str, int]:
    """The usage one request is expected to be billed for, with its prompt caching."""
    usage = {"input_tokens": total, "output_tokens": output}
    cached = cacheable(prefix, provider, model) if caching else 0
    if cached:
        if prefix_seen:
            usage["cached_input_tokens"] = cached
        elif provider == "anthropic":
            usage["cache_write_tokens"] = cached
    return usage


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
    label: str = ""
    distinct_prefixes: int = 0

    def add(self, other: Estimate) -> None:
        for name in ("jobs", "cached_jobs", "input_tokens", "output_tokens", "cache_read_tokens",
                     "cache_write_tokens", "distinct_prefixes"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.below_cache_minimum.extend(other.below_cache_minimum)
        for name in ("plain", "with_caching", "with_batch", "with_both"):
            mine, theirs = getattr(self, name), getattr(other, name)
            setattr(self, name, None if mine is None and theirs is None else (mine or 0.0) + (theirs or 0.0))

    def as_json(self) -> dict:
        return {name: getattr(self, name) for name in (
            "label", "jobs", "cached_jobs", "input_tokens", "output_tokens", "cache_read_tokens",
            "cache_write_tokens", "distinct_prefixes", "plain", "with_caching", "with_batch", "with_both",
            "below_cache_minimum")}


def estimate_plan(plan, provider: str, model: str, price: ModelPrice | None, cache,
                  counter: TokenCounter, seen: set[str] | None = None) -> Estimate:
    """Tokens and dollars for one plan's jobs that are not answered in the response cache. Keys
    in `seen` (identical requests of an earlier variant of the same estimate) are free too."""
    result = Estimate(label=plan.subset.label)
    paid = [job for job in plan.jobs if job.local is None]  # a gate's decisions cost nothing
    seen = seen if seen is not None else set()
    todo = [job for job in paid if job.key not in seen and job.key not in cache]
    seen.update(job.key for job in todo)
    result.cached_jobs = len(paid) - len(todo)
    sizes: dict[str, tuple[int, int]] = {}
    groups: dict[tuple, list[int]] = {}
    for job in todo:
        for image in job.images:
            if image.ref.sha256 not in sizes:
                sizes[image.ref.sha256] = prepared_size(image.path, image.spec)
        total, prefix = counter.request(job.request, sizes)
        result.input_tokens += total
        result.output_tokens += output_default(job.family)
        groups.setdefault(job.prefix_id, []).append(prefix)
    result.jobs = len(todo)
    result.distinct_prefixes = len(groups)
    for prefixes in groups.values():
        cached = cacheable(prefixes[0], provider, model)
        if cached == 0:
            continue
        result.cache_read_tokens += cached * (len(prefixes) - 1)
        if provider == "anthropic":
            result.cache_write_tokens += cached
    if todo and result.cache_read_tokens == 0 and result.cache_write_tokens == 0:
        result.below_cache_minimum.append(plan.subset.label)
    if price is not None:
        plain = {"input_tokens": result.input_tokens, "output_tokens": result.output_tokens}
        caching = dict(plain, cached_input_tokens=result.cache_read_tokens,
                       cache_write_tokens=result.cache_write_tokens)
        result.plain = price.cost(plain)
        result.with_caching = price.cost(caching)
        result.with_batch = price.cost(plain, batch=True)
        result.with_both = price.cost(caching, batch=True)
    return result


def estimate_plans(plans: list, provider: str, model: str, price: ModelPrice | None, cache,
                   *, detail: str = "high", counter: TokenCounter | None = None) -> Estimate:
    """The sum over plans (see `estimate_plan`); jobs answered in the cache are free."""
    counter = counter or TokenCounter(provider, model, detail)
    total = Estimate(label="total")
    if price is not None:
        total.plain = total.with_caching = total.with_batch = total.with_both = 0.0
    for plan in plans:
        total.add(estimate_plan(plan, provider, model, price, cache, counter))
    return total


# --------------------------------------------------------------------------- the budget meter

@dataclass
class CostMeter:
    """Spend so far, worst cases reserved by requests in flight, and the --max-cost stop.

    A request reserves its *worst case* right before it is sent, and is sent only if spent +
    reserved + that worst case stays within the budget. The worst case prices the input exactly
    (its tokens are counted as the provider bills them; with Anthropic prompt caching the prefix
    at the cache-write price, in case it is not served from the cache) and the output at
    `max_tokens` until the first answer arrives, then at twice the longest answer so far (never
    above `max_tokens`). Near the budget, requests wait for those in flight to settle
    (their reservations turn into actual, smaller costs) rather than stop; the run stops when
    nothing is in flight and the next worst case does not fit, so it stops at most one worst
    case short of the budget, and passes it only if a last answer is more than twice as long as
    every earlier one. The *expected* cost (with the prompt caching it will get, outputs at the
    running mean after three answers) is what the summary compares the actual spend with.
    """

    price: ModelPrice | None
    counter: TokenCounter
    max_cost: float | None = None
    batch: bool = False
    provider: str = ""
    caching: bool = True
    spent: float = 0.0
    reserved: float = 0.0
    estimated_done: float = 0.0  # expected cost of the requests that were answered
    _outputs: list[int] = field(default_factory=list)
    _reservations: dict[str, tuple[float, float]] = field(default_factory=dict)
    _prefixes_seen: set = field(default_factory=set)

    def _output(self, family: str | None) -> int:
        return round(sum(self._outputs) / len(self._outputs)) if len(self._outputs) >= 3 else output_default(family)

    def expected(self, request: Request, sizes: Mapping[str, tuple[int, int]], family: str | None,
                 prefix_id: tuple | None = None) -> float:
        """What this request is expected to cost, with the prompt caching it will get."""
        if self.price is None:
            return 0.0
        total, prefix = self.counter.request(request, sizes)
        usage = priced_usage(total, prefix, self._output(family), provider=self.provider or self.counter.provider,
                             model=request.model, caching=self.caching,
                             prefix_seen=prefix_id is not None and prefix_id in self._prefixes_seen)
        return self.price.cost(usage, batch=self.batch)

    def estimate(self, request: Request, sizes: Mapping[str, tuple[int, int]], family: str | None) -> float:
        """Expected cost without any prompt caching (kept for callers that price a bare request)."""
        if self.price is None:
            return 0.0
        total, _ = self.counter.request(request, sizes)
        return self.price.cost({"input_tokens": total, "output_tokens": self._output(family)}, batch=self.batch)

    def output_bound(self, max_tokens: int) -> int:
        """`max_tokens` until an answer is seen, then twice the longest answer so far (capped)."""
        return min(max_tokens, 2 * max(self._outputs)) if self._outputs else max_tokens

    def worst_case(self, request: Request, sizes: Mapping[str, tuple[int, int]]) -> float:
        if self.price is None:
            return 0.0
        total, prefix = self.counter.request(request, sizes)
        provider = self.provider or self.counter.provider
        written = cacheable(prefix, provider, request.model) if self.caching and provider == "anthropic" else 0
        dollars = ((total - written) * self.price.input + written * max(self.price.input, self.price.cache_write)
                   + self.output_bound(request.max_tokens) * self.price.output) / 1e6
        return dollars * (self.price.batch if self.batch else 1.0)

    def fits(self, worst: float) -> bool:
        return self.max_cost is None or self.spent + self.reserved + worst <= self.max_cost + 1e-12

    def reserve(self, key: str, worst: float, expected: float, prefix_id: tuple | None = None) -> bool:
        """Hold `worst` for a request about to be sent; False when it does not fit the budget."""
        if not self.fits(worst):
            return False
        self._reservations[key] = (worst, expected)
        self.reserved += worst
        if prefix_id is not None:
            self._prefixes_seen.add(prefix_id)
        return True

    def admit(self, key: str, estimate: float) -> bool:
        """Reserve a given amount (batch submission reserves its expected cost this way)."""
        return self.reserve(key, estimate, estimate)

    @property
    def in_flight(self) -> int:
        return len(self._reservations)

    def settle(self, key: str, usage: Mapping[str, int] | None) -> None:
        """Turn a reservation into the actual cost of the answer (nothing when none came back)."""
        worst, expected = self._reservations.pop(key, (0.0, 0.0))
        self.reserved = max(0.0, self.reserved - worst)
        if usage and self.price is not None:
            self.spent += self.price.cost(usage, batch=self.batch)
            self.estimated_done += expected
            if usage.get("output_tokens"):
                self._outputs.append(int(usage["output_tokens"]))
