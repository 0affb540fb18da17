"""A memo of what mmad learned about image files: sha256 and whether the header decodes, keyed by
(absolute path, inode, size, mtime_ns, ctime_ns). A rerun of a finished run, `estimate` and
`--dry-run` then cost a `stat` per file instead of reading and hashing every image again.

A file whose inode, size, modification or change time moved is hashed again, so an edited image
is never mistaken for the old one. The change time (ctime) is what makes this safe: `cp -p`,
`rsync -t` and `tar` put back the old mtime after writing other bytes of the same size, but no
program can set ctime, and every write, rename or metadata change moves it. The memo lives beside
the response cache (`<cache>/filememo.sqlite`); losing it costs time, never correctness. Writes
are best effort: a full disk only disables it. Memos of older mmad (keyed without inode and
ctime) are not trusted: their table is left unread and dropped at the next write.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from pathlib import Path

from mmad.data.images import sha256_file

MEMO_FILE = "filememo.sqlite"
TABLE = "files_v2"  # (inode, size, mtime_ns, ctime_ns); `files` was keyed on (size, mtime_ns) alone

Identity = tuple[int, int, int, int]  # inode, size, mtime_ns, ctime_ns


def identity(stat: os.stat_result) -> Identity:
    return stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns


class FileMemo:
    """Thread-safe; loads every row once, writes new ones in one transaction on `flush`."""

    def __init__(self, directory: Path | None) -> None:
        self._path = Path(directory) / MEMO_FILE if directory is not None else None
        self._rows: dict[str, tuple[Identity, str, int]] = {}
        self._new: dict[str, tuple[Identity, str, int]] = {}
        self._lock = threading.Lock()
        if self._path is not None and self._path.is_file():
            try:
                with sqlite3.connect(self._path) as db:
                    for path, inode, size, mtime, ctime, digest, header_ok in db.execute(
                            f"SELECT path, inode, size, mtime_ns, ctime_ns, sha256, header_ok FROM {TABLE}"):
                        self._rows[path] = ((inode, size, mtime, ctime), digest, header_ok)
            except sqlite3.Error:
                self._rows = {}  # a damaged memo, or one of older mmad: only a slower start

    def _lookup(self, path: Path) -> tuple[str, os.stat_result, tuple | None]:
        absolute = os.path.abspath(path)
        stat = os.stat(absolute)
        row = self._rows.get(absolute) or self._new.get(absolute)
        if row is not None and row[0] != identity(stat):
            row = None
        return absolute, stat, row

    def known(self, path: Path) -> str | None:
        """The memo's sha256 for this file when it is unchanged, else None (raises
        FileNotFoundError for a missing file)."""
        _, _, row = self._lookup(path)
        return row[1] if row is not None else None

    def sha256(self, path: Path) -> str:
        """The file's sha256, from the memo when the file is unchanged."""
        absolute, stat, row = self._lookup(path)
        if row is not None:
            return row[1]
        digest = sha256_file(Path(absolute))
        with self._lock:
            self._new[absolute] = (identity(stat), digest, 0)
        return digest

    def header_checked(self, path: Path) -> bool:
        """True when this exact file was seen to have a decodable header before."""
        try:
            _, _, row = self._lookup(path)
        except OSError:
            return False
        return row is not None and bool(row[2])

    def mark_header_ok(self, path: Path) -> None:
        absolute, stat, row = self._lookup(path)
        digest = row[1] if row is not None else sha256_file(Path(absolute))
        with self._lock:
            self._new[absolute] = (identity(stat), digest, 1)

    def flush(self) -> None:
        if self._path is None or not self._new:
            return
        with self._lock:
            rows, self._new = self._new, {}
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            with sqlite3.connect(self._path, timeout=30) as db:
                db.execute("DROP TABLE IF EXISTS files")  # older mmad's memo: keyed without inode and ctime
                db.execute(f"CREATE TABLE IF NOT EXISTS {TABLE} (path TEXT PRIMARY KEY, inode INTEGER, size INTEGER, "
                           f"mtime_ns INTEGER, ctime_ns INTEGER, sha256 TEXT, header_ok INTEGER)")
                db.executemany(f"INSERT OR REPLACE INTO {TABLE} VALUES (?, ?, ?, ?, ?, ?, ?)",
                               [(p, *ident, digest, ok) for p, (ident, digest, ok) in rows.items()])
        except (sqlite3.Error, OSError):
            return  # best effort
        self._rows.update(rows)
