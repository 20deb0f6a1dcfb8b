"""Tests of the cluster history store (chatd.store.redis.RedisStore) on a real redis-server.

The IHistoryStore contract tests (tests/e2e/test_store_contract.py) run against
RedisStore too; the Redis-specific behaviour (seq across nodes, atomic publish,
retention, outages) is tested here.
"""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet import defer

from chatd.cluster.redis import RedisURL
from chatd.cluster.slots import key_slot
from chatd.media.redismeta import RedisMeta
from chatd.store import Appended, Message, Replay, StoreUnavailable
from tests.support.store import all_keys, open_redis, redis_log_with_listener
from tests.wsclient import wait_for

pytestmark = pytest.mark.redis
DAY = 86400


@pytest_twisted.inlineCallbacks
def test_two_nodes_share_seq_and_dedupe(redis_any):
    """Two stores (two nodes) interleaving appends get one seq sequence and one dedupe."""
    a = yield open_redis(redis_any)
    b = yield open_redis(redis_any)
    try:
        results = yield defer.gatherResults(
            [
                (a if i % 2 else b).append("r", f"u{i % 3}", "N", f"id{i}", f"t{i}", i)
                for i in range(200)
            ]
        )
        assert sorted(r.message.seq for r in results) == list(range(1, 201))
        again = yield a.append("elsewhere", "u1", "N", "id1", "resent via a", 5)
        first = next(r for r in results if r.message.client_id == "id1")
        assert again == Appended(first.message, True)
        again_b = yield b.append("r", "u1", "N", "id1", "resent via b", 5)
        assert again_b.duplicate and again_b.message.seq == first.message.seq
        replay = yield b.replay("r", 0, 1000)
        assert [m.seq for m in replay.messages] == list(range(1, 201))
    finally:
        yield a.stop()
        yield b.stop()


@pytest_twisted.inlineCallbacks
def test_dedupe_record_outlives_trimmed_message(redis_any):
    """With history_max=1 a resend of a trimmed message is still a duplicate with its seq and ts."""
    s = yield open_redis(redis_any, history_max=1)
    try:
        ts = 10 * DAY * 1000
        yield s.append("r", "u", "U", "id1", "first", ts)
        yield s.append("r", "u", "U", "id2", "second", ts + 1)
        assert [m.text for m in (yield s.replay("r", 0, 10)).messages] == ["second"]
        assert (yield s.replay("r", 0, 10)).truncated is True
        dup = yield s.append("r", "u", "U", "id1", "resent", ts + 5)
        assert dup == Appended(Message("r", 1, "u", "", "", ts, "id1"), True)
        fresh = yield s.append("r", "u", "U", "id3", "third", ts + 6)
        assert fresh.message.seq == 3
    finally:
        yield s.stop()


@pytest_twisted.inlineCallbacks
def test_prune_by_days_keeps_seq(redis_any):
    """prune() deletes messages older than history_days; seq continues, replay reports the gap."""
    s = yield open_redis(redis_any, history_days=2, prune_chunk=3)
    try:
        now = 100 * DAY
        for age in (9, 8, 7, 6, 5, 4, 1, 0):
            yield s.append("r", "u", "U", None, f"{age}d", int((now - age * DAY) * 1000))
        for age in (9, 8, 7):
            yield s.append("old", "u", "U", None, f"{age}d", int((now - age * DAY) * 1000))
        deleted = yield s.prune(now)
        assert deleted == 9
        r = yield s.replay("r", 0, 100)
        assert [m.text for m in r.messages] == ["1d", "0d"]
        assert r == Replay(r.messages, 8, True)
        assert (yield s.replay("old", 0, 10)) == Replay([], 3, True)
        a = yield s.append("old", "u", "U", None, "new", int(now * 1000))
        assert a.message.seq == 4
    finally:
        yield s.stop()


@pytest_twisted.inlineCallbacks
def test_commit_publishes_on_the_bus_in_seq_order(redis_any):
    """A message log append commits and publishes in one script: the bus sees every seq in order."""
    s, listener, seen, log = yield redis_log_with_listener(redis_any, rooms=["r"])
    try:
        ds = [
            log.append("message", ("r", "u", "U", f"c{i}", f"t{i}", i), ("sess", False))
            for i in range(100)
        ]
        dup = log.append("message", ("r", "u", "U", "c0", "again", 0), ("sess", False))
        yield defer.gatherResults([*ds, dup])
        yield listener.barrier()
        import json

        events = [json.loads(p) for p in seen]
        assert [e["m"][1] for e in events] == list(range(1, 101))
        assert events[0]["k"] == "message" and events[0]["a"] == ["sess", False]
        assert events[0]["n"] == s.node.node_id
    finally:
        yield listener.stop()
        yield s.stop()


@pytest_twisted.inlineCallbacks
def test_redis_down_fails_fast_then_recovers(redis):
    """With Redis gone, appends fail with StoreUnavailable at once; after restart they work."""
    s = yield open_redis(redis)
    try:
        first = yield s.append("r", "u", "U", "a", "before", 1)
        redis.kill()
        yield wait_for(lambda: not s.node.healthy, 2.5, what="the store to notice Redis is gone")
        assert s.node.healthy is False
        with pytest.raises(StoreUnavailable):
            yield s.append("r", "u", "U", "b", "during", 2)
        redis.start()
        yield wait_for(lambda: s.node.healthy, 5.0, what="the store to reconnect")
        assert s.node.healthy is True
        after = yield s.append("r", "u", "U", "b", "after", 3)
        # no persistence in this server: history restarted with it
        assert after.duplicate is False and after.message.seq >= 1
        assert first.message.seq == 1
    finally:
        yield s.stop()


@pytest_twisted.inlineCallbacks
def test_push_moderation_and_media_keys_each_in_one_slot(redis_any):
    """Every key a push, moderation or media script touches is in one slot: a user's
    push keys in the user's, a room's watchers in the room's, the moderation queue and
    audit log under ``{mod}`` and every media key under ``{media}`` on a Redis Cluster
    (the scripts run there: Redis refuses a cross-slot one). On one Redis the key
    names are the previous release's, so its data is read as it was written."""
    s = yield open_redis(redis_any)
    meta = RedisMeta(s.node)
    try:
        yield s.push_subscribe("alice", {"T": 2}, {"dev": True}, 1)
        yield s.claim_push("alice", "dev", "T", 1000, 500)
        yield s.set_sanction("bob", "mute", "dev", 5000)
        entry, _ = yield s.add_report("k1", {"reason": "spam"})
        yield s.close_report(entry["id"], {"action": "dismiss"})
        yield s.add_report("k2", {"reason": "more"})
        yield s.add_audit({"who": "mod"})
        upload = {"id": "A" * 22, "owner": "alice", "size": 5, "sha256": "a" * 64, "created": 1}
        yield meta.record(upload, 100)
        yield meta.ready(upload["id"])
        yield meta.claim([upload["id"]], "alice", "tok", "dev", 2)
        yield meta.posted("tok", [upload["id"]], [upload["id"]], "dev", 7)
        keys = yield all_keys(s)
        push = [k for k in keys if k.split(":")[1] in ("pq", "pr", "pd", "pw", "sn")]
        assert sorted(push) == [
            "t:pd:{alice}",
            "t:pq:{alice}",
            "t:pr:{alice}",
            "t:pw:{dev}",
            "t:sn:{bob}",
        ]
        mod = ["mq:n", "mq:e", "mq:all", "mq:open", "mq:k", "ma:n", "ma:e", "ma:all"]
        media = [
            f"media:{{{upload['id']}}}",
            f"media:{{{upload['id']}}}:posts",
            "media-in:{dev}:7",
            f"media-quota:{{{upload['owner']}}}",
            f"media-blob:{{{upload['sha256']}}}",
            "media-posted",
        ]
        if s.cluster:
            mod, media = [f"{{mod}}:{k}" for k in mod], [f"{{media}}:{k}" for k in media]
            assert len({key_slot("t:" + k) for k in mod}) == 1
            assert len({key_slot("t:" + k) for k in media}) == 1
        assert sorted(k for k in keys if k not in push) == sorted(f"t:{k}" for k in mod + media)
        assert [e["id"] for e in (yield s.reports("open", None, 10))] == [entry["id"] + 1]
        assert (yield meta.posted_in("dev", 7)) == [upload["id"]]
        assert (yield meta.used("alice", 2)) == 5
    finally:
        yield s.stop()


def test_url_parsing():
    """--redis URLs: scheme, password, db, prefix and tunables; bad ones are ValueErrors."""
    u = RedisURL("rediss://:s3cr%40t@cache.example:6380/2?prefix=x:&heartbeat=1&node_ttl=3")
    assert (u.tls, u.host, u.port, u.db, u.password, u.prefix) == (
        True,
        "cache.example",
        6380,
        2,
        "s3cr@t",
        "x:",
    )
    assert (u.heartbeat, u.node_ttl) == (1.0, 3.0)
    assert "s3cr" not in u.redacted()
    d = RedisURL("redis://localhost")
    assert (d.port, d.db, d.prefix, d.password, d.tls) == (6379, 0, "chatd:", None, False)
    for bad in ("http://x", "redis://x/?nope=1", "redis://x/?heartbeat=5&node_ttl=2"):
        with pytest.raises(ValueError):
            RedisURL(bad)
