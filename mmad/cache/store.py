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

A damaged database is a `StorageError` that says how to recover (`mmad cache rebuild`, see
mmad/cache_repair.py); every open runs SQLite's quick check so a damaged store is never written.
"""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
from collections.abc import Iterable
from contextlib import closing
from dataclasses import replace
from itertools import islice
from pathlib import Path

import diskcache

from mmad.data.images import ImageRef
from mmad.errors import StorageError, describe_os_error
from mmad.providers.base import Request
from mmad.redaction import public_url

KEY_VERSION = 2
STORE = "responses"
CACHE_ERRORS = (OSError, sqlite3.Error, diskcache.Timeout)
HEX_KEY = re.compile(r"[0-9a-f]{64}")  # a sha256 from cache_key; anything else is not ours


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
        f"the response cache {directory / STORE} cannot be used ({exc}); "
        f"`mmad cache rebuild --cache-dir {directory} --from results/` sets it aside and rebuilds it "
        f"from the answers your result files hold and those it still yields (neither is paid again)")


def one_line_verdict(verdict: str) -> str:
    """SQLite's check lists every problem on its own line: the first, and how many more."""
    lines = [line for line in verdict.splitlines() if line.strip() and not line.startswith("***")] or ["damaged"]
    return lines[0] + (f" (and {len(lines) - 1} more problem(s))" if len(lines) > 1 else "")


class ResponseCache:
    """Paid answers by cache key, as JSON values."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._store = diskcache.Cache(str(self.directory / STORE), eviction_policy="none",
                                          size_limit=2**62, timeout=60)
            # SQLite's quick check (~20 ms per 20k answers): writing into a damaged store could
            # spread the damage over answers that are still readable; stop and say how to recover
            with closing(sqlite3.connect(self.directory / STORE / "cache.db", timeout=60)) as db:
                verdict = db.execute("PRAGMA quick_check").fetchone()[0]
        except CACHE_ERRORS as exc:
            raise storage_failure(self.directory, exc) from None
        if verdict != "ok":
            self._store.close()
            raise damaged(self.directory, sqlite3.DatabaseError(one_line_verdict(verdict)))

    def get(self, key: str) -> dict | None:
        try:
            value = self._store.get(key)
        except sqlite3.OperationalError as exc:
            if "decode" in str(exc).lower():
                return None  # a stored text that is no longer UTF-8 (damaged bytes): as good as absent
            raise storage_failure(self.directory, exc) from None
        except CACHE_ERRORS as exc:
            raise storage_failure(self.directory, exc) from None
        try:
            return json.loads(value) if value is not None else None
        except ValueError:
            return None  # a value that is not JSON is as good as absent: the job is asked again

    def put(self, key: str, value: dict) -> None:
        """Store an answer; raises StorageError (naming the path and errno) when it cannot."""
        try:
            self._store.set(key, json.dumps(value, ensure_ascii=False, separators=(",", ":")))
        except CACHE_ERRORS as exc:
            raise storage_failure(self.directory, exc) from None

    def add_answers(self, answers: Iterable[tuple[str, dict]], chunk: int = 500) -> tuple[int, int, int]:
        """Store each answer whose key is absent and never replace one, atomically per key (a run may
        be using the store). Transactions of `chunk` keep the write lock short.
        Returns (added, already held with the same text, already held with another)."""
        added = same = other = 0
        answers = iter(answers)
        try:
            while batch := list(islice(answers, chunk)):
                with self._store.transact():
                    for key, value in batch:
                        if self._store.add(key, json.dumps(value, ensure_ascii=False, separators=(",", ":"))):
                            added += 1
                        elif (self.get(key) or {}).get("text") == value["text"]:
                            same += 1
                        else:
                            other += 1
        except CACHE_ERRORS as exc:
            raise storage_failure(self.directory, exc) from None
        return added, same, other

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
