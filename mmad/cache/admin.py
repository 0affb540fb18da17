"""`mmad cache stats` and `mmad cache prune`: what the response cache holds, and removing what no
result file needs.

An entry is *needed* when a record of a result JSONL (any folder scanned) carries its key with a
status whose answer came from the cache (`ok`, `parse_failed`): removing it would make a rerun of
that run pay again. A prune picks its candidates (older than a time, one model, the entries only one
run used, or by default every entry no result file needs), then keeps every needed one unless
`force`. The dry run and the prune share `plan_prune`, so a dry run lists exactly what a prune
removes. A run writing into a scanned folder (its lock held) stops the prune: its newest answers
are in the cache before they are in its records.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import sqlite3
import time
from collections.abc import Iterable, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

from mmad.cache.store import CACHE_ERRORS, STORE, storage_failure
from mmad.errors import ConfigError, DataError, RunBusy
from mmad.reading import open_file, read_bytes, read_text

CACHED_STATUSES = ("ok", "parse_failed")  # errors and refusals are never cached
# What mmad.engine.lock names a run folder's lock and mmad.results.runinfo its settings (this layer
# sits below both; tests/test_cache_prune.py checks the names agree).
LOCK_FILE = ".mmad.lock"
RUN_FILE = "run.json"


def read_records(path: Path) -> list[dict]:
    """The records of a result JSONL (a torn or damaged line is skipped, as every reader does)."""
    records = []
    try:
        with open_file(path, "r", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                if isinstance(record, dict):
                    records.append(record)
    except FileNotFoundError:
        pass
    return records


def provider_of(folder: Path) -> str:
    """The provider in a run folder's run.json ("?" when it has none)."""
    try:
        info = json.loads(read_text((folder / RUN_FILE), "utf-8"))
        return str(((info.get("settings") or {}).get("provider")) or "?")
    except (OSError, ValueError, AttributeError):
        return "?"
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_age(text: str) -> float:
    """`90m`, `12h`, `30d`, `2w` -> seconds; anything else is a ConfigError."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", text or "")
    if not match:
        raise ConfigError(f"--older-than: expected a number and a unit s, m, h, d or w (e.g. 30d), not {text!r}")
    return float(match.group(1)) * UNITS[match.group(2)]


@dataclass(frozen=True)
class Entry:
    key: str
    stored: float  # unix time
    size: int  # bytes of the stored value
    model: str  # from the value ("?" when it does not say)


def read_entries(directory: Path) -> list[Entry]:
    """Every entry of the store, read-only (the value is read only for its model and size)."""
    database = Path(directory) / STORE / "cache.db"
    if not database.is_file():
        raise DataError(f"{directory}: no response cache here (no {STORE}/cache.db); check --cache-dir")
    entries = []
    try:
        with closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=60)) as db:
            for key, stored, value, filename, size in db.execute(
                    "SELECT key, store_time, value, filename, size FROM Cache"):
                if not isinstance(key, str):
                    continue
                if value is None and filename:  # a large value diskcache keeps in its own file
                    try:
                        value = read_bytes(database.parent / filename)
                    except OSError:
                        value = b""
                text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value or "")
                entries.append(Entry(key, float(stored or 0), max(len(text.encode("utf-8")), int(size or 0)),
                                     _model_of(text)))
    except CACHE_ERRORS as exc:
        raise storage_failure(Path(directory), exc) from None
    return entries


def _model_of(text: str) -> str:
    try:
        model = json.loads(text).get("model")
    except (ValueError, AttributeError):
        return "?"
    return str(model) if model else "?"


@dataclass
class Needs:
    """Keys the scanned result files need, which runs (folders) need each, and their providers."""

    keys: dict[str, set[Path]] = field(default_factory=dict)
    providers: dict[str, str] = field(default_factory=dict)
    folders: list[Path] = field(default_factory=list)
    busy: list[str] = field(default_factory=list)  # folders a run is writing into

    def needed(self, key: str, *, apart_from: Path | None = None) -> bool:
        owners = self.keys.get(key) or set()
        return bool(owners) and (apart_from is None or bool(owners - {apart_from}))


def scan_results(sources: Sequence[Path]) -> Needs:
    """The keys every result JSONL under `sources` (folders or files) needs, by run folder."""
    needs = Needs()
    for source in sources:
        source = Path(source)
        if not source.exists():
            raise DataError(f"{source}: no such file or folder (a results folder to keep the needed entries of)")
        files = [source] if source.is_file() else sorted(source.rglob("*.jsonl"))
        for lock in ([] if source.is_file() else sorted(source.rglob(LOCK_FILE))):
            holder = _lock_holder(lock)
            if holder:
                needs.busy.append(f"{lock.parent} (PID {holder})")
        for path in files:
            folder = path.parent.resolve()
            if folder not in needs.folders:
                needs.folders.append(folder)
            provider = provider_of(folder)
            for record in read_records(path):
                key = record.get("key")
                if isinstance(key, str) and record.get("status") in CACHED_STATUSES and record.get("source") != "gate":
                    needs.keys.setdefault(key, set()).add(folder)
                    needs.providers.setdefault(key, provider)
    return needs


def _lock_holder(path: Path) -> str | None:
    """The PID written in a lock file that a live process holds, else None (never creates a file)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    except BlockingIOError:
        return os.read(fd, 64).decode("ascii", "replace").strip() or "?"
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- stats

def cache_stats(entries: Sequence[Entry], needs: Needs | None = None) -> dict:
    """Entries, bytes, oldest/newest, and the same per provider and model (provider from the runs
    that need an entry; `?` for entries no scanned result file names)."""
    groups: dict[tuple[str, str], list[Entry]] = {}
    for entry in entries:
        provider = needs.providers.get(entry.key, "?") if needs else "?"
        groups.setdefault((provider, entry.model), []).append(entry)

    def summary(group: Sequence[Entry]) -> dict:
        times = [e.stored for e in group if e.stored]
        out = {"entries": len(group), "bytes": sum(e.size for e in group),
               "oldest": _iso(min(times)) if times else None, "newest": _iso(max(times)) if times else None}
        if needs is not None:
            out["needed"] = sum(1 for e in group if needs.needed(e.key))
        return out
    return {**summary(entries),
            "by_model": [{"provider": p, "model": m, **summary(g)} for (p, m), g in sorted(groups.items())]}


def _iso(stamp: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(stamp))


# --------------------------------------------------------------------------- prune

@dataclass(frozen=True)
class PrunePlan:
    remove: tuple[Entry, ...]
    kept_needed: tuple[Entry, ...]  # selected, but a result file needs them (removed only with force)
    selected: int


def run_keys(folder: Path) -> set[str]:
    """The cache keys a run folder's records carry (what `--run` selects)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"--run {folder}: no such run folder")
    keys = {record["key"] for path in sorted(folder.glob("*.jsonl")) for record in read_records(path)
            if isinstance(record.get("key"), str) and record.get("source") != "gate"}
    if not keys:
        raise DataError(f"--run {folder}: no result records with cache keys here (a run folder holds *.jsonl)")
    return keys


def plan_prune(entries: Iterable[Entry], needs: Needs | None, *, older_than: float | None = None,
               model: str | None = None, run: Path | None = None, force: bool = False,
               now: float | None = None) -> PrunePlan:
    """What a prune removes: entries matching every given selector (none given: all), less the
    ones a result file needs (apart from `run`'s own records) unless `force`."""
    now = time.time() if now is None else now
    chosen = run_keys(run) if run is not None else None
    own = Path(run).resolve() if run is not None else None
    selected = [e for e in entries
                if (older_than is None or e.stored < now - older_than) and (model is None or e.model == model)
                and (chosen is None or e.key in chosen)]
    if force or needs is None:
        return PrunePlan(tuple(selected), (), len(selected))
    keep = tuple(e for e in selected if needs.needed(e.key, apart_from=own))
    kept = {e.key for e in keep}
    return PrunePlan(tuple(e for e in selected if e.key not in kept), keep, len(selected))


def check_not_busy(needs: Needs) -> None:
    if needs.busy:
        raise RunBusy(f"a run is writing into {', '.join(needs.busy)}: its newest answers are in the cache before "
                      f"they are in its records; prune after it finishes (or --force)")


def apply_prune(directory: Path, plan: PrunePlan, chunk: int = 500) -> list[str]:
    """Delete the plan's entries (transactions of `chunk`); returns the keys actually removed."""
    import diskcache

    from mmad.cache.store import ResponseCache
    ResponseCache(directory).close()  # its quick check: never write into a damaged store
    removed: list[str] = []
    keys = [e.key for e in plan.remove]
    try:
        with closing(diskcache.Cache(str(Path(directory) / STORE), eviction_policy="none", size_limit=2**62,
                                     timeout=60)) as store:
            for start in range(0, len(keys), chunk):
                with store.transact():
                    removed.extend(key for key in keys[start:start + chunk] if store.delete(key))
    except CACHE_ERRORS as exc:
        raise storage_failure(Path(directory), exc) from None
    return removed
