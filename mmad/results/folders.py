"""A run folder's own files, whether its run ever received an answer, and starting it over.

`mmad score --fresh` starts a folder over on purpose: the previous run's files are moved to a
sibling `<folder>.replaced-<time>` (never deleted: their records may hold paid answers; the
response cache still serves every identical request, so nothing paid is paid again). A folder
whose run never received an answer (a typo in --base-url, a wrong key) is taken over by the
corrected command without --fresh: there is nothing in it to keep.
"""

from __future__ import annotations

import time
from pathlib import Path

from mmad.errors import os_failure
from mmad.results.files import JsonlLog
from mmad.results.runinfo import RUN_FILE

OWN_FILES = (RUN_FILE, "summary.json", "batches.json")  # besides the result CSV and JSONL files
PENDING_BATCHES = "batches.json"  # submitted batches: answers paid for and not yet fetched


def run_files(folder: Path) -> list[Path]:
    """The files a run writes at the top of its folder (run.json, summary.json, batches.json, the
    result CSV and JSONL files); anything else there is not mmad's and stays where it is."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.is_symlink()
                  and (p.name in OWN_FILES or p.suffix in (".csv", ".jsonl")))


def answered_records(folder: Path) -> int:
    """How many records in the folder's JSONL files carry an answer a server gave (paid for), and
    a pending batch counts as one: a folder with none holds nothing worth keeping."""
    if (folder / PENDING_BATCHES).is_file():
        return 1
    return sum(1 for path in run_files(folder) if path.suffix == ".jsonl"
               for record in JsonlLog.read(path) if isinstance(record.get("raw"), str))


def set_aside(folder: Path) -> Path | None:
    """Move the folder's run files into `<folder>.replaced-<time>` (returned; None when there
    were none). The folder itself, its lock and any file not mmad's stay."""
    files = run_files(folder)
    if not files:
        return None
    stamp = time.strftime("%Y%m%d-%H%M%S")
    aside = next(candidate for n in range(1, 1000)
                 if not (candidate := folder.with_name(f"{folder.name}.replaced-{stamp}" + (f"-{n}" if n > 1 else "")))
                 .exists())
    try:
        aside.mkdir()
        for path in files:
            path.rename(aside / path.name)
    except OSError as exc:
        raise os_failure("cannot start the folder over:", aside, exc) from None
    return aside


def remove_unanswered(folder: Path) -> int:
    """Delete the run files of a folder whose run never received an answer; returns how many."""
    files = run_files(folder)
    try:
        for path in files:
            path.unlink(missing_ok=True)
    except OSError as exc:
        raise os_failure("cannot take the folder over:", folder, exc) from None
    return len(files)
