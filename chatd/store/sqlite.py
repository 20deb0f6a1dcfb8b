"""The embedded, durable history store: one SQLite file, one writer thread.

:class:`SQLiteStore` is the :class:`~chatd.store.IHistoryStore` that chatd
runs on by default. It is made of three parts, each with its own design notes:

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
    The consecutive appends of one drain are committed in one ``BEGIN
    IMMEDIATE`` ... ``COMMIT``; ``commits``, ``appended`` and ``batch_sizes``
    count what happened. Each append runs in its own savepoint: a row SQLite cannot take
    (a lone surrogate, a wrong type) fails that append alone, not the other
    senders' messages of the batch.

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
    ``replay`` and ``history`` are the writer's read jobs: cancellable, and
    handed back one by one (``reads``/``cancelled_reads`` count them).
    Callers bound the size of each read (chatd.replay reads join replays in
    pages of at most ``replay.PAGE_MESSAGES`` messages).

Seq cache
    The newest seq of recently used channels is cached in an LRU of at most
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

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from zope.interface import implementer

from chatd.store import Appended, IHistoryStore, Message, SchemaTooNew, StoreUnavailable, sql
from chatd.store.retention import Retention
from chatd.store.sql import APPLICATION_ID, MIGRATIONS, SCHEMA_VERSION  # noqa: F401 (API)
from chatd.store.writer import Requeue, WriterThread

#: jobs that only read: cancellable, and delivered as soon as they have run
_READS = frozenset(("replay", "history"))


@implementer(IHistoryStore)
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
            commit=self._commit_appends,
            closed_result=self._closed_result,
            error=self._wrap_error,
            finish=self._close_connection,
            batched="append",
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

    def append(self, channel, sender, name, client_id, text, ts):
        """Store a message with the channel's next seq (see :class:`IHistoryStore`)."""
        return self._submit("append", (channel, sender, name, client_id, text, ts))

    def replay(self, channel, since, limit):
        """Messages with ``seq > since``, the newest *limit* of them (see the interface)."""
        return self._submit("replay", (channel, since, limit))

    def history(self, channel, before, limit):
        """A page of up to *limit* messages older than *before* (see the interface)."""
        return self._submit("history", (channel, before, limit))

    def prune(self, now: float | None = None):
        """Apply the retention rules, in small transactions, in the writer thread.

        *now* is the current time in seconds since the epoch (default: the
        reactor's clock). Fires with ``(messages, client_ids)`` deleted.
        """
        if now is None:
            now = self._reactor.seconds()
        return self._submit("prune", (now, [0, 0], None))

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
            return (True, tuple(args[1]))
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
        return None

    def _do_close(self):
        try:
            sql.optimize(self._conn)
        except sqlite3.Error as e:
            self.log.warn("PRAGMA optimize on {path} failed: {e}", path=self.path, e=e)
        self._close_connection()
        return None

    def _seq_of(self, channel, touched=None):
        """The channel's newest seq: of the open batch (*touched*), cached, or committed.

        A channel without messages is not cached (a lookup creates no state).
        """
        if touched:
            last = touched.get(channel)
            if last is not None:
                return last
        cache = self._last_seq
        last = cache.get(channel)
        if last is not None:
            cache.move_to_end(channel)
            return last
        last = sql.last_seq(self._conn, channel)
        if last is None:
            return 0
        self._cache_seq(channel, last)
        return last

    def _cache_seq(self, channel, seq):
        cache = self._last_seq
        cache[channel] = seq
        cache.move_to_end(channel)
        if len(cache) > self.seq_cache_max:
            cache.popitem(last=False)

    def _append_one(self, args, touched):
        """Store one append inside the open transaction; returns its :class:`Appended`."""
        channel, sender, name, client_id, text, ts = args
        if client_id is not None:
            original = sql.find_client_id(self._conn, sender, client_id)
            if original is not None:
                return Appended(original, True)
        # the batch's own seqs first: the cache may have evicted this channel
        # since its last append of the (still uncommitted) batch
        seq = self._seq_of(channel, touched) + 1
        message = Message(channel, seq, sender, name, text, ts, client_id)
        sql.insert_message(self._conn, message)
        self._cache_seq(channel, seq)
        touched[channel] = seq
        return Appended(message, False)

    def _commit_appends(self, batch):
        """Commit the appends of *batch* (their args) in one transaction; their results."""
        conn = self._conn
        out = []
        touched = {}
        try:
            conn.execute("BEGIN IMMEDIATE")
            for args in batch:
                # each append in its own savepoint: one row SQLite cannot take
                # fails that append only, not the others of the batch
                conn.execute("SAVEPOINT job")
                try:
                    result = self._append_one(args, touched)
                except sql.ROW_ERRORS as e:
                    conn.execute("ROLLBACK TO job")
                    conn.execute("RELEASE job")
                    # _append_one updates the seq caches only after its inserts,
                    # so they still hold the batch's committed-to-be seqs
                    self.log.warn("refused one message for {path}: {e}", path=self.path, e=e)
                    out.append((False, StoreUnavailable(f"this message cannot be stored: {e}")))
                    continue
                conn.execute("RELEASE job")
                out.append((True, result))
            sql.save_last_seqs(conn, touched.items())
            conn.execute("COMMIT")
        except Exception as e:
            self._rollback()
            # The cached seqs of this batch were never committed.
            self._last_seq.clear()
            self.failed_commits += 1
            self.commit_error = str(e) or type(e).__name__
            self.log.error(
                "Committing {n} messages to {path} failed: {e}", n=len(batch), path=self.path, e=e
            )
            error = StoreUnavailable(f"history store {self.path} could not commit: {e}")
            return [(False, error)] * len(batch)
        self.commits += 1
        self.commit_error = None
        self.appended += sum(1 for ok, appended in out if ok and not appended.duplicate)
        self.batch_sizes[len(batch)] += 1
        return out

    def _do_replay(self, channel, since, limit):
        return sql.replay(self._conn, channel, since, limit, self._seq_of(channel))

    def _do_history(self, channel, before, limit):
        return sql.history(self._conn, channel, before, limit)

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
        return tuple(counts)

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
        else:
            self.pruned_client_ids += n
