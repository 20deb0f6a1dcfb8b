"""The IHistoryStore contract, run against every history store: MemoryStore,
SQLiteStore (a file and ``:memory:``) and RedisStore (a private redis-server from
tests/redis_server.py; skipped without one unless CI=true).

Behaviour of one store alone lives next to it: tests/e2e/test_store_sqlite.py
(schema, WAL, group commit, failures, pruning, SIGKILL) and
tests/e2e/test_store_redis.py (seq across nodes, atomic publish, retention, outages).
"""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet import defer
from zope.interface.verify import verifyObject

from chatd.store import Appended, IHistoryStore, Message, Page, Replay, dm_channel
from chatd.store.memory import MemoryStore
from chatd.store.sqlite import SQLiteStore
from tests.support.store import open_redis, open_sqlite

BACKENDS = [
    "memory",
    "sqlite-file",
    "sqlite-memory",
    pytest.param("redis", marks=pytest.mark.redis),
]
#: whether each backend says it is durable
DURABLE = {"memory": False, "sqlite-file": True, "sqlite-memory": False, "redis": True}


@pytest_twisted.async_yield_fixture(params=BACKENDS)
async def store(request, tmp_path):
    """A started store of each kind (pruning off); stopped afterwards."""
    kind = request.param
    if kind == "memory":
        s = MemoryStore()
        await s.start()
    elif kind == "sqlite-file":
        s = await open_sqlite(tmp_path / "history.db")
    elif kind == "sqlite-memory":
        s = await open_sqlite(":memory:")
    else:
        s = await open_redis(request.getfixturevalue("redis"))
    yield s
    await s.stop()


def test_provides_interface_and_is_durable(store, request):
    """Every store provides IHistoryStore and says whether it is durable (a SQLite file
    and Redis are; MemoryStore and SQLite's :memory: are not)."""
    assert verifyObject(IHistoryStore, store)
    assert store.durable is DURABLE[request.node.callspec.params["store"]]


@pytest_twisted.inlineCallbacks
def test_append_assigns_seq_per_channel(store):
    """Each channel counts its own seq from 1; a DM channel is one per pair of users."""
    a1 = yield store.append("lobby", "u1", "Ann", "c1", "hello", 1000)
    a2 = yield store.append("lobby", "u2", "Bob", None, "hey", 1001)
    b1 = yield store.append("dev", "u1", "Ann", "c2", "other room", 1002)
    dm = dm_channel("u1", "u2")
    d1 = yield store.append(dm_channel("u2", "u1"), "u2", "Bob", None, "psst", 1003)
    assert a1 == Appended(Message("lobby", 1, "u1", "Ann", "hello", 1000, "c1"), False)
    assert a2 == Appended(Message("lobby", 2, "u2", "Bob", "hey", 1001, None), False)
    assert b1.message.seq == 1
    assert d1.message == Message(dm, 1, "u2", "Bob", "psst", 1003, None)
    page = yield store.history(dm, None, 10)
    assert page == Page([d1.message], False)


@pytest_twisted.inlineCallbacks
def test_replay_since_limit_truncated(store):
    """replay returns seq > since ascending, the newest `limit` with truncated when more."""
    msgs = []
    for i in range(10):
        a = yield store.append("r", "u", "U", None, f"m{i}", 100 + i)
        msgs.append(a.message)
    assert (yield store.replay("empty", None, 5)) == Replay([], 0, False)
    assert (yield store.replay("empty", 0, 5)) == Replay([], 0, False)
    assert (yield store.replay("r", None, 5)) == Replay([], 10, False)
    assert (yield store.replay("r", 0, 100)) == Replay(msgs, 10, False)
    assert (yield store.replay("r", 7, 100)) == Replay(msgs[7:], 10, False)
    assert (yield store.replay("r", 10, 100)) == Replay([], 10, False)
    assert (yield store.replay("r", 2, 3)) == Replay(msgs[7:], 10, True)
    assert (yield store.replay("r", 7, 3)) == Replay(msgs[7:], 10, False)
    assert (yield store.replay("r", 0, 0)) == Replay([], 10, True)


@pytest_twisted.inlineCallbacks
def test_history_paging(store):
    """history pages backwards, each page ascending; more is false on the oldest page."""
    msgs = []
    for i in range(7):
        a = yield store.append("r", "u", "U", None, f"m{i}", i)
        msgs.append(a.message)
    p1 = yield store.history("r", None, 3)
    assert p1 == Page(msgs[4:7], True)
    p2 = yield store.history("r", p1.messages[0].seq, 3)
    assert p2 == Page(msgs[1:4], True)
    p3 = yield store.history("r", p2.messages[0].seq, 3)
    assert p3 == Page(msgs[0:1], False)
    assert (yield store.history("r", 1, 3)) == Page([], False)
    assert (yield store.history("r", None, 0)) == Page([], True)
    assert (yield store.history("nobody", None, 5)) == Page([], False)


@pytest_twisted.inlineCallbacks
def test_same_results_as_memory_store(store):
    """A mixed sequence of operations gives exactly the MemoryStore's results."""
    mem = MemoryStore()
    yield mem.start()
    ops = []
    for i in range(60):
        ch = ["a", "b", dm_channel("x", "y")][i % 3]
        cid = None if i % 4 == 0 else f"id{i % 23}"
        ops.append(("append", ch, f"u{i % 2}", f"N{i % 2}", cid, f"text {i}", 5000 + i))
        if i % 7 == 0:
            ops.append(("replay", ch, i // 6, 4))
            ops.append(("history", ch, None if i % 2 else i // 5, 3))
    for op in ops:
        args = op[1:]
        if op[0] == "append":
            expected = yield mem.append(*args)
            got = yield store.append(*args)
        else:
            expected = yield getattr(mem, op[0])(*args)
            got = yield getattr(store, op[0])(*args)
        assert got == expected, op


@defer.inlineCallbacks
def check_append_order_under_concurrency(store, n=1500):
    """Make *n* appends at once over 5 channels; their results must fire in the order
    made, with gap-free seqs per channel."""
    fired = []
    ds = []
    for i in range(n):
        d = store.append(f"room{i % 5}", f"u{i % 3}", "N", f"c{i}", f"t{i}", i)
        d.addCallback(lambda a, i=i: fired.append((i, a)) or a)
        ds.append(d)
    yield defer.gatherResults(ds)
    assert [i for i, _ in fired] == list(range(n))
    for room in range(5):
        seqs = [a.message.seq for i, a in fired if i % 5 == room]
        assert seqs == list(range(1, n // 5 + 1))
    assert store.appended == n


@pytest.mark.parametrize("store", BACKENDS[1:], indirect=True)  # MemoryStore counts nothing
@pytest_twisted.inlineCallbacks
def test_results_fire_in_append_order_under_concurrency(store):
    """Many appends in flight at once: results fire in the order made, seqs in order
    (and with SQLite every append was in one of the group commits)."""
    yield check_append_order_under_concurrency(store)
    if isinstance(store, SQLiteStore):
        assert sum(size * count for size, count in store.batch_sizes.items()) == 1500


@pytest_twisted.inlineCallbacks
def test_read_after_append_callback_sees_it(store):
    """A replay issued from an append's callback sees that append (FIFO with writes)."""
    seen = []

    def replay_now(a):
        d = store.replay("r", a.message.seq - 1, 100)
        return d.addCallback(lambda r: seen.append((a.message, r)))

    ds = [store.append("r", "u", "U", None, f"t{i}", i).addCallback(replay_now) for i in range(50)]
    yield defer.gatherResults(ds)
    assert len(seen) == 50
    for message, r in seen:
        assert r.messages[0] == message
        assert r.last_seq >= message.seq
