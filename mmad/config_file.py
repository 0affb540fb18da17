"""Project defaults from a file: `mmad.toml` in the working directory, else the `[tool.mmad]` table
of `pyproject.toml` there. One value per key; every value is checked when the file is read, and a
bad one is one line naming the file and the key (exit 2), never a silent default.

    # mmad.toml
    root = "/data/madbench"          # data root            ($MMAD_DATA_ROOT, --root)
    cache_dir = "~/.cache/mmad"      # response cache       ($MMAD_CACHE_DIR, --cache-dir)
    provider = "anthropic"           # --provider           ($MMAD_PROVIDER)
    model = "claude-3-5-sonnet-latest"                    # ($MMAD_MODEL, --model)
    base_url = "http://localhost:8000/v1"                 # ($MMAD_BASE_URL, --base-url)
    concurrency = 16                 # requests in flight   ($MMAD_CONCURRENCY, --concurrency)
    rpm = 500                        # requests per minute  ($MMAD_RPM, --rpm)

Relative paths are relative to the file's folder. Precedence (mmad.config): flag > environment
variable > this file > built-in default.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass
from pathlib import Path

from mmad.errors import ConfigError

CONFIG_NAME = "mmad.toml"
PYPROJECT_NAME = "pyproject.toml"
PROVIDERS = ("openai", "anthropic", "patchcore", "padim", "rd")


@dataclass(frozen=True)
class Key:
    """One setting a project can default: its environment variable, kind of value, and what it is."""

    name: str
    env: str
    kind: str  # path | provider | text | url | count | rate
    what: str


KEYS = {key.name: key for key in (
    Key("root", "MMAD_DATA_ROOT", "path", "data root (MAD-Bench layout)"),
    Key("cache_dir", "MMAD_CACHE_DIR", "path", "response cache folder"),
    Key("provider", "MMAD_PROVIDER", "provider", "provider of score / estimate / classify / qa"),
    Key("model", "MMAD_MODEL", "text", "model of MLLM commands"),
    Key("base_url", "MMAD_BASE_URL", "url", "OpenAI-compatible server or API proxy"),
    Key("concurrency", "MMAD_CONCURRENCY", "count", "requests in flight"),
    Key("rpm", "MMAD_RPM", "rate", "requests per minute cap"),
)}


@dataclass(frozen=True)
class ProjectFile:
    """The file the defaults came from (`where` names it in messages) and its checked values."""

    path: Path
    where: str  # "mmad.toml" or "pyproject.toml [tool.mmad]"
    values: dict


def check_value(key: Key, value: object, where: str, *, base: Path | None = None) -> object:
    """A value as the commands use it, or a ConfigError naming `where` and the key."""
    def bad(wanted: str) -> ConfigError:
        shown = "true" if value is True else "false" if value is False else repr(value)
        return ConfigError(f"{where}: {key.name}: expected {wanted}, not {shown}")
    if key.kind in ("path", "text", "url", "provider"):
        if not isinstance(value, str) or not value.strip():
            raise bad("a non-empty string")
        text = value.strip()
        if key.kind == "provider" and text not in PROVIDERS:
            raise bad(f"one of {', '.join(PROVIDERS)}")
        if key.kind == "url" and not text.startswith(("http://", "https://")):
            raise bad("an http:// or https:// URL")
        if key.kind == "path":
            path = Path(text).expanduser()
            return str(path if path.is_absolute() or base is None else base / path)
        return text
    if key.kind == "count":
        number = _number(value)
        if number is None or not float(number).is_integer() or number < 1 or isinstance(value, float):
            raise bad("a positive integer")
        return int(number)
    number = _number(value)
    if number is None or not math.isfinite(number) or number <= 0:
        raise bad("a positive number")
    return float(number)


def _number(value: object) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return None
    return None


def _read_toml(path: Path) -> dict:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8-sig"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None


def find_project_file(folder: Path) -> ProjectFile | None:
    """The defaults of `folder`: its mmad.toml, else its pyproject.toml's [tool.mmad], else None."""
    own = folder / CONFIG_NAME
    if own.is_file():
        data, where = _read_toml(own), CONFIG_NAME
        path = own
    else:
        path = folder / PYPROJECT_NAME
        if not path.is_file():
            return None
        tool = _read_toml(path).get("tool")
        data = tool.get("mmad") if isinstance(tool, dict) else None
        if data is None:
            return None
        where = f"{PYPROJECT_NAME} [tool.mmad]"
        if not isinstance(data, dict):
            raise ConfigError(f"{where}: expected a table of settings")
    values = {}
    for name, value in data.items():
        key = KEYS.get(name)
        if key is None:
            raise ConfigError(f"{where}: {name}: unknown key; known: {', '.join(KEYS)}")
        values[name] = check_value(key, value, where, base=path.parent)
    return ProjectFile(path, where, values)
