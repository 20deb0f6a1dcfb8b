"""The media metadata table: one SQLite file, ``<media-dir>/media.sqlite3``.

It is kept apart from the history database (chatd/store/) on purpose: media
metadata is per node upload bookkeeping (with ``--media-s3`` the bytes are
shared but each node knows the uploads it took). Two tables::

    media(id TEXT PRIMARY KEY, owner, kind, mime, name, size, width, height,
          duration_ms, sha256, thumb_sha256, thumb_size, created REAL,
          attached INTEGER DEFAULT 0, ready INTEGER DEFAULT 1)
    posts(media_id, channel, seq)   -- where each upload was posted

``sha256`` and ``thumb_sha256`` are the store keys (several rows may share
one: identical uploads are stored once). ``ready`` is 0 while the upload's
bytes are still being stored (it may not be attached yet). ``attached`` is 0
for an upload never attached, else the time (seconds) it was last attached to a
``send``/``dm``; ``posts`` holds the messages ``(channel, seq)`` it was
committed in (access control: members of those conversations may see it; and
the lifecycle: see :mod:`chatd.media.sweep`). Blocking; one connection guarded
by a lock, used from the media thread pool.

The schema version is ``PRAGMA user_version``: 1 (the upload core), 2 (``ready``
and ``posts``, added in place to a version 1 file).
"""

from __future__ import annotations

import sqlite3
import threading

#: seconds over which --media-quota-bytes counts a user's uploads (a rolling day)
QUOTA_WINDOW = 86400.0
_COLUMNS = (
    "id owner kind mime name size width height duration_ms sha256 thumb_sha256 "
    "thumb_size created attached ready"
).split()
#: the columns an upload's :meth:`MediaMeta.record` row gives
_RECORDED = [c for c in _COLUMNS if c not in ("attached", "ready")]
SCHEMA_VERSION = 2
_V1 = """
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
_V2 = """
ALTER TABLE media ADD COLUMN ready INTEGER NOT NULL DEFAULT 1;
CREATE TABLE posts (
    media_id TEXT NOT NULL, channel TEXT NOT NULL, seq INTEGER NOT NULL,
    PRIMARY KEY (media_id, channel, seq)) WITHOUT ROWID;
CREATE INDEX posts_message ON posts(channel, seq);
PRAGMA user_version = 2;
"""
#: ids per query of the lookups that take many (SQLite's variable limit is 999)
_BATCH = 500


class SchemaTooNew(Exception):
    """The metadata file was written by a newer chatd (a higher ``user_version``)."""


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
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                self._db.close()
                raise SchemaTooNew(f"{path}: media schema {version} (this chatd: {SCHEMA_VERSION})")
            # each step in one transaction: a crash half-way leaves the old version
            for step, script in ((1, _V1), (2, _V2)):
                if version < step:
                    self._db.executescript(f"BEGIN IMMEDIATE; {script} COMMIT;")

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
        """Insert *row* (every column but ``attached`` and ``ready``), unless it passes
        *quota* (0: none). It is not ready (:meth:`ready`) until its bytes are stored."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                if quota and self._used(row["owner"], row["created"]) + row["size"] > quota:
                    raise QuotaExceeded(row["owner"])
                names = [*_RECORDED, "ready"]
                self._db.execute(
                    f"INSERT INTO media ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})",
                    [*(row.get(c) for c in _RECORDED), 0],
                )
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def get(self, media_id: str) -> dict | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM media WHERE id = ?", (media_id,)).fetchone()
        return dict(row) if row is not None else None

    def ready(self, media_id: str) -> None:
        """The upload's bytes are stored: it may be attached from now on."""
        with self._lock:
            self._db.execute("UPDATE media SET ready = 1 WHERE id = ?", (media_id,))

    def get_many(self, ids) -> dict[str, dict]:
        """``{id: row}`` of the rows among *ids* (missing ones left out)."""
        out = {}
        ids = list(dict.fromkeys(ids))
        with self._lock:
            for start in range(0, len(ids), _BATCH):
                chunk = ids[start : start + _BATCH]
                rows = self._db.execute(
                    f"SELECT * FROM media WHERE id IN ({', '.join('?' * len(chunk))})", chunk
                ).fetchall()
                out.update((r["id"], dict(r)) for r in rows)
        return out

    def attach(self, ids, now: float) -> None:
        """*ids* are being attached to a message at *now* (the sweep leaves them be
        for a grace period even if that message is never committed)."""
        with self._lock:
            self._db.executemany(
                "UPDATE media SET attached = ? WHERE id = ?", [(now, i) for i in ids]
            )

    def post(self, ids, channel: str, seq: int) -> None:
        """*ids* were committed in message *seq* of *channel*."""
        with self._lock:
            self._db.executemany(
                "INSERT OR IGNORE INTO posts (media_id, channel, seq) VALUES (?, ?, ?)",
                [(i, channel, seq) for i in ids],
            )

    def channels(self, media_id: str) -> list[str]:
        """The channels *media_id* was posted in."""
        with self._lock:
            rows = self._db.execute(
                "SELECT DISTINCT channel FROM posts WHERE media_id = ? ORDER BY channel",
                (media_id,),
            ).fetchall()
        return [r[0] for r in rows]

    def posted_in(self, channel: str, seq: int) -> list[str]:
        """The uploads posted in message *seq* of *channel*."""
        with self._lock:
            rows = self._db.execute(
                "SELECT media_id FROM posts WHERE channel = ? AND seq = ?", (channel, seq)
            ).fetchall()
        return [r[0] for r in rows]

    def posts(self, ids=None) -> list[tuple[str, str, int]]:
        """``(media_id, channel, seq)`` of every post of *ids* (None: of every upload)."""
        with self._lock:
            if ids is None:
                return [tuple(r) for r in self._db.execute("SELECT * FROM posts").fetchall()]
            ids = list(dict.fromkeys(ids))
            out = []
            for start in range(0, len(ids), _BATCH):
                chunk = ids[start : start + _BATCH]
                out.extend(
                    tuple(r)
                    for r in self._db.execute(
                        "SELECT media_id, channel, seq FROM posts "
                        f"WHERE media_id IN ({', '.join('?' * len(chunk))})",
                        chunk,
                    ).fetchall()
                )
            return out

    def drop_posts(self, posts) -> None:
        """Forget the *posts* ``(media_id, channel, seq)`` (their messages are gone)."""
        with self._lock:
            self._db.executemany(
                "DELETE FROM posts WHERE media_id = ? AND channel = ? AND seq = ?", posts
            )

    def unposted_before(self, cutoff: float) -> list[dict]:
        """Rows never posted whose upload (and last attaching) is at or before *cutoff*."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, created, attached FROM media WHERE created <= ? AND attached <= ? "
                "AND NOT EXISTS (SELECT 1 FROM posts WHERE posts.media_id = media.id)",
                (cutoff, cutoff),
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
            self._db.execute("DELETE FROM posts WHERE media_id = ?", (media_id,))
            orphans = []
            for key in {k for k in row if k}:
                still = self._db.execute(
                    "SELECT 1 FROM media WHERE sha256 = ? OR thumb_sha256 = ? LIMIT 1", (key, key)
                ).fetchone()
                if still is None:
                    orphans.append(key)
            return orphans
