"""One scoring session: the budget meter, the warnings worth saying before paying, and the engine
run over every variant's plans with the run folders locked and checked.

This is the library entry point that `mmad score`, `mmad qa run` and `mmad classify` share (and
`mmad.api.score`); the command line only adds the progress view and the signal handlers, through
the `on_event` and `on_engine` hooks.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass

from mmad.cost.estimate import CostMeter, TokenCounter, load_prices
from mmad.cost.tokens import minimum_cacheable_tokens
from mmad.data.filememo import FileMemo
from mmad.data.images import prepared_size
from mmad.engine.batch import BatchOptions
from mmad.engine.events import RunSummary
from mmad.engine.lock import lock_folders
from mmad.engine.runner import Engine, EngineSettings
from mmad.errors import ConfigError
from mmad.providers.base import Provider, ProviderFailure, one_line
from mmad.scoring.hybrid_runs import GateReport, apply_hybrid
from mmad.scoring.options import ScoreOptions
from mmad.scoring.runs import VariantRun, check_run_folder, prepare_runs, refuse_shared_folders
from mmad.scoring.summary import store_summary, summary_document


@dataclass
class EngineOptions:
    """The engine and budget settings of a session (the part of ScoreOptions QA and classify share)."""

    concurrency: int | None = None
    rpm: float | None = None
    tpm: float | None = None
    max_attempts: int = 6
    rate_limit_timeout: float = 900.0
    image_workers: int | None = None
    retry_failed: bool = False
    max_cost: float | None = None
    prices: str | None = None
    prompt_cache: bool = True
    batch: bool = False
    poll_interval: float = 30.0
    batch_max_requests: int | None = None
    batch_max_mb: float | None = None

    @classmethod
    def of(cls, values: object) -> EngineOptions:
        """From anything with these attribute names (ScoreOptions, an argparse namespace)."""
        return cls(**{name: getattr(values, name) for name in cls.__dataclass_fields__ if hasattr(values, name)})

    def engine_settings(self) -> EngineSettings:
        return EngineSettings(concurrency=self.concurrency, requests_per_minute=self.rpm, tokens_per_minute=self.tpm,
                              max_attempts=self.max_attempts, rate_limit_timeout=self.rate_limit_timeout,
                              image_workers=self.image_workers, retry_failed=self.retry_failed)

    def batch_options(self, runs: list[VariantRun]) -> BatchOptions | None:
        if not self.batch:
            return None
        if len(runs) > 1:
            raise ConfigError("--batch runs one variant at a time; drop the grid or run each variant")
        return BatchOptions(runs[0].out_dir / "batches.json", poll_interval=self.poll_interval,
                            max_requests=self.batch_max_requests,
                            max_bytes=int(self.batch_max_mb * 2**20) if self.batch_max_mb else None)


async def make_meter(provider: Provider, runs: list[VariantRun], *, prices: str | None, max_cost: float | None,
                     prompt_caching: bool, calibrate: bool = False,
                     notes: Callable[[str], None] = lambda line: None) -> CostMeter:
    """The budget meter (prices, token counter calibrated for Anthropic when reachable).

    Anthropic's free count_tokens calibrates the text estimate; it is only worth a request when the
    model is priced (or `calibrate`, for an estimate). Why it could not is said through `notes`."""
    table = load_prices(prices)
    models = {run.variant.model for run in runs}
    if max_cost is not None and len(models) > 1:
        raise ConfigError("--max-cost with several models: run the models one at a time")
    model = next(iter(models))
    price = table.require(model) if max_cost is not None else table.lookup(model)
    counter = TokenCounter(provider.name, model, "high")
    if (price is not None or calibrate) and hasattr(provider, "count_text_tokens") \
            and runs[0].plans and runs[0].plans[0].jobs:
        request = runs[0].plans[0].jobs[0].request
        try:
            counter.calibrate_text(request, await provider.count_text_tokens(request))
        except Exception as exc:  # offline, no key, no such endpoint: the documented character rule stands
            why = str(exc) if isinstance(exc, ProviderFailure) else f"unexpected error: {one_line(str(exc), 200)}"
            notes(f"note: exact token counting not possible: {why}; text tokens estimated at ~3.5 characters "
                  f"per token")
    return CostMeter(price, counter, max_cost=max_cost, provider=provider.name, caching=prompt_caching)


def uncacheable_prefixes(provider: Provider, meter: CostMeter, runs: list[VariantRun]) -> list[str]:
    """Subsets whose fixed prefix is below the provider's minimum: prompt caching silently won't apply."""
    if not meter.caching or provider.base_url:
        return []  # custom servers (vLLM, Ollama) have their own prefix caching, or none
    out = []
    for plan in (plan for run in runs for plan in run.plans):
        if not plan.jobs or not plan.references:
            continue
        job = plan.jobs[0]
        sizes = {image.ref.sha256: prepared_size(image.path, image.spec) for image in job.images}
        _, prefix = meter.counter.request(job.request, sizes)
        minimum = minimum_cacheable_tokens(provider.name, job.request.model)
        if prefix < minimum:
            out.append(f"warning: {plan.subset.label}: the fixed prefix is ~{prefix} tokens, below the "
                       f"{minimum} the provider caches; prompt caching will not apply")
    return out


def plan_runs(opts: ScoreOptions, provider: Provider, memo: FileMemo) -> tuple[list[VariantRun], GateReport | None]:
    """Every run the options ask for, hybrid ones gated, checked not to share a folder; and the
    gate's report (None without --hybrid). What `mmad score`, `mmad estimate` and `api.score` run."""
    runs, gate = apply_hybrid(opts, provider, prepare_runs(opts, provider, memo))
    refuse_shared_folders(runs, opts.experiment)
    return runs, gate


@dataclass
class SessionResult:
    summary: RunSummary
    meter: CostMeter
    document: dict  # what summary.json holds


async def run_session(provider: Provider, cache, runs: list[VariantRun], options: EngineOptions, *,
                      on_event: Callable[[object], None] | None = None,
                      on_engine: Callable[[Engine], None] | None = None,
                      notes: Callable[[str], None] = lambda line: None, warn_uncacheable: bool = True,
                      command: list[str] | None = None) -> SessionResult:
    """Run every plan of every run through one engine: folders locked and checked, run.json written,
    the budget kept, summary.json left in each folder. The provider is closed at the end."""
    plans = [plan for run in runs for plan in run.plans]
    locks = lock_folders({run.out_dir for run in runs})
    try:
        for run in runs:
            check_run_folder(run)
        meter = await make_meter(provider, runs, prices=options.prices, max_cost=options.max_cost,
                                 prompt_caching=options.prompt_cache, notes=notes)
        for line in uncacheable_prefixes(provider, meter, runs) if warn_uncacheable else ():
            notes(line)
        batch = options.batch_options(runs)
        meter.batch = batch is not None
        engine = Engine(provider, cache, options.engine_settings(), on_event=on_event or (lambda event: None),
                        meter=meter, batch=batch)
        if on_engine is not None:
            on_engine(engine)
        try:
            summary = await engine.run(plans, locked=True)
        finally:
            await provider.aclose()
        document = summary_document(summary, meter, runs, command=command if command is not None else sys.argv)
        store_summary(summary, document, [run.out_dir for run in runs])
    finally:
        locks.release()
    return SessionResult(summary, meter, document)

