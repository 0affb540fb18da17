"""Settings resolved once: explicit flag > environment variable > project file > built-in default.

The project file is `mmad.toml` in the working directory, else the `[tool.mmad]` table of
`pyproject.toml` there. One value per key; every value is checked when the file is read, and a bad
one is one line naming the file and the key (exit 2), never a silent default:

    # mmad.toml
    root = "/data/madbench"          # data root            ($MMAD_DATA_ROOT, --root)
    cache_dir = "~/.cache/mmad"      # response cache       ($MMAD_CACHE_DIR, --cache-dir)
    provider = "anthropic"           # --provider           ($MMAD_PROVIDER)
    model = "claude-3-5-sonnet-latest"                    # ($MMAD_MODEL, --model)
    base_url = "http://localhost:8000/v1"                 # ($MMAD_BASE_URL, --base-url)
    concurrency = 16                 # requests in flight   ($MMAD_CONCURRENCY, --concurrency)
    rpm = 500                        # requests per minute  ($MMAD_RPM, --rpm)

Relative paths are relative to the file's folder. `resolve(name)` says where a value came from, for
`mmad config` and `--help`.
"""

from __future__ import annotations

import math
import os
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from mmad.errors import ConfigError
from mmad.reading import read_text

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
        return tomllib.loads(read_text(path, "utf-8-sig"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None


def find_project_file(folder: Path) -> ProjectFile | None:
    """The defaults of `folder`: its mmad.toml, else its pyproject.toml's [tool.mmad], else None."""
    own = folder / CONFIG_NAME
    data: object
    if os.path.lexists(own):  # a FIFO or a dangling link is read, and refused by name, not passed over
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


DATA_ROOT_ENV = "MMAD_DATA_ROOT"
CACHE_DIR_ENV = "MMAD_CACHE_DIR"
PROMPTS_DIR_ENV = "MMAD_PROMPTS_DIR"
BUILT_IN = {"root": "data", "cache_dir": "cache", "provider": None, "model": None, "base_url": None,
            "concurrency": None, "rpm": None}


def asset(*parts: str) -> Path:
    """A data file shipped inside the package (prompts, prices), found through importlib.resources,
    so a wheel install finds it wherever site-packages is."""
    return Path(str(resources.files("mmad").joinpath("assets", *parts)))


PACKAGED_PROMPTS = asset("prompts")
_loaded: dict[tuple[Path, tuple[int, ...]], ProjectFile | None] = {}


def project_file(folder: Path | None = None) -> ProjectFile | None:
    """The working directory's project file (read once per file version); ConfigError when bad."""
    folder = Path.cwd() if folder is None else folder
    stamps: list[int] = []
    for name in ("mmad.toml", "pyproject.toml"):
        try:
            stamps.append((folder / name).stat().st_mtime_ns)
        except OSError:
            stamps.append(0)
    marker = (folder.resolve(), tuple(stamps))
    if marker not in _loaded:
        _loaded.clear()
        _loaded[marker] = find_project_file(folder)
    return _loaded[marker]


@dataclass(frozen=True)
class Resolved:
    """A setting's value and where it came from: flag, environment ($VAR), the project file, built-in."""

    name: str
    value: object
    source: str


def resolve(name: str, explicit: object = None) -> Resolved:
    """The first of: the flag, the environment variable, the project file, the built-in default.
    A bad environment value is a ConfigError naming the variable."""
    key = KEYS[name]
    if explicit not in (None, ""):
        return Resolved(name, explicit, "flag")
    raw = os.environ.get(key.env)
    if raw:
        return Resolved(name, check_value(key, raw, f"${key.env}"), f"environment (${key.env})")
    found = project_file()
    if found is not None and name in found.values:
        return Resolved(name, found.values[name], found.where)
    return Resolved(name, BUILT_IN[name], "built-in")


def setting(name: str) -> object:
    """A setting's value when no flag gives it (environment > project file > built-in)."""
    return resolve(name).value


def describe_default(name: str, built_in: str) -> str:
    """The default of an option as `--help` says it: `$VAR or <built-in>`, naming the project file's
    value when it sets one."""
    key = KEYS[name]
    found = project_file()
    if found is not None and name in found.values:
        return f"${key.env}, else {found.values[name]} from {found.where}"
    return f"${key.env} or {built_in}"


def resolve_path(explicit: str | Path | None, env: str, default: Path) -> Path:
    """The first of: the flag, the environment variable, the default (for settings without a key
    in the project file, such as the prompts folder)."""
    if explicit:
        return Path(explicit)
    if os.environ.get(env):
        return Path(os.environ[env])
    return default


def data_root(explicit: str | Path | None = None) -> Path:
    """Where the MAD-Bench layout lives: --root, $MMAD_DATA_ROOT, the project file, or ./data."""
    return Path(str(resolve("root", explicit).value))


def cache_dir(explicit: str | Path | None = None) -> Path:
    """Response cache: --cache-dir, $MMAD_CACHE_DIR, the project file, or ./cache."""
    return Path(str(resolve("cache_dir", explicit).value))


def prompts_dir(explicit: str | Path | None = None) -> Path:
    """Prompt templates: --prompts-dir, $MMAD_PROMPTS_DIR, or the packaged mmad/assets/prompts/."""
    return resolve_path(explicit, PROMPTS_DIR_ENV, PACKAGED_PROMPTS)
