"""The IMediaMeta contract, run against both implementations: PooledMeta (the SQLite
file of one node, its blocking calls run in place) and RedisMeta (``--redis``, a
private redis-server from tests/redis_server.py, and ``redis+cluster://``, the
module's Redis Cluster from tests/redis_cluster.py), so a cluster's media behave as a
single node's: records and the quota, claims and pending posts, posts, the sweep's
queries and the conditional removal."""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet.defer import maybeDeferred
from zope.interface.verify import verifyObject

from chatd.media.meta import QUOTA_WINDOW, IMediaMeta, PooledMeta, QuotaExceeded
from chatd.media.redismeta import RedisMeta
from tests.support.store import redis_node

T0 = 1_000_000.0


def row(media_id, owner="alice", size=100, created=T0, sha="a", thumb="b"):
    return {
        "id": media_id,
        "owner": owner,
        "kind": "image",
        "mime": "image/png",
        "name": "p.png",
        "size": size,
        "width": 4,
        "height": 3,
        "duration_ms": None,
        "sha256": sha * 64,
        "thumb_sha256": thumb * 64 if thumb else None,
        "thumb_size": 10 if thumb else None,
        "created": created,
    }


A, B, C = "A" * 22, "B" * 22, "C" * 22


@pytest_twisted.async_yield_fixture(
    params=[
        "sqlite",
        pytest.param("redis", marks=pytest.mark.redis),
        pytest.param("redis_cluster", marks=pytest.mark.redis),
    ]
)
async def meta(request, tmp_path):
    if request.param == "sqlite":
        m = PooledMeta(str(tmp_path / "media.sqlite3"), maybeDeferred)
        yield m
        await m.close()
    else:
        node = redis_node(request.getfixturevalue(request.param), prefix="mt:")
        await node.start()
        yield RedisMeta(node)
        await node.stop()


async def recorded(meta, *rows, ready=True):
    for r in rows:
        await meta.record(r, 0)
        if ready:
            await meta.ready(r["id"])


def test_provides_the_interface(meta):
    assert verifyObject(IMediaMeta, meta)


@pytest_twisted.ensureDeferred
async def test_a_record_reads_back_whole_and_not_ready_until_ready(meta):
    assert await meta.get(A) is None and await meta.get_many([A]) == {}
    await meta.record(row(A), 0)
    got = await meta.get(A)
    expected = {**row(A), "attached": 0, "ready": 0}
    assert {k: got[k] for k in expected} == expected
    await meta.ready(A)
    assert (await meta.get(A))["ready"] == 1
    await recorded(meta, row(B, thumb=None))
    many = await meta.get_many([A, B, C, A])
    assert sorted(many) == [A, B] and many[B]["thumb_sha256"] is None


@pytest_twisted.ensureDeferred
async def test_the_quota_counts_the_owners_uploads_of_the_last_day(meta):
    await meta.record(row(A, size=600), 1000)
    with pytest.raises(QuotaExceeded):
        await meta.record(row(B, size=500, created=T0 + 10), 1000)
    assert await meta.get(B) is None
    await meta.record(row(C, owner="bob", size=900, created=T0 + 10), 1000)  # bob's own
    assert await meta.used("alice", T0 + 10) == 600
    later = T0 + QUOTA_WINDOW + 1
    assert await meta.used("alice", later) == 0
    await meta.record(row(B, size=900, created=later), 1000)
    assert await meta.used("alice", later) == 900
    await meta.remove(B)  # a removed upload no longer counts
    assert await meta.used("alice", later) == 0


@pytest_twisted.ensureDeferred
async def test_a_claim_marks_only_the_owners_ready_uploads_and_posts_them(meta):
    await recorded(meta, row(A), row(B, owner="bob"))
    await meta.record(row(C, sha="c"), 0)  # not ready
    rows = await meta.claim([A, B, C, "D" * 22], "alice", "tok", "room", T0 + 5)
    assert sorted(rows) == [A, B, C]
    assert rows[A]["attached"] == T0 + 5 and rows[B]["attached"] == 0
    assert await meta.pending_before(T0 + 5) == [("tok", A, "room", T0 + 5)]
    assert await meta.pending_before(T0 + 4) == []
    assert await meta.channels(A) == ["room"]  # pending: members may already see it
    # pending: not "never posted" (bob's and the unready one are)
    assert sorted(r["id"] for r in await meta.unposted_before(T0 + 100)) == [B, C]
    await meta.posted("tok", [A], [A], "room", 7)
    assert await meta.pending_before(T0 + 100) == []
    assert await meta.posts([A]) == [(A, "room", 7)] and await meta.posted_in("room", 7) == [A]
    assert await meta.channels(A) == ["room"]
    assert await meta.posts() == [(A, "room", 7)]


@pytest_twisted.ensureDeferred
async def test_release_and_resolve_settle_pending_posts(meta):
    await recorded(meta, row(A), row(B, sha="c", thumb=None))
    await meta.claim([A, B], "alice", "t1", "room", T0)
    await meta.release("t1", [A, B])
    assert await meta.pending_before(T0) == [] and await meta.channels(A) == []
    await meta.claim([A, B], "alice", "t2", "dm:a:b", T0 + 1)
    await meta.resolve("t2", A, "dm:a:b", 3)  # found in the history
    await meta.resolve("t2", B, "dm:a:b", None)  # not found
    assert await meta.pending_before(T0 + 10) == []
    assert await meta.posts([A, B]) == [(A, "dm:a:b", 3)]
    assert [r["id"] for r in await meta.unposted_before(T0 + 1)] == [B]


@pytest_twisted.ensureDeferred
async def test_unposted_before_follows_the_upload_and_attach_times(meta):
    await recorded(meta, row(A), row(B, created=T0 + 50, sha="c"))
    assert [r["id"] for r in await meta.unposted_before(T0)] == [A]
    await meta.claim([A], "alice", "t", "room", T0 + 100)
    await meta.release("t", [A])
    got = {r["id"]: r for r in await meta.unposted_before(T0 + 100)}
    assert sorted(got) == [A, B] and got[A]["attached"] == T0 + 100
    assert [r["id"] for r in await meta.unposted_before(T0 + 60)] == [B]
    await meta.claim([B], "alice", "t", "room", T0 + 100)
    await meta.posted("t", [B], [B], "room", 1)
    await meta.drop_posts([(B, "room", 1)])  # its last post gone: unposted again
    assert await meta.posts([B]) == [] and await meta.posted_in("room", 1) == []
    assert sorted(r["id"] for r in await meta.unposted_before(T0 + 100)) == [A, B]


@pytest_twisted.ensureDeferred
async def test_removal_returns_the_orphaned_keys_only_with_the_last_row(meta):
    await recorded(meta, row(A), row(B), row(C, sha="c", thumb=None))
    assert await meta.remove(A) == []  # B still has both keys
    assert await meta.remove(B) == ["a" * 64, "b" * 64]
    assert await meta.remove(B) == []  # gone already
    assert await meta.remove(C) == ["c" * 64]
    assert await meta.get_many([A, B, C]) == {}


@pytest_twisted.ensureDeferred
async def test_referenced_tells_whether_a_row_uses_a_stored_object(meta):
    """What a removal asks after retiring an object (an identical upload recorded meanwhile)."""
    assert not await meta.referenced("a" * 64)
    await recorded(meta, row(A), ready=False)  # recorded is enough: its put may have been skipped
    assert await meta.referenced("a" * 64) and await meta.referenced("b" * 64)
    assert not await meta.referenced("c" * 64)
    assert await meta.remove(A) == ["a" * 64, "b" * 64]
    assert not await meta.referenced("a" * 64) and not await meta.referenced("b" * 64)


@pytest_twisted.ensureDeferred
async def test_a_conditional_removal_keeps_what_the_decision_did_not_see(meta):
    await recorded(meta, row(A), row(B, sha="c", thumb=None))
    await meta.claim([A], "alice", "t1", "room", T0)
    await meta.posted("t1", [A], [A], "room", 1)
    seen = await meta.posts([A])
    # attached to a new message being committed: a pending post the decision missed
    await meta.claim([A], "alice", "t2", "room", T0 + 1)
    assert await meta.remove(A, seen) is None and await meta.get(A) is not None
    await meta.posted("t2", [A], [A], "room", 2)
    assert await meta.remove(A, seen) is None  # a post the decision missed
    assert await meta.remove(A, await meta.posts([A])) == ["a" * 64, "b" * 64]
    assert await meta.posted_in("room", 1) == [] and await meta.posts() == []
    # the sweep's cutoff: attached after it, kept
    await meta.claim([B], "alice", "t3", "room", T0 + 10)
    await meta.release("t3", [B])
    assert await meta.remove(B, (), T0 + 5) is None
    assert await meta.remove(B, (), T0 + 10) == ["c" * 64]


@pytest_twisted.ensureDeferred
async def test_the_sqlite_file_opened_by_several_pool_threads_at_once(tmp_path):
    """The first uploads may reach a fresh PooledMeta in several media pool threads at
    once: the file is opened (and its schema made) once, every record lands."""
    from twisted.internet import defer, reactor
    from twisted.internet.threads import deferToThreadPool
    from twisted.python.threadpool import ThreadPool

    pool = ThreadPool(4, 4, "test-media")
    pool.start()
    try:
        for attempt in range(5):
            path = tmp_path / f"media{attempt}.sqlite3"
            m = PooledMeta(str(path), lambda f, *a: deferToThreadPool(reactor, pool, f, *a))
            ids = [f"{attempt}{i:021d}" for i in range(8)]
            await defer.gatherResults([m.record(row(i), 0) for i in ids], consumeErrors=True)
            assert sorted(await m.get_many(ids)) == ids
            await m.close()
    finally:
        pool.stop()
