"""The SQL of the history store: schema, migrations, appends, reads, deletes.

Plain functions that take a :class:`sqlite3.Connection` (opened by
:func:`connect`, in autocommit mode: callers open their own transactions);
no threads, no caches, no clock. :class:`chatd.store.sqlite.SQLiteStore`
calls them from its writer thread.

Schema and versions
    The schema version is kept in ``PRAGMA user_version`` (and the file is
    tagged with ``PRAGMA application_id``). :func:`connect` creates the schema
    of a new file and runs the steps in ``MIGRATIONS`` (version n -> n+1) on
    an older one, each in its own transaction. A file written by a newer
    chatd is refused with :class:`SchemaTooNew` and not changed; a SQLite
    file of another application with :class:`StoreUnavailable`.
    ``tests/fixtures/chatd-<version>.sqlite3`` are files written by earlier
    releases; a test opens each with today's code.

    ``messages(channel, seq, ...)``
        the history, clustered by ``(channel, seq)``.
    ``channels(channel, last_seq)``
        the newest seq ever committed per channel: seqs continue after a
        restart and are never reused, even when pruning removed every row.
    ``client_ids(sender, client_id, channel, seq, ts)``
        the exactly-once records, unique on ``(sender, client_id)`` across
        channels. They have their own retention and outlive the message: a
        client that resends its outbox after the message was pruned from
        history still gets the original seq and ts back
        (:func:`find_client_id` then gives the original channel, seq, sender,
        ts and client_id, with empty ``name`` and ``text``) and nothing is
        stored twice.
"""

from __future__ import annotations

import contextlib
import sqlite3

from chatd.store import Message, Page, Replay, SchemaTooNew, StoreUnavailable

#: The schema version this code writes. Bump it and add a step to MIGRATIONS.
SCHEMA_VERSION = 1

#: ``PRAGMA application_id`` of a chatd history file ("chtd").
APPLICATION_ID = 0x63687464

#: the ``PRAGMA synchronous`` modes
SYNCHRONOUS = ("OFF", "NORMAL", "FULL", "EXTRA")

#: errors of one row (not of the file): they fail that append only
ROW_ERRORS = (UnicodeEncodeError, sqlite3.InterfaceError, sqlite3.IntegrityError, TypeError)

_COLUMNS = "channel, seq, sender, name, text, ts, client_id"


def _migrate_0_to_1(conn: sqlite3.Connection) -> None:
    """Create the first schema in an empty file."""
    conn.execute(
        """CREATE TABLE messages (
            channel   TEXT    NOT NULL,
            seq       INTEGER NOT NULL,
            sender    TEXT    NOT NULL,
            name      TEXT    NOT NULL,
            text      TEXT    NOT NULL,
            ts        INTEGER NOT NULL,
            client_id TEXT,
            PRIMARY KEY (channel, seq)
        ) WITHOUT ROWID"""
    )
    conn.execute(
        """CREATE TABLE channels (
            channel  TEXT    PRIMARY KEY,
            last_seq INTEGER NOT NULL
        ) WITHOUT ROWID"""
    )
    # A rowid table: rowids grow with insertion order, which is (about) ts
    # order, so age-based pruning deletes a prefix without an index on ts.
    conn.execute(
        """CREATE TABLE client_ids (
            sender    TEXT    NOT NULL,
            client_id TEXT    NOT NULL,
            channel   TEXT    NOT NULL,
            seq       INTEGER NOT NULL,
            ts        INTEGER NOT NULL,
            UNIQUE (sender, client_id)
        )"""
    )


#: ``MIGRATIONS[n]`` upgrades a file from schema version n to n + 1.
MIGRATIONS = {0: _migrate_0_to_1}


def connect(path: str, busy_timeout_ms: int, synchronous: str) -> sqlite3.Connection:
    """Open *path* in WAL mode, check it is ours and not too new, migrate it.

    Fails with :class:`StoreUnavailable` (cannot open, another application's
    file) or :class:`SchemaTooNew`; the connection is closed then.
    """
    try:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=True)
    except sqlite3.Error as e:
        raise StoreUnavailable(f"cannot open history store {path}: {e}") from e
    try:
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if app_id not in (0, APPLICATION_ID):
            raise StoreUnavailable(
                f"{path} is not a chatd history store (application_id {app_id:#x})"
            )
        if version > SCHEMA_VERSION:
            raise SchemaTooNew(
                f"history store {path} has schema version {version}, but this "
                f"chatd only knows versions up to {SCHEMA_VERSION}: it was written by "
                f"a newer chatd; upgrade chatd or use another --db file"
            )
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute(f"PRAGMA synchronous = {synchronous}")
        conn.execute("PRAGMA journal_size_limit = 67108864")
        while version < SCHEMA_VERSION:
            conn.execute("BEGIN IMMEDIATE")
            try:
                MIGRATIONS[version](conn)
                version += 1
                conn.execute(f"PRAGMA user_version = {version}")
                conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                conn.execute("COMMIT")
            except BaseException:
                conn.rollback()
                raise
    except BaseException:
        with contextlib.suppress(sqlite3.Error):  # the first error is the one to report
            conn.close()
        raise
    return conn


def optimize(conn: sqlite3.Connection) -> None:
    """``PRAGMA optimize``: run before closing."""
    conn.execute("PRAGMA optimize")


def last_seq(conn: sqlite3.Connection, channel: str) -> int | None:
    """The channel's newest committed seq, or None if it never had a message."""
    row = conn.execute("SELECT last_seq FROM channels WHERE channel = ?", (channel,)).fetchone()
    return None if row is None else row[0]


def find_client_id(conn: sqlite3.Connection, sender: str, client_id: str) -> Message | None:
    """The message stored before with ``(sender, client_id)``, in any channel, or None.

    If the message itself was pruned, ``name`` and ``text`` are empty.
    """
    row = conn.execute(
        "SELECT c.channel, c.seq, c.ts, m.name, m.text FROM client_ids c "
        "LEFT JOIN messages m ON m.channel = c.channel AND m.seq = c.seq "
        "WHERE c.sender = ? AND c.client_id = ?",
        (sender, client_id),
    ).fetchone()
    if row is None:
        return None
    channel, seq, ts, name, text = row
    return Message(channel, seq, sender, name or "", text or "", ts, client_id)


def insert_message(conn: sqlite3.Connection, m: Message) -> None:
    """Insert *m* (and its exactly-once record when it has a client_id)."""
    conn.execute(
        f"INSERT INTO messages ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (m.channel, m.seq, m.sender, m.name, m.text, m.ts, m.client_id),
    )
    if m.client_id is not None:
        conn.execute(
            "INSERT INTO client_ids (sender, client_id, channel, seq, ts) VALUES (?, ?, ?, ?, ?)",
            (m.sender, m.client_id, m.channel, m.seq, m.ts),
        )


def save_last_seqs(conn: sqlite3.Connection, last_seqs) -> None:
    """Record the newest seq of each ``(channel, seq)`` in *last_seqs*."""
    conn.executemany(
        "INSERT INTO channels (channel, last_seq) VALUES (?, ?) "
        "ON CONFLICT (channel) DO UPDATE SET last_seq = excluded.last_seq",
        last_seqs,
    )


def replay(conn: sqlite3.Connection, channel: str, since, limit: int, last: int) -> Replay:
    """:meth:`IHistoryStore.replay` given the channel's newest seq *last*."""
    if since is None:
        return Replay([], last, False)
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM messages WHERE channel = ? AND seq > ? ORDER BY seq DESC LIMIT ?",
        (channel, since, max(limit, 0) + 1),
    ).fetchall()
    if len(rows) > limit:
        return Replay([Message(*r) for r in reversed(rows[:limit])], last, True)
    missed = [Message(*r) for r in reversed(rows)]
    # Pruned messages after `since` are a gap the client must know about.
    gap = last > since and (not missed or missed[0].seq > since + 1)
    return Replay(missed, last, gap)


def history(conn: sqlite3.Connection, channel: str, before, limit: int) -> Page:
    """:meth:`IHistoryStore.history`: up to *limit* messages with ``seq < before``."""
    if before is None:
        rows = conn.execute(
            f"SELECT {_COLUMNS} FROM messages WHERE channel = ? ORDER BY seq DESC LIMIT ?",
            (channel, max(limit, 0) + 1),
        ).fetchall()
    else:
        rows = conn.execute(
            f"SELECT {_COLUMNS} FROM messages "
            "WHERE channel = ? AND seq < ? ORDER BY seq DESC LIMIT ?",
            (channel, before, max(limit, 0) + 1),
        ).fetchall()
    more = len(rows) > limit
    return Page([Message(*r) for r in reversed(rows[:limit])], more)


def channel_names(conn: sqlite3.Connection) -> list[str]:
    """Every channel that ever had a message, in the ``channels`` table's order."""
    return [r[0] for r in conn.execute("SELECT channel FROM channels")]


def oldest_message(conn: sqlite3.Connection, channel: str) -> tuple[int, int] | None:
    """``(seq, ts)`` of the channel's oldest stored message, or None."""
    return conn.execute(
        "SELECT seq, ts FROM messages WHERE channel = ? ORDER BY seq LIMIT 1", (channel,)
    ).fetchone()


def messages_upto(conn: sqlite3.Connection, channel: str, seq: int) -> list[tuple[int, int]]:
    """``(seq, ts)`` of the channel's stored messages with seq <= *seq*, ascending."""
    return conn.execute(
        "SELECT seq, ts FROM messages WHERE channel = ? AND seq <= ? ORDER BY seq",
        (channel, seq),
    ).fetchall()


def delete_messages(conn: sqlite3.Connection, channel: str, upto: int) -> int:
    """Delete the channel's messages with seq <= *upto*; returns how many."""
    return conn.execute(
        "DELETE FROM messages WHERE channel = ? AND seq <= ?", (channel, upto)
    ).rowcount


def oldest_client_ids(conn: sqlite3.Connection, n: int) -> list[tuple[int, int]]:
    """``(rowid, ts)`` of the *n* oldest exactly-once records (insertion order)."""
    return conn.execute("SELECT rowid, ts FROM client_ids ORDER BY rowid LIMIT ?", (n,)).fetchall()


def delete_client_ids(conn: sqlite3.Connection, upto: int) -> int:
    """Delete the exactly-once records with rowid <= *upto*; returns how many."""
    return conn.execute("DELETE FROM client_ids WHERE rowid <= ?", (upto,)).rowcount
