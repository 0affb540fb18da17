"""Settings resolved once: explicit flag > environment variable > project file > built-in default.

The project file is `mmad.toml` (or `[tool.mmad]` in pyproject.toml) in the working directory
(mmad.config_file). `resolve(name)` says where a value came from, for `mmad config` and `--help`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from mmad.config_file import KEYS, ProjectFile, check_value, find_project_file

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
_loaded: dict[tuple[Path, float], ProjectFile | None] = {}


def project_file(folder: Path | None = None) -> ProjectFile | None:
    """The working directory's project file (read once per file version); ConfigError when bad."""
    folder = Path.cwd() if folder is None else folder
    stamps = []
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
