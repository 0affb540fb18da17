"""The price table: USD per million tokens per model, versioned data in mmad/assets/prices.toml.

Resolution: --prices FILE > $MMAD_PRICES > the packaged file. Models match by exact name or the
longest listed prefix (`gpt-4o-2024-08-06` -> `gpt-4o`).
"""

from __future__ import annotations

import math
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from mmad.config import asset
from mmad.errors import ConfigError
from mmad.reading import read_text

PRICES_ENV = "MMAD_PRICES"
PRICE_FIELDS = ("input", "output", "cached_input", "cache_write", "batch")
MAX_PRICE = 10_000.0  # USD per million tokens: far above any model's; a typo beyond it is refused
PACKAGED_PRICES = asset("prices.toml")


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
    where = f"${PRICES_ENV} " if not path and os.environ.get(PRICES_ENV) else ""
    try:
        data = tomllib.loads(read_text(chosen))
    except FileNotFoundError:
        raise ConfigError(f"price file {where}{chosen} not found") from None
    except OSError as exc:  # a folder, a path through a file, a name too long: the setting is wrong
        raise ConfigError(f"price file {where}{chosen} cannot be read: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{chosen}: not valid TOML: {exc}") from None
    models = {}
    entries = data.get("models", {})
    if not isinstance(entries, dict):
        raise ConfigError(f"{chosen}: models: expected [models.\"<name>\"] tables")
    for name, entry in entries.items():
        try:
            values = [entry["input"], entry["output"], entry.get("cached_input", entry["input"]),
                      entry.get("cache_write", entry["input"]), entry.get("batch", 1.0)]
            if any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in values):
                raise TypeError("not a number")
        except (KeyError, TypeError, AttributeError) as exc:
            raise ConfigError(f"{chosen}: model {name!r} needs numeric input and output prices ({exc})") from None
        bad = [field for field, v in zip(PRICE_FIELDS, values) if not (math.isfinite(v) and 0 <= v <= MAX_PRICE)]
        if bad:
            raise ConfigError(f"{chosen}: model {name!r}: {bad[0]} must be between 0 and {MAX_PRICE:g} USD per "
                              f"million tokens (batch: a factor), not {values[PRICE_FIELDS.index(bad[0])]}")
        models[name] = ModelPrice(name, *(float(v) for v in values))
    return PriceTable(chosen, int(data.get("version", 0)), str(data.get("date", "?")), str(data.get("source", "?")),
                      models)
