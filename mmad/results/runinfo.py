"""What a run is: `<out>/run.json`, written when a run starts, read by everything that compares runs.

A run folder holds the result files of one run (one model or detector with one set of settings).
`run.json` records the settings that define it, so that

  - a rerun with other settings into the same folder is refused instead of silently mixed,
  - `compare`, `report` and `eval` know what a run is (an MLLM or a detector, which prompt,
    which corruption, which repeat) without parsing folder names.

Schema (version 1)::

    {"mmad_run": 1, "run": "<run name>", "kind": "mllm" | "detector",
     "settings": {...},          # what changes answers: provider, model, prompt, refs, ...
     "created": "<UTC ISO time>", "mmad_version": "x.y.z"}

Well-known settings keys (absent = the default): `provider`, `base_url`, `model`, `method`
(detectors), `prompt`, `refs`, `reference_choice` ("first" | "random:SEED" | "similar"),
`temperature`, `max_tokens`, `image` (preparation spec), `detail`, `corrupt` ("brightness:3",
"gaussian_noise:2", or None), `corrupt_references` (bool), `repeat` (0 = the first answer),
`task` ("score" | "classify" | "qa"), `hybrid` (the detector run used as a gate).

Folders without run.json (the reference implementation's results, older mmad runs) are still
readable: `read_run_info` returns None and callers fall back to the file names. A run.json that is
there but cannot be read as one (not JSON, not an object, `settings` not an object, not a file)
is a DataError naming it: it is never guessed around, and never silently overwritten.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from mmad.errors import DataError
from mmad.paths import describe, describe_target
from mmad.reading import read_text

RUN_FILE = "run.json"
SCHEMA_VERSION = 1


def read_run_info(folder: Path) -> dict | None:
    """The run.json of a run folder (or of the folder holding a result file); None when there is
    none; a DataError naming the file when it cannot be read as one."""
    folder = Path(folder)
    if folder.is_file():
        folder = folder.parent
    path = folder / RUN_FILE
    found = describe(path)
    if found == "missing":
        return None
    if describe_target(path) != "a regular file":
        raise DataError(f"{path}: a run.json that is {found}, not a file")
    try:
        data = json.loads(read_text(path, "utf-8"))
    except OSError as exc:
        raise DataError(f"{path}: cannot read this run.json ([Errno {exc.errno}] {exc.strerror})") from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise DataError(f"{path}: malformed run.json (not JSON: {str(exc)[:120]})") from None
    problem = _malformed(data)
    if problem:
        raise DataError(f"{path}: malformed run.json ({problem})")
    return data


def _malformed(data: object) -> str | None:
    """What makes a parsed run.json not one of ours, in words (None: it is one)."""
    if not isinstance(data, dict):
        return f"a JSON {type(data).__name__}, not an object"
    if not isinstance(data.get("mmad_run"), int) or isinstance(data.get("mmad_run"), bool):
        return "no `mmad_run` schema number: not written by mmad"
    if not isinstance(data.get("settings", {}), dict):
        return f"`settings` is a {type(data['settings']).__name__}, not an object"
    for key in ("run", "kind"):
        if key in data and not isinstance(data[key], str):
            return f"`{key}` is a {type(data[key]).__name__}, not a string"
    return None


def make_run_info(run: str, kind: str, settings: dict) -> dict:
    """A run.json document for a new run."""
    from mmad.version import __version__
    return {"mmad_run": SCHEMA_VERSION, "run": run, "kind": kind, "settings": settings,
            "created": datetime.now(UTC).isoformat(timespec="seconds"), "mmad_version": __version__}


def setting_differences(old: dict, new: dict) -> list[str]:
    """Human-readable `key: old -> new` for every setting that differs between two run.json docs."""
    before, after = old.get("settings", {}), new.get("settings", {})
    changed = []
    if old.get("kind") != new.get("kind"):
        changed.append(f"kind: {old.get('kind')} -> {new.get('kind')}")
    for key in sorted(set(before) | set(after)):
        if before.get(key) != after.get(key):
            changed.append(f"{key}: {_shown(before.get(key))} -> {_shown(after.get(key))}")
    return changed


def _shown(value: object) -> str:
    """A setting as a reader wants it: unset settings take mmad's default."""
    return "default" if value is None else repr(value)
