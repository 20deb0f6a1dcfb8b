"""The embedded, durable history store: one SQLite file, one writer thread.

Threading
    Every SQLite call runs in one dedicated writer thread (not the reactor
    threadpool) that owns the only connection. The reactor thread puts jobs on
    a :class:`queue.Queue`; the writer takes them in FIFO order and hands each
    result back with ``reactor.callFromThread``. Reads (``replay``,
    ``history``) go through the same queue, so a read issued after an append's
    Deferred has fired always sees that append.

Group commit
    The writer drains everything queued (up to ``batch_max`` jobs) and commits
    all consecutive appends of that drain in ONE transaction, so the cost of a
    commit (an fsync with ``synchronous=FULL``) is shared by every message that
    arrived while the previous commit was running. A read in the middle of a
    drain first commits the appends before it, so reads never see
    uncommitted data. Results are delivered in the order the appends were
    made. ``commits``, ``appended`` and ``batch_sizes`` count what happened.

    If a commit (or any statement of the batch) fails -- disk full, the file
    locked by another process, an I/O error -- the transaction is rolled back,
    every append of that batch fails with :class:`StoreUnavailable`, the cached
    per-channel seqs are forgotten, and the store keeps serving later jobs.
    The seqs of a failed batch were never acknowledged, so they are handed out
    again; a committed seq is never reused.

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

Schema and versions
    The schema version is kept in ``PRAGMA user_version`` (and the file is
    tagged with ``PRAGMA application_id``). ``start()`` creates the schema of
    a new file and runs the steps in ``MIGRATIONS`` (version n -> n+1) on an
    older one, each in its own transaction. A file written by a newer chatd
    makes ``start()`` fail with :class:`SchemaTooNew`.

    ``messages(channel, seq, ...)``
        the history, clustered by ``(channel, seq)``.
    ``channels(channel, last_seq)``
        the newest seq ever committed per channel: seqs continue after a
        restart and are never reused, even when pruning removed every row.
    ``client_ids(sender, client_id, channel, seq, ts)``
        the exactly-once records, unique on ``(sender, client_id)`` across
        channels. They have their own retention (``dedupe_days``, default 30
        days after the message's ``ts``) and outlive the message: a client that
        resends its outbox after the message was pruned from history still gets
        the original seq and ts back (the :class:`Message` then has the original
        channel, seq, sender, ts and client_id, with empty ``name`` and
        ``text``) and nothing is stored twice.

Reads
    ``replay`` and ``history`` results are handed back as soon as each read
    has run, not at the end of its drain, so a drain never holds more than
    one read's rows. A read whose Deferred is cancelled before the writer
    reaches it is skipped (``cancelled_reads`` counts them, ``reads`` counts
    the reads run): the chat cancels the reads of connections that closed.
    Callers bound the size of each read (chatd.replay reads join replays in
    pages of at most ``replay.PAGE_MESSAGES`` messages).

Seq cache
    The newest seq of recently used channels is cached in an LRU of at most
    ``seq_cache_max`` channels (default 10,000, ~200 bytes each); a miss reads
    the ``channels`` table. A lookup of a channel that has no message adds
    nothing, so lookups of random channels (``dm_history`` with random users,
    joins of new rooms) cannot grow the process.

Retention
    At most ``history_max`` messages per channel and, if ``history_days`` is
    set, none older than that (by ``ts``). ``prune()`` runs in the writer
    thread in small transactions of at most ``prune_chunk`` rows; when other
    jobs are waiting it puts its remainder at the back of the queue, so sends
    are never held up by more than one chunk. ``start()`` schedules it every
    ``prune_interval`` seconds with a ``LoopingCall`` on the injected reactor.
    Messages of a channel always form a contiguous seq range: pruning only
    ever removes the oldest ones.
"""

from __future__ import annotations

import queue
import sqlite3
import threading
from collections import Counter, OrderedDict

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from zope.interface import implementer

from chatd.store import (
    Appended,
    IHistoryStore,
    Message,
    Page,
    Replay,
    SchemaTooNew,
    StoreUnavailable,
)

#: The schema version this code writes. Bump it and add a step to MIGRATIONS.
SCHEMA_VERSION = 1

#: ``PRAGMA application_id`` of a chatd history file ("chtd").
APPLICATION_ID = 0x63687464

_SYNCHRONOUS = ("OFF", "NORMAL", "FULL", "EXTRA")
_DAY_MS = 86_400_000


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


class _Job:
    """One unit of work for the writer thread, with its Deferred."""

    __slots__ = ("kind", "args", "deferred", "cancelled")

    def __init__(self, kind, args, deferred):
        self.kind = kind
        self.args = args
        self.deferred = deferred
        #: set (in the reactor thread) when a read's Deferred was cancelled
        self.cancelled = False

    def cancel(self, _deferred):
        self.cancelled = True


#: jobs that only read: cancellable, and delivered as soon as they have run
_READS = frozenset(("replay", "history"))


#: errors of one row (not of the file): they fail that append only
_ROW_ERRORS = (UnicodeEncodeError, sqlite3.InterfaceError, sqlite3.IntegrityError, TypeError)


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
        if synchronous not in _SYNCHRONOUS:
            raise ValueError(f"synchronous must be one of {_SYNCHRONOUS}, not {synchronous!r}")
        if batch_max < 1 or prune_chunk < 1 or seq_cache_max < 1:
            raise ValueError("batch_max, prune_chunk and seq_cache_max must be >= 1")
        self.path = str(path)
        self.durable = self.path not in (":memory:", "")
        self.history_max = history_max
        self.history_days = history_days
        self.dedupe_days = dedupe_days
        self.batch_max = batch_max
        self.synchronous = synchronous
        self.prune_interval = prune_interval
        self.prune_chunk = prune_chunk
        self.busy_timeout_ms = busy_timeout_ms
        self._reactor = reactor
        self._queue: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._conn: sqlite3.Connection | None = None
        self.seq_cache_max = seq_cache_max
        #: channel -> newest committed seq, least recently used first (writer thread only)
        self._last_seq: OrderedDict[str, int] = OrderedDict()
        self._job: _Job | None = None  # writer thread only: the job being run
        self._drain_rest = 0  # writer thread only: jobs of the drain after it
        self._running = False  # writer thread only
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
        #: Reads (replay, history) run, and reads skipped because they were cancelled.
        self.reads = 0
        self.cancelled_reads = 0

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
        self._thread = threading.Thread(
            target=self._run, name=f"chatd-sqlite-writer:{self.path}", daemon=True
        )
        d = self._submit("open", ())
        self._thread.start()

        def opened(_):
            if self._state != "starting":  # stop() was called meanwhile
                return None
            self._state = "running"
            if self.prune_interval and self._retention_enabled():
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

    def _retention_enabled(self):
        return bool(self.history_max is not None or self.history_days or self.dedupe_days)

    def _scheduled_prune(self):
        d = self.prune()
        d.addErrback(lambda f: self.log.failure("Pruning {path} failed", f, path=self.path))
        return d

    def _submit(self, kind, args):
        job = _Job(kind, args, None)
        # a read can be cancelled (its job is then skipped); nothing else can
        d = job.deferred = Deferred(job.cancel if kind in _READS else None)
        if self._state in ("new", "stopping", "stopped") and kind != "close":
            d.errback(StoreUnavailable(f"history store {self.path} is not running"))
            return d
        self._queue.put(job)
        return d

    def _join(self):
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(5)
        self._thread = None

    def _deliver(self, results):
        """Fire Deferreds in the reactor thread, in order."""
        for d, ok, value in results:
            if d.called:  # a read cancelled while it ran
                continue
            if ok:
                d.callback(value)
            else:
                d.errback(value)

    # -- writer thread ------------------------------------------------------

    def _run(self):
        """The writer thread: drain the queue, group appends, hand results back."""
        q = self._queue
        self._running = True
        while self._running:
            jobs = [q.get()]
            while len(jobs) < self.batch_max:
                try:
                    jobs.append(q.get_nowait())
                except queue.Empty:
                    break
            try:
                results = self._process(jobs)
            except BaseException as e:  # a bug: fail the drain, keep the thread alive
                self.log.failure("History store writer failed on {path}", path=self.path)
                error = StoreUnavailable(f"history store {self.path}: internal error: {e!r}")
                results = [(job.deferred, False, error) for job in jobs]
            if results:
                self._reactor.callFromThread(self._deliver, results)
        self._close_connection()
        # Only the writer's own prune continuations can be queued behind the
        # close: they end with what they did; nothing is silently dropped.
        leftovers = []
        while True:
            try:
                job = q.get_nowait()
            except queue.Empty:
                break
            leftovers.append(self._closed_result(job))
        if leftovers:
            self._reactor.callFromThread(self._deliver, leftovers)

    def _closed_result(self, job):
        if job.kind == "prune":
            return (job.deferred, True, tuple(job.args[1]))
        if job.kind == "close":
            return (job.deferred, True, None)
        return (job.deferred, False, StoreUnavailable(f"history store {self.path} is closed"))

    def _process(self, jobs):
        """Run one drain of jobs; consecutive appends share one transaction."""
        results = []
        pending = []  # consecutive appends, committed together
        for index, job in enumerate(jobs):
            if not self._running:
                results.extend(self._commit_appends(pending))
                pending = []
                results.append(self._closed_result(job))
                continue
            if job.kind == "append":
                pending.append(job)
                continue
            results.extend(self._commit_appends(pending))
            pending = []
            if job.cancelled:
                self.cancelled_reads += 1
                continue
            self._job = job
            self._drain_rest = len(jobs) - index - 1
            try:
                value = getattr(self, "_do_" + job.kind)(*job.args)
            except Exception as e:
                results.append((job.deferred, False, self._wrap_error(e)))
                if job.kind in ("open", "close"):
                    self._running = False
                continue
            if value is not _REQUEUED:
                results.append((job.deferred, True, value))
            if job.kind in _READS:
                # hand the rows back now: a drain never holds more than one read's rows
                self.reads += 1
                self._reactor.callFromThread(self._deliver, results)
                results = []
            if job.kind == "close":
                self._running = False
        results.extend(self._commit_appends(pending))
        return results

    def _others_waiting(self):
        """True when jobs are waiting behind the one being run (writer thread)."""
        return self._drain_rest > 0 or not self._queue.empty()

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

    def _do_open(self):
        try:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=True)
        except sqlite3.Error as e:
            raise StoreUnavailable(f"cannot open history store {self.path}: {e}") from e
        self._conn = conn
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_ms)}")
            app_id = conn.execute("PRAGMA application_id").fetchone()[0]
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if app_id not in (0, APPLICATION_ID):
                raise StoreUnavailable(
                    f"{self.path} is not a chatd history store (application_id {app_id:#x})"
                )
            if version > SCHEMA_VERSION:
                raise SchemaTooNew(
                    f"history store {self.path} has schema version {version}, but this "
                    f"chatd only knows versions up to {SCHEMA_VERSION}: it was written by "
                    f"a newer chatd; upgrade chatd or use another --db file"
                )
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute(f"PRAGMA synchronous = {self.synchronous}")
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
            self._close_connection()
            raise
        return None

    def _do_close(self):
        try:
            self._conn.execute("PRAGMA optimize")
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
        row = self._conn.execute(
            "SELECT last_seq FROM channels WHERE channel = ?", (channel,)
        ).fetchone()
        if row is None:
            return 0
        self._cache_seq(channel, row[0])
        return row[0]

    def _cache_seq(self, channel, seq):
        cache = self._last_seq
        cache[channel] = seq
        cache.move_to_end(channel)
        if len(cache) > self.seq_cache_max:
            cache.popitem(last=False)

    def _append_one(self, conn, job, touched):
        """Store one append inside the open transaction; returns its :class:`Appended`."""
        channel, sender, name, client_id, text, ts = job.args
        if client_id is not None:
            row = conn.execute(
                "SELECT c.channel, c.seq, c.ts, m.name, m.text FROM client_ids c "
                "LEFT JOIN messages m ON m.channel = c.channel AND m.seq = c.seq "
                "WHERE c.sender = ? AND c.client_id = ?",
                (sender, client_id),
            ).fetchone()
            if row is not None:
                ch, seq, ots, oname, otext = row
                original = Message(ch, seq, sender, oname or "", otext or "", ots, client_id)
                return Appended(original, True)
        # the batch's own seqs first: the cache may have evicted this channel
        # since its last append of the (still uncommitted) batch
        seq = self._seq_of(channel, touched) + 1
        conn.execute(
            "INSERT INTO messages (channel, seq, sender, name, text, ts, client_id) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (channel, seq, sender, name, text, ts, client_id),
        )
        if client_id is not None:
            conn.execute(
                "INSERT INTO client_ids (sender, client_id, channel, seq, ts) "
                "VALUES (?, ?, ?, ?, ?)",
                (sender, client_id, channel, seq, ts),
            )
        self._cache_seq(channel, seq)
        touched[channel] = seq
        return Appended(Message(channel, seq, sender, name, text, ts, client_id), False)

    def _commit_appends(self, jobs):
        """Commit *jobs* (appends) in one transaction; return their results."""
        if not jobs:
            return []
        conn = self._conn
        out = []
        touched = {}
        try:
            conn.execute("BEGIN IMMEDIATE")
            for job in jobs:
                # each job in its own savepoint: one row SQLite cannot take (a
                # lone surrogate, a wrong type) fails that append only, not the
                # other senders' messages in the same batch
                conn.execute("SAVEPOINT job")
                try:
                    result = self._append_one(conn, job, touched)
                except _ROW_ERRORS as e:
                    conn.execute("ROLLBACK TO job")
                    conn.execute("RELEASE job")
                    # _append_one updates the seq caches only after its inserts,
                    # so they still hold the batch's committed-to-be seqs
                    self.log.warn("refused one message for {path}: {e}", path=self.path, e=e)
                    error = StoreUnavailable(f"this message cannot be stored: {e}")
                    out.append((job.deferred, False, error))
                    continue
                conn.execute("RELEASE job")
                out.append((job.deferred, True, result))
            conn.executemany(
                "INSERT INTO channels (channel, last_seq) VALUES (?, ?) "
                "ON CONFLICT (channel) DO UPDATE SET last_seq = excluded.last_seq",
                touched.items(),
            )
            conn.execute("COMMIT")
        except Exception as e:
            self._rollback()
            # The cached seqs of this batch were never committed.
            self._last_seq.clear()
            self.failed_commits += 1
            self.commit_error = str(e) or type(e).__name__
            self.log.error(
                "Committing {n} messages to {path} failed: {e}", n=len(jobs), path=self.path, e=e
            )
            error = StoreUnavailable(f"history store {self.path} could not commit: {e}")
            return [(job.deferred, False, error) for job in jobs]
        self.commits += 1
        self.commit_error = None
        self.appended += sum(1 for _, ok, appended in out if ok and not appended.duplicate)
        self.batch_sizes[len(jobs)] += 1
        return out

    def _rollback(self):
        try:
            if self._conn is not None and self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
        except sqlite3.Error as e:
            self.log.error("Rollback on {path} failed: {e}", path=self.path, e=e)

    def _do_replay(self, channel, since, limit):
        last = self._seq_of(channel)
        if since is None:
            return Replay([], last, False)
        rows = self._conn.execute(
            "SELECT channel, seq, sender, name, text, ts, client_id FROM messages "
            "WHERE channel = ? AND seq > ? ORDER BY seq DESC LIMIT ?",
            (channel, since, max(limit, 0) + 1),
        ).fetchall()
        if len(rows) > limit:
            return Replay([Message(*r) for r in reversed(rows[:limit])], last, True)
        missed = [Message(*r) for r in reversed(rows)]
        # Pruned messages after `since` are a gap the client must know about.
        gap = last > since and (not missed or missed[0].seq > since + 1)
        return Replay(missed, last, gap)

    def _do_history(self, channel, before, limit):
        if before is None:
            rows = self._conn.execute(
                "SELECT channel, seq, sender, name, text, ts, client_id FROM messages "
                "WHERE channel = ? ORDER BY seq DESC LIMIT ?",
                (channel, max(limit, 0) + 1),
            ).fetchall()
        else:
            rows = self._conn.execute(
                "SELECT channel, seq, sender, name, text, ts, client_id FROM messages "
                "WHERE channel = ? AND seq < ? ORDER BY seq DESC LIMIT ?",
                (channel, before, max(limit, 0) + 1),
            ).fetchall()
        more = len(rows) > limit
        return Page([Message(*r) for r in reversed(rows[:limit])], more)

    def _do_prune(self, now, counts, channels):
        """Delete in chunks; when jobs are waiting, requeue the rest behind them.

        The continuation keeps the original Deferred, which fires once the
        whole prune is done.
        """
        conn = self._conn
        if channels is None:
            channels = [r[0] for r in conn.execute("SELECT channel FROM channels")]
            channels.reverse()  # popped from the end: oldest-created first
        cutoff_ms = (
            None if not self.history_days else int((now * 1000) - self.history_days * _DAY_MS)
        )
        while channels:
            channel = channels[-1]
            upto = self._prune_bound(channel, cutoff_ms)
            if upto is None:
                channels.pop()
            else:
                self._in_transaction(
                    "DELETE FROM messages WHERE channel = ? AND seq <= ?",
                    (channel, upto),
                    counts,
                    0,
                )
            if (channels or self.dedupe_days) and self._others_waiting():
                self._queue.put(_Job("prune", (now, counts, channels), self._job.deferred))
                return _REQUEUED
        if self.dedupe_days:
            cutoff = int(now * 1000 - self.dedupe_days * _DAY_MS)
            while True:
                rows = conn.execute(
                    "SELECT rowid, ts FROM client_ids ORDER BY rowid LIMIT ?", (self.prune_chunk,)
                ).fetchall()
                upto = None
                for rowid, ts in rows:
                    if ts >= cutoff:
                        break
                    upto = rowid
                if upto is None:
                    break
                self._in_transaction("DELETE FROM client_ids WHERE rowid <= ?", (upto,), counts, 1)
                if len(rows) < self.prune_chunk:
                    break
                if self._others_waiting():
                    self._queue.put(_Job("prune", (now, counts, []), self._job.deferred))
                    return _REQUEUED
        return tuple(counts)

    def _prune_bound(self, channel, cutoff_ms):
        """The highest seq of *channel* to delete in this chunk, or None."""
        conn = self._conn
        first = conn.execute(
            "SELECT seq, ts FROM messages WHERE channel = ? ORDER BY seq LIMIT 1", (channel,)
        ).fetchone()
        if first is None:
            return None
        min_seq = first[0]
        limit_seq = min_seq + self.prune_chunk - 1
        upto = None
        if self.history_max is not None:
            by_count = self._seq_of(channel) - self.history_max
            if by_count >= min_seq:
                upto = min(by_count, limit_seq)
        if cutoff_ms is not None and first[1] < cutoff_ms:
            # Delete the prefix of old messages (contiguous seqs stay contiguous).
            rows = conn.execute(
                "SELECT seq, ts FROM messages WHERE channel = ? AND seq <= ? ORDER BY seq",
                (channel, limit_seq),
            ).fetchall()
            old = None
            for seq, ts in rows:
                if ts >= cutoff_ms:
                    break
                old = seq
            if old is not None:
                upto = old if upto is None else max(upto, old)
        return upto

    def _in_transaction(self, sql, params, counts, index):
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            n = conn.execute(sql, params).rowcount
            conn.execute("COMMIT")
        except BaseException:
            self._rollback()
            raise
        counts[index] += n
        if index == 0:
            self.pruned_messages += n
        else:
            self.pruned_client_ids += n


_REQUEUED = object()
