"""The media metadata: :class:`IMediaMeta`, and its SQLite file ``<media-dir>/media.sqlite3``.

:class:`IMediaMeta` is what :class:`chatd.media.web.Media` uses (every method
returns a Deferred). Two implementations pass the same contract tests
(tests/e2e/test_media_meta_contract.py):

* :class:`PooledMeta` over :class:`MediaMeta` (this module): one SQLite file, the
  blocking calls in the media thread pool -- a single node (or the ``--workers``
  of one host with ``--media-shared``);
* :class:`chatd.media.redismeta.RedisMeta` with ``--redis``: every node of a
  cluster shares the metadata, so any node serves any upload and the per-user
  quota counts cluster-wide.

It is kept apart from the history database (chatd/store/) on purpose. The
SQLite file has three tables::

    media(id TEXT PRIMARY KEY, owner, kind, mime, name, size, width, height,
          duration_ms, sha256, thumb_sha256, thumb_size, created REAL,
          attached INTEGER DEFAULT 0, ready INTEGER DEFAULT 1)
    posts(media_id, channel, seq)   -- where each upload was posted
    pending(token, media_id, channel, at)  -- attached to a message not yet committed

``sha256`` and ``thumb_sha256`` are the store keys (several rows may share
one: identical uploads are stored once). ``ready`` is 0 while the upload's
bytes are still being stored (it may not be attached yet). ``attached`` is 0
for an upload never attached, else the time (seconds) it was last attached to a
``send``/``dm``; ``posts`` holds the messages ``(channel, seq)`` it was
committed in (access control: members of those conversations may see it; and
the lifecycle: see :mod:`chatd.media.sweep`).

``pending`` is written *before* the message is committed (:meth:`MediaMeta.claim`,
in the same transaction that checks the upload is the sender's and ready): one
row per upload of the claim *token*, with the message's channel and the time.
Once the message is committed :meth:`MediaMeta.posted` turns them into ``posts``
rows; if chatd dies in between (or the commit fails), the sweep finds the
message in the channel's history, or not (:func:`chatd.media.sweep.scan`), and
:meth:`MediaMeta.resolve` settles it. While an upload has a pending row it is
never removed (:meth:`MediaMeta.remove` with *seen*), so a recall of its one
message while it is being attached to a new one cannot take it away.
Blocking; one connection guarded by a lock, used from the media thread pool.

The schema version is ``PRAGMA user_version``: 1 (the upload core), 2 (``ready``
and ``posts``, added in place to a version 1 file), 3 (``pending``).
"""

from __future__ import annotations

import os
import sqlite3
import threading

from twisted.internet import defer
from zope.interface import Interface, implementer

#: seconds over which --media-quota-bytes counts a user's uploads (a rolling day)
QUOTA_WINDOW = 86400.0
#: the columns of a row (IMediaMeta)
COLUMNS = (
    "id owner kind mime name size width height duration_ms sha256 thumb_sha256 "
    "thumb_size created attached ready"
).split()
#: the columns an upload's record gives (the others: ``attached``, ``ready``)
RECORDED = [c for c in COLUMNS if c not in ("attached", "ready")]
SCHEMA_VERSION = 3
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
_V3 = """
CREATE TABLE pending (
    token TEXT NOT NULL, media_id TEXT NOT NULL, channel TEXT NOT NULL, at REAL NOT NULL,
    PRIMARY KEY (token, media_id)) WITHOUT ROWID;
CREATE INDEX pending_media ON pending(media_id);
CREATE INDEX pending_at ON pending(at);
PRAGMA user_version = 3;
"""
#: ids per query of the lookups that take many (SQLite's variable limit is 999)
_BATCH = 500


class SchemaTooNew(Exception):
    """The metadata file was written by a newer chatd (a higher ``user_version``)."""


class QuotaExceeded(Exception):
    """The owner's uploads in the last :data:`QUOTA_WINDOW` would pass the quota."""


class IMediaMeta(Interface):
    """The upload metadata (see the module docstring). Every method returns a Deferred.

    A row is a dict of the ``media`` columns: ``id owner kind mime name size width
    height duration_ms sha256 thumb_sha256 thumb_size created attached ready``
    (absent optional values None). A post is ``(media_id, channel, seq)``.
    """

    def used(owner, now):
        """Bytes *owner* uploaded in the :data:`QUOTA_WINDOW` before *now*."""

    def record(row, quota):
        """Insert *row* (not ready) unless *owner*'s uploads would pass *quota*
        (0: none): then fail with :class:`QuotaExceeded`."""

    def ready(media_id):
        """The upload's bytes are stored: it may be attached from now on."""

    def get(media_id):
        """The row, or None."""

    def get_many(ids):
        """``{id: row}`` of the rows among *ids*."""

    def claim(ids, owner, token, channel, now):
        """``{id: row}`` of *ids*; atomically with the read, each of them that is
        *owner*'s and ready is marked attached at *now* and gets a pending post
        ``(token, channel, now)``: it stays while the message is being committed."""

    def posted(token, claimed, ids, channel, seq):
        """The message of claim *token* (of the uploads *claimed*) was committed as
        *seq* of *channel* showing *ids*: record those posts and drop the token's
        pending posts."""

    def release(token, claimed):
        """Drop the pending posts of claim *token* (of the uploads *claimed*): its
        message was not committed."""

    def pending_before(cutoff):
        """``[(token, media_id, channel, at)]`` of the pending posts made at or before
        *cutoff*."""

    def resolve(token, media_id, channel, seq):
        """Settle one pending post: a post ``(media_id, channel, seq)`` when *seq* is
        not None (its message was found), and the pending post dropped."""

    def channels(media_id):
        """The channels *media_id* was posted in or is pending in, sorted."""

    def posted_in(channel, seq):
        """The uploads posted in message *seq* of *channel*."""

    def posts(ids=None):
        """The posts of *ids* (None: of every upload)."""

    def drop_posts(posts):
        """Forget *posts* (their messages no longer show the upload)."""

    def unposted_before(cutoff):
        """``[{"id", "created", "attached"}]`` of the rows with no post and no pending
        post, uploaded and last attached at or before *cutoff*."""

    def remove(media_id, seen=None, cutoff=None):
        """Delete the row: fires with the store keys no other row refers to any more
        (``[]`` when there was no row). With *seen* (posts) only if every post it has
        now is among *seen*, it has no pending post, and (with *cutoff*) it was
        uploaded and last attached at or before *cutoff*; else nothing is deleted and
        it fires with None."""

    def referenced(key):
        """Fires with True when a row uses the stored object *key* (its ``sha256`` or
        ``thumb_sha256``): asked after the object was retired, before it is purged."""

    def close():
        """Close it (fires when closed)."""


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
            for step, script in ((1, _V1), (2, _V2), (3, _V3)):
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
                names = [*RECORDED, "ready"]
                self._db.execute(
                    f"INSERT INTO media ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})",
                    [*(row.get(c) for c in RECORDED), 0],
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
        with self._lock:
            return self._rows(list(dict.fromkeys(ids)))

    def claim(self, ids, owner: str, token: str, channel: str, now: float) -> dict[str, dict]:
        """See :meth:`IMediaMeta.claim`: the read and the marking in one transaction."""
        ids = list(dict.fromkeys(ids))
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                rows = self._rows(ids)
                mine = [
                    i for i in ids if i in rows and rows[i]["owner"] == owner and rows[i]["ready"]
                ]
                self._db.executemany(
                    "UPDATE media SET attached = ? WHERE id = ?", [(now, i) for i in mine]
                )
                self._db.executemany(
                    "INSERT OR REPLACE INTO pending (token, media_id, channel, at) "
                    "VALUES (?, ?, ?, ?)",
                    [(token, i, channel, now) for i in mine],
                )
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        for i in mine:
            rows[i]["attached"] = now
        return rows

    def _rows(self, ids) -> dict[str, dict]:
        out = {}
        for start in range(0, len(ids), _BATCH):
            chunk = ids[start : start + _BATCH]
            rows = self._db.execute(
                f"SELECT * FROM media WHERE id IN ({', '.join('?' * len(chunk))})", chunk
            ).fetchall()
            out.update((r["id"], dict(r)) for r in rows)
        return out

    def post(self, ids, channel: str, seq: int) -> None:
        """*ids* were committed in message *seq* of *channel*."""
        with self._lock:
            self._post(ids, channel, seq)

    def _post(self, ids, channel, seq) -> None:
        self._db.executemany(
            "INSERT OR IGNORE INTO posts (media_id, channel, seq) "
            "SELECT id, ?, ? FROM media WHERE id = ?",
            [(channel, seq, i) for i in ids],
        )

    def posted(self, token: str, claimed, ids, channel: str, seq: int) -> None:
        """See :meth:`IMediaMeta.posted`."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            self._post(ids, channel, seq)
            self._db.execute("DELETE FROM pending WHERE token = ?", (token,))
            self._db.execute("COMMIT")

    def release(self, token: str, claimed=()) -> None:
        with self._lock:
            self._db.execute("DELETE FROM pending WHERE token = ?", (token,))

    def pending_before(self, cutoff: float) -> list[tuple]:
        with self._lock:
            rows = self._db.execute(
                "SELECT token, media_id, channel, at FROM pending WHERE at <= ? ORDER BY at",
                (cutoff,),
            ).fetchall()
        return [tuple(r) for r in rows]

    def resolve(self, token: str, media_id: str, channel: str, seq) -> None:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            if seq is not None:
                self._post([media_id], channel, seq)
            self._db.execute(
                "DELETE FROM pending WHERE token = ? AND media_id = ?", (token, media_id)
            )
            self._db.execute("COMMIT")

    def channels(self, media_id: str) -> list[str]:
        """The channels *media_id* was posted in or is pending in (being posted)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT channel FROM posts WHERE media_id = ? UNION "
                "SELECT channel FROM pending WHERE media_id = ? ORDER BY channel",
                (media_id, media_id),
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
        """Rows never posted (nor pending) whose upload (and last attaching) is at or
        before *cutoff*."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, created, attached FROM media WHERE created <= ? AND attached <= ? "
                "AND NOT EXISTS (SELECT 1 FROM posts WHERE posts.media_id = media.id) "
                "AND NOT EXISTS (SELECT 1 FROM pending WHERE pending.media_id = media.id)",
                (cutoff, cutoff),
            ).fetchall()
        return [dict(r) for r in rows]

    def remove(self, media_id: str, seen=None, cutoff=None) -> list[str] | None:
        """See :meth:`IMediaMeta.remove`."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                orphans = self._remove(media_id, seen, cutoff)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
            return orphans

    def referenced(self, key: str) -> bool:
        """See :meth:`IMediaMeta.referenced`."""
        with self._lock:
            return self._referenced(key)

    def _referenced(self, key) -> bool:
        return (
            self._db.execute(
                "SELECT 1 FROM media WHERE sha256 = ? OR thumb_sha256 = ? LIMIT 1", (key, key)
            ).fetchone()
            is not None
        )

    def _remove(self, media_id, seen, cutoff):
        row = self._db.execute(
            "SELECT sha256, thumb_sha256, created, attached FROM media WHERE id = ?", (media_id,)
        ).fetchone()
        if row is None:
            return []
        if seen is not None:
            if cutoff is not None and max(row["created"], row["attached"] or 0) > cutoff:
                return None
            if self._db.execute(
                "SELECT 1 FROM pending WHERE media_id = ? LIMIT 1", (media_id,)
            ).fetchone():
                return None
            now = self._db.execute(
                "SELECT media_id, channel, seq FROM posts WHERE media_id = ?", (media_id,)
            ).fetchall()
            if not {tuple(p) for p in now} <= {tuple(p) for p in seen}:
                return None
        self._db.execute("DELETE FROM media WHERE id = ?", (media_id,))
        self._db.execute("DELETE FROM posts WHERE media_id = ?", (media_id,))
        orphans = []
        for key in {row["sha256"], row["thumb_sha256"]} - {None, ""}:
            if not self._referenced(key):
                orphans.append(key)
        return sorted(orphans)


#: the IMediaMeta methods that only read: answered without opening the file before the
#: first upload made it, with what an empty table would answer
_READS = {
    "used": 0,
    "get": None,
    "get_many": {},
    "claim": {},
    "pending_before": [],
    "channels": [],
    "posted_in": [],
    "posts": [],
    "unposted_before": [],
    "remove": [],
    "referenced": False,
    "release": None,  # a claim refused before the first upload: nothing to drop
}


@implementer(IMediaMeta)
class PooledMeta:
    """:class:`IMediaMeta` over the SQLite file at *path*: each call runs the blocking
    :class:`MediaMeta` method through *run* (``run(f, *args)`` -> Deferred: the media
    thread pool). The file is made on the first write (``record``); reads before
    answer as an empty table would."""

    def __init__(self, path: str, run):
        self.path = path
        self._run = run
        self._meta: MediaMeta | None = None
        self._opening = threading.Lock()

    def _open(self) -> MediaMeta:
        with self._opening:  # two pool threads may be first at once
            if self._meta is None:
                os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
                self._meta = MediaMeta(self.path)
            return self._meta

    def _call(self, name, *args):
        if self._meta is None and name in _READS and not os.path.exists(self.path):
            return defer.succeed(_READS[name])
        return self._run(lambda: getattr(self._open(), name)(*args))

    def close(self):
        meta, self._meta = self._meta, None
        return defer.succeed(meta.close() if meta is not None else None)


for _name in IMediaMeta.names():
    if _name != "close":
        setattr(
            PooledMeta,
            _name,
            (lambda name: lambda self, *args: self._call(name, *args))(_name),
        )
