"""Settings resolved once: explicit flag > environment variable > default."""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

DATA_ROOT_ENV = "MMAD_DATA_ROOT"
CACHE_DIR_ENV = "MMAD_CACHE_DIR"
PROMPTS_DIR_ENV = "MMAD_PROMPTS_DIR"



def asset(*parts: str) -> Path:
    """A data file shipped inside the package (prompts, prices), found through importlib.resources,
    so a wheel install finds it wherever site-packages is."""
    return Path(str(resources.files("mmad").joinpath("assets", *parts)))


PACKAGED_PROMPTS = asset("prompts")


def resolve_path(explicit: str | Path | None, env: str, default: Path) -> Path:
    """The first of: the flag, the environment variable, the default."""
    if explicit:
        return Path(explicit)
    if os.environ.get(env):
        return Path(os.environ[env])
    return default


def data_root(explicit: str | Path | None = None) -> Path:
    """Where the MAD-Bench layout lives: --root, $MMAD_DATA_ROOT, or ./data."""
    return resolve_path(explicit, DATA_ROOT_ENV, Path("data"))


def cache_dir(explicit: str | Path | None = None) -> Path:
    """Response cache: --cache-dir, $MMAD_CACHE_DIR, or ./cache."""
    return resolve_path(explicit, CACHE_DIR_ENV, Path("cache"))


def prompts_dir(explicit: str | Path | None = None) -> Path:
    """Prompt templates: --prompts-dir, $MMAD_PROMPTS_DIR, or the packaged mmad/assets/prompts/."""
    return resolve_path(explicit, PROMPTS_DIR_ENV, PACKAGED_PROMPTS)
