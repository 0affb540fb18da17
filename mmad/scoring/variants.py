"""Variants of a scoring run: the settings that change answers, their grid, names and run.json.

A variant is one combination of model, prompt, references (how many, which), sampling
temperature, max tokens, image preparation, corruption and repeat index. `expand` turns
comma-separated option values (or an experiment file's variants) into the cross product. Every
variant is a run with its own folder, named after the model plus each non-default choice:

    gpt-4o                         the defaults (the reference protocol)
    gpt-4o+industrial-paper+refs0  another prompt and zero references
    gpt-4o+similar+h768+t0.7       similar references, 768-px images, temperature 0.7
    gpt-4o+brightness3+r2          a corrupted run's third repeat

so variants never share a folder by accident, and `run.json` in each folder records the same
settings as data.
"""

from __future__ import annotations

import argparse
import itertools
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from mmad.engine.jobs import PlanOptions, safe_name
from mmad.errors import ConfigError
from mmad.reading import read_text
from mmad.redaction import public_url
from mmad.scoring.value_checks import SETTINGS

DEFAULT_REFS = 3
DEFAULT_MAX_TOKENS = 300


@dataclass(frozen=True)
class Variant:
    model: str
    prompt: str | None = None  # None: the family's default
    refs: int = DEFAULT_REFS
    reference_choice: str = "first"
    temperature: float = 0.0
    max_tokens: int = DEFAULT_MAX_TOKENS
    max_height: str | None = None  # None: the reference scripts' rule per family
    detail: str | None = None
    corrupt: str | None = None
    corrupt_references: bool = False
    repeat: int = 0
    sample: int | None = None  # stratified sample of N rows per subset (with sample_seed)
    sample_seed: int = 0

    def suffixes(self) -> list[str]:
        out = []
        if self.prompt:
            out.append(safe_name(Path(self.prompt).stem if self.prompt.endswith(".toml") else self.prompt))
        if self.refs != DEFAULT_REFS:
            out.append(f"refs{self.refs}")
        if self.reference_choice != "first":
            out.append(self.reference_choice.replace(":", ""))
        if self.temperature != 0:
            out.append(f"t{self.temperature:g}")
        if self.max_tokens != DEFAULT_MAX_TOKENS:
            out.append(f"maxtok{self.max_tokens}")
        if self.max_height not in (None, "auto"):
            out.append("original" if self.max_height == "original" else f"h{self.max_height}")
        if self.detail not in (None, "auto"):
            out.append(f"detail-{self.detail}")
        if self.corrupt:
            out.append(self.corrupt.replace(":", "").replace("_", "-"))
            if self.corrupt_references:
                out.append("corrupt-refs")
        if self.sample:
            out.append(f"sample{self.sample}s{self.sample_seed}")
        if self.repeat:
            out.append(f"r{self.repeat}")
        return out

    def run_name(self, base: str | None = None) -> str:
        return "+".join([safe_name(base or self.model)] + self.suffixes())

    def settings(self, provider: str, base_url: str | None) -> dict:
        """What goes into run.json: everything that changes answers."""
        values = asdict(self)
        values.update(provider=provider, base_url=public_url(base_url) if base_url else None, task="score")
        return values

    def plan_options(self, identity: Mapping[str, str], prompts_dir: Path) -> PlanOptions:
        return PlanOptions(identity, self.model, self.refs, self.prompt, prompts_dir, self.temperature,
                           self.max_tokens, self.max_height, self.corrupt, self.corrupt_references,
                           self.reference_choice, self.repeat, self.detail, self.sample, self.sample_seed)


GRID_FIELDS = ("model", "prompt", "refs", "reference_choice", "temperature", "max_tokens", "max_height", "detail",
               "corrupt")


def split_values(values: Sequence[str] | None) -> list[str]:
    """`--prompt a,b --prompt c` -> [a, b, c] (repeated and comma-separated values)."""
    out: list[str] = []
    for value in values or []:
        out.extend(part.strip() for part in str(value).split(",") if part.strip())
    return out


def expand(base: Variant, grid: Mapping[str, Sequence], repeats: int = 1) -> list[Variant]:
    """The cross product of the grid's values (each applied over `base`), times the repeats."""
    names = [name for name in GRID_FIELDS if grid.get(name)]
    variants: list[Variant] = []
    for combo in itertools.product(*(grid[name] for name in names)):
        variant = replace(base, **dict(zip(names, combo)))
        variants.extend(replace(variant, repeat=r) for r in range(repeats))
    names_seen: dict[str, Variant] = {}
    for variant in variants or [base]:
        names_seen.setdefault(variant.run_name(), variant)
    return list(names_seen.values()) if variants else [base]


@dataclass(frozen=True)
class Experiment:
    """An experiment file's settings, checked: one dict per `[[variant]]` table, and its `[grid]`."""

    variants: list[dict]
    grid: dict

    def over(self, base: Variant) -> list[Variant]:
        """The file's variants applied over `base` (one combination of the command line's flags)."""
        variants = [replace(base, **entry) for entry in self.variants]
        return variants + (expand(base, self.grid) if self.grid else [])


def load_experiment(path: Path, base: Variant) -> list[Variant]:
    """The variants of an experiment file over `base` (see read_experiment)."""
    return read_experiment(path).over(base)


def read_experiment(path: Path) -> Experiment:
    """An experiment file: `[[variant]]` tables over the command line's settings, e.g.

        [[variant]]
        prompt = "industrial"
        [[variant]]
        prompt = "industrial-paper"
        refs = 0
        reference_choice = "random:7"

    A `[grid]` table is expanded like the comma-separated flags. Every value passes its flag's own
    check (value_checks.SETTINGS), so a file cannot run what the flags refuse."""
    try:
        data = tomllib.loads(read_text(path, "utf-8-sig"))  # -sig: a byte-order mark is fine
    except FileNotFoundError:
        raise ConfigError(f"experiment file {path} not found") from None
    except IsADirectoryError:
        raise ConfigError(f"experiment file {path} is a folder; name a .toml file") from None
    except OSError as exc:
        raise ConfigError(f"cannot read the experiment file {path}: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    extra = set(data) - {"variant", "grid"}
    if extra:
        raise ConfigError(f"{path}: unknown table(s) or key(s) {', '.join(sorted(extra))}; an experiment file "
                          "holds [[variant]] tables and/or one [grid]")
    entries, grid = data.get("variant", []), data.get("grid", {})
    if not isinstance(entries, list) or not all(isinstance(entry, dict) for entry in entries):
        raise ConfigError(f"{path}: variant: write each variant as a [[variant]] table (double brackets)")
    if not isinstance(grid, dict):
        raise ConfigError(f"{path}: grid: write the grid as a [grid] table")
    if not entries and not grid:
        raise ConfigError(f"{path}: no [[variant]] tables and no [grid]")
    return Experiment([_settings(path, f"[[variant]] #{index}", entry, grid=False)
                       for index, entry in enumerate(entries, start=1)],
                      _settings(path, "[grid]", grid, grid=True) if grid else {})


def _settings(path: Path, table: str, entry: Mapping[str, object], *, grid: bool) -> dict:
    """One table's settings, checked: a [grid] key holds a value or a list of them; a variant's, one value."""
    known = GRID_FIELDS if grid else tuple(SETTINGS)
    out: dict = {}
    for key, value in entry.items():
        where = f"{path}: {table}: {key}"
        if key == "repeat" and not grid:
            raise ConfigError(f"{where}: repeats are set by --repeats, not in an experiment file")
        if key not in known:
            raise ConfigError(f"{where}: unknown setting; known: {', '.join(sorted(known))}")
        if not grid and isinstance(value, list):
            raise ConfigError(f"{where}: one value per [[variant]] (a list of values belongs in [grid])")
        if not grid:
            out[key] = _checked(where, key, value)
        elif isinstance(value, list):
            if not value:
                raise ConfigError(f"{where}: needs a value")
            out[key] = [_checked(where, key, item) for item in value]
        else:
            out[key] = [_checked(where, key, value)]
    return out


TOML_WORDS = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def _checked(where: str, key: str, value: object) -> object:
    """One value through its flag's validator (given as the flag's text would be); exit 2 naming it."""
    setting = SETTINGS[key]
    types = setting.toml_types
    if (isinstance(value, bool) and bool not in types) or not isinstance(value, types):
        wanted = "a number" if float in types else " or ".join(TOML_WORDS[t] for t in types)
        raise ConfigError(f"{where}: expected {wanted} (as {setting.flag}), not {_show(value)}")
    if setting.check is None:
        return value
    text = value.strip() if isinstance(value, str) else str(value)
    if not text:
        raise ConfigError(f"{where}: needs a value")
    try:
        return setting.check(text)
    except argparse.ArgumentTypeError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _show(value: object) -> str:
    """A TOML value as the file wrote it, in a few words (a list or table would be long)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a table"
    return repr(value)
