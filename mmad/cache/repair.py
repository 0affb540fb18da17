"""Checking and rebuilding the response cache without losing a paid answer.

`check_cache` reads the store without changing it: SQLite's integrity check, then every answer
read back. `rebuild_cache` merges the result JSONL files' raw answers into a healthy store; a
damaged one is set aside (renamed, never deleted), a new one is filled from the records, then
with every answer still readable in the old one, row by row.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from diskcache.core import MODE_RAW, MODE_TEXT

from mmad.cache.integrity import opened
from mmad.cache.store import HEX_KEY, STORE, ResponseCache, one_line_verdict
from mmad.errors import StorageError, describe_os_error
from mmad.paths import require_folder
from mmad.reading import read_text

NO_CACHE = "no cache here yet"
_ROW = "SELECT key, raw, mode, filename, value FROM Cache"
_HELD = "SELECT value FROM Settings WHERE key = 'count'"


# SQLite's message for a damaged schema quotes the schema's text; when that text is not UTF-8,
# Python raises UnicodeDecodeError instead of the DatabaseError it stands for.
DB_ERRORS = (sqlite3.DatabaseError, UnicodeDecodeError)


def _connect(path: Path, immutable: bool = False, lenient: bool = False) -> sqlite3.Connection:
    """Read-only, so a check or a salvage never changes the store it looks at. Text comes back as
    bytes: a damaged text (not UTF-8) is then one unreadable row, not an error for the whole scan.
    `lenient`: a damaged schema entry (an index, a trigger) is skipped instead of failing every
    statement (writable_schema, on a read-only connection: nothing can be written)."""
    db = sqlite3.connect(f"file:{quote(str(path))}?mode=ro{'&immutable=1' if immutable else ''}", uri=True)
    db.text_factory = bytes
    if lenient:
        db.execute("PRAGMA writable_schema=ON")
    return db


def _damage_words(exc: BaseException) -> str:
    if isinstance(exc, UnicodeDecodeError):
        return (f"damaged schema: SQLite's own text is not UTF-8 (byte 0x{exc.object[exc.start]:02x} at "
                f"{exc.start} of its message)")
    return f"{type(exc).__name__}: {exc}"


def _text(value: object) -> str | None:
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return None
    return value if isinstance(value, str) else None


def _is_damage(exc: BaseException) -> bool:
    """Corruption (not a database, malformed, tables gone), as opposed to a lock or an I/O error,
    which must never get a store set aside."""
    if isinstance(exc, UnicodeDecodeError):
        return True
    text = str(exc).lower()
    return not isinstance(exc, sqlite3.OperationalError) or "no such table" in text or "malformed" in text


def _answer(store: Path, key: object, raw: object, mode: object, filename: object,
            value: object) -> tuple[str, dict] | None:
    """A Cache row as (key, answer), or None when it cannot be read whole or fails its checksum."""
    found = _stored(store, key, raw, mode, filename, value)
    if found is None:
        return None
    answer = opened(found[0], found[1])
    return (found[0], answer) if answer is not None and isinstance(answer.get("text"), str) else None


def _stored(store: Path, key: object, raw: object, mode: object, filename: object,
            value: object) -> tuple[str, object] | None:
    """A Cache row as (key, the JSON stored), or None when it cannot be read whole: diskcache keeps
    short texts in the row (MODE_RAW) and long ones in a file beside the database (MODE_TEXT)."""
    key, filename = _text(key), _text(filename)
    if not (raw and key is not None and HEX_KEY.fullmatch(key)):
        return None
    try:
        if mode == MODE_RAW and isinstance(value, (str, bytes)):
            text = value if isinstance(value, str) else value.decode("utf-8")
        elif mode == MODE_TEXT and filename is not None:
            path = (store / filename).resolve()
            if not path.is_relative_to(store.resolve()):
                return None
            text = read_text(path, "utf-8")
        else:
            return None
        return key, json.loads(text)
    except (OSError, ValueError):
        return None


def check_cache(directory: Path) -> tuple[int, str]:
    """(entries, "ok" or what is wrong): SQLite's integrity check, then every value read back as an
    answer (a long one lives in a file that can go missing). Raises StorageError when the store
    cannot be read at all (locked, no permission): that is no damage, and no reason to rebuild."""
    store = require_folder(directory, "the response cache folder") / STORE
    path = store / "cache.db"
    if not path.exists():
        return 0, NO_CACHE
    count = 0
    for immutable in (False, True):  # immutable: a read-only folder, where WAL's shared memory cannot be made
        try:
            with closing(_connect(path, immutable)) as db:  # the count: the table's, else diskcache's own
                count = _first(db, "SELECT COUNT(*) FROM Cache") or _first(db, _HELD) or 0
                verdict = _text(db.execute("PRAGMA integrity_check").fetchone()[0]) or "unreadable check"
                if verdict != "ok":
                    return count, one_line_verdict(verdict)
                stored = [_stored(store, *row) for row in db.execute(_ROW)]
            answers = [None if found is None else opened(*found) for found in stored]
            mismatched = sum(found is not None and answer is None for found, answer in zip(stored, answers))
            unreadable = sum(not isinstance((answer or {}).get("text"), str) for answer in answers) - mismatched
            problems = ([f"{unreadable} of {count} answers cannot be read"] if unreadable else []) + \
                ([f"{mismatched} of {count} answers fail their checksum (changed bytes)"] if mismatched else [])
            return count, "; ".join(problems) or "ok"
        except DB_ERRORS as exc:
            if _is_damage(exc):
                return count, _damage_words(exc)
            if not immutable and ("readonly" in str(exc) or "unable to open" in str(exc)):
                continue
            raise StorageError(f"cannot read the response cache {store}: {exc}; nothing was changed") from None
    raise AssertionError("unreachable")


def record_answer(record: dict) -> tuple[str, dict] | None:
    """(key, answer) from a result record that kept its raw answer (`ok`, `parse_failed`). Only
    these fields are copied, so nothing else a record holds can reach the cache."""
    key, raw = record.get("key"), record.get("raw")
    if not (isinstance(key, str) and HEX_KEY.fullmatch(key) and isinstance(raw, str)):
        return None
    if record.get("status") not in ("ok", "parse_failed") or record.get("source") == "gate":
        return None  # a gate record is a detector's decision, not a paid answer
    return key, {"text": raw, "usage": record.get("usage") or {}, "latency_s": record.get("latency_s"),
                 "finish_reason": record.get("finish_reason"), "model": record.get("model"),
                 "time": record.get("time"), "restored_from": "results"}


@dataclass
class Salvage:
    """What a damaged store still gave: its own count (when readable), the answers read, the keys
    its index names whose rows could not be read, and why nothing at all could be read."""
    held: int | None = None
    readable: int = 0
    unreadable_keys: set[str] = field(default_factory=set)
    reason: str | None = None


def salvage(store: Path, report: Salvage) -> Iterator[tuple[str, dict]]:
    """Every answer still readable in a damaged store. Each row is fetched alone by rowid (a bad
    page costs only its own rows); the key index and diskcache's count say what was there."""
    db = None
    # immutable: when the WAL's shared memory cannot be opened; lenient: past a damaged schema entry
    for immutable, lenient in ((False, False), (True, False), (False, True), (True, True)):
        try:
            db = _connect(store / "cache.db", immutable, lenient)
            db.execute("EXPLAIN SELECT key FROM Cache").fetchall()  # the schema alone, no table page read
            break
        except DB_ERRORS as exc:
            report.reason = _damage_words(exc) if isinstance(exc, UnicodeDecodeError) else str(exc)
            db = None
    if db is None:
        return
    with closing(db):
        report.held = _first(db, _HELD)
        indexed = _indexed_keys(db)
        top = max([*indexed, report.held or 0, _first(db, "SELECT MAX(rowid) FROM Cache") or 0])
        top = min(top, 4 * max([*indexed, report.held or 0, 0]) + 1_000_000)  # a corrupt MAX cannot run on
        for rowid in _rowids(db, top):
            try:
                row = db.execute(f"{_ROW} WHERE rowid = ?", (rowid,)).fetchone()
            except DB_ERRORS as exc:
                row, report.reason = (indexed.get(rowid), None, None, None, None), str(exc)
            found = _answer(store, *row) if row is not None else None
            if found is not None:
                report.readable += 1
                yield found
            elif row is not None or rowid in indexed:  # there, but not readable whole
                key = (_text(row[0]) if row is not None else None) or indexed.get(rowid)
                if isinstance(key, str) and HEX_KEY.fullmatch(key):
                    report.unreadable_keys.add(key)
        if report.readable:
            report.reason = None


def _first(db: sqlite3.Connection, sql: str) -> int | None:
    try:
        row = db.execute(sql).fetchone()
    except DB_ERRORS:
        return None
    return row[0] if row and isinstance(row[0], int) else None


def _indexed_keys(db: sqlite3.Connection) -> dict[int, object]:
    """rowid -> key from the key index alone, as far as it reads (it survives many table pages)."""
    found: dict[int, object] = {}
    try:
        for rowid, key in db.execute("SELECT rowid, key FROM Cache INDEXED BY Cache_key_raw"):
            found[rowid] = _text(key)
    except DB_ERRORS:
        pass
    return found


def _rowids(db: sqlite3.Connection, top: int) -> Iterator[int]:
    """1..top (diskcache's rowids are dense), then whatever a scan finds above."""
    yield from range(1, top + 1)
    try:
        beyond = [r for (r,) in db.execute("SELECT rowid FROM Cache WHERE rowid > ? ORDER BY rowid", (top,))]
    except DB_ERRORS:
        beyond = []
    yield from beyond


@dataclass
class Rebuild:
    """What `rebuild_cache` did, for the command to report."""
    verdict: str
    kept: int = 0  # answers a healthy cache already held
    added: int = 0  # answers added from the records
    disagreed: int = 0  # records whose key already held another answer (that one kept)
    aside: Path | None = None
    salvage: Salvage | None = None
    salvaged_new: int = 0  # salvaged answers that no record held
    salvage_disagreed: int = 0  # salvaged answers unlike the record's (the record's kept)
    lost: int = 0  # unreadable answers that no record brought back
    lost_unknown: int | None = 0  # more the store counted but whose keys are unknown (None: count unknown)
    total: int = 0

    @property
    def healthy(self) -> bool:
        return self.aside is None


def rebuild_cache(directory: Path, records: Iterable[dict]) -> Rebuild:
    """A healthy cache (what `check_cache` calls ok) is merged into: answers the records hold and it
    lacks are added, nothing else changes. A damaged one is set aside (renamed, never deleted), a
    new one is filled from the records, then with every answer still readable in the old one.
    No entry is ever replaced by a different answer."""
    entries, verdict = check_cache(directory)
    answers = (found for found in map(record_answer, records) if found is not None)
    if verdict in ("ok", NO_CACHE):
        cache = ResponseCache(directory)
        try:
            added, _, disagreed = cache.add_answers(answers)
            return Rebuild(verdict, kept=entries, added=added, disagreed=disagreed, total=len(cache))
        finally:
            cache.close()
    aside = _set_aside(directory)
    report = Salvage()
    cache = ResponseCache(directory)
    try:
        added, _, disagreed = cache.add_answers(answers)
        salvaged_new, _, salvage_disagreed = cache.add_answers(salvage(aside, report))
        lost = sum(key not in cache for key in report.unreadable_keys)
        total = len(cache)
    finally:
        cache.close()
    unknown = None if report.held is None else max(0, report.held - report.readable - len(report.unreadable_keys))
    return Rebuild(verdict, added=added, disagreed=disagreed, aside=aside, salvage=report,
                   salvaged_new=salvaged_new, salvage_disagreed=salvage_disagreed, lost=lost,
                   lost_unknown=unknown, total=total)


def _set_aside(directory: Path) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for n in range(1, 100):
        aside = directory / f"{STORE}.damaged-{stamp}" if n == 1 else directory / f"{STORE}.damaged-{stamp}-{n}"
        if not aside.exists():
            break
    try:
        (directory / STORE).rename(aside)
    except OSError as exc:
        raise StorageError(f"cannot set the damaged response cache aside: {describe_os_error(aside, exc)}") from None
    return aside
