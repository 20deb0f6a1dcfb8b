"""Tests of the durable SQLite history store (chatd.store.sqlite.SQLiteStore).

Every test uses a real SQLite file in ``tmp_path`` (or ``:memory:`` where
that is the point) and the running reactor; a second, plain ``sqlite3``
connection stands in for "another process holding the lock".
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import pytest_twisted
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import defer, task

from chatd import wire
from chatd.store import (
    Appended,
    Message,
    Page,
    Replay,
    SchemaTooNew,
    StoreUnavailable,
    dm_channel,
    sql,
)
from chatd.store.sqlite import SCHEMA_VERSION, SQLiteStore

REPO = Path(__file__).resolve().parents[2]
DAY = 86400


def _reactor():
    from twisted.internet import reactor

    return reactor


@defer.inlineCallbacks
def _open(path, **kw):
    kw.setdefault("prune_interval", None)
    store = SQLiteStore(str(path), **kw)
    yield store.start()
    return store


@pytest.fixture
def db(tmp_path):
    """Path of a fresh history file."""
    return tmp_path / "history.db"


@pytest_twisted.async_yield_fixture
async def store(db):
    """A started file store without periodic pruning; stopped afterwards."""
    s = await _open(db)
    yield s
    await s.stop()


class _Locker:
    """Another connection to the same file that holds the write lock."""

    def __init__(self, path):
        self.conn = sqlite3.connect(str(path), isolation_level=None)
        self.conn.execute("BEGIN IMMEDIATE")

    def release(self):
        self.conn.execute("COMMIT")
        self.conn.close()


# -- the IHistoryStore contract: tests/e2e/test_store_contract.py (every store) --


@pytest_twisted.inlineCallbacks
def test_file_is_in_wal_mode_with_schema_version(store, db):
    """The file is in WAL mode and carries the current schema version."""
    conn = sqlite3.connect(str(db))
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    finally:
        conn.close()
    yield store.append("r", "u", "U", None, "x", 1)


# -- group commit ---------------------------------------------------------


@pytest_twisted.inlineCallbacks
def test_group_commit_batches_appends(db):
    """Appends queued while a commit waits are committed together in one transaction."""
    s = yield _open(db, busy_timeout_ms=10_000)
    try:
        locker = _Locker(db)  # the writer's first transaction waits for this lock
        _reactor().callLater(0.3, locker.release)
        ds = [s.append("r", "u", "U", f"c{i}", f"t{i}", i) for i in range(400)]
        results = yield defer.gatherResults(ds)
        assert [a.message.seq for a in results] == list(range(1, 401))
        assert 1 <= s.commits <= 2
        assert sum(size * count for size, count in s.batch_sizes.items()) == 400
        assert max(s.batch_sizes) >= 200
    finally:
        yield s.stop()


@pytest_twisted.inlineCallbacks
def test_read_markers_are_group_committed_with_appends(db):
    """mark_read calls queued with appends share their transactions (no commit of
    their own) and keep their order; the markers survive a reopen."""
    s = yield _open(db, busy_timeout_ms=10_000)
    try:
        users = [f"u{i}" for i in range(50)]
        yield defer.gatherResults(
            [
                s.append("r", u, u, None, "", 1, "event", {"event": "joined", "user": u})
                for u in users
            ]
        )
        commits = s.commits
        locker = _Locker(db)  # the next transaction waits: everything queues behind it
        _reactor().callLater(0.3, locker.release)
        ds = []
        for i in range(100):
            ds.append(s.append("r", "w", "W", None, f"m{i}", 10 + i))
            ds.append(s.mark_read(users[i % 50], "r", 51 + i))
        results = yield defer.gatherResults(ds)
        assert results[1::2] == [51 + i for i in range(100)]
        assert 1 <= s.commits - commits <= 2
    finally:
        yield s.stop()
    s = yield _open(db)
    try:
        for i, u in enumerate(users):
            (c,) = yield s.summaries(u, ["r"])
            assert (c.read_seq, c.unread) == (51 + 50 + i, 100 - (50 + i + 1)), u
    finally:
        yield s.stop()


@pytest_twisted.inlineCallbacks
def test_pruning_drops_cursors_older_than_30_days(db):
    """prune(now) deletes sync cursors older than the retention's cursor_days."""
    day = 86_400_000
    s = yield _open(db)
    try:
        yield s.save_cursor("ann", "old", b"o", 1 * day)
        yield s.save_cursor("bob", "new", b"n", 20 * day)
        yield s.prune(now=40 * day / 1000)
        assert (yield s.load_cursor("ann", "old")) is None
        assert (yield s.load_cursor("bob", "new")) == b"n"
        assert s.pruned_cursors == 1
    finally:
        yield s.stop()


@pytest_twisted.inlineCallbacks
def test_batch_max_bounds_a_transaction(db):
    """No transaction holds more than batch_max appends."""
    s = yield _open(db, batch_max=25, busy_timeout_ms=10_000)
    try:
        locker = _Locker(db)
        _reactor().callLater(0.2, locker.release)
        yield defer.gatherResults([s.append("r", "u", "U", None, "t", i) for i in range(200)])
        assert max(s.batch_sizes) <= 25
        assert s.commits >= 8
    finally:
        yield s.stop()


@pytest_twisted.inlineCallbacks
def test_failed_commit_fails_the_batch_and_store_recovers(db):
    """A locked file fails that batch with StoreUnavailable; later appends succeed."""
    s = yield _open(db, busy_timeout_ms=50)
    try:
        first = yield s.append("r", "u", "U", "keep", "kept", 1)
        locker = _Locker(db)
        ds = [s.append("r", "u", "U", f"lost{i}", "lost", 2) for i in range(5)]
        results = yield defer.DeferredList(ds, consumeErrors=True)
        assert all(not ok and f.check(StoreUnavailable) for ok, f in results)
        assert s.failed_commits >= 1
        locker.release()
        again = yield s.append("r", "u", "U", "lost0", "resent", 3)
        assert again.duplicate is False
        assert again.message.seq == first.message.seq + 1
        replay = yield s.replay("r", 0, 100)
        assert [m.text for m in replay.messages] == ["kept", "resent"]
        assert replay.last_seq == 2
    finally:
        yield s.stop()


# -- exactly-once and restarts --------------------------------------------


@pytest_twisted.inlineCallbacks
def test_dedupe_across_channels_batches_and_reopen(db):
    """(sender, client_id) is stored once: across channels, within a batch, after reopening."""
    s = yield _open(db)
    a, b = (
        s.append("r1", "u1", "Ann", "x", "first", 10),
        s.append("r2", "u1", "Ann", "x", "2nd", 11),
    )
    a, b = yield defer.gatherResults([a, b])
    assert a == Appended(Message("r1", 1, "u1", "Ann", "first", 10, "x"), False)
    assert b == Appended(a.message, True)
    other = yield s.append("r1", "u2", "Bob", "x", "same id, other user", 12)
    assert other.duplicate is False and other.message.seq == 2
    n1 = yield s.append("r1", "u1", "Ann", None, "no id", 13)
    n2 = yield s.append("r1", "u1", "Ann", None, "no id", 13)
    assert (n1.duplicate, n2.duplicate, n2.message.seq) == (False, False, 4)
    yield s.stop()

    s = yield _open(db)
    try:
        again = yield s.append("r9", "u1", "Ann", "x", "after restart", 99)
        assert again == Appended(a.message, True)
        assert (yield s.replay("r9", 0, 10)) == Replay([], 0, False)
    finally:
        yield s.stop()


@pytest_twisted.inlineCallbacks
def test_a_resend_in_the_same_batch_and_channel_leaves_no_row_and_no_gap(db):
    """A plain message resent in the batch of its original (it is claimed by the row
    the batch inserted) is its original's duplicate; its tentative row is gone, and
    the next message takes the next seq."""
    s = yield _open(db)
    try:
        commits = s.commits
        got = yield defer.gatherResults(
            [  # submitted in one reactor turn: one drain, one batch
                s.append("r", "u1", "Ann", "x", "first", 10),
                s.append("r", "u1", "Ann", "x", "first", 11),
                s.append("r", "u1", "Ann", "y", "second", 12),
            ]
        )
        assert [(a.duplicate, a.message.seq, a.message.ts) for a in got] == [
            (False, 1, 10),
            (True, 1, 10),
            (False, 2, 12),
        ]
        page = yield s.history("r", None, 10)
        assert [(m.seq, m.text) for m in page.messages] == [(1, "first"), (2, "second")]
        assert s.commits == commits + 1
    finally:
        yield s.stop()


@pytest_twisted.inlineCallbacks
def test_seq_continues_after_reopen_even_when_all_rows_pruned(db):
    """After a restart seq continues; pruning every row never lets a seq be reused."""
    s = yield _open(db, history_days=1)
    for _ in range(5):
        yield s.append("r", "u", "U", None, "old", 1000)
    yield s.prune(now=10 * DAY)
    assert (yield s.history("r", None, 10)) == Page([], False)
    yield s.stop()

    s = yield _open(db, history_days=1)
    try:
        r = yield s.replay("r", 0, 10)
        assert r == Replay([], 5, True)
        a = yield s.append("r", "u", "U", None, "new", 10 * DAY * 1000)
        assert a.message.seq == 6
    finally:
        yield s.stop()


@pytest_twisted.inlineCallbacks
def test_schema_too_new_is_refused(db):
    """A file of a newer schema makes start() fail with SchemaTooNew naming file and versions."""
    s = yield _open(db)
    yield s.append("r", "u", "U", None, "t", 1)
    yield s.stop()
    conn = sqlite3.connect(str(db))
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 41}")
    conn.close()

    s = SQLiteStore(str(db), prune_interval=None)
    with pytest.raises(SchemaTooNew) as e:
        yield s.start()
    msg = str(e.value)
    assert str(db) in msg and str(SCHEMA_VERSION + 41) in msg and str(SCHEMA_VERSION) in msg
    assert s._thread is None
    with pytest.raises(StoreUnavailable):
        yield s.append("r", "u", "U", None, "t", 1)
    yield s.stop()


@pytest_twisted.inlineCallbacks
def test_foreign_sqlite_file_is_refused(db):
    """A SQLite file of another application is not touched."""
    conn = sqlite3.connect(str(db))
    conn.execute("PRAGMA application_id = 12345")
    conn.close()
    s = SQLiteStore(str(db), prune_interval=None)
    with pytest.raises(StoreUnavailable, match="not a chatd history store"):
        yield s.start()


@pytest_twisted.inlineCallbacks
def test_stop_while_starting_and_twice(db):
    """stop() right after start() and a second stop() both fire; the file is usable after."""
    s = SQLiteStore(str(db), history_max=5, prune_interval=1)
    started = s.start()
    queued = s.append("r", "u", "U", None, "during start", 1)
    first, second = s.stop(), s.stop()
    yield started
    assert (yield queued).message.seq == 1
    assert (yield first) is None and (yield second) is None
    s = yield _open(db)
    try:
        assert (yield s.append("r", "u", "U", None, "again", 2)).message.seq == 2
    finally:
        yield s.stop()


@pytest_twisted.inlineCallbacks
def test_unopenable_file_is_unavailable(tmp_path):
    """A path that cannot be opened makes start() fail with StoreUnavailable naming it."""
    path = tmp_path / "no-such-dir" / "history.db"
    s = SQLiteStore(str(path), prune_interval=None)
    with pytest.raises(StoreUnavailable, match="no-such-dir"):
        yield s.start()
    yield s.stop()


@pytest_twisted.inlineCallbacks
def test_stop_flushes_queued_appends(db):
    """stop() commits everything already queued; appends after stop() fail."""
    s = yield _open(db)
    ds = [s.append("r", "u", "U", None, f"t{i}", i) for i in range(300)]
    stopped = s.stop()
    late = s.append("r", "u", "U", None, "late", 0)
    with pytest.raises(StoreUnavailable):
        yield late
    results = yield defer.gatherResults(ds)
    yield stopped
    assert results[-1].message.seq == 300
    s = yield _open(db)
    try:
        assert len((yield s.replay("r", 0, 1000)).messages) == 300
    finally:
        yield s.stop()


# -- retention -----------------------------------------------------------


@pytest_twisted.inlineCallbacks
def test_prune_by_count_in_chunks_while_appending(db):
    """Pruning keeps the newest history_max per channel, in chunks, while sends go on."""
    s = yield _open(db, history_max=10, prune_chunk=7)
    try:
        for i in range(60):
            yield s.append("big", "u", "U", None, f"t{i}", i)
        yield s.append("small", "u", "U", None, "only", 1)
        pruning = s.prune(now=0)
        more = [s.append("big", "u", "U", None, f"during{i}", 100) for i in range(5)]
        yield defer.gatherResults(more)
        deleted = yield pruning
        assert deleted[0] >= 50
        r = yield s.replay("big", 0, 100)
        assert r.truncated and r.last_seq == 65
        assert r.messages[-1].seq == 65
        yield s.prune(now=0)
        r = yield s.replay("big", 0, 100)
        assert [m.seq for m in r.messages] == list(range(56, 66))
        assert (yield s.history("big", None, 100)).more is False
        assert len((yield s.replay("small", 0, 100)).messages) == 1
    finally:
        yield s.stop()


class _ClockReactor(task.Clock):
    """A fake clock for LoopingCall that hands thread results to the real reactor."""

    def callFromThread(self, f, *args, **kw):
        _reactor().callFromThread(f, *args, **kw)


@pytest_twisted.inlineCallbacks
def test_prune_by_days_on_the_injected_clock(db):
    """Every prune_interval of the injected clock, messages older than history_days go."""
    clock = _ClockReactor()
    clock.advance(100 * DAY)
    s = SQLiteStore(str(db), history_days=2, reactor=clock, prune_interval=3600)
    yield s.start()
    try:
        now_ms = int(clock.seconds() * 1000)
        for age_days in (5, 4, 3, 1, 0):
            yield s.append("r", "u", "U", None, f"{age_days}d", now_ms - age_days * DAY * 1000)
        clock.advance(3600)  # LoopingCall fires prune() at clock time
        r = yield s.replay("r", 0, 100)  # queued behind the prune
        assert [m.text for m in r.messages] == ["1d", "0d"]
        assert r.truncated is True and r.last_seq == 5
        assert s.pruned_messages == 3
        # Pruning lets waiting reads overtake its remaining steps; the
        # LoopingCall schedules its next run only once this prune has finished.
        for _ in range(100):
            if clock.getDelayedCalls():
                break
            yield s.history("r", None, 1)
        assert clock.getDelayedCalls()
        clock.advance(DAY)  # 1d is now 2d + 1h old
        r = yield s.replay("r", 0, 100)
        assert [m.text for m in r.messages] == ["0d"]
    finally:
        yield s.stop()
    assert clock.getDelayedCalls() == []


@pytest_twisted.inlineCallbacks
def test_dedupe_record_outlives_message_and_expires(db):
    """After its message is pruned a resend is still a duplicate, until dedupe_days pass."""
    s = yield _open(db, history_max=1, dedupe_days=3)
    try:
        ts = 10 * DAY * 1000
        a = yield s.append("r", "u", "U", "id1", "first", ts)
        yield s.append("r", "u", "U", "id2", "second", ts)
        yield s.prune(now=10 * DAY)
        assert [m.text for m in (yield s.replay("r", 0, 10)).messages] == ["second"]
        dup = yield s.append("r", "u", "U", "id1", "resent", ts + 5)
        assert dup.duplicate is True
        assert (dup.message.channel, dup.message.seq, dup.message.ts) == ("r", 1, ts)
        assert dup.message.client_id == "id1" and dup.message.sender == "u"
        assert a.message.seq == 1
        deleted = yield s.prune(now=14 * DAY)
        assert deleted[1] == 2
        fresh = yield s.append("r", "u", "U", "id1", "resent later", ts)
        assert fresh.duplicate is False and fresh.message.seq == 3
    finally:
        yield s.stop()


def test_bad_options_are_rejected(db):
    """An unknown synchronous mode or a zero batch size is a ValueError."""
    with pytest.raises(ValueError):
        SQLiteStore(str(db), synchronous="SOMETIMES")
    with pytest.raises(ValueError):
        SQLiteStore(str(db), batch_max=0)


# -- durability across a real process kill ---------------------------------

_CHILD = textwrap.dedent(
    """
    import sys
    from twisted.internet import defer, task
    from chatd.store.sqlite import SQLiteStore

    @defer.inlineCallbacks
    def writer(store, channel):
        i = 0
        while True:
            a = yield store.append(channel, "u", "U", f"{channel}-{i}", "x" * 200, i)
            sys.stdout.write(f"{channel} {a.message.seq}\\n")
            sys.stdout.flush()
            i += 1

    @defer.inlineCallbacks
    def main(reactor):
        store = SQLiteStore(sys.argv[1], reactor=reactor, synchronous=sys.argv[2])
        yield store.start()
        yield defer.gatherResults([writer(store, f"room{k}") for k in range(4)])

    task.react(main)
    """
)


@pytest.mark.parametrize("synchronous", ["FULL", "NORMAL"])
@pytest_twisted.inlineCallbacks
def test_acked_appends_survive_sigkill(db, synchronous):
    """Every seq a process printed after its ack is in the file after SIGKILL."""
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(db), synchronous],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    acked = []
    try:
        deadline = time.monotonic() + 15
        while len(acked) < 2000 and time.monotonic() < deadline:
            line = child.stdout.readline()
            if not line:
                break
            acked.append(line)
        os.kill(child.pid, signal.SIGKILL)
        # read the rest through the same file object: communicate() would read the
        # raw pipe and lose what readline() had buffered (a "gap" in the acked seqs)
        rest, err = child.stdout.read(), child.stderr.read()
        child.wait(timeout=10)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == -signal.SIGKILL, err
    acked.extend(rest.splitlines(keepends=True))
    complete = [line.split() for line in acked if line.endswith("\n")]
    assert len(complete) >= 2000, err

    s = yield _open(db)
    try:
        for k in range(4):
            room = f"room{k}"
            printed = [int(seq) for ch, seq in complete if ch == room]
            assert printed == list(range(1, len(printed) + 1))
            stored = [m.seq for m in (yield s.replay(room, 0, 100_000)).messages]
            assert stored == list(range(1, len(stored) + 1))
            assert set(printed) <= set(stored), room
            # Seq continues after the crash and recovery.
            a = yield s.append(room, "u", "U", None, "after", 0)
            assert a.message.seq == len(stored) + 1
    finally:
        yield s.stop()


@pytest_twisted.inlineCallbacks
def test_one_unstorable_row_fails_only_its_own_append(store, db):
    """A row SQLite cannot take (a lone surrogate) fails that append alone; the other
    appends of the same group-commit batch are committed with gap-free seqs."""
    from chatd.store import StoreUnavailable

    ds = []
    for i in range(10):
        text = "\ud800" if i == 4 else f"m{i}"
        ds.append(store.append("r", "u", "u", f"c{i}", text, 1000 + i))
    results = yield defer.DeferredList(ds, consumeErrors=True)
    ok = [r for success, r in results if success]
    failed = [r for success, r in results if not success]
    assert len(failed) == 1 and failed[0].check(StoreUnavailable)
    assert [a.message.seq for a in ok] == list(range(1, 10))
    assert [a.message.text for a in ok] == [f"m{i}" for i in range(10) if i != 4]
    page = yield store.history("r", None, 50)
    assert [m.seq for m in page.messages] == list(range(1, 10))
    again = yield store.append("r", "u", "u", "c11", "after", 2000)
    assert again.message.seq == 10


BAD = "\ud800"  # a lone surrogate: SQLite cannot store it


@pytest.mark.parametrize(
    "bad",
    [
        ("r", "u", "u", None, BAD, 5, "message", None),  # a room message (no savepoint)
        ("r", BAD, "x", None, "t", 5, "message", None),
        ("r", "u", "u", None, "t", 5, "message", {"mentions": [BAD]}),
        ("r", "u", "u", None, "", 5, "event", {"event": "joined", "user": BAD}),
        (dm_channel("u", BAD), "u", "u", None, "t", 5, "message", None),
        ("r", "u", "u", None, "", 5, "reaction", {"target": 1, "emoji": BAD}),
    ],
    ids=["text", "sender", "mention", "event-user", "dm-peer", "emoji"],
)
@pytest_twisted.inlineCallbacks
def test_an_unstorable_item_fails_alone_and_leaves_nothing(store, db, bad):
    """Wherever the value SQLite cannot take is (text, sender, a mention, an event's
    user, a DM peer, an emoji), that append fails alone with StoreUnavailable and
    none of its side effects stay; the batch's other jobs commit."""
    yield store.append("r", "u", "u", None, "", 1, "event", {"event": "joined", "user": "u"})
    commits = store.commits
    locker = _Locker(db)  # the four jobs queue behind this lock: one batch
    _reactor().callLater(0.2, locker.release)
    ds = [
        store.append("r", "w", "W", None, "before", 2),
        store.append(*bad),
        store.mark_read("u", "r", 2),
        store.append("r", "w", "W", None, "after", 3),
    ]
    results = yield defer.DeferredList(ds, consumeErrors=True)
    assert [ok for ok, _ in results] == [True, False, True, True]
    assert results[1][1].check(StoreUnavailable)
    assert store.commits == commits + 1
    page = yield store.history("r", None, 10)
    assert [m.text for m in page.messages] == ["", "before", "after"]
    assert [m.seq for m in page.messages] == [1, 2, 3]
    assert (yield store.member("r", "u")).read_seq == 2
    assert (yield store.member_count("r")) == 1
    assert (yield store.reactions("r", [1])) == {}
    (c,) = yield store.summaries("u", ["r"])
    assert (c.unread, c.mentions) == (1, 0)
    assert (yield store.conversations("x")) == []


# -- cancelled reads (issue 18: replays of closed connections) -----------


@pytest_twisted.inlineCallbacks
def test_cancelled_read_is_skipped_by_the_writer(db):
    """A read cancelled before the writer reaches it is not run (cancelled_reads counts
    it, reads does not) and fails with CancelledError; the append before it commits."""
    s = yield _open(db, busy_timeout_ms=10_000)
    try:
        locker = _Locker(db)  # the writer waits on this lock with the append
        appended = s.append("r", "u", "U", None, "t", 1)
        read = s.history("r", None, 50)
        read.cancel()
        _reactor().callLater(0.1, locker.release)
        a = yield appended
        assert a.message.seq == 1
        with pytest.raises(defer.CancelledError):
            yield read
        page = yield s.history("r", None, 50)  # the writer carries on
        assert [m.seq for m in page.messages] == [1]
        assert (s.reads, s.cancelled_reads) == (1, 1)
    finally:
        yield s.stop()


@pytest_twisted.inlineCallbacks
def test_sync_replay_encodes_plain_messages_in_the_query(store):
    """This SQLite's ``json_object`` writes what orjson writes (the probe at start), so
    sync_replay gives plain messages as their JSON and the other items as Messages; a
    store whose SQLite does not (``encodes_json`` false) gives Messages only, the
    same bytes in the reply (tests/e2e/test_store_contract.py compares the bytes)."""
    assert store.encodes_json is True
    yield store.append("r", "ann", "Ann", None, "one", 1)
    yield store.append("r", "ann", "Ann", None, "two @bob", 2, "message", {"mentions": ["bob"]})
    yield store.append("r", "bob", "Bob", "b1", "three", 3)
    (got,) = yield store.sync_replay([("r", 0)], 10)
    assert [type(i).__name__ for i in got.items] == ["str", "Message", "str"]
    assert got.items[0] == (
        '{"type":"message","room":"r","seq":1,"from":"ann","name":"Ann","text":"one",'
        '"ts":1,"id":null}'
    )
    assert (got.last_seq, got.truncated, got.text) == (3, False, 3 + 8 + 5)
    store.encodes_json = False
    (plain,) = yield store.sync_replay([("r", 0)], 10)
    assert [m.seq for m in plain.items] == [1, 2, 3]
    assert (plain.last_seq, plain.truncated, plain.text) == (3, False, 16)
    assert wire.sync_items(plain.items) == [wire.item_object(m) for m in plain.items]


def test_the_json_probe_compares_with_orjson():
    """The start-up probe is true on this SQLite and false on a connection without
    JSON functions' agreement (a json_object that escapes differently)."""
    conn = sqlite3.connect(":memory:")
    assert sql.encodes_like_orjson(conn) is True
    # a json_object that writes "/" escaped, as some JSON writers do
    conn.create_function(
        "json_object",
        -1,
        lambda *a: (
            sql.orjson.dumps(dict(zip(a[::2], a[1::2], strict=True))).decode().replace("/", "\\/")
        ),
    )
    assert sql.encodes_like_orjson(conn) is False


_TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)


@settings(max_examples=300, deadline=None)
@given(texts=st.lists(st.tuples(_TEXT, _TEXT, _TEXT), min_size=1, max_size=4), dm=st.booleans())
def test_query_built_json_is_the_wire_json_for_any_text(texts, dm):
    """For any sender, name and text (any character SQLite can store), the JSON the
    query builds for a plain message is what chatd.wire writes for it."""
    conn = sql.connect(":memory:", 2000, "OFF")
    channel = dm_channel(texts[0][0], "zed") if dm else "room"
    for seq, (sender, name, text) in enumerate(texts, 1):
        if dm:
            sender = (texts[0][0], "zed")[seq % 2]
        sql.insert_message(conn, Message(channel, seq, sender, name, text, seq, None), seq)
    got = sql.sync_replay(conn, channel, 0, 10, len(texts))
    expected = sql.replay(conn, channel, 0, 10, len(texts)).messages
    assert wire.encode_with_raw({"i": wire.sync_items(got.items)}) == wire.encode(
        {"i": [wire.item_object(m) for m in expected]}
    )
    assert got.text == sum(len(m.text) for m in expected)
    conn.close()


@pytest_twisted.inlineCallbacks
def test_summaries_and_pages_of_more_channels_than_one_query_takes(store):
    """summaries reads SUMMARIES_CHUNK channels per query: more than that come back
    complete and in the order asked; conversation_page pages the same list."""
    n = sql.SUMMARIES_CHUNK + 7
    rooms = [f"r{i:04d}" for i in range(n)]
    yield defer.gatherResults(
        [
            store.append(r, "ann", "ann", None, "", i, "event", {"event": "joined", "user": "ann"})
            for i, r in enumerate(rooms)
        ]
    )
    asked = list(reversed(rooms)) + ["never"]
    got = yield store.summaries("ann", asked)
    assert [c.channel for c in got] == asked[:-1]
    page, more = yield store.conversation_page("ann", n - 3, 50)
    assert [c.channel for c in page] == rooms[2::-1] and more is False
