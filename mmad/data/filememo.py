"""A memo of what mmad learned about image files: sha256 and whether the header decodes, keyed by
(absolute path, size, mtime_ns). A rerun of a finished run, `estimate` and `--dry-run` then cost a
`stat` per file instead of reading and hashing every image again.

A file whose size or modification time changed is hashed again, so an edited image is never
mistaken for the old one. The memo lives beside the response cache (`<cache>/filememo.sqlite`);
losing it costs time, never correctness. Writes are best effort: a full disk only disables it.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from pathlib import Path

from mmad.data.images import sha256_file

MEMO_FILE = "filememo.sqlite"


class FileMemo:
    """Thread-safe; loads every row once, writes new ones in one transaction on `flush`."""

    def __init__(self, directory: Path | None) -> None:
        self._path = Path(directory) / MEMO_FILE if directory is not None else None
        self._rows: dict[str, tuple[int, int, str, int]] = {}
        self._new: dict[str, tuple[int, int, str, int]] = {}
        self._lock = threading.Lock()
        if self._path is not None and self._path.exists():
            try:
                with sqlite3.connect(self._path) as db:
                    for path, size, mtime, digest, header_ok in db.execute(
                            "SELECT path, size, mtime_ns, sha256, header_ok FROM files"):
                        self._rows[path] = (size, mtime, digest, header_ok)
            except sqlite3.Error:
                self._rows = {}  # a damaged memo is only a slower start

    def _lookup(self, path: Path) -> tuple[str, os.stat_result, tuple | None]:
        absolute = os.path.abspath(path)
        stat = os.stat(absolute)
        row = self._rows.get(absolute) or self._new.get(absolute)
        if row is not None and (row[0], row[1]) != (stat.st_size, stat.st_mtime_ns):
            row = None
        return absolute, stat, row

    def known(self, path: Path) -> str | None:
        """The memo's sha256 for this file when its size and mtime are unchanged, else None
        (raises FileNotFoundError for a missing file)."""
        _, _, row = self._lookup(path)
        return row[2] if row is not None else None

    def sha256(self, path: Path) -> str:
        """The file's sha256, from the memo when its size and mtime are unchanged."""
        absolute, stat, row = self._lookup(path)
        if row is not None:
            return row[2]
        digest = sha256_file(Path(absolute))
        with self._lock:
            header_ok = self._new.get(absolute, (0, 0, "", 0))[3] if absolute in self._new else 0
            self._new[absolute] = (stat.st_size, stat.st_mtime_ns, digest, header_ok)
        return digest

    def header_checked(self, path: Path) -> bool:
        """True when this exact file (size, mtime) was seen to have a decodable header before."""
        try:
            _, _, row = self._lookup(path)
        except OSError:
            return False
        return row is not None and bool(row[3])

    def mark_header_ok(self, path: Path) -> None:
        absolute, stat, row = self._lookup(path)
        digest = row[2] if row is not None else sha256_file(Path(absolute))
        with self._lock:
            self._new[absolute] = (stat.st_size, stat.st_mtime_ns, digest, 1)

    def flush(self) -> None:
        if self._path is None or not self._new:
            return
        with self._lock:
            rows, self._new = self._new, {}
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            with sqlite3.connect(self._path, timeout=30) as db:
                db.execute("CREATE TABLE IF NOT EXISTS files (path TEXT PRIMARY KEY, size INTEGER, "
                           "mtime_ns INTEGER, sha256 TEXT, header_ok INTEGER)")
                db.executemany("INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?)",
                               [(p, *row) for p, row in rows.items()])
        except (sqlite3.Error, OSError):
            return  # best effort
        self._rows.update(rows)
