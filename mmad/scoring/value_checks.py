"""Value checks shared by the command-line flags and experiment files, so the two cannot drift.

Each check takes the text a flag would get and returns the normalised value or raises
argparse.ArgumentTypeError with the one-line reason both front ends print.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from dataclasses import dataclass


def _number(kind, text: str, what: str):
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
    if isinstance(value, float) and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def positive_int(text: str) -> int:
    value = _number(int, text, "an integer")
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def nonneg_int(text: str) -> int:
    value = _number(int, text, "an integer")
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {value}")
    return value


def positive_float(text: str) -> float:
    value = _number(float, text, "a number")
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0, not {value:g}")
    return value


def nonneg_float(text: str) -> float:
    value = _number(float, text, "a number")
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {value:g}")
    return value


def finite_float(text: str) -> float:
    return _number(float, text, "a number")


def ratio(text: str) -> float:
    value = _number(float, text, "a number")
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], not {value:g}")
    return value


MAX_RESAMPLES = 20_000  # 10-20x the defaults: more adds no precision a table shows, only minutes (~20 s per 10,000 for 1,500 rows)


def bootstrap_count(text: str) -> int:
    value = _number(int, text, "an integer")
    if value != 0 and not 100 <= value <= MAX_RESAMPLES:
        raise argparse.ArgumentTypeError(f"must be 0 (off) or between 100 and {MAX_RESAMPLES:,} resamples, "
                                         f"not {value}")
    return value


def bounded_int(low: int, high: int, unit: str = ""):
    """An integer check with both ends named in its message (`--per-level`, `--repeats`)."""
    def check(text: str) -> int:
        value = _number(int, text, "an integer")
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low:,}, not {value:,}")
        if value > high:
            raise argparse.ArgumentTypeError(f"must be at most {high:,}{unit}, not {value:,}")
        return value
    check.__name__ = "integer"
    return check


MAX_OUTPUT_TOKENS = 200_000  # above every vendor's answer length; the budget reserves this much per request
max_tokens = bounded_int(1, MAX_OUTPUT_TOKENS, " tokens")
MAX_NAME = 200  # characters of a model or prompt name (they name folders and files)


def run_name(text: str) -> str:
    """A --run-name: it names the folder and every file of the run, so it is kept as typed and
    must be a file name on every system (letters, digits, `.`, `_`, `+`, `-`)."""
    value = text.strip()
    if not value:
        raise argparse.ArgumentTypeError("needs a value")
    if len(value) > MAX_NAME:
        raise argparse.ArgumentTypeError(f"at most {MAX_NAME} characters (it names files), not {len(value):,}")
    bad = sorted({c for c in value if not (c.isascii() and (c.isalnum() or c in "._+-"))})
    if bad or value.startswith((".", "-")):
        shown = " ".join(repr(c) for c in bad[:5]) or repr(value[0]) + " at the start"
        raise argparse.ArgumentTypeError(f"{value!r}: use ASCII letters, digits and . _ + - only (it names the run's "
                                         f"folder and files); not {shown}")
    return value


def image_size(text: str) -> int:
    value = _number(int, text, "an integer")
    if not 32 <= value <= 4096:
        raise argparse.ArgumentTypeError(f"must be between 32 and 4096 pixels, not {value}")
    return value


ANOMALIB_PREFIX = "anomalib:"


def detector_name(choices: tuple[str, ...]) -> Callable[[str], str]:
    """One of `choices`, or `anomalib:<Model>` (the model itself is checked when the run starts)."""
    def check(text: str) -> str:
        if text in choices or (text.startswith(ANOMALIB_PREFIX) and text[len(ANOMALIB_PREFIX):].isidentifier()):
            return text
        raise argparse.ArgumentTypeError(f"invalid choice {text!r} (choose from {', '.join(choices)}, "
                                         f"or anomalib:MODEL such as anomalib:Cflow)")
    return check


def model_arg(text: str) -> tuple[str, object]:
    """KEY=VALUE for an anomalib model's own argument; VALUE is read as JSON when it is JSON
    (numbers, true/false, lists), else kept as text."""
    import json
    key, sep, value = text.partition("=")
    if not sep or not key.isidentifier():
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE (for example num_neighbors=1)")
    try:
        return key, json.loads(value)
    except ValueError:
        return key, value


# Grid values are validated one by one after splitting on commas (see check_grid).
def listed(kind):
    def parse(text: str):
        parts = [p.strip() for p in text.split(",") if p.strip()]
        if not parts:
            raise argparse.ArgumentTypeError("needs a value")
        return [kind(p) for p in parts]
    parse.__name__ = getattr(kind, "__name__", "value")
    return parse


def temperature(text: str) -> float:
    value = _number(float, text, "a number")
    if not 0 <= value <= 2:
        raise argparse.ArgumentTypeError(f"temperature must be between 0 and 2, not {value:g}")
    return value


def refs_count(text: str) -> int:
    value = _number(int, text, "an integer")
    if not 0 <= value <= 5:
        raise argparse.ArgumentTypeError(f"references must be between 0 and 5, not {value}")
    return value


def max_height(text: str) -> str:
    if text in ("auto", "original"):
        return text
    value = _number(int, text, "auto, original or a height in pixels")
    if not 64 <= value <= 4096:
        raise argparse.ArgumentTypeError(f"a height between 64 and 4096 pixels, not {value}")
    return str(value)


def corruption(text: str) -> str:
    name, _, level = text.partition(":")
    if name not in ("brightness", "gaussian_noise") or not level.isdigit() or not 1 <= int(level) <= 5:
        raise argparse.ArgumentTypeError(f"{text!r}: expected brightness:S or gaussian_noise:S with S in 1..5")
    return f"{name}:{int(level)}"


def reference_choice(text: str) -> str:
    from mmad.data.references import parse_rule
    from mmad.errors import ConfigError
    try:
        return parse_rule(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def detail(text: str) -> str:
    if text not in ("auto", "low", "high"):
        raise argparse.ArgumentTypeError(f"{text!r}: expected auto, low or high")
    return text


def integer(text: str) -> int:
    return _number(int, text, "an integer")


def name(text: str) -> str:
    """A model or prompt: one name (several are a grid: comma-separated flags, a list in a file)."""
    value = text.strip()
    if not value:
        raise argparse.ArgumentTypeError("needs a value")
    if len(value) > MAX_NAME:
        raise argparse.ArgumentTypeError(f"a name of {len(value):,} characters; at most {MAX_NAME}")
    if "," in value:
        raise argparse.ArgumentTypeError(f"{value!r}: one name, not a comma-separated list")
    return value


@dataclass(frozen=True)
class Setting:
    """A variant setting: its flag, the validator the flag and an experiment file share (None: a
    switch), and the TOML value types a file may give it, so the two cannot drift apart."""

    flag: str
    check: Callable[[str], object] | None
    toml_types: tuple[type, ...]

    @property
    def value_type(self) -> Callable[[str], object]:
        """The flag's argparse `type`: its validator (a switch has none)."""
        if self.check is None:
            raise TypeError(f"{self.flag} is a switch: it takes no value")
        return self.check


# Every setting an experiment file (mmad/variants.py) may hold; add_job_options uses the same checks.
SETTINGS: dict[str, Setting] = {
    "model": Setting("--model", name, (str,)),
    "prompt": Setting("--prompt", name, (str,)),
    "refs": Setting("--refs", refs_count, (int,)),
    "reference_choice": Setting("--reference-choice", reference_choice, (str,)),
    "temperature": Setting("--temperature", temperature, (int, float)),
    "max_tokens": Setting("--max-tokens", max_tokens, (int,)),
    "max_height": Setting("--max-height", max_height, (int, str)),
    "detail": Setting("--detail", detail, (str,)),
    "corrupt": Setting("--corrupt", corruption, (str,)),
    "corrupt_references": Setting("--corrupt-references", None, (bool,)),
    "sample": Setting("--sample", positive_int, (int,)),
    "sample_seed": Setting("--seed", integer, (int,)),
}
