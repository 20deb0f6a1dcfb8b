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

    Version 2 (chatd 0.2, conversations) was reached from version 1 IN PLACE
    (:func:`_migrate_1_to_2`, one transaction): it only adds columns and empty
    tables. A column added to an existing table is NULL in every old row, and
    NULL means what chatd 0.1 stored, so no row is rewritten and the step costs
    the same whatever the size of the history.

    ``messages(channel, seq, sender, name, text, ts, client_id, kind, data, ord)``
        every timeline item, clustered by ``(channel, seq)``. ``kind`` is NULL for
        a ``message`` (every 0.1 row), else one of ``ITEM_KINDS``; ``data`` is the
        item's JSON object or NULL. ``ord`` is the channel's message count up to
        and including the item (see :mod:`chatd.store.items`), NULL when it equals
        ``seq`` (every 0.1 row: all items were messages; and every message of a
        channel that never had another kind). An edit or recall UPDATEs the
        target row in place (its latest text, ``data.edited_ts``,
        ``data.recalled``), so reads return the current state with no join.
    ``channels(channel, last_seq, msg_count, last_msg, last_ts)``
        per channel: the newest seq ever committed (seqs continue after a
        restart and are never reused, even when pruning removed every row), the
        number of messages ever appended, the newest message's seq, the newest
        item's ts. NULL in a 0.1 row: ``last_seq``, ``last_seq``, 0.
        ``unread = msg_count - members.read_ord``: the send path writes nothing
        per recipient.
    ``client_ids(sender, client_id, channel, seq, ts)``
        the exactly-once records, unique on ``(sender, client_id)`` across
        channels, for items of every kind. They have their own retention and
        outlive the item: a client that resends its outbox after the message was
        pruned from history still gets the original seq and ts back
        (:func:`find_client_id` then gives the original channel, seq, sender,
        ts and client_id, with empty ``name`` and ``text``) and nothing is
        stored twice.
    ``rooms(room, kind, title, topic, avatar, created_by, created_ts)``
        rooms that were ``created`` (or updated): a room without a row is a 0.1
        room, public with no owner.
    ``members(channel, user, role, state, peer, read_seq, read_ord, muted, since_seq)``
        one row per user and conversation (rooms and DM channels), primary key
        ``(channel, user)`` (member pages and counts read one channel's range);
        index ``members_user(user, state)`` for a user's conversation list.
        ``read_ord`` is the message ordinal at ``read_seq``, set when the marker
        moves (``mark_read``, the user's own message, a join).
    ``users(user, name, ts)``
        the known users (:meth:`IConversationStore.add_user`).
    ``mentions(channel, user, seq, sender)``
        who each message mentions (``user`` may be ``@all``); primary key
        ``(channel, user, seq)`` so a conversation's mention count is one range
        count above the marker. A recall deletes its message's rows.
    ``reactions(channel, target, emoji, user)``
        the reactions on now, one row each (a toggle inserts or deletes it).
    ``edits(channel, target, seq)``
        which items are edits of which message (a recall blanks their text).
    ``cursors(user, cursor, snapshot, ts)``
        sync snapshots, unique on ``(user, cursor)``; a save keeps the user's
        newest 16 and pruning deletes those older than 30 days (index on ``ts``).

    ``push_quota(user, template, count, ts)``, ``push_rooms(user, channel)``,
    ``push_sent(user, channel, ts)``
        offline push (version 3, :func:`_migrate_2_to_3`, new empty tables only):
        one-time template messages left per user, the rooms a user is notified
        for (index ``push_rooms_channel`` for a room's watchers), and when each
        conversation last notified each user (the digest, :mod:`chatd.pushrules`).

    ``sanctions(user, kind, scope, until_ms)``, ``reports(id, key, state, data)``,
    ``audit(id, data)``
        moderation (version 4, :func:`_migrate_3_to_4`, new empty tables only): each
        user's mutes and global bans (:mod:`chatd.modrules`; expired rows count for
        nothing and are overwritten by the next sanction), the moderation queue
        (``key`` unique: exactly-once reports; index ``reports_state``) and the audit
        log, their entries as JSON objects.

    Pruning deletes a channel's oldest items (of every kind) with their mentions,
    edits and the reactions on them; members, rooms, users are never pruned.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3

import orjson

from chatd.store import (
    Member,
    Message,
    Page,
    Replay,
    Room,
    SchemaTooNew,
    StoreUnavailable,
    SyncReplay,
    dm_users,
)

#: The schema version this code writes. Bump it and add a step to MIGRATIONS.
SCHEMA_VERSION = 5

#: ``PRAGMA application_id`` of a chatd history file ("chtd").
APPLICATION_ID = 0x63687464

#: the ``PRAGMA synchronous`` modes
SYNCHRONOUS = ("OFF", "NORMAL", "FULL", "EXTRA")

#: errors of one row (not of the file): they fail that append only
ROW_ERRORS = (UnicodeEncodeError, sqlite3.InterfaceError, sqlite3.IntegrityError, TypeError)

_COLUMNS = "channel, seq, sender, name, text, ts, client_id, kind, data"


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


def _migrate_1_to_2(conn: sqlite3.Connection) -> None:
    """Conversations (chatd 0.2): item kinds, ordinals, members, rooms, users,
    mentions, reactions, sync cursors. Existing rows are not rewritten: every new
    column of an old row is NULL, which means what chatd 0.1 stored (see the module
    docstring), so the step costs one scan of ``messages`` (the partial index)
    whatever the size of the history."""
    for column in ("kind TEXT", "data TEXT", "ord INTEGER"):
        conn.execute(f"ALTER TABLE messages ADD COLUMN {column}")
    conn.execute(
        """CREATE TABLE edits (
            channel TEXT    NOT NULL,
            target  INTEGER NOT NULL,
            seq     INTEGER NOT NULL,
            PRIMARY KEY (channel, target, seq)
        ) WITHOUT ROWID"""
    )
    for column in ("msg_count INTEGER", "last_msg INTEGER", "last_ts INTEGER"):
        conn.execute(f"ALTER TABLE channels ADD COLUMN {column}")
    conn.execute(
        """CREATE TABLE rooms (
            room       TEXT    PRIMARY KEY,
            kind       TEXT    NOT NULL,
            title      TEXT    NOT NULL,
            topic      TEXT    NOT NULL,
            avatar     TEXT    NOT NULL,
            created_by TEXT,
            created_ts INTEGER NOT NULL
        ) WITHOUT ROWID"""
    )
    conn.execute(
        """CREATE TABLE members (
            channel   TEXT    NOT NULL,
            user      TEXT    NOT NULL,
            role      TEXT    NOT NULL,
            state     TEXT    NOT NULL,
            peer      TEXT,
            read_seq  INTEGER NOT NULL,
            read_ord  INTEGER NOT NULL,
            muted     INTEGER NOT NULL,
            since_seq INTEGER NOT NULL,
            PRIMARY KEY (channel, user)
        ) WITHOUT ROWID"""
    )
    conn.execute("CREATE INDEX members_user ON members (user, state)")
    conn.execute(
        """CREATE TABLE users (
            user TEXT    PRIMARY KEY,
            name TEXT    NOT NULL,
            ts   INTEGER NOT NULL
        ) WITHOUT ROWID"""
    )
    conn.execute(
        """CREATE TABLE mentions (
            channel TEXT    NOT NULL,
            user    TEXT    NOT NULL,
            seq     INTEGER NOT NULL,
            sender  TEXT    NOT NULL,
            PRIMARY KEY (channel, user, seq)
        ) WITHOUT ROWID"""
    )
    conn.execute(
        """CREATE TABLE reactions (
            channel TEXT    NOT NULL,
            target  INTEGER NOT NULL,
            emoji   TEXT    NOT NULL,
            user    TEXT    NOT NULL,
            PRIMARY KEY (channel, target, emoji, user)
        ) WITHOUT ROWID"""
    )
    conn.execute(
        """CREATE TABLE cursors (
            user     TEXT    NOT NULL,
            cursor   TEXT    NOT NULL,
            snapshot BLOB    NOT NULL,
            ts       INTEGER NOT NULL,
            UNIQUE (user, cursor)
        )"""
    )
    conn.execute("CREATE INDEX cursors_ts ON cursors (ts)")


def _migrate_2_to_3(conn: sqlite3.Connection) -> None:
    """Offline push: three new tables, nothing existing is touched (in place, the
    same cost whatever the size of the history)."""
    conn.execute(
        """CREATE TABLE push_quota (
            user     TEXT    NOT NULL,
            template TEXT    NOT NULL,
            count    INTEGER NOT NULL,
            ts       INTEGER NOT NULL,
            PRIMARY KEY (user, template)
        ) WITHOUT ROWID"""
    )
    conn.execute(
        """CREATE TABLE push_rooms (
            user    TEXT NOT NULL,
            channel TEXT NOT NULL,
            PRIMARY KEY (user, channel)
        ) WITHOUT ROWID"""
    )
    conn.execute("CREATE INDEX push_rooms_channel ON push_rooms (channel, user)")
    conn.execute(
        """CREATE TABLE push_sent (
            user    TEXT    NOT NULL,
            channel TEXT    NOT NULL,
            ts      INTEGER NOT NULL,
            PRIMARY KEY (user, channel)
        ) WITHOUT ROWID"""
    )


def _migrate_3_to_4(conn: sqlite3.Connection) -> None:
    """Moderation: three new tables, nothing existing is touched (in place)."""
    conn.execute(
        """CREATE TABLE sanctions (
            user     TEXT    NOT NULL,
            kind     TEXT    NOT NULL,
            scope    TEXT    NOT NULL,
            until_ms INTEGER NOT NULL,
            PRIMARY KEY (user, kind, scope)
        ) WITHOUT ROWID"""
    )
    conn.execute(
        """CREATE TABLE reports (
            id    INTEGER PRIMARY KEY,
            key   TEXT    NOT NULL UNIQUE,
            state TEXT    NOT NULL,
            data  TEXT    NOT NULL
        )"""
    )
    conn.execute("CREATE INDEX reports_state ON reports (state, id)")
    conn.execute("CREATE TABLE audit (id INTEGER PRIMARY KEY, data TEXT NOT NULL)")


def _migrate_4_to_5(conn: sqlite3.Connection) -> None:
    """WeChat's asynchronous media checks: one new table (in place). ``media_checks``
    holds ``trace_id -> what was checked`` until the verdict comes (or it expires)."""
    conn.execute(
        """CREATE TABLE media_checks (
            trace_id TEXT    PRIMARY KEY,
            ts       INTEGER NOT NULL,
            data     TEXT    NOT NULL
        ) WITHOUT ROWID"""
    )
    conn.execute("CREATE INDEX media_checks_ts ON media_checks (ts)")


#: ``MIGRATIONS[n]`` upgrades a file from schema version n to n + 1.
MIGRATIONS = {
    0: _migrate_0_to_1,
    1: _migrate_1_to_2,
    2: _migrate_2_to_3,
    3: _migrate_3_to_4,
    4: _migrate_4_to_5,
}


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


#: the columns of a channel's items read back (the channel is the caller's)
_ITEM_COLUMNS = "seq, sender, name, text, ts, client_id, kind, data"


def _items(channel: str, rows) -> list[Message]:
    """The :class:`Message` of each row of ``_ITEM_COLUMNS`` of *channel*, in order
    (the hot path of replay and history: one comprehension, no call per row)."""
    loads = json.loads
    return [
        Message(
            channel,
            seq,
            sender,
            name,
            text,
            ts,
            client_id,
            kind or "message",
            None if data is None else loads(data),
        )
        for seq, sender, name, text, ts, client_id, kind, data in rows
    ]


def _json(data) -> str | None:
    return None if data is None else json.dumps(data, ensure_ascii=False, separators=(",", ":"))


def find_client_id(conn: sqlite3.Connection, sender: str, client_id: str) -> Message | None:
    """The item stored before with ``(sender, client_id)``, in any channel, or None.

    If the item itself was pruned, ``name`` and ``text`` are empty (kind ``message``).
    """
    row = conn.execute(
        "SELECT c.channel, c.seq, c.ts, m.name, m.text, m.kind, m.data FROM client_ids c "
        "LEFT JOIN messages m ON m.channel = c.channel AND m.seq = c.seq "
        "WHERE c.sender = ? AND c.client_id = ?",
        (sender, client_id),
    ).fetchone()
    if row is None:
        return None
    channel, seq, ts, name, text, kind, data = row
    return _items(channel, [(seq, sender, name or "", text or "", ts, client_id, kind, data)])[0]


def insert_message(conn: sqlite3.Connection, m: Message, ord_: int, record_id=True) -> None:
    """Insert the item *m* with its message ordinal (and, with *record_id*, its
    exactly-once record when it has a client_id). A message stores NULL kind, and NULL
    ord when it equals the seq (what a chatd 0.1 row means)."""
    if m.kind == "message" and m.data is None and ord_ == m.seq:
        # the row of chatd 0.1: the new columns stay NULL
        conn.execute(
            "INSERT INTO messages (channel, seq, sender, name, text, ts, client_id) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (m.channel, m.seq, m.sender, m.name, m.text, m.ts, m.client_id),
        )
    else:
        conn.execute(
            f"INSERT INTO messages ({_COLUMNS}, ord) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                m.channel,
                m.seq,
                m.sender,
                m.name,
                m.text,
                m.ts,
                m.client_id,
                None if m.kind == "message" else m.kind,
                _json(m.data),
                None if ord_ == m.seq else ord_,
            ),
        )
    if m.client_id is not None and record_id:
        conn.execute(
            "INSERT INTO client_ids (sender, client_id, channel, seq, ts) VALUES (?, ?, ?, ?, ?)",
            (m.sender, m.client_id, m.channel, m.seq, m.ts),
        )


def claim_client_id(conn: sqlite3.Connection, m: Message) -> bool:
    """Record *m*'s ``(sender, client_id)`` for *m*; False (nothing written) when an
    item has it already. One statement where :func:`find_client_id` first and the
    record after would be two."""
    return (
        conn.execute(
            "INSERT INTO client_ids (sender, client_id, channel, seq, ts) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (sender, client_id) DO NOTHING",
            (m.sender, m.client_id, m.channel, m.seq, m.ts),
        ).rowcount
        == 1
    )


def delete_item(conn: sqlite3.Connection, channel: str, seq: int) -> None:
    """Delete the one item row *seq* of *channel* (nothing else refers to it yet)."""
    conn.execute("DELETE FROM messages WHERE channel = ? AND seq = ?", (channel, seq))


def counters(conn: sqlite3.Connection, channel: str) -> tuple[int, int, int, int] | None:
    """``(last_seq, msg_count, last_msg, last_ts)`` of *channel*, or None if it never had
    an item (NULL columns of a chatd 0.1 channel: every item was a message)."""
    return conn.execute(
        "SELECT last_seq, COALESCE(msg_count, last_seq), COALESCE(last_msg, last_seq), "
        "COALESCE(last_ts, 0) FROM channels WHERE channel = ?",
        (channel,),
    ).fetchone()


def save_counters(conn: sqlite3.Connection, rows) -> None:
    """Record ``(channel, last_seq, msg_count, last_msg, last_ts)`` of each of *rows*."""
    conn.executemany(
        "INSERT INTO channels (channel, last_seq, msg_count, last_msg, last_ts) "
        "VALUES (?, ?, ?, ?, ?) ON CONFLICT (channel) DO UPDATE SET "
        "last_seq = excluded.last_seq, msg_count = excluded.msg_count, "
        "last_msg = excluded.last_msg, last_ts = excluded.last_ts",
        rows,
    )


def _newest(
    conn: sqlite3.Connection, columns: str, channel: str, since, limit: int, last: int, *more
):
    """``(rows, truncated)``: the rows (*columns*, the seq first; *more*: their
    parameters from ``?4``) of *channel*'s newest *limit* items with ``seq > since``,
    ascending; truncated when more matched or when pruned items after *since* are a
    gap (*last*: the channel's newest seq)."""
    rows = conn.execute(
        f"SELECT {columns} FROM messages WHERE channel = ?1 AND seq > ?2 "
        "ORDER BY seq DESC LIMIT ?3",
        (channel, since, max(limit, 0) + 1, *more),
    ).fetchall()
    if len(rows) > limit:
        del rows[limit:]
        rows.reverse()
        return rows, True
    rows.reverse()
    # Pruned messages after `since` are a gap the client must know about.
    return rows, last > since and (not rows or rows[0][0] > since + 1)


def replay(conn: sqlite3.Connection, channel: str, since, limit: int, last: int) -> Replay:
    """:meth:`IHistoryStore.replay` given the channel's newest seq *last*."""
    if since is None:
        return Replay([], last, False)
    rows, truncated = _newest(conn, _ITEM_COLUMNS, channel, since, limit, last)
    return Replay(_items(channel, rows), last, truncated)


#: a plain message (kind ``message``, no data: no mentions, reply, edit, recall or
#: attachments) is encoded by the query itself (:func:`sync_replay`)
_PLAIN = "kind IS NULL AND data IS NULL"
#: its frame's JSON object, key for key :func:`chatd.wire.message_dict` (room) and
#: ``_dm_dict`` (DM; ``to`` is the other user, ?4 and ?5 the channel's users); the
#: string escaping is orjson's (:func:`encodes_like_orjson` checks it at start)
_ROOM_JSON = (
    "json_object('type','message','room',?1,'seq',seq,'from',sender,'name',name,"
    "'text',text,'ts',ts,'id',client_id)"
)
_DM_JSON = (
    "json_object('type','dm','from',sender,'name',name,"
    "'to',CASE WHEN sender = ?4 THEN ?5 ELSE ?4 END,'text',text,'ts',ts,'id',client_id,'seq',seq)"
)
#: (a text with a NUL is read as a Message: SQLite's length() stops at the NUL, and
#: the reply's size budget counts characters)
_ENCODED = f"{_PLAIN} AND instr(text, char(0)) = 0"
_ROOM_SYNC = f"seq, CASE WHEN {_ENCODED} THEN {_ROOM_JSON} END, length(text)"
_DM_SYNC = f"seq, CASE WHEN {_ENCODED} THEN {_DM_JSON} END, length(text)"

#: a string with every character JSON escapes and some it does not
_PROBE_TEXT = "".join(map(chr, range(0x20))) + '"\\/\x7f\u00e9\u2028\U0001f600'


def encodes_like_orjson(conn: sqlite3.Connection) -> bool:
    """Whether this SQLite's ``json_object`` writes strings, NULL and integers byte for
    byte as orjson (chatd.wire's encoder) does; False also without JSON functions."""
    try:
        got = conn.execute(
            "SELECT json_object('t', ?, 'n', NULL, 'i', ?)", (_PROBE_TEXT, -(2**62))
        ).fetchone()[0]
    except sqlite3.Error:
        return False
    return got == orjson.dumps({"t": _PROBE_TEXT, "n": None, "i": -(2**62)}).decode()


def sync_replay(conn: sqlite3.Connection, channel: str, since, limit: int, last: int):
    """:meth:`IConversationStore.sync_replay` given the channel's newest seq *last*:
    plain messages as the ``str`` of their JSON, built by the query (one column: each
    column Python reads costs ~0.3 us a row); the other items read as
    :class:`Message` with one more query, of the range they are in."""
    if since is None:
        return SyncReplay([], last, False, 0)
    users = dm_users(channel)
    if users is None:
        rows, truncated = _newest(conn, _ROOM_SYNC, channel, since, limit, last)
    else:
        rows, truncated = _newest(conn, _DM_SYNC, channel, since, limit, last, *users)
    items = [encoded for _seq, encoded, _chars in rows]
    others = [i for i, encoded in enumerate(items) if encoded is None]
    chars = sum(chars for _seq, encoded, chars in rows if encoded is not None)
    if others:
        found = {
            m.seq: m
            for m in _items(
                channel,
                conn.execute(
                    f"SELECT {_ITEM_COLUMNS} FROM messages WHERE channel = ? AND seq >= ? "
                    f"AND seq <= ? AND NOT ({_ENCODED})",
                    (channel, rows[others[0]][0], rows[others[-1]][0]),
                ),
            )
        }
        for i in others:
            items[i] = m = found[rows[i][0]]
            chars += len(m.text)
    return SyncReplay(items, last, truncated, chars)


def history(conn: sqlite3.Connection, channel: str, before, limit: int) -> Page:
    """:meth:`IHistoryStore.history`: up to *limit* messages with ``seq < before``."""
    if before is None:
        rows = conn.execute(
            f"SELECT {_ITEM_COLUMNS} FROM messages WHERE channel = ? ORDER BY seq DESC LIMIT ?",
            (channel, max(limit, 0) + 1),
        ).fetchall()
    else:
        rows = conn.execute(
            f"SELECT {_ITEM_COLUMNS} FROM messages "
            "WHERE channel = ? AND seq < ? ORDER BY seq DESC LIMIT ?",
            (channel, before, max(limit, 0) + 1),
        ).fetchall()
    more = len(rows) > limit
    return Page(_items(channel, reversed(rows[:limit])), more)


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
    """Delete the channel's items with seq <= *upto* (and their mentions and the
    reactions on them); returns how many items."""
    conn.execute("DELETE FROM mentions WHERE channel = ? AND seq <= ?", (channel, upto))
    conn.execute("DELETE FROM reactions WHERE channel = ? AND target <= ?", (channel, upto))
    conn.execute("DELETE FROM edits WHERE channel = ? AND target <= ?", (channel, upto))
    return conn.execute(
        "DELETE FROM messages WHERE channel = ? AND seq <= ?", (channel, upto)
    ).rowcount


def oldest_client_ids(conn: sqlite3.Connection, n: int) -> list[tuple[int, int]]:
    """``(rowid, ts)`` of the *n* oldest exactly-once records (insertion order)."""
    return conn.execute("SELECT rowid, ts FROM client_ids ORDER BY rowid LIMIT ?", (n,)).fetchall()


def delete_client_ids(conn: sqlite3.Connection, upto: int) -> int:
    """Delete the exactly-once records with rowid <= *upto*; returns how many."""
    return conn.execute("DELETE FROM client_ids WHERE rowid <= ?", (upto,)).rowcount


# -- conversations ---------------------------------------------------------------


def item(conn: sqlite3.Connection, channel: str, seq: int) -> Message | None:
    """The stored item *seq* of *channel* (current state), or None."""
    rows = conn.execute(
        f"SELECT {_ITEM_COLUMNS} FROM messages WHERE channel = ? AND seq = ?", (channel, seq)
    ).fetchall()
    return _items(channel, rows)[0] if rows else None


def items(conn: sqlite3.Connection, channel: str, seqs) -> dict[int, Message]:
    """``{seq: item}`` of the stored items of *channel* among *seqs*."""
    out = {}
    for seq in seqs:
        m = item(conn, channel, seq)
        if m is not None:
            out[seq] = m
    return out


def update_item(conn: sqlite3.Connection, channel: str, seq: int, text: str, data) -> None:
    """Set the stored text and data of item *seq* (an edit or a recall of it)."""
    conn.execute(
        "UPDATE messages SET text = ?, data = ? WHERE channel = ? AND seq = ?",
        (text, _json(data), channel, seq),
    )


def add_edit(conn: sqlite3.Connection, channel: str, target: int, seq: int) -> None:
    """Record that item *seq* is an edit of message *target*."""
    conn.execute(
        "INSERT INTO edits (channel, target, seq) VALUES (?, ?, ?)", (channel, target, seq)
    )


def blank_edits(conn: sqlite3.Connection, channel: str, target: int) -> None:
    """Remove the text of the ``edited`` items of message *target*."""
    conn.execute(
        "UPDATE messages SET text = '' WHERE channel = ? AND seq IN "
        "(SELECT seq FROM edits WHERE channel = ? AND target = ?)",
        (channel, channel, target),
    )


def ord_at(conn: sqlite3.Connection, channel: str, seq: int) -> tuple[int, int] | None:
    """``(seq, ord)`` of the item *seq*, or of the oldest stored item after it when it
    was pruned (None: nothing at or after *seq* is stored)."""
    return conn.execute(
        "SELECT seq, COALESCE(ord, seq) FROM messages WHERE channel = ? AND seq >= ? "
        "ORDER BY seq LIMIT 1",
        (channel, seq),
    ).fetchone()


_MEMBER = "channel, user, role, state, peer, read_seq, muted, since_seq"


def _member(row) -> Member:
    channel, user, role, state, peer, read_seq, muted, since_seq = row
    return Member(channel, user, role, state, peer, read_seq, bool(muted), since_seq)


def member(conn: sqlite3.Connection, channel: str, user: str) -> tuple[Member, int] | None:
    """``(row, read_ord)`` of *user* in *channel*, or None."""
    row = conn.execute(
        f"SELECT {_MEMBER}, read_ord FROM members WHERE channel = ? AND user = ?",
        (channel, user),
    ).fetchone()
    return None if row is None else (_member(row[:-1]), row[-1])


def read_seq(conn: sqlite3.Connection, channel: str, user: str) -> int | None:
    """*user*'s read marker in *channel*, or None without a row."""
    row = conn.execute(
        "SELECT read_seq FROM members WHERE channel = ? AND user = ?", (channel, user)
    ).fetchone()
    return None if row is None else row[0]


def _insert_member(conn: sqlite3.Connection, verb: str, m: Member, read_ord: int) -> None:
    conn.execute(
        f"{verb} INTO members ({_MEMBER}, read_ord) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            m.channel,
            m.user,
            m.role,
            m.state,
            m.peer,
            m.read_seq,
            int(m.muted),
            m.since_seq,
            read_ord,
        ),
    )


def write_member(conn: sqlite3.Connection, m: Member, read_ord: int) -> None:
    """Insert or replace the member row *m* with its marker's ordinal."""
    _insert_member(conn, "INSERT OR REPLACE", m, read_ord)


def add_member_if_missing(conn: sqlite3.Connection, m: Member, read_ord: int) -> None:
    """Insert the member row *m* (its marker's ordinal *read_ord*) unless the user has a row."""
    _insert_member(conn, "INSERT OR IGNORE", m, read_ord)


def move_marker(conn: sqlite3.Connection, channel: str, user: str, seq: int, ord_: int) -> None:
    """Move *user*'s marker to *seq* (ordinal *ord_*) if that is forward."""
    conn.execute(
        "UPDATE members SET read_seq = ?, read_ord = ? "
        "WHERE channel = ? AND user = ? AND read_seq < ?",
        (seq, ord_, channel, user, seq),
    )


def set_muted(conn: sqlite3.Connection, channel: str, user: str, muted: bool) -> bool:
    """Set the row's muted flag; True when there is a row."""
    cur = conn.execute(
        "UPDATE members SET muted = ? WHERE channel = ? AND user = ?",
        (int(bool(muted)), channel, user),
    )
    return cur.rowcount > 0


def members(conn: sqlite3.Connection, channel: str, after, limit: int) -> tuple[list[Member], bool]:
    """A page of rows in state member with user > *after*, ascending, and whether more."""
    rows = conn.execute(
        f"SELECT {_MEMBER} FROM members WHERE channel = ? AND user > ? AND state = 'member' "
        "ORDER BY user LIMIT ?",
        (channel, "" if after is None else after, max(limit, 0) + 1),
    ).fetchall()
    return [_member(r) for r in rows[:limit]], len(rows) > limit


def member_count(conn: sqlite3.Connection, channel: str, up_to: int | None = None) -> int:
    """Rows of *channel* in state member (counted up to *up_to* only, if given)."""
    if up_to is not None:
        return conn.execute(
            "SELECT count(*) FROM (SELECT 1 FROM members WHERE channel = ? "
            "AND state = 'member' LIMIT ?)",
            (channel, up_to),
        ).fetchone()[0]
    return conn.execute(
        "SELECT count(*) FROM members WHERE channel = ? AND state = 'member'", (channel,)
    ).fetchone()[0]


def unread_mentions(conn: sqlite3.Connection, channel: str, user: str, read_seq: int) -> int:
    """Messages after *read_seq* by others that mention *user* or ``@all``."""
    return conn.execute(
        "SELECT count(*) FROM mentions WHERE channel = ? AND user IN (?, '@all') "
        "AND seq > ? AND sender != ?",
        (channel, user, read_seq, user),
    ).fetchone()[0]


def readers(conn: sqlite3.Connection, channel: str, seq: int, limit: int):
    """``(count, first limit users)`` of members whose marker reached *seq*."""
    count = conn.execute(
        "SELECT count(*) FROM members WHERE channel = ? AND state = 'member' AND read_seq >= ?",
        (channel, seq),
    ).fetchone()[0]
    users = conn.execute(
        "SELECT user FROM members WHERE channel = ? AND state = 'member' AND read_seq >= ? "
        "ORDER BY user LIMIT ?",
        (channel, seq, max(limit, 0)),
    ).fetchall()
    return count, [u for (u,) in users]


def has_row(conn: sqlite3.Connection, user: str) -> bool:
    """True when *user* was added or has a member row."""
    if conn.execute("SELECT 1 FROM users WHERE user = ?", (user,)).fetchone():
        return True
    return (
        conn.execute("SELECT 1 FROM members WHERE user = ? LIMIT 1", (user,)).fetchone() is not None
    )


def add_user(conn: sqlite3.Connection, user: str, name: str, ts: int) -> None:
    """Record *user* (idempotent: the first record stays)."""
    conn.execute("INSERT OR IGNORE INTO users (user, name, ts) VALUES (?, ?, ?)", (user, name, ts))


def room(conn: sqlite3.Connection, name: str) -> Room | None:
    """The room row, or None."""
    row = conn.execute(
        "SELECT room, kind, title, topic, avatar, created_by, created_ts FROM rooms WHERE room = ?",
        (name,),
    ).fetchone()
    return None if row is None else Room(*row)


def write_room(conn: sqlite3.Connection, r: Room) -> None:
    """Insert or replace the room row."""
    conn.execute(
        "INSERT OR REPLACE INTO rooms (room, kind, title, topic, avatar, created_by, created_ts) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        (r.room, r.kind, r.title, r.topic, r.avatar, r.created_by, r.created_ts),
    )


def add_mentions(conn: sqlite3.Connection, m: Message, users) -> None:
    """Record that message *m* mentions *users*."""
    conn.executemany(
        "INSERT OR IGNORE INTO mentions (channel, user, seq, sender) VALUES (?, ?, ?, ?)",
        [(m.channel, u, m.seq, m.sender) for u in users],
    )


def delete_mentions(conn: sqlite3.Connection, channel: str, seq: int, users) -> None:
    """Forget the mentions of message *seq* (it was recalled)."""
    conn.executemany(
        "DELETE FROM mentions WHERE channel = ? AND user = ? AND seq = ?",
        [(channel, u, seq) for u in users],
    )


def toggle_reaction(
    conn: sqlite3.Connection, channel: str, target: int, emoji: str, user: str
) -> bool:
    """Toggle *user*'s *emoji* on message *target*; True when it is on now."""
    key = (channel, target, emoji, user)
    cur = conn.execute(
        "DELETE FROM reactions WHERE channel = ? AND target = ? AND emoji = ? AND user = ?", key
    )
    if cur.rowcount:
        return False
    conn.execute("INSERT INTO reactions (channel, target, emoji, user) VALUES (?, ?, ?, ?)", key)
    return True


def reactions(conn: sqlite3.Connection, channel: str, seqs) -> dict[int, dict[str, list[str]]]:
    """``{seq: {emoji: users ascending}}`` of the reactions on those messages."""
    out: dict[int, dict[str, list[str]]] = {}
    for seq in seqs:
        rows = conn.execute(
            "SELECT emoji, user FROM reactions WHERE channel = ? AND target = ? ORDER BY emoji, user",
            (channel, seq),
        ).fetchall()
        for emoji, user in rows:
            out.setdefault(seq, {}).setdefault(emoji, []).append(user)
    return out


#: a user's conversations, most recent activity first (conversations, conversation_page)
_USER_CONVERSATIONS = (
    "FROM members m LEFT JOIN channels c ON c.channel = m.channel "
    "WHERE m.user = ? AND m.state = 'member' "
    "ORDER BY COALESCE(c.last_ts, 0) DESC, m.channel"
)


def conversations(conn: sqlite3.Connection, user: str) -> list[tuple]:
    """``(channel, room kind or None, peer, role, read_seq, muted, last_seq, last_ts)``
    of *user*'s rows in state member, most recent activity first."""
    return conn.execute(
        "SELECT m.channel, (SELECT r.kind FROM rooms r WHERE r.room = m.channel), m.peer, "
        "m.role, m.read_seq, m.muted, COALESCE(c.last_seq, 0), COALESCE(c.last_ts, 0) "
        + _USER_CONVERSATIONS,
        (user,),
    ).fetchall()


def conversation_channels(conn: sqlite3.Connection, user: str, start: int, n: int) -> list[str]:
    """The channels of *user*'s conversations ``start`` to ``start + n`` in the order
    of :func:`conversations` (sorted and paged by the query: only the page is read)."""
    rows = conn.execute(
        "SELECT m.channel " + _USER_CONVERSATIONS + " LIMIT ? OFFSET ?", (user, n, start)
    ).fetchall()
    return [channel for (channel,) in rows]


#: channels per summaries query (bound parameters of one IN list)
SUMMARIES_CHUNK = 500


def summaries(conn: sqlite3.Connection, user: str, channels: list[str]) -> dict[str, tuple]:
    """``{channel: row}`` of *user*'s conversations among *channels* (rows in state
    member), one query per SUMMARIES_CHUNK channels: ``(room kind, peer, role, read_seq,
    muted, last_seq, last_ts, unread, mentions, peer_read, title)`` and the newest
    message's ``_ITEM_COLUMNS`` (NULL when there is none)."""
    out = {}
    for start in range(0, len(channels), SUMMARIES_CHUNK):
        chunk = channels[start : start + SUMMARIES_CHUNK]
        rows = conn.execute(
            "SELECT m.channel, r.kind, m.peer, m.role, m.read_seq, m.muted, "
            "COALESCE(c.last_seq, 0), COALESCE(c.last_ts, 0), "
            "COALESCE(c.msg_count, c.last_seq, 0) - m.read_ord, "
            "(SELECT count(*) FROM mentions x WHERE x.channel = m.channel "
            "  AND x.user IN (m.user, '@all') AND x.seq > m.read_seq AND x.sender != m.user), "
            "(SELECT p.read_seq FROM members p WHERE p.channel = m.channel AND p.user = m.peer), "
            "r.title, l.seq, l.sender, l.name, l.text, l.ts, l.client_id, l.kind, l.data "
            "FROM members m "
            "LEFT JOIN channels c ON c.channel = m.channel "
            "LEFT JOIN rooms r ON r.room = m.channel "
            "LEFT JOIN messages l ON l.channel = m.channel "
            "  AND l.seq = COALESCE(c.last_msg, c.last_seq, 0) "
            f"WHERE m.channel IN ({','.join('?' * len(chunk))}) AND m.user = ? "
            "AND m.state = 'member'",
            (*chunk, user),
        ).fetchall()
        for row in rows:
            out[row[0]] = row[1:]
    return out


def last_message(channel: str, columns: tuple) -> Message | None:
    """The newest message of a summaries row's ``_ITEM_COLUMNS`` (None: no row, or not a
    message)."""
    if columns[0] is None or columns[6] is not None:
        return None
    return _items(channel, [columns])[0]


def save_cursor(conn: sqlite3.Connection, user: str, cursor: str, snapshot: bytes, ts: int) -> None:
    """Keep *snapshot* under (*user*, *cursor*), replacing one saved before."""
    conn.execute("DELETE FROM cursors WHERE user = ? AND cursor = ?", (user, cursor))
    conn.execute(
        "INSERT INTO cursors (user, cursor, snapshot, ts) VALUES (?, ?, ?, ?)",
        (user, cursor, bytes(snapshot), ts),
    )


def user_cursors(conn: sqlite3.Connection, user: str) -> list[tuple[str, int]]:
    """``(cursor, ts)`` of *user*'s cursors, oldest first."""
    return conn.execute(
        "SELECT cursor, ts FROM cursors WHERE user = ? ORDER BY ts, rowid", (user,)
    ).fetchall()


def delete_cursors(conn: sqlite3.Connection, user: str, cursors) -> None:
    """Delete those cursors of *user*."""
    conn.executemany(
        "DELETE FROM cursors WHERE user = ? AND cursor = ?", [(user, c) for c in cursors]
    )


def load_cursor(conn: sqlite3.Connection, user: str, cursor: str) -> bytes | None:
    """The snapshot saved under (*user*, *cursor*), or None."""
    row = conn.execute(
        "SELECT snapshot FROM cursors WHERE user = ? AND cursor = ?", (user, cursor)
    ).fetchone()
    return None if row is None else bytes(row[0])


def delete_old_cursors(conn: sqlite3.Connection, cutoff: int) -> int:
    """Delete every cursor saved before *cutoff* (ms); returns how many."""
    return conn.execute("DELETE FROM cursors WHERE ts < ?", (cutoff,)).rowcount


# offline push (chatd.pushrules, IPushStore)


def push_quotas(conn: sqlite3.Connection, user: str) -> dict[str, int]:
    """*user*'s template -> messages left (templates with none left included)."""
    rows = conn.execute("SELECT template, count FROM push_quota WHERE user = ?", (user,))
    return dict(rows.fetchall())


def push_rooms(conn: sqlite3.Connection, user: str) -> list[str]:
    """The rooms *user* is notified for, ascending."""
    rows = conn.execute("SELECT channel FROM push_rooms WHERE user = ? ORDER BY channel", (user,))
    return [r[0] for r in rows.fetchall()]


def write_push_state(conn, user: str, before: dict, templates: dict, rooms_before, rooms, ts):
    """Write what changed between the stored subscriptions and the new ones."""
    for template, count in templates.items():
        if before.get(template) != count:
            conn.execute(
                "INSERT OR REPLACE INTO push_quota (user, template, count, ts) VALUES (?, ?, ?, ?)",
                (user, template, count, ts),
            )
    gone = set(rooms_before) - set(rooms)
    conn.executemany(
        "DELETE FROM push_rooms WHERE user = ? AND channel = ?", [(user, r) for r in gone]
    )
    conn.executemany(
        "INSERT OR IGNORE INTO push_rooms (user, channel) VALUES (?, ?)",
        [(user, r) for r in set(rooms) - set(rooms_before)],
    )


def push_count(conn: sqlite3.Connection, user: str, template: str) -> int:
    row = conn.execute(
        "SELECT count FROM push_quota WHERE user = ? AND template = ?", (user, template)
    ).fetchone()
    return 0 if row is None else row[0]


def take_push_quota(conn: sqlite3.Connection, user: str, template: str) -> None:
    conn.execute(
        "UPDATE push_quota SET count = count - 1 WHERE user = ? AND template = ? AND count > 0",
        (user, template),
    )


def drop_push_quota(conn: sqlite3.Connection, user: str, template: str) -> None:
    conn.execute("DELETE FROM push_quota WHERE user = ? AND template = ?", (user, template))


def push_sent(conn: sqlite3.Connection, user: str, channel: str) -> int | None:
    """When *channel* last notified *user* (ms), or None."""
    row = conn.execute(
        "SELECT ts FROM push_sent WHERE user = ? AND channel = ?", (user, channel)
    ).fetchone()
    return None if row is None else row[0]


def set_push_sent(conn: sqlite3.Connection, user: str, channel: str, ts: int) -> None:
    conn.execute(
        "INSERT OR REPLACE INTO push_sent (user, channel, ts) VALUES (?, ?, ?)", (user, channel, ts)
    )


def push_watchers(conn: sqlite3.Connection, channel: str, limit: int) -> list[str]:
    """Up to *limit* users notified for every message of *channel*, ascending."""
    rows = conn.execute(
        "SELECT user FROM push_rooms WHERE channel = ? ORDER BY user LIMIT ?",
        (channel, max(limit, 0)),
    )
    return [r[0] for r in rows.fetchall()]


# moderation (chatd.modrules, IModerationStore)


def set_sanction(conn: sqlite3.Connection, user, kind, scope, until_ms) -> None:
    """Set (until_ms > 0) or remove one sanction of *user*."""
    if until_ms:
        conn.execute(
            "INSERT OR REPLACE INTO sanctions (user, kind, scope, until_ms) VALUES (?, ?, ?, ?)",
            (user, kind, scope, int(until_ms)),
        )
    else:
        conn.execute(
            "DELETE FROM sanctions WHERE user = ? AND kind = ? AND scope = ?", (user, kind, scope)
        )


def sanctions(conn: sqlite3.Connection, user: str) -> dict:
    """``{(kind, scope): until_ms}`` of *user*."""
    rows = conn.execute("SELECT kind, scope, until_ms FROM sanctions WHERE user = ?", (user,))
    return {(kind, scope): until for kind, scope, until in rows}


def _entry(id_, state, data) -> dict:
    return {**json.loads(data), "id": id_, "state": state}


def add_report(conn: sqlite3.Connection, key: str, entry: dict) -> tuple[dict, bool]:
    """Insert a queue entry unless *key* is there: ``(entry, duplicate)``."""
    row = conn.execute("SELECT id, state, data FROM reports WHERE key = ?", (key,)).fetchone()
    if row is not None:
        return _entry(*row), True
    data = json.dumps(entry, ensure_ascii=False, separators=(",", ":"))
    cursor = conn.execute(
        "INSERT INTO reports (key, state, data) VALUES (?, 'open', ?)", (key, data)
    )
    return _entry(cursor.lastrowid, "open", data), False


def reports(conn: sqlite3.Connection, state, before, limit) -> list[dict]:
    """Queue entries newest first (see IModerationStore.reports)."""
    where, args = ["id < ?"], [before if before is not None else 1 << 62]
    if state is not None:
        where.append("state = ?")
        args.append(state)
    rows = conn.execute(
        f"SELECT id, state, data FROM reports WHERE {' AND '.join(where)} ORDER BY id DESC LIMIT ?",
        (*args, max(int(limit), 0)),
    )
    return [_entry(*row) for row in rows]


def report(conn: sqlite3.Connection, id_: int) -> dict | None:
    row = conn.execute("SELECT id, state, data FROM reports WHERE id = ?", (id_,)).fetchone()
    return None if row is None else _entry(*row)


def close_report(conn: sqlite3.Connection, id_: int, resolution: dict) -> dict | None:
    """Close the open entry *id_* (None: no such open entry)."""
    found = report(conn, id_)
    if found is None or found["state"] != "open":
        return None
    data = {k: v for k, v in found.items() if k not in ("id", "state")}
    data["resolution"] = resolution
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    conn.execute("UPDATE reports SET state = 'closed', data = ? WHERE id = ?", (text, id_))
    return _entry(id_, "closed", text)


def add_audit(conn: sqlite3.Connection, entry: dict) -> int:
    data = json.dumps(entry, ensure_ascii=False, separators=(",", ":"))
    return conn.execute("INSERT INTO audit (data) VALUES (?)", (data,)).lastrowid


def audit_log(conn: sqlite3.Connection, before, limit) -> list[dict]:
    rows = conn.execute(
        "SELECT id, data FROM audit WHERE id < ? ORDER BY id DESC LIMIT ?",
        (before if before is not None else 1 << 62, max(int(limit), 0)),
    )
    return [{**json.loads(data), "id": id_} for id_, data in rows]


#: the table of each moderation log (chatd.modrules.QUEUE, AUDIT)
_MODERATION_TABLES = {"queue": "reports", "audit": "audit"}


def moderation_oldest(conn: sqlite3.Connection, log: str, after: int, limit: int) -> list[dict]:
    """Entries of *log* with id above *after*, oldest first (the retention sweep)."""
    if log == "audit":
        rows = conn.execute(
            "SELECT id, data FROM audit WHERE id > ? ORDER BY id LIMIT ?",
            (int(after), max(int(limit), 0)),
        )
        return [{**json.loads(data), "id": id_} for id_, data in rows]
    rows = conn.execute(
        "SELECT id, state, data FROM reports WHERE id > ? ORDER BY id LIMIT ?",
        (int(after), max(int(limit), 0)),
    )
    return [_entry(*row) for row in rows]


def delete_moderation(conn: sqlite3.Connection, log: str, ids) -> int:
    """Delete entries *ids* of *log* (a queue entry's row holds its key): how many went."""
    table = _MODERATION_TABLES[log]
    ids = [int(i) for i in ids]
    if not ids:
        return 0
    marks = ",".join("?" * len(ids))
    return conn.execute(f"DELETE FROM {table} WHERE id IN ({marks})", ids).rowcount


# WeChat's asynchronous media checks (chatd.contentcheck, IMediaCheckStore)


def add_media_check(conn: sqlite3.Connection, trace_id: str, record: dict) -> None:
    data = json.dumps(record, ensure_ascii=False, separators=(",", ":"))
    conn.execute(
        "INSERT OR REPLACE INTO media_checks (trace_id, ts, data) VALUES (?, ?, ?)",
        (trace_id, int(record["ts"]), data),
    )


def take_media_check(conn: sqlite3.Connection, trace_id: str) -> dict | None:
    """The record of *trace_id*, deleted (only the first taker gets it), or None."""
    row = conn.execute("SELECT data FROM media_checks WHERE trace_id = ?", (trace_id,)).fetchone()
    if row is None:
        return None
    conn.execute("DELETE FROM media_checks WHERE trace_id = ?", (trace_id,))
    return json.loads(row[0])


def prune_media_checks(conn: sqlite3.Connection, before_ms: int) -> int:
    return conn.execute("DELETE FROM media_checks WHERE ts < ?", (int(before_ms),)).rowcount
