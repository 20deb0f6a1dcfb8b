"""The Redis conversation store (RedisStore as an IConversationStore) on a real redis-server.

The IConversationStore contract tests of every store live in
tests/e2e/test_store_contract.py; here is what only Redis has: the key scheme (a
channel's keys in one Redis Cluster slot, a user's in another), recalled text really
gone from Redis, TTLs of sync cursors, data of the previous release, the bus payload of
an item, a Redis restart, and a member list paged without reading it whole.
"""

from __future__ import annotations

import json

import pytest
import pytest_twisted
from twisted.internet import defer

from chatd.cluster import codec
from chatd.cluster.slots import key_slot
from chatd.store import IConversationStore, Message, dm_channel
from tests.support.store import all_keys, open_redis, redis_log_with_listener
from tests.wsclient import wait_for

pytestmark = pytest.mark.redis
#: a restartable redis-server (AOF, appendfsync always)
REDIS_AOF = True
DAY_MS = 86_400_000


def event(store, room, user, kind, ts, by=None, cid=None, **extra):
    data = {"event": kind, "user": user, "by": by or user, **extra}
    return store.append(room, by or user, by or user, cid, "", ts, "event", data)


@pytest_twisted.inlineCallbacks
def test_a_channels_keys_share_one_slot_and_a_users_another(redis_any):
    """After every kind of item in a room and a DM, each key of a channel is in the
    slot of the channel's seq key, each per-user key in the user's own slot."""
    s = yield open_redis(redis_any)
    try:
        yield event(s, "team", "alice", "created", 1, changes={"kind": "private", "title": "T"})
        yield event(s, "team", "bob", "invited", 2, by="alice", role="member")
        sent = yield s.append(
            "team", "alice", "A", "c1", "hi @bob", 3, "message", {"mentions": ["bob"]}
        )
        yield s.append("team", "alice", "A", "c2", "hi all", 4, "message", {"mentions": ["@all"]})
        yield s.append("team", "alice", "A", "c6", "bob?", 4, "message", {"mentions": ["bob"]})
        target = {"target": sent.message.seq}
        yield s.append("team", "alice", "A", "c3", "hi bob", 5, "edited", target)
        yield s.append("team", "bob", "B", "c4", "", 6, "reaction", {**target, "emoji": "👍"})
        yield s.append("team", "alice", "A", "c5", "", 7, "recalled", {**target, "by": "alice"})
        yield s.append(dm_channel("alice", "carol"), "alice", "A", None, "psst", 8)
        yield s.add_user("dave", "Dave", 9)
        yield s.save_cursor("bob", "k1", b"snap", 10)
        keys = yield all_keys(s)
        channels = {"team", dm_channel("alice", "carol")}
        users = {"alice", "bob", "carol", "dave"}
        for key in keys:
            tag = key[key.index("{") + 1 : key.index("}")] if "{" in key else None
            if tag in channels:
                assert key_slot(key) == key_slot(f"t:s:{{{tag}}}"), key
            elif tag in users:
                assert key_slot(key) == key_slot(f"t:u:{{{tag}}}"), key
            else:  # the only keys without a channel's or user's tag
                assert key == "t:channels" or key.startswith("t:d:"), key
        kinds = {key.split(":", 2)[1] for key in keys}
        assert {"s", "m", "w", "ed", "o", "c", "mn", "ma", "rx", "r", "mb", "ms", "rd"} <= kinds
        assert {"u", "uc", "cz", "cs"} <= kinds
    finally:
        yield s.stop()


@pytest_twisted.inlineCallbacks
def test_recalled_text_is_gone_from_redis(redis_any):
    """A recall removes the message's and its edits' text from every key (XDEL of
    the stream entries, not a flag), and reads show the tombstone."""
    s = yield open_redis(redis_any)
    try:
        sent = yield s.append("r", "alice", "A", "c1", "the secret", 1)
        yield s.append("r", "alice", "A", "c2", "the secret v2", 2, "edited", {"target": 1})
        yield s.append("r", "bob", "B", None, "unrelated", 3)
        rec = yield s.append(
            "r", "alice", "A", "c3", "", 4, "recalled", {"target": 1, "by": "alice"}
        )
        assert rec.message.kind == "recalled" and not rec.duplicate
        dump = []
        for key in (yield all_keys(s)):
            kind = yield s.node.execute("TYPE", key)
            if kind == "stream":
                dump.append((yield s.node.execute("XRANGE", key, "-", "+")))
            elif kind == "zset":
                dump.append((yield s.node.execute("ZRANGE", key, 0, -1)))
            elif kind == "hash":
                dump.append((yield s.node.execute("HGETALL", key)))
            elif kind == "string":
                dump.append((yield s.node.execute("GET", key)))
        assert "secret" not in json.dumps(dump, ensure_ascii=False)
        page = yield s.history("r", None, 10)
        assert [m.seq for m in page.messages] == [1, 2, 3, 4]
        first, edit = page.messages[0], page.messages[1]
        assert (first.text, first.data) == (
            "",
            {"edited_ts": 2, "recalled": {"by": "alice", "ts": 4}},
        )
        assert (edit.kind, edit.text, edit.data) == ("edited", "", {"target": 1})
        again = yield s.append("r", "alice", "A", "c1", "the secret", 9)
        assert again.duplicate and again.message.seq == sent.message.seq
        assert again.message.text == "" and again.message.data["recalled"]["by"] == "alice"
        replay = yield s.replay("r", 0, 2)
        assert [m.seq for m in replay.messages] == [3, 4] and replay.truncated
    finally:
        yield s.stop()


@pytest_twisted.inlineCallbacks
def test_sync_cursors_expire_in_30_days_and_the_newest_16_stay(redis_any):
    """save_cursor sets a 30-day TTL on each snapshot and keeps the newest 16 per user;
    another user's cursor id loads nothing; a non-UTF-8 snapshot comes back as bytes."""
    s = yield open_redis(redis_any)
    try:
        for i in range(20):
            yield s.save_cursor("u", f"c{i}", bytes([0xFF, i]), 1000)
        yield s.save_cursor("v", "c19", b"other", 1000)
        loaded = yield defer.gatherResults([s.load_cursor("u", f"c{i}") for i in range(20)])
        assert loaded == [None] * 4 + [bytes([0xFF, i]) for i in range(4, 20)]
        assert (yield s.load_cursor("w", "c19")) is None
        assert (yield s.load_cursor("v", "c19")) == b"other"
        for key in (s._cursor_key("u", "c19"), s._key("cz", "u")):
            ttl = yield s.node.execute("PTTL", key)
            assert 29 * DAY_MS < int(ttl) <= 30 * DAY_MS, key
        assert int((yield s.node.execute("ZCARD", s._key("cz", "u")))) == 16
    finally:
        yield s.stop()


@pytest_twisted.inlineCallbacks
def test_data_of_the_previous_release_still_works(redis):
    """Stream entries written by the previous release (no kind, no data, no counters)
    are plain messages; the first new message of the old DM creates both rows with
    the old history read (the contract's rule) and fills the message ordinals in
    from the stream, so a later marker counts the old messages right."""
    s = yield open_redis(redis)
    dm = dm_channel("alice", "bob")
    try:
        for seq in (1, 2, 3):  # exactly what the previous append.lua wrote
            yield s.node.execute("INCR", s._key("s", dm))
            fields = ["s", "alice", "n", "Alice", "t", f"old {seq}", "ts", str(seq)]
            yield s.node.execute("XADD", s._key("m", dm), "MAXLEN", 10000, f"0-{seq}", *fields)
        old = yield s.history(dm, None, 10)
        assert old.messages[0] == Message(dm, 1, "alice", "Alice", "old 1", 1, None)
        sent = yield s.append(dm, "alice", "Alice", None, "new", 4)
        assert sent.message.seq == 4
        (bob,) = yield s.summaries("bob", [dm])
        assert (bob.unread, bob.read_seq, bob.peer, bob.peer_read) == (1, 3, "alice", 4)
        assert bob.last == sent.message
        assert (yield s.has_user("bob")) is True
        ordinals = yield s.node.execute("ZRANGE", s._key("o", dm), 0, -1)
        assert ordinals == ["1", "2", "3", "4"]
    finally:
        yield s.stop()


@pytest_twisted.inlineCallbacks
def test_items_on_the_bus_decode_to_what_append_returned(redis_any):
    """The commit script publishes an event, a reaction (with the store's "on") and a
    message with mentions as the nine-element array; codec.decode gives the Message
    append returned and codec.encode the same bytes."""
    s, listener, seen, log = yield redis_log_with_listener(redis_any, rooms=["r"])
    try:
        fields = [
            (
                "r",
                "alice",
                "A",
                "e1",
                "",
                1,
                "event",
                {"event": "joined", "user": "alice", "by": "alice"},
            ),
            ("r", "alice", "A", "m1", "a/b ü", 2, "message", {"mentions": ["bob"], "reply_to": 1}),
            ("r", "bob", "B", "x1", "", 3, "reaction", {"target": 2, "emoji": "👍", "on": False}),
            ("r", "bob", "B", "x2", "", 4, "reaction", {"target": 2, "emoji": "👍"}),
            ("r", "bob", "B", None, "plain", 5),
        ]
        results = []
        for f in fields:
            results.append((yield log.append("message", f, ("sess", False))))
        yield listener.barrier()
        assert [r.message.data["on"] for r in results[2:4]] == [True, False]
        assert len(seen) == len(fields)
        for payload, appended in zip(seen, results, strict=True):
            event = codec.decode(payload)
            assert event.message == appended.message
            assert codec.encode(event) == payload
        assert len(json.loads(seen[-1])["m"]) == 7
    finally:
        yield listener.stop()
        yield s.stop()


@pytest_twisted.inlineCallbacks
def test_conversations_survive_a_redis_restart(redis):
    """Membership, markers and items are Redis's (AOF): after a restart, and the store's
    reconnect (its scripts loaded again), everything reads back and appends go on."""
    s = yield open_redis(redis)
    try:
        yield event(s, "team", "alice", "created", 1, changes={"kind": "private"})
        yield event(s, "team", "bob", "invited", 2, by="alice")
        yield s.append("team", "alice", "A", "c1", "before", 3)
        before = yield s.conversations("bob")
        redis.kill()
        yield wait_for(lambda: not s.node.healthy, 5.0, what="the store to notice")
        redis.start()
        yield wait_for(lambda: s.node.healthy, 10.0, what="the store to reconnect")
        yield s.node.execute("SCRIPT", "FLUSH")  # as a new Redis would
        assert (yield s.conversations("bob")) == before
        after = yield s.append("team", "alice", "A", "c2", "after", 4)
        assert after.message.seq == 4
        (bob,) = yield s.summaries("bob", ["team"])
        assert (bob.unread, bob.kind, bob.last.text) == (2, "private", "after")
    finally:
        yield s.stop()


@pytest_twisted.inlineCallbacks
def test_a_big_room_is_paged_not_loaded(redis):
    """1,200 members: pages by user id, readers counted and listed by user id past the
    sorted-set shortcut; no page reads more than limit + 1 members."""
    s = yield open_redis(redis)
    try:
        assert IConversationStore.providedBy(s)
        users = [f"u{i:04d}" for i in range(1200)]
        for i, user in enumerate(users):
            yield event(s, "big", user, "joined", i)
        assert (yield s.member_count("big")) == 1200
        got, after = [], None
        while True:
            page, more = yield s.members("big", after, 500)
            assert len(page) <= 500
            got += [m.user for m in page]
            if not more:
                break
            after = page[-1].user
        assert got == users
        # u0000 joined at seq 1 ... u1199 at seq 1200: read_seq = the join's seq
        count, first = yield s.readers("big", 101, 5)
        assert (count, first) == (1100, users[100:105])
        count, first = yield s.readers("big", 1190, 3)
        assert (count, first) == (11, users[1189:1192])
        yield s.node.execute("CONFIG", "RESETSTAT")
        page, more = yield s.members("big", "u0500", 10)
        assert [m.user for m in page] == users[501:511] and more
        stats = yield s.node.execute("INFO", "commandstats")
        ran = {line.split(":")[0][len("cmdstat_") :] for line in stats.splitlines() if ":" in line}
        assert {"zrangebylex", "hmget"} <= ran  # one page by user id, its rows by name
        assert not ran & {"hgetall", "hkeys", "hvals", "zrange", "zrangebyscore", "smembers"}
    finally:
        yield s.stop()


@pytest_twisted.inlineCallbacks
def test_unread_is_not_under_counted_after_trimming(redis_any):
    """With history_max=5 the ordinals are trimmed with the stream; a marker below the
    oldest kept message still counts every message after it; reactions, edits and
    rewritten items leave with their message."""
    s = yield open_redis(redis_any, history_max=5)
    try:
        yield event(s, "r", "bob", "joined", 1)
        for i in range(20):
            yield s.append("r", "ann", "Ann", None, f"m{i}", 2 + i)
        assert int((yield s.node.execute("ZCARD", s._key("o", "r")))) == 5
        (bob,) = yield s.summaries("bob", ["r"])
        assert (bob.read_seq, bob.unread, bob.last.text) == (1, 20, "m19")
        assert (yield s.mark_read("bob", "r", 18)) == 18
        (bob,) = yield s.summaries("bob", ["r"])
        assert bob.unread == 3
        # a message's reactions and edits leave with it
        yield s.append("r", "bob", "Bob", None, "", 30, "reaction", {"target": 21, "emoji": "👍"})
        yield s.append("r", "ann", "Ann", None, "m19!", 31, "edited", {"target": 21})
        assert (yield s.reactions("r", [21])) == {21: {"👍": ["bob"]}}
        for i in range(5):
            yield s.append("r", "ann", "Ann", None, f"n{i}", 40 + i)
        assert (yield s.reactions("r", [21])) == {}
        for kind in ("rx", "ed", "w"):
            assert not int((yield s.node.execute("EXISTS", s._key(kind, "r")))), kind
    finally:
        yield s.stop()


@pytest_twisted.inlineCallbacks
def test_names_with_braces_and_unicode_reach_the_same_keys(redis_any):
    """Rooms and users whose names hold hash-tag braces, quotes, slashes and non-ASCII
    text: Python and the Lua scripts build the same keys, and every read finds what
    the append wrote."""
    s = yield open_redis(redis_any)
    room, user = 'r}{"/ü', 'u}{zoë"'
    dm = dm_channel(user, "ann")
    try:
        yield event(s, room, user, "created", 1, changes={"title": "T/ü"})
        yield s.append(room, "ann", "Ann", None, "hi", 2, "message", {"mentions": [user]})
        yield s.append(dm, "ann", "Ann", "d", "psst </script>", 3)
        got = yield s.conversations(user)
        assert sorted(c.channel for c in got) == sorted([room, dm])
        summaries = yield s.summaries(user, [room, dm])
        assert [(c.unread, c.mentions) for c in summaries] == [(1, 1), (1, 0)]
        assert (yield s.room(room)).title == "T/ü"
        assert (yield s.members(room, None, 10))[0][0].user == user
        assert (yield s.mark_read(user, dm, 3)) == 1  # clamped to the DM's newest seq
        yield s.save_cursor(user, "c}1", b"snap", 4)
        assert (yield s.load_cursor(user, "c}1")) == b"snap"
    finally:
        yield s.stop()


@pytest_twisted.inlineCallbacks
def test_pruning_by_age_takes_reactions_edits_and_rewritten_items_along(redis_any):
    """prune() by history_days drops an old message's reactions, edits and rewritten
    state with it, and its ordinal is counted as trimmed (unread stays right)."""
    s = yield open_redis(redis_any, history_days=2)
    now = 100 * 86400
    old, new = (now - 5 * 86400) * 1000, now * 1000
    try:
        yield event(s, "r", "bob", "joined", old)
        yield s.append("r", "ann", "Ann", None, "old", old)  # 2
        yield s.append("r", "bob", "Bob", None, "", old, "reaction", {"target": 2, "emoji": "x"})
        yield s.append("r", "ann", "Ann", None, "old!", old, "edited", {"target": 2})
        yield s.append("r", "ann", "Ann", None, "new", new)  # 5
        deleted = yield s.prune(now)
        assert deleted == 4  # 1, 3, 4 from the stream, 2 from the rewritten items
        assert [m.seq for m in (yield s.history("r", None, 10)).messages] == [5]
        assert (yield s.reactions("r", [2])) == {}
        for kind in ("rx", "ed", "w"):
            assert not int((yield s.node.execute("EXISTS", s._key(kind, "r")))), kind
        (bob,) = yield s.summaries("bob", ["r"])
        assert (bob.read_seq, bob.unread) == (1, 2)
    finally:
        yield s.stop()
