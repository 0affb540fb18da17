"""Everything a scoring run is asked to do, as one typed value: what `mmad score` parses from its
flags and what `mmad.api.score` takes as keyword arguments.

The built-in defaults live here and nowhere else: the command line reads them for its own
defaults and its `--help`, so a script and a command with the same settings do the same thing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields

from mmad.scoring.variants import DEFAULT_MAX_TOKENS, GRID_FIELDS

DEFAULT_TIMEOUT = 120.0
DEFAULT_MAX_ATTEMPTS = 6
DEFAULT_RATE_LIMIT_TIMEOUT = 900.0
DEFAULT_POLL_INTERVAL = 30.0


@dataclass(frozen=True)
class ScoreOptions:
    """One `mmad score` run, possibly a grid of variants (a tuple in a grid field = several values)."""

    # --- what defines the jobs ---
    provider: str  # openai | anthropic
    dataset: str
    subset: str | None = None  # None: every subset of the dataset
    root: str | None = None  # data root (else $MMAD_DATA_ROOT, else ./data)
    prompt_family: str | None = None  # for datasets it cannot be inferred for
    subject: str | None = None  # the object/class name in the prompt
    prompts_dir: str | None = None  # else $MMAD_PROMPTS_DIR, else the packaged prompts
    model: tuple[str, ...] = ()  # grid; () = the provider's paper model
    prompt: tuple[str, ...] = ()  # grid; () = the dataset family's default prompt
    refs: tuple[int, ...] = ()  # grid; () = the prompt file's refs, else 3
    reference_choice: tuple[str, ...] = ()  # grid: first | random:SEED | similar
    temperature: tuple[float, ...] = ()  # grid; () = 0
    max_height: tuple[str, ...] = ()  # grid: auto | original | pixels
    detail: tuple[str, ...] = ()  # grid, OpenAI only
    corrupt: tuple[str, ...] = ()  # grid: brightness:S | gaussian_noise:S
    max_tokens: int = DEFAULT_MAX_TOKENS
    corrupt_references: bool = False
    repeats: int = 1  # independent answers per job at identical settings
    sample: int | None = None  # a stratified sample of N images per subset
    seed: int = 0  # of --sample
    experiment: str | None = None  # an experiment file of variants
    # --- where it goes and whom it asks ---
    base_url: str | None = None
    out: str | None = None
    run_name: str | None = None
    cache_dir: str | None = None
    timeout: float = DEFAULT_TIMEOUT  # seconds per request attempt
    prices: str | None = None
    prompt_cache: bool = True  # mark the fixed prefix for provider prompt caching
    # --- hybrid: a detector run gates the model ---
    hybrid: str | None = None  # a detector run folder
    gate_threshold: float | None = None
    hybrid_contour: str = "none"  # none | separate | on-query
    # --- the engine ---
    concurrency: int | None = None
    rpm: float | None = None
    tpm: float | None = None
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    rate_limit_timeout: float = DEFAULT_RATE_LIMIT_TIMEOUT
    image_workers: int | None = None
    retry_failed: bool = False
    max_cost: float | None = None  # USD
    batch: bool = False
    poll_interval: float = DEFAULT_POLL_INTERVAL
    batch_max_requests: int | None = None
    batch_max_mb: float | None = None
    # --- planning only ---
    planning: bool = False  # an estimate or a dry run: nothing will be sent

    def grid(self) -> dict[str, list]:
        """The grid fields given more than nothing, as lists (max_tokens is a single value)."""
        return {name: list(getattr(self, name)) for name in GRID_FIELDS
                if isinstance(getattr(self, name), tuple) and getattr(self, name)}

    @classmethod
    def from_values(cls, values: Mapping[str, object]) -> ScoreOptions:
        """From a mapping with these names (an argparse namespace's vars): grid fields may be lists
        of lists (`--prompt a,b --prompt c`), unknown names are ignored."""
        known = {f.name for f in fields(cls)}
        picked = {}
        for name, value in values.items():
            if name not in known or value is None and name in ("provider", "dataset"):
                continue
            if name in GRID_FIELDS and name != "max_tokens":
                value = tuple(_flatten(value))
            picked[name] = value
        return cls(**picked)


def _flatten(value) -> list:
    if value is None:
        return []
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        return [value]
    out = []
    for item in value:
        out.extend(_flatten(item))
    return out
