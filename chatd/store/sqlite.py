"""The embedded, durable history store: one SQLite file, one writer thread.

:class:`SQLiteStore` is the :class:`~chatd.store.IHistoryStore` and
:class:`~chatd.store.IConversationStore` that chatd runs on by default. It is made of three parts, each with its own design notes:

:mod:`chatd.store.writer`
    the single writer thread that owns the connection, its job queue, group
    commit (consecutive appends of a drain in ONE transaction), reads handed
    back as soon as each has run, cancelled reads skipped.
:mod:`chatd.store.sql`
    the SQL: schema, migrations (``user_version``/``application_id``),
    appends, replay, history, deletes; plain functions of a connection.
:mod:`chatd.store.retention`
    what pruning deletes, as pure functions of ``now`` and what is stored.

This module composes them and adds what is about this store as a whole: its
life cycle (``start``/``stop``), the transactions, the seq cache, the
counters and when pruning runs. All SQL runs in the writer thread; the
reactor thread only submits jobs and gets Deferreds back.

Appends and failed commits
    The consecutive writes of one drain (appends of every item kind with their
    side effects, ``mark_read``, ``add_user``, ``set_muted``, ``save_cursor``) are
    committed in one ``BEGIN IMMEDIATE`` ... ``COMMIT``, in submission order; ``commits``, ``appended`` and ``batch_sizes``
    count what happened (``batch_sizes`` counts the appends of each batch). Each
    append (and each cursor save) runs in its own savepoint: a row SQLite cannot take
    (a lone surrogate, a wrong type) fails that append alone, not the other
    senders' messages of the batch.

    Exactly-once: an item with a client id is a duplicate when ``client_ids``
    holds ``(sender, client_id)`` already. A plain room message (the hot path)
    inserts its row, then claims the id (``INSERT ... ON CONFLICT DO NOTHING``):
    when the claim finds the id taken, the tentative row is deleted (its seq is
    not used) and the original is returned. Every other item looks the id up
    before it writes anything.

    If the commit (or any statement of the batch) fails -- disk full, the file
    locked by another process, an I/O error -- the transaction is rolled back,
    every append of that batch fails with :class:`StoreUnavailable`, the cached
    per-channel seqs are forgotten, ``commit_error`` says why (``/readyz``
    reports it until a commit succeeds again), and the store keeps serving
    later jobs. The seqs of a failed batch were never acknowledged, so they
    are handed out again; a committed seq is never reused.

Durability: ``synchronous``
    The file is in WAL mode. With ``synchronous=NORMAL`` a commit is a
    ``write()`` into the WAL: it survives the chatd process being killed
    (SIGKILL, OOM) because the data is in the OS page cache, but the last
    transactions can be lost if the machine loses power or the kernel crashes.
    With ``synchronous=FULL`` (the default) the WAL is fsynced at every commit,
    so an acknowledged message also survives power loss. The protocol promises
    that an ``ack`` is sent only once the message is committed, and group
    commit makes FULL cheap (one fsync per batch, not per message; see
    ``bench/history_store_bench.py``), so FULL is the default. Operators who
    accept losing the last moments on a power cut can pass ``NORMAL``.

Reads
    ``replay``, ``history`` and the conversation reads are the writer's read jobs: cancellable, and
    handed back one by one (``reads``/``cancelled_reads`` count them).
    Callers bound the size of each read (chatd.replay reads join replays in
    pages of at most ``replay.PAGE_MESSAGES`` messages). ``sync_replay`` reads a
    batch of conversations in one job and has the query build plain messages'
    JSON (``sql.sync_replay``; ``encodes_json`` says whether this SQLite writes
    it as orjson does, checked at start); ``conversation_page`` sorts and pages in
    its query.

Seq cache
    The counters (newest seq, message count, newest message, newest ts) of recently
    used channels are cached in an LRU of at most
    ``seq_cache_max`` channels (default 10,000, ~200 bytes each); a miss reads
    the ``channels`` table. A lookup of a channel that has no message adds
    nothing, so lookups of random channels (``dm_history`` with random users,
    joins of new rooms) cannot grow the process.

Pruning
    ``prune()`` applies the :mod:`~chatd.store.retention` rules in the writer
    thread, in small transactions of at most ``prune_chunk`` rows; when other
    jobs are waiting it puts its remainder at the back of the queue, so sends
    are never held up by more than one chunk. ``start()`` schedules it every
    ``prune_interval`` seconds with a ``LoopingCall`` on the injected reactor.
"""

from __future__ import annotations

import sqlite3
from collections import Counter, OrderedDict
from dataclasses import replace

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from zope.interface import implementer

from chatd import pushrules
from chatd.store import (
    Appended,
    Conversation,
    IConversationStore,
    IHistoryStore,
    IMediaCheckStore,
    IModerationStore,
    IPushStore,
    Message,
    ReadMarker,
    SchemaTooNew,
    StoreUnavailable,
    dm_users,
    is_dm,
    items,
    sql,
    sync_replay_of,
)
from chatd.store.retention import Retention
from chatd.store.sql import APPLICATION_ID, MIGRATIONS, SCHEMA_VERSION  # noqa: F401 (API)
from chatd.store.writer import Requeue, WriterThread

#: jobs that only read: cancellable, and delivered as soon as they have run
_READS = frozenset(
    (
        "replay",
        "sync_replay",
        "history",
        "read",
        "member",
        "conversations",
        "summaries",
        "conversation_page",
    )
)

#: batched jobs that write at most one statement: no savepoint of their own
_ONE_STATEMENT = frozenset(
    ("mark_read", "read_marker", "add_user", "set_muted", "drop_push_quota", "set_sanction")
)


def _needs_savepoint(kind, args) -> bool:
    """Whether a batched job needs its own savepoint, so a row error undoes only it.

    Not a job that writes one statement (atomic by itself), and not a plain room
    message (kind "message", no data, not a DM: the append of chatd 0.1, the hot
    path): its first write, the ``messages`` row, binds every value the job brings,
    so a row error (a lone surrogate, a wrong type) is raised before anything is
    written, and the later statements (the client id, the sender's marker) bind
    only values that row took.
    """
    if kind in _ONE_STATEMENT:
        return False
    if kind == "append":
        channel, kind_, data = args[0], args[6], args[7]
        return not (kind_ == "message" and data is None and not is_dm(channel))
    return True


def _job(query):
    """A batched job that is one call ``query(conn, *args)`` of :mod:`chatd.store.sql`."""
    return lambda store, args, _touched: query(store._conn, *args)


def _push_state(conn, user) -> pushrules.PushState:
    templates = {t: n for t, n in sql.push_quotas(conn, user).items() if n > 0}
    return pushrules.PushState(templates, tuple(sql.push_rooms(conn, user)))


#: the counters of a channel that never had an item
_NO_ITEMS = (0, 0, 0, 0)


@implementer(IHistoryStore, IConversationStore, IPushStore, IModerationStore, IMediaCheckStore)
class SQLiteStore:
    """A durable :class:`IHistoryStore` in one SQLite file (see the module docstring).

    ``path`` may be ``":memory:"``: everything works, nothing is durable.
    ``history_max`` / ``history_days`` bound what is kept per channel (None:
    no bound); ``dedupe_days`` is how long exactly-once records are kept.
    ``busy_timeout_ms`` is how long a statement waits for a lock held by
    another connection before the batch fails with :class:`StoreUnavailable`.
    ``seq_cache_max`` bounds the per-channel seq cache (see the module docstring).
    """

    durable = True
    log = Logger()

    def __init__(
        self,
        path,
        history_max: int | None = 10000,
        history_days: float | None = None,
        reactor=None,
        batch_max: int = 1000,
        synchronous: str = "FULL",
        dedupe_days: float | None = 30,
        prune_interval: float | None = 60.0,
        prune_chunk: int = 500,
        busy_timeout_ms: int = 2000,
        seq_cache_max: int = 10_000,
    ):
        if reactor is None:
            from twisted.internet import reactor
        synchronous = synchronous.upper()
        if synchronous not in sql.SYNCHRONOUS:
            raise ValueError(f"synchronous must be one of {sql.SYNCHRONOUS}, not {synchronous!r}")
        if batch_max < 1 or prune_chunk < 1 or seq_cache_max < 1:
            raise ValueError("batch_max, prune_chunk and seq_cache_max must be >= 1")
        self.path = str(path)
        self.durable = self.path not in (":memory:", "")
        self.retention = Retention(history_max, history_days, dedupe_days, prune_chunk)
        self.batch_max = batch_max
        self.synchronous = synchronous
        self.prune_interval = prune_interval
        self.busy_timeout_ms = busy_timeout_ms
        self._reactor = reactor
        #: the writer thread while there is one (see :mod:`chatd.store.writer`)
        self._thread: WriterThread | None = None
        self._conn: sqlite3.Connection | None = None  # writer thread only
        self.seq_cache_max = seq_cache_max
        #: channel -> newest committed seq, least recently used first (writer thread only)
        self._last_seq: OrderedDict[str, int] = OrderedDict()
        self._pruner: LoopingCall | None = None
        self._stop_waiters: list[Deferred] = []
        self._state = "new"  # new -> starting -> running -> stopping -> stopped
        #: Committed append transactions.
        self.commits = 0
        #: Append transactions that failed (their appends got StoreUnavailable).
        self.failed_commits = 0
        #: Why the latest append transaction failed; None once one commits (``/readyz``).
        self.commit_error: str | None = None
        #: Messages committed (duplicates are not counted).
        self.appended = 0
        #: ``{batch size: number of committed transactions of that size}``;
        #: a batch's size counts every append in it, duplicates included.
        self.batch_sizes: Counter[int] = Counter()
        #: Rows deleted by pruning: messages and exactly-once records.
        self.pruned_messages = 0
        self.pruned_client_ids = 0
        #: Sync cursors deleted by pruning (older than the retention's cursor_days).
        self.pruned_cursors = 0
        #: whether ``sync_replay`` builds plain messages' JSON in the query (set at
        #: start: this SQLite's ``json_object`` writes what orjson writes)
        self.encodes_json = False
        # counted by the writer; kept here once it has ended
        self._reads = 0
        self._cancelled_reads = 0

    history_max = property(lambda self: self.retention.history_max)
    history_days = property(lambda self: self.retention.history_days)
    dedupe_days = property(lambda self: self.retention.dedupe_days)
    prune_chunk = property(lambda self: self.retention.chunk)

    @property
    def reads(self) -> int:
        """Reads (replay, history) run."""
        return self._reads if self._thread is None else self._thread.reads

    @property
    def cancelled_reads(self) -> int:
        """Reads skipped because they were cancelled before they ran."""
        return self._cancelled_reads if self._thread is None else self._thread.cancelled_reads

    @property
    def seq_cache_size(self) -> int:
        """Channels in the seq cache (at most ``seq_cache_max``)."""
        return len(self._last_seq)

    # -- reactor-thread API -------------------------------------------------

    def start(self):
        """Open the file, create or migrate the schema, start the writer thread.

        Fails with :class:`SchemaTooNew` for a file of a newer chatd and with
        :class:`StoreUnavailable` if the file cannot be opened.
        """
        if self._state != "new":
            raise RuntimeError(f"SQLiteStore.start() called when {self._state}")
        self._state = "starting"
        self._thread = WriterThread(
            name=f"history store {self.path}",
            thread_name=f"chatd-sqlite-writer:{self.path}",
            reactor=self._reactor,
            batch_max=self.batch_max,
            run=self._run_job,
            commit=self._commit_batch,
            closed_result=self._closed_result,
            error=self._wrap_error,
            finish=self._close_connection,
            batched=frozenset(self._batched),
            reads=_READS,
        )
        d = self._submit("open", ())
        self._thread.start()

        def opened(_):
            if self._state != "starting":  # stop() was called meanwhile
                return None
            self._state = "running"
            if self.prune_interval and self.retention.enabled:
                self._pruner = LoopingCall(self._scheduled_prune)
                self._pruner.clock = self._reactor
                self._pruner.start(self.prune_interval, now=True)
            return None

        def failed(f):
            self._state = "stopped"
            self._join()
            return f

        d.addCallbacks(opened, failed)
        return d

    def stop(self):
        """Stop pruning, commit everything queued, close the file, end the thread.

        Appends made after ``stop()`` fail with :class:`StoreUnavailable`.
        """
        if self._state in ("new", "stopped"):
            self._state = "stopped"
            return succeed(None)
        waiter = Deferred()
        self._stop_waiters.append(waiter)
        if self._state == "stopping":
            return waiter
        self._state = "stopping"
        if self._pruner is not None and self._pruner.running:
            self._pruner.stop()
        self._pruner = None

        def closed(result):
            self._state = "stopped"
            self._join()
            waiters, self._stop_waiters = self._stop_waiters, []
            for w in waiters:
                w.callback(None)

        def close_failed(f):
            self.log.failure("Closing history store {path} failed", f, path=self.path)
            closed(None)

        self._submit("close", ()).addCallbacks(closed, close_failed)
        return waiter

    def append(self, channel, sender, name, client_id, text, ts, kind="message", data=None):
        """Store an item with the channel's next seq and its side effects (see
        :class:`IHistoryStore` and :class:`IConversationStore`)."""
        return self._submit("append", (channel, sender, name, client_id, text, ts, kind, data))

    def replay(self, channel, since, limit):
        """Messages with ``seq > since``, the newest *limit* of them (see the interface)."""
        return self._submit("replay", (channel, since, limit))

    def history(self, channel, before, limit):
        """A page of up to *limit* messages older than *before* (see the interface)."""
        return self._submit("history", (channel, before, limit))

    # -- IConversationStore (see chatd.store) ---------------------------------

    def add_user(self, user, name, ts):
        return self._submit("add_user", (user, name, ts))

    def has_user(self, user):
        return self._submit("read", (sql.has_row, user))

    def room(self, room):
        return self._submit("read", (sql.room, room))

    def member(self, channel, user):
        return self._submit("member", (channel, user))

    def members(self, channel, after, limit):
        return self._submit("read", (sql.members, channel, after, limit))

    def member_count(self, channel):
        return self._submit("read", (sql.member_count, channel))

    def conversations(self, user):
        return self._submit("conversations", (user,))

    def summaries(self, user, channels):
        return self._submit("summaries", (user, list(channels)))

    def conversation_page(self, user, start, limit):
        return self._submit("conversation_page", (user, start, limit))

    def mark_read(self, user, channel, seq):
        return self._submit("mark_read", (user, channel, seq))

    def set_muted(self, user, channel, muted):
        return self._submit("set_muted", (user, channel, muted))

    def read_marker(self, user, channel, seq, count_up_to):
        return self._submit("read_marker", (user, channel, seq, count_up_to))

    def readers(self, channel, seq, limit):
        return self._submit("read", (sql.readers, channel, seq, limit))

    def items(self, channel, seqs):
        return self._submit("read", (sql.items, channel, list(seqs)))

    def reactions(self, channel, seqs):
        return self._submit("read", (sql.reactions, channel, list(seqs)))

    def sync_replay(self, reads, limit):
        return self._submit("sync_replay", (list(reads), limit))

    def save_cursor(self, user, cursor, snapshot, ts):
        return self._submit("save_cursor", (user, cursor, bytes(snapshot), ts))

    def load_cursor(self, user, cursor):
        return self._submit("read", (sql.load_cursor, user, cursor))

    # -- IPushStore (see chatd.store) -------------------------------------------

    def push_subscribe(self, user, add, choose, ts):
        return self._submit("push_subscribe", (user, dict(add), dict(choose), ts))

    def push_state(self, user):
        return self._submit("read", (_push_state, user))

    def claim_push(self, user, channel, template, now_ms, interval_ms):
        return self._submit("claim_push", (user, channel, template, now_ms, interval_ms))

    def drop_push_quota(self, user, template):
        return self._submit("drop_push_quota", (user, template))

    def push_watchers(self, channel, limit):
        return self._submit("read", (sql.push_watchers, channel, limit))

    # -- IModerationStore (see chatd.store) -------------------------------------

    def set_sanction(self, user, kind, scope, until_ms):
        return self._submit("set_sanction", (user, kind, scope, until_ms))

    def sanctions(self, user):
        return self._submit("read", (sql.sanctions, user))

    def add_report(self, key, entry):
        return self._submit("add_report", (key, dict(entry)))

    def reports(self, state, before, limit):
        return self._submit("read", (sql.reports, state, before, limit))

    def report(self, id):
        return self._submit("read", (sql.report, id))

    def close_report(self, id, resolution):
        return self._submit("close_report", (id, dict(resolution)))

    def add_audit(self, entry):
        return self._submit("add_audit", (dict(entry),))

    def audit_log(self, before, limit):
        return self._submit("read", (sql.audit_log, before, limit))

    # -- IMediaCheckStore (see chatd.store) ------------------------------------

    def add_media_check(self, trace_id, record, ttl_ms):
        return self._submit("add_media_check", (trace_id, dict(record)))

    def take_media_check(self, trace_id):
        return self._submit("take_media_check", (trace_id,))

    def prune_media_checks(self, before_ms):
        return self._submit("prune_media_checks", (before_ms,))

    def moderation_oldest(self, log, after, limit):
        return self._submit("read", (sql.moderation_oldest, log, after, limit))

    def delete_moderation(self, log, ids):
        return self._submit("delete_moderation", (log, list(ids)))

    def prune(self, now: float | None = None):
        """Apply the retention rules, in small transactions, in the writer thread.

        *now* is the current time in seconds since the epoch (default: the
        reactor's clock). Fires with ``(messages, client_ids)`` deleted.
        """
        if now is None:
            now = self._reactor.seconds()
        return self._submit("prune", (now, [0, 0, 0], None))

    # -- plumbing -----------------------------------------------------------

    def _scheduled_prune(self):
        d = self.prune()
        d.addErrback(lambda f: self.log.failure("Pruning {path} failed", f, path=self.path))
        return d

    def _submit(self, kind, args):
        if self._state in ("new", "stopping", "stopped") and kind != "close":
            return fail(StoreUnavailable(f"history store {self.path} is not running"))
        return self._thread.submit(kind, args)

    def _join(self):
        if self._thread is not None:
            self._thread.join(5)
            self._reads, self._cancelled_reads = self._thread.reads, self._thread.cancelled_reads
        self._thread = None

    # -- writer thread ------------------------------------------------------

    def _run_job(self, kind, args):
        return getattr(self, "_do_" + kind)(*args)

    def _closed_result(self, kind, args):
        if kind == "prune":
            return (True, tuple(args[1][:2]))
        if kind == "close":
            return (True, None)
        return (False, StoreUnavailable(f"history store {self.path} is closed"))

    def _wrap_error(self, e):
        if isinstance(e, SchemaTooNew | StoreUnavailable):
            return e
        if isinstance(e, sqlite3.Error):
            return StoreUnavailable(f"history store {self.path}: {e}")
        return e

    def _close_connection(self):
        if self._conn is not None:
            try:
                self._conn.close()
            except sqlite3.Error as e:
                self.log.error("Closing {path} failed: {e}", path=self.path, e=e)
            self._conn = None

    def _rollback(self):
        try:
            if self._conn is not None and self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
        except sqlite3.Error as e:
            self.log.error("Rollback on {path} failed: {e}", path=self.path, e=e)

    def _do_open(self):
        self._conn = sql.connect(self.path, self.busy_timeout_ms, self.synchronous)
        self.encodes_json = sql.encodes_like_orjson(self._conn)
        return None

    def _do_close(self):
        try:
            sql.optimize(self._conn)
        except sqlite3.Error as e:
            self.log.warn("PRAGMA optimize on {path} failed: {e}", path=self.path, e=e)
        self._close_connection()
        return None

    def _counters_of(self, channel, touched=None):
        """The channel's ``(last_seq, msg_count, last_msg, last_ts)``: of the open batch
        (*touched*), cached, or committed. A channel without items is not cached (a
        lookup creates no state)."""
        if touched:
            found = touched.get(channel)
            if found is not None:
                return found
        cache = self._last_seq
        found = cache.get(channel)
        if found is not None:
            cache.move_to_end(channel)
            return found
        found = sql.counters(self._conn, channel)
        if found is None:
            return _NO_ITEMS
        self._cache_counters(channel, found)
        return found

    def _seq_of(self, channel, touched=None):
        """The channel's newest committed (or batched) seq; 0 for none."""
        return self._counters_of(channel, touched)[0]

    def _cache_counters(self, channel, found):
        cache = self._last_seq
        cache[channel] = found
        cache.move_to_end(channel)
        if len(cache) > self.seq_cache_max:
            cache.popitem(last=False)

    def _ord_at(self, channel, seq, counters):
        """The message ordinal of a read marker at *seq* (see :mod:`chatd.store.items`)."""
        if seq <= 0:
            return 0
        if seq >= counters[0]:
            return counters[1]
        found = sql.ord_at(self._conn, channel, seq)
        if found is None:
            return counters[1]
        found_seq, found_ord = found
        if found_seq == seq:
            return found_ord
        return items.read_ord_bound(seq, found_seq, found_ord)

    def _append_one(self, args, touched):
        """Store one item inside the open transaction; returns its :class:`Appended`."""
        channel, sender, name, client_id, text, ts, kind, data = args
        conn = self._conn
        # a plain room message claims its client id after its row is inserted (one
        # statement, not a lookup and an insert); any other item looks it up first
        plain = kind == "message" and data is None and not is_dm(channel)
        if client_id is not None and not plain:
            original = sql.find_client_id(conn, sender, client_id)
            if original is not None:
                return Appended(original, True)
        # the batch's own counters first: the cache may have evicted this channel
        # since its last append of the (still uncommitted) batch
        last_seq, count, last_msg, _ = self._counters_of(channel, touched)
        seq = last_seq + 1
        data = None if data is None else dict(data)
        if kind == "message":
            count += 1
            last_msg = seq
        message = Message(channel, seq, sender, name, text, ts, client_id, kind, data)
        after = (seq, count, last_msg, ts)
        if kind == "message":  # no target
            # a plain message (no savepoint): the row first, it binds every value the
            # job brings, so a row error is raised before anything is written (see
            # _needs_savepoint); the id's record binds only values the row took
            sql.insert_message(conn, message, count, record_id=not plain)
            if plain and client_id is not None and not sql.claim_client_id(conn, message):
                sql.delete_item(conn, channel, seq)  # a resend: nothing is stored
                return Appended(sql.find_client_id(conn, sender, client_id), True)
            self._apply_message(message, after)
            self._cache_counters(channel, after)
            touched[channel] = after
            return Appended(message, False)
        target = items.target_of(message)
        if kind == "reaction":
            emoji = (data or {}).get("emoji")
            if target is not None and isinstance(emoji, str):
                on = sql.toggle_reaction(conn, channel, target, emoji, sender)
                message = replace(message, data=items.reaction_data(data, on))
        elif kind == "edited":
            found = None if target is None else sql.item(conn, channel, target)
            if found is not None and found.kind == "message":
                if items.is_recalled(found):
                    message = replace(message, text="")  # a recalled message's edits keep no text
                else:
                    edited = items.edited_data(found.data, ts)
                    sql.update_item(conn, channel, target, message.text, edited)
                    sql.add_edit(conn, channel, target, seq)
        sql.insert_message(conn, message, count)
        if kind == "event":
            self._apply_event(message, after)
        elif kind == "recalled":
            self._apply_recall(message, target)
        self._cache_counters(channel, after)
        touched[channel] = after
        return Appended(message, False)

    def _apply_message(self, m, after):
        conn = self._conn
        if m.data:
            mentioned = items.mentions_of(m)
            if mentioned:
                sql.add_mentions(conn, m, mentioned)
        users = dm_users(m.channel)
        if users is not None:
            a, b = users
            for user, peer in ((a, b), (b, a)):
                row = items.dm_member(m.channel, user, peer, m.seq - 1)
                sql.add_member_if_missing(conn, row, after[1] - 1)
        sql.move_marker(conn, m.channel, m.sender, m.seq, after[1])

    def _apply_event(self, e, after):
        conn = self._conn
        user = items.event_user(e)
        if user is not None:
            found = sql.member(conn, e.channel, user)
            before, read_ord = (None, 0) if found is None else found
            row = items.apply_event(before, e)
            if row is not None:
                if before is None or row.read_seq != before.read_seq:
                    read_ord = self._ord_at(e.channel, row.read_seq, after)
                sql.write_member(conn, row, read_ord)
        if items.event_of(e) in ("created", "room_updated"):
            row = items.apply_room(sql.room(conn, e.channel), e)
            if row is not None:
                sql.write_room(conn, row)

    def _apply_recall(self, r, target):
        conn = self._conn
        found = None if target is None else sql.item(conn, r.channel, target)
        if found is None or found.kind != "message" or items.is_recalled(found):
            return  # a second recall keeps the first one's by and ts
        by = (r.data or {}).get("by", r.sender)
        sql.update_item(conn, r.channel, target, "", items.recalled_data(found.data, by, r.ts))
        sql.blank_edits(conn, r.channel, target)
        mentioned = items.mentions_of(found)
        if mentioned:
            sql.delete_mentions(conn, r.channel, target, mentioned)

    def _mark_read_one(self, args, touched):
        """Move a read marker inside the open transaction; the marker after (None: no row)."""
        user, channel, seq = args
        read_seq = sql.read_seq(self._conn, channel, user)
        if read_seq is None:
            return None
        counters = self._counters_of(channel, touched)
        seq = min(seq, counters[0])
        if seq <= read_seq:
            return read_seq
        sql.move_marker(self._conn, channel, user, seq, self._ord_at(channel, seq, counters))
        return seq

    def _read_marker_one(self, args, touched):
        """``read`` in one job: the member check, the clamped marker move, the unread
        and mention counts after it and the (bounded) member count."""
        user, channel, seq, count_up_to = args
        conn = self._conn
        row = sql.member(conn, channel, user)
        if row is None or row[0].state != "member":
            return None
        member, read_ord = row
        before = marker = member.read_seq
        counters = self._counters_of(channel, touched)
        seq = min(seq, counters[0])
        if seq > before:
            read_ord = self._ord_at(channel, seq, counters)
            sql.move_marker(conn, channel, user, seq, read_ord)
            marker = seq
        count = counters[1] if counters[1] is not None else counters[0]
        mentions = sql.unread_mentions(conn, channel, user, marker)
        members = 2 if member.peer is not None else sql.member_count(conn, channel, count_up_to + 1)
        return ReadMarker(before, marker, max(0, count - read_ord), mentions, members)

    def _save_cursor_one(self, args, _touched):
        user, cursor, snapshot, ts = args
        conn = self._conn
        sql.save_cursor(conn, user, cursor, snapshot, ts)
        drop = self.retention.cursors_to_drop(ts / 1000, sql.user_cursors(conn, user))
        if drop:
            sql.delete_cursors(conn, user, drop)

    def _add_user_one(self, args, _touched):
        sql.add_user(self._conn, *args)

    def _set_muted_one(self, args, _touched):
        user, channel, muted = args
        return sql.set_muted(self._conn, channel, user, muted)

    def _push_subscribe_one(self, args, _touched):
        user, add, choose, ts = args
        conn = self._conn
        before, rooms_before = sql.push_quotas(conn, user), sql.push_rooms(conn, user)
        templates, rooms = pushrules.subscribe(before, rooms_before, add, choose)
        sql.write_push_state(conn, user, before, templates, rooms_before, rooms, ts)
        return _push_state(conn, user)

    def _claim_push_one(self, args, _touched):
        user, channel, template, now_ms, interval_ms = args
        conn = self._conn
        count = None if template is None else sql.push_count(conn, user, template)
        claim = pushrules.claim(sql.push_sent(conn, user, channel), count, now_ms, interval_ms)
        if claim.notify:
            sql.set_push_sent(conn, user, channel, now_ms)
        if claim.quota:
            sql.take_push_quota(conn, user, template)
        return claim

    def _drop_push_quota_one(self, args, _touched):
        sql.drop_push_quota(self._conn, *args)

    def _commit_batch(self, batch):
        """Commit the batched jobs of *batch* (``(kind, args)``, in order) in one
        transaction; their results."""
        conn = self._conn
        out = []
        touched = {}
        appends = 0
        try:
            conn.execute("BEGIN IMMEDIATE")
            for kind, args in batch:
                appends += kind == "append"
                # each job in its own savepoint: one row SQLite cannot take
                # fails that job only, not the others of the batch
                savepoint = _needs_savepoint(kind, args)
                if savepoint:
                    conn.execute("SAVEPOINT job")
                try:
                    result = self._batched[kind](self, args, touched)
                except sql.ROW_ERRORS as e:
                    if savepoint:
                        conn.execute("ROLLBACK TO job")
                        conn.execute("RELEASE job")
                    # _append_one updates the counter caches only after its writes,
                    # so they still hold the batch's committed-to-be counters
                    self.log.warn(
                        "refused one {kind} for {path}: {e}", kind=kind, path=self.path, e=e
                    )
                    out.append((False, StoreUnavailable(f"this {kind} cannot be stored: {e}")))
                    continue
                if savepoint:
                    conn.execute("RELEASE job")
                out.append((True, result))
            if touched:
                sql.save_counters(conn, [(ch, *c) for ch, c in touched.items()])
            conn.execute("COMMIT")
        except Exception as e:
            self._rollback()
            # The cached counters of this batch were never committed.
            self._last_seq.clear()
            self.failed_commits += 1
            self.commit_error = str(e) or type(e).__name__
            self.log.error(
                "Committing {n} jobs to {path} failed: {e}", n=len(batch), path=self.path, e=e
            )
            error = StoreUnavailable(f"history store {self.path} could not commit: {e}")
            return [(False, error)] * len(batch)
        self.commits += 1
        self.commit_error = None
        self.appended += sum(
            1
            for (kind, _), (ok, r) in zip(batch, out, strict=True)
            if kind == "append" and ok and not r.duplicate
        )
        if appends:
            self.batch_sizes[appends] += 1
        return out

    _batched = {
        "append": _append_one,
        "mark_read": _mark_read_one,
        "read_marker": _read_marker_one,
        "save_cursor": _save_cursor_one,
        "add_user": _add_user_one,
        "set_muted": _set_muted_one,
        "push_subscribe": _push_subscribe_one,
        "claim_push": _claim_push_one,
        "drop_push_quota": _drop_push_quota_one,
        "set_sanction": _job(sql.set_sanction),
        "add_report": _job(sql.add_report),
        "close_report": _job(sql.close_report),
        "add_audit": _job(sql.add_audit),
        "delete_moderation": _job(sql.delete_moderation),
        "add_media_check": _job(sql.add_media_check),
        "take_media_check": _job(sql.take_media_check),
        "prune_media_checks": _job(sql.prune_media_checks),
    }

    def _do_replay(self, channel, since, limit):
        return sql.replay(self._conn, channel, since, limit, self._seq_of(channel))

    def _do_sync_replay(self, reads, limit):
        if not self.encodes_json:  # this SQLite's JSON is not the wire's: Messages
            return [sync_replay_of(self._do_replay(ch, since, limit)) for ch, since in reads]
        conn, seq_of = self._conn, self._seq_of
        return [sql.sync_replay(conn, ch, since, limit, seq_of(ch)) for ch, since in reads]

    def _do_history(self, channel, before, limit):
        return sql.history(self._conn, channel, before, limit)

    def _do_read(self, query, *args):
        """A plain read: ``query(conn, *args)`` of :mod:`chatd.store.sql`."""
        return query(self._conn, *args)

    def _do_member(self, channel, user):
        found = sql.member(self._conn, channel, user)
        return None if found is None else found[0]

    @staticmethod
    def _kind(channel, room_kind):
        # (a prefix test: not dm_users, which parses the pair of a DM per row)
        if is_dm(channel):
            return "dm"
        return room_kind or "public"

    def _do_conversations(self, user):
        return [
            Conversation(
                channel, self._kind(channel, kind), peer, role, read_seq, bool(muted), last, ts
            )
            for channel, kind, peer, role, read_seq, muted, last, ts in sql.conversations(
                self._conn, user
            )
        ]

    def _do_summaries(self, user, channels):
        found = sql.summaries(self._conn, user, channels)
        out = []
        for channel in channels:
            row = found.get(channel)
            if row is None:
                continue
            (kind, peer, role, read_seq, muted, last_seq, last_ts, unread, mentions,
             peer_read, title) = row[:11]  # fmt: skip
            out.append(
                Conversation(
                    channel,
                    self._kind(channel, kind),
                    peer,
                    role,
                    read_seq,
                    bool(muted),
                    last_seq,
                    last_ts,
                    unread=max(0, unread),
                    mentions=mentions,
                    last=sql.last_message(channel, row[11:]),
                    peer_read=None if peer is None else (peer_read or 0),
                    title=title or "",
                )
            )
        return out

    def _do_conversation_page(self, user, start, limit):
        channels = sql.conversation_channels(self._conn, user, start, limit + 1)
        return self._do_summaries(user, channels[:limit]), len(channels) > limit

    def _do_prune(self, now, counts, channels):
        """Delete in chunks; when jobs are waiting, requeue the rest behind them.

        The continuation keeps the original Deferred, which fires once the
        whole prune is done.
        """
        conn = self._conn
        rules = self.retention
        if channels is None:
            channels = sql.channel_names(conn)
            channels.reverse()  # popped from the end: oldest-created first
        while channels:
            channel = channels[-1]
            upto = self._prune_bound(channel, now)
            if upto is None:
                channels.pop()
            else:
                self._delete(sql.delete_messages, (channel, upto), counts, 0)
            if (channels or rules.dedupe_days) and self._thread.others_waiting():
                return Requeue((now, counts, channels))
        if rules.dedupe_days:
            while True:
                rows = sql.oldest_client_ids(conn, rules.chunk)
                upto = rules.client_ids_upto(now, rows)
                if upto is None:
                    break
                self._delete(sql.delete_client_ids, (upto,), counts, 1)
                if len(rows) < rules.chunk:
                    break
                if self._thread.others_waiting():
                    return Requeue((now, counts, []))
        self._delete(sql.delete_old_cursors, (rules.cursor_cutoff(now),), counts, 2)
        return tuple(counts[:2])

    def _prune_bound(self, channel, now):
        """The highest seq of *channel* to delete in this chunk, or None."""
        first = sql.oldest_message(self._conn, channel)
        if first is None:
            return None
        rules = self.retention
        oldest = [first]
        if rules.needs_timestamps(now, first[1]):
            oldest = sql.messages_upto(self._conn, channel, rules.chunk_end(first[0]))
        return rules.messages_upto(now, self._seq_of(channel), oldest)

    def _delete(self, delete, args, counts, index):
        """Run ``delete(conn, *args)`` in its own transaction and count the rows."""
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            n = delete(conn, *args)
            conn.execute("COMMIT")
        except BaseException:
            self._rollback()
            raise
        counts[index] += n
        if index == 0:
            self.pruned_messages += n
        elif index == 1:
            self.pruned_client_ids += n
        else:
            self.pruned_cursors += n
