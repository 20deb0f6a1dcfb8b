"""The media metadata table: one SQLite file, ``<media-dir>/media.sqlite3``.

It is kept apart from the history database (chatd/store/) on purpose: media
metadata is per node upload bookkeeping (with ``--media-s3`` the bytes are
shared but each node knows the uploads it took). One table::

    media(id TEXT PRIMARY KEY, owner, kind, mime, name, size, width, height,
          duration_ms, sha256, thumb_sha256, thumb_size, created REAL,
          attached INTEGER DEFAULT 0)

``sha256`` and ``thumb_sha256`` are the store keys (several rows may share
one: identical uploads are stored once). ``attached`` is set by the attachment
work (not built yet). Blocking; one connection guarded by a lock, used from
the media thread pool. The schema version is ``PRAGMA user_version`` (1).
"""

from __future__ import annotations

import sqlite3
import threading

#: seconds over which --media-quota-bytes counts a user's uploads (a rolling day)
QUOTA_WINDOW = 86400.0
_COLUMNS = (
    "id owner kind mime name size width height duration_ms sha256 thumb_sha256 "
    "thumb_size created attached"
).split()


class QuotaExceeded(Exception):
    """The owner's uploads in the last :data:`QUOTA_WINDOW` would pass the quota."""


class MediaMeta:
    """The metadata table at *path* (``:memory:`` for tests)."""

    def __init__(self, path: str):
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            if self._db.execute("PRAGMA user_version").fetchone()[0] == 0:
                self._db.executescript(
                    """
                    CREATE TABLE IF NOT EXISTS media (
                        id TEXT PRIMARY KEY, owner TEXT NOT NULL, kind TEXT NOT NULL,
                        mime TEXT NOT NULL, name TEXT, size INTEGER NOT NULL,
                        width INTEGER, height INTEGER, duration_ms INTEGER,
                        sha256 TEXT NOT NULL, thumb_sha256 TEXT, thumb_size INTEGER,
                        created REAL NOT NULL, attached INTEGER NOT NULL DEFAULT 0);
                    CREATE INDEX IF NOT EXISTS media_owner ON media(owner, created);
                    CREATE INDEX IF NOT EXISTS media_unattached ON media(attached, created);
                    PRAGMA user_version = 1;
                    """
                )

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def used(self, owner: str, now: float) -> int:
        """Bytes *owner* uploaded in the :data:`QUOTA_WINDOW` before *now*."""
        with self._lock:
            return self._used(owner, now)

    def _used(self, owner, now) -> int:
        row = self._db.execute(
            "SELECT COALESCE(SUM(size), 0) FROM media WHERE owner = ? AND created > ?",
            (owner, now - QUOTA_WINDOW),
        ).fetchone()
        return row[0]

    def record(self, row: dict, quota: int) -> None:
        """Insert *row* (every column but ``attached``), unless it passes *quota* (0: none)."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                if quota and self._used(row["owner"], row["created"]) + row["size"] > quota:
                    raise QuotaExceeded(row["owner"])
                names = [c for c in _COLUMNS if c != "attached"]
                self._db.execute(
                    f"INSERT INTO media ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})",
                    [row.get(c) for c in names],
                )
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def get(self, media_id: str) -> dict | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM media WHERE id = ?", (media_id,)).fetchone()
        return dict(row) if row is not None else None

    def unattached_before(self, cutoff: float) -> list[dict]:
        """Rows not attached and created at or before *cutoff*."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, created, attached FROM media WHERE attached = 0 AND created <= ?",
                (cutoff,),
            ).fetchall()
        return [dict(r) for r in rows]

    def remove(self, media_id: str) -> list[str]:
        """Delete the row; the store keys no other row refers to any more."""
        with self._lock:
            row = self._db.execute(
                "SELECT sha256, thumb_sha256 FROM media WHERE id = ?", (media_id,)
            ).fetchone()
            if row is None:
                return []
            self._db.execute("DELETE FROM media WHERE id = ?", (media_id,))
            orphans = []
            for key in {k for k in row if k}:
                still = self._db.execute(
                    "SELECT 1 FROM media WHERE sha256 = ? OR thumb_sha256 = ? LIMIT 1", (key, key)
                ).fetchone()
                if still is None:
                    orphans.append(key)
            return orphans
