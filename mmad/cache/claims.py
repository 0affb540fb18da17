"""Claims on requests being paid for, shared by every process that uses one response cache.

Two runs on one cache (a grid in two terminals, different `--out`) would otherwise both pay for
every request they have in common. Before a live request, a run claims its cache key here: one
SQLite row with the owner (this process), its PID and start time, its host and a lease. Another
process that finds a live claim does not send the request: it does other work and looks again
later, and by then the answer is in the cache (or the claim is gone, and it claims the key
itself). A claim ends when its answer is stored or its request fails (released), when its
process dies (its PID is gone, or belongs to a newer process), or when its lease runs out
(a process on another host, or one that is stopped); a run renews its leases while it works.

The rows live in `claims.sqlite` beside the answers; they are worth nothing after the run, so the
file is written without waiting for the disk, and a damaged one is replaced.
"""

from __future__ import annotations

import os
import socket
import sqlite3
import time
import uuid
from pathlib import Path

from mmad.errors import StorageError

LEASE_S = 120.0  # a claim whose owner does not renew it for this long is free
RENEW_EVERY_S = 30.0
FILE = "claims.sqlite"


def process_start(pid: int) -> str:
    """When a process started (clock ticks since boot; Linux), to tell a reused PID from the
    claim's owner; "" where it cannot be told."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def owner_alive(host: str, pid: int, started: str) -> bool:
    """Whether the process that made a claim on this host still runs."""
    if host != socket.gethostname():
        return True  # another host: only the lease can tell
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process: it exists
    now = process_start(pid)
    return not (started and now and now != started)


class ClaimStore:
    """This process's claims on cache keys."""

    def __init__(self, directory: Path, *, clock=time.time) -> None:
        self.path = Path(directory) / FILE
        self._clock = clock
        self.owner = uuid.uuid4().hex
        self.pid = os.getpid()
        self.host = socket.gethostname()
        self.started = process_start(self.pid)
        self.held: set[str] = set()
        self._db = self._open()

    def _open(self) -> sqlite3.Connection:
        for attempt in (1, 2):
            try:
                db = sqlite3.connect(self.path, timeout=60, isolation_level=None, check_same_thread=False)
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=OFF")
                db.execute("CREATE TABLE IF NOT EXISTS claims (key TEXT PRIMARY KEY, owner TEXT NOT NULL, "
                           "host TEXT NOT NULL, pid INTEGER NOT NULL, started TEXT NOT NULL, expires REAL NOT NULL)")
                return db
            except sqlite3.DatabaseError as exc:
                if attempt == 2 or isinstance(exc, sqlite3.OperationalError):
                    raise self._failure(exc) from None
                for suffix in ("", "-wal", "-shm"):  # damaged claims are worth nothing: start afresh
                    Path(f"{self.path}{suffix}").unlink(missing_ok=True)
        raise AssertionError("unreachable")

    def _failure(self, exc: BaseException) -> StorageError:
        return StorageError(f"cannot use the claims file {self.path}: {exc}; the disk may be full or read-only")

    def claim(self, key: str) -> bool:
        """Claim `key` unless another live process holds it; True when this process holds it now."""
        now = self._clock()
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                row = self._db.execute("SELECT owner, host, pid, started, expires FROM claims WHERE key = ?",
                                       (key,)).fetchone()
                if row is not None and row[0] != self.owner and row[4] > now and owner_alive(row[1], row[2], row[3]):
                    return False
                self._db.execute("INSERT OR REPLACE INTO claims VALUES (?, ?, ?, ?, ?, ?)",
                                 (key, self.owner, self.host, self.pid, self.started, now + LEASE_S))
            finally:
                self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            raise self._failure(exc) from None
        self.held.add(key)
        return True

    def release(self, key: str) -> None:
        """The answer is stored, or the request failed: others may ask."""
        if key not in self.held:
            return
        self.held.discard(key)
        try:
            self._db.execute("DELETE FROM claims WHERE key = ? AND owner = ?", (key, self.owner))
        except sqlite3.Error as exc:
            raise self._failure(exc) from None

    def renew(self) -> None:
        """Extend the lease of every claim this process holds."""
        if not self.held:
            return
        try:
            self._db.execute("UPDATE claims SET expires = ? WHERE owner = ?", (self._clock() + LEASE_S, self.owner))
        except sqlite3.Error as exc:
            raise self._failure(exc) from None

    def close(self) -> None:
        """Release every claim left (a stop) and close the file; never raises."""
        try:
            if self.held:
                self._db.execute("DELETE FROM claims WHERE owner = ?", (self.owner,))
            self._db.close()
        except sqlite3.Error:
            pass
        self.held.clear()
