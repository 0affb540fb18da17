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
readable: `read_run_info` returns None and callers fall back to the file names.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

RUN_FILE = "run.json"
SCHEMA_VERSION = 1


def read_run_info(folder: Path) -> dict | None:
    """The run.json of a run folder (or of the folder holding a result file); None when absent
    or unreadable."""
    folder = Path(folder)
    if folder.is_file():
        folder = folder.parent
    try:
        data = json.loads((folder / RUN_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("mmad_run") else None


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
