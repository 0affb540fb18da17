"""Content-addressed store of paid responses (diskcache, SQLite underneath).

Key = sha256 of canonical JSON of exactly the inputs that change an answer:
  key version, provider identity (name, and base_url for custom servers), model, temperature,
  max_tokens, system text, earlier turns, and each part in order: text verbatim, images as
  {sha256 of the source file's bytes, preparation token}; plus the repeat index when > 0 (a
  repeat is a new, paid answer to the same request, for measuring run-to-run noise).
Timeouts, concurrency and keys are not part of it. Value = JSON of the raw answer text, usage,
latency and finish reason. Errors and refusals are never stored. Parsing happens after the cache,
so a parser fix never costs money. Nothing is ever evicted (diskcache's default would evict
after 1 GB).

A damaged database is a `StorageError` that says how to recover: `mmad cache rebuild` sets the
broken store aside and refills a new one from the raw answers the result JSONL files keep.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path

import diskcache

from mmad.errors import StorageError, describe_os_error
from mmad.images import ImageRef
from mmad.redaction import public_url
from mmad.providers.base import Request

KEY_VERSION = 2
STORE = "responses"
CACHE_ERRORS = (OSError, sqlite3.Error, diskcache.Timeout)


def _parts(parts: Iterable) -> list[dict]:
    return [{"image": p.sha256, "spec": p.spec} if isinstance(p, ImageRef) else {"text": p} for p in parts]


def key_material(identity: dict[str, str], request: Request, repeat: int = 0) -> dict:
    ident = dict(identity)
    if "base_url" in ident:
        ident["base_url"] = public_url(ident["base_url"])
    material = {
        "key_version": KEY_VERSION,
        **ident,
        "model": request.model,
        "temperature": request.temperature,
        "max_tokens": request.max_tokens,
        "system": request.system,
        "parts": _parts(request.parts),
    }
    if request.history:
        material["history"] = [{"role": role, "parts": _parts(parts)} for role, parts in request.history]
    if repeat:
        material["repeat"] = repeat
    return material


def _canonical(identity: dict[str, str], request: Request, repeat: int) -> str:
    return json.dumps(key_material(identity, request, repeat), sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False)


def cache_key(identity: dict[str, str], request: Request, repeat: int = 0) -> str:
    return hashlib.sha256(_canonical(identity, request, repeat).encode("utf-8")).hexdigest()


class KeyTemplate:
    """Keys of many requests that differ only in their last image (a subset's queries), without
    serialising each one: the canonical JSON is built once with a stand-in for that image's hash,
    which is then replaced. Gives exactly `cache_key`'s keys (tested)."""

    STAND_IN = "0" * 63 + "x"  # not a sha256 (those are hex), so it cannot collide with a real one

    def __init__(self, identity: dict[str, str], request: Request, repeat: int = 0) -> None:
        query = request.image_refs[-1]
        stand_in = ImageRef(self.STAND_IN, query.spec)
        parts = tuple(stand_in if part is query else part for part in request.parts)
        self._text = _canonical(identity, replace(request, parts=parts), repeat)
        if self._text.count(self.STAND_IN) != 1:
            raise ValueError("the stand-in must appear once")
        self._head, self._tail = (piece.encode("utf-8") for piece in self._text.split(self.STAND_IN))

    def key(self, query_sha256: str) -> str:
        return hashlib.sha256(self._head + query_sha256.encode("ascii") + self._tail).hexdigest()


def storage_failure(directory: Path, exc: BaseException) -> StorageError:
    """A cache error as one line: damage (not a database, malformed) or trouble writing (disk full,
    read-only, a file-size limit), which SQLite reports as an I/O error without an errno."""
    if isinstance(exc, sqlite3.OperationalError) or not isinstance(exc, sqlite3.DatabaseError):
        if isinstance(exc, OSError):
            return StorageError(f"cannot use the response cache: {describe_os_error(directory / STORE, exc)}")
        name = getattr(exc, "sqlite_errorname", "") or type(exc).__name__
        return StorageError(f"cannot write the response cache {directory / STORE}: {exc} ({name}); the disk may be "
                            f"full or read-only, or a file-size limit reached")
    return damaged(directory, exc)


def damaged(directory: Path, exc: BaseException) -> StorageError:
    return StorageError(
        f"the response cache {directory / STORE} cannot be used ({type(exc).__name__}: {exc}); "
        f"`mmad cache rebuild --cache-dir {directory} --from results/` sets it aside and rebuilds it "
        f"from the answers your result files hold (nothing is paid again)")


class ResponseCache:
    """Paid answers by cache key, as JSON values."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._store = diskcache.Cache(str(self.directory / STORE), eviction_policy="none",
                                          size_limit=2**62, timeout=60)
        except CACHE_ERRORS as exc:
            raise storage_failure(self.directory, exc) from None

    def get(self, key: str) -> dict | None:
        try:
            value = self._store.get(key)
            return json.loads(value) if value is not None else None
        except CACHE_ERRORS as exc:
            raise storage_failure(self.directory, exc) from None
        except ValueError:
            return None  # a value that is not JSON is as good as absent: the job is asked again

    def put(self, key: str, value: dict) -> None:
        """Store an answer; raises StorageError (naming the path and errno) when it cannot."""
        try:
            self._store.set(key, json.dumps(value, ensure_ascii=False, separators=(",", ":")))
        except CACHE_ERRORS as exc:
            raise storage_failure(self.directory, exc) from None

    def __contains__(self, key: str) -> bool:
        try:
            return key in self._store
        except CACHE_ERRORS as exc:
            raise storage_failure(self.directory, exc) from None

    def __len__(self) -> int:
        return len(self._store)

    def keys(self) -> list[str]:
        return list(self._store.iterkeys())

    def close(self) -> None:
        try:
            self._store.close()
        except CACHE_ERRORS:
            pass


def check_cache(directory: Path) -> tuple[int, str]:
    """(entries, "ok" or what is wrong): SQLite's integrity check plus a read of every value."""
    path = directory / STORE / "cache.db"
    if not path.exists():
        return 0, "no cache here yet"
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
            verdict = db.execute("PRAGMA integrity_check").fetchone()[0]
            count = db.execute("SELECT COUNT(*) FROM Cache").fetchone()[0]
    except sqlite3.DatabaseError as exc:
        return 0, f"{type(exc).__name__}: {exc}"
    return count, verdict


def rebuild_cache(directory: Path, records: Iterable[dict]) -> tuple[Path | None, int]:
    """Set a damaged store aside (renamed, never deleted) and refill a fresh one from result
    records that kept their raw answer (`ok` and `parse_failed`, with a `key`).

    Returns (where the old store went, answers restored)."""
    store = directory / STORE
    aside = None
    if store.exists():
        aside = directory / f"{STORE}.damaged-{time.strftime('%Y%m%d-%H%M%S')}"
        store.rename(aside)
    cache = ResponseCache(directory)
    restored = 0
    try:
        for record in records:
            key, raw = record.get("key"), record.get("raw")
            if not key or raw is None or record.get("status") not in ("ok", "parse_failed"):
                continue
            if record.get("source") == "gate":
                continue  # a detector's decision, not a paid answer
            cache.put(key, {"text": raw, "usage": record.get("usage") or {}, "latency_s": record.get("latency_s"),
                            "finish_reason": record.get("finish_reason"), "model": record.get("model"),
                            "time": record.get("time"), "restored_from": "results"})
            restored += 1
    finally:
        cache.close()
    return aside, restored
