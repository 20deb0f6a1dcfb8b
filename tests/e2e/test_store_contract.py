"""The IHistoryStore contract, run against every history store: MemoryStore,
SQLiteStore (a file and ``:memory:``) and RedisStore (a private redis-server from
tests/redis_server.py, and a private 3-master Redis Cluster from
tests/redis_cluster.py; skipped without redis-server unless CI=true).

The IConversationStore contract (timeline item kinds and their side effects,
members, read markers, unread/mentions, conversations, cursors) runs against every
one of those stores whose class declares IConversationStore (``conv_store``).

Behaviour of one store alone lives next to it: tests/e2e/test_store_sqlite.py
(schema, WAL, group commit, failures, pruning, SIGKILL) and
tests/e2e/test_store_redis.py (seq across nodes, atomic publish, retention, outages).
"""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet import defer
from zope.interface.verify import verifyObject

from chatd import wire
from chatd.store import (
    Appended,
    IConversationStore,
    IHistoryStore,
    Member,
    Message,
    Page,
    Replay,
    Room,
    dm_channel,
)
from chatd.store.memory import MemoryStore
from chatd.store.sqlite import SQLiteStore
from tests.support.store_backends import backends, store_fixture

BACKENDS = backends(IHistoryStore, cluster=True)
#: whether each backend says it is durable
DURABLE = {
    "memory": False,
    "sqlite-file": True,
    "sqlite-memory": False,
    "redis": True,
    "redis-cluster": True,
}
#: the backends whose store provides IConversationStore
CONVERSATION_BACKENDS = backends(IConversationStore, cluster=True)
#: a started store of each kind (pruning off); stopped afterwards
store = store_fixture(IHistoryStore, cluster=True)


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
    made, with gap-free seqs per channel. Under Redis Cluster the channels are on
    several masters and a client id is claimed in the sender's slot first: each
    channel's results fire in seq order, gap-free, and one sender's in the order made."""
    fired = []
    ds = []
    for i in range(n):
        d = store.append(f"room{i % 5}", f"u{i % 3}", "N", f"c{i}", f"t{i}", i)
        d.addCallback(lambda a, i=i: fired.append((i, a)) or a)
        ds.append(d)
    yield defer.gatherResults(ds)
    if not getattr(store, "cluster", False):
        assert [i for i, _ in fired] == list(range(n))
    for room in range(5):
        seqs = [a.message.seq for i, a in fired if i % 5 == room]
        assert seqs == list(range(1, n // 5 + 1))
        for user in range(3):
            made = [i for i, a in fired if i % 5 == room and i % 3 == user]
            assert made == sorted(made)
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


# -- IConversationStore -----------------------------------------------------------

conv = pytest.mark.parametrize("store", CONVERSATION_BACKENDS, indirect=True)

DM = dm_channel("ann", "bob")


def event(store, room, ev, user, by, ts, cid=None, **extra):
    """Append the ``event`` item *ev* about *user* (by *by*)."""
    return store.append(
        room, by, by.title(), cid, "", ts, "event", {"event": ev, "user": user, "by": by, **extra}
    )


@defer.inlineCallbacks
def team(store, *users):
    """A private room "team" created by ann, *users* joined (seqs 1..n+1)."""
    yield event(
        store, "team", "created", "ann", "ann", 100, changes={"kind": "private", "title": "Team"}
    )
    for i, user in enumerate(users):
        yield event(store, "team", "joined", user, user, 101 + i, role="member")


@conv
def test_provides_conversation_interface(store):
    """The store class declares IConversationStore and the object provides all of it."""
    assert IConversationStore.providedBy(store)
    assert verifyObject(IConversationStore, store)


@conv
@pytest_twisted.inlineCallbacks
def test_items_of_every_kind_are_stored_and_read_back(store):
    """Each item kind gets the channel's next seq; replay and history return them all
    with kind and data; a plain append is still kind "message" with data None."""
    a = yield store.append("r", "u", "U", None, "plain", 1)
    assert a.message == Message("r", 1, "u", "U", "plain", 1, None, "message", None)
    b = yield store.append(
        "r", "u", "U", "c1", "hi @v", 2, "message", {"mentions": ["v"], "reply_to": 1}
    )
    e = yield event(store, "r", "joined", "v", "v", 3, role="member")
    assert (b.message.seq, e.message.seq) == (2, 3)
    assert e.message.kind == "event" and e.message.data["event"] == "joined"
    r = yield store.replay("r", 0, 10)
    assert [m.kind for m in r.messages] == ["message", "message", "event"]
    assert r.messages[1].data == {"mentions": ["v"], "reply_to": 1}
    page = yield store.history("r", None, 10)
    assert page.messages == r.messages
    got = yield store.items("r", [2, 3, 99])
    assert got == {2: r.messages[1], 3: r.messages[2]}


@conv
@pytest_twisted.inlineCallbacks
def test_events_apply_to_member_and_room_rows(store):
    """created makes the room row and its owner; joined/invited add members with the
    marker at the event; left/kicked/banned/unbanned set states; role sets the role;
    room_updated changes the room row."""
    assert (yield store.room("team")) is None
    c = yield event(
        store,
        "team",
        "created",
        "ann",
        "ann",
        100,
        changes={"kind": "private", "title": "Team", "topic": "t"},
    )
    assert (yield store.room("team")) == Room("team", "private", "Team", "t", "", "ann", 100)
    assert (yield store.member("team", "ann")) == Member(
        "team", "ann", "owner", "member", None, 1, False, c.message.seq
    )
    yield event(store, "team", "invited", "bob", "ann", 101, role="admin")
    yield event(store, "team", "joined", "cat", "cat", 102)
    assert (yield store.member("team", "bob")) == Member(
        "team", "bob", "admin", "member", None, 2, False, 2
    )
    assert (yield store.member("team", "cat")).role == "member"
    yield event(store, "team", "role", "cat", "ann", 103, role="admin")
    assert (yield store.member("team", "cat")).role == "admin"
    yield event(store, "team", "kicked", "cat", "ann", 104)
    yield event(store, "team", "left", "bob", "bob", 105)
    yield event(store, "team", "banned", "dan", "ann", 106)
    assert (yield store.member("team", "cat")).state == "kicked"
    assert (yield store.member("team", "bob")).state == "left"
    dan = yield store.member("team", "dan")
    assert (dan.state, dan.since_seq) == ("banned", 7)
    yield event(store, "team", "unbanned", "dan", "ann", 107)
    assert (yield store.member("team", "dan")).state == "left"
    yield event(
        store,
        "team",
        "room_updated",
        None,
        "ann",
        108,
        changes={"title": "Team 2", "kind": "public"},
    )
    assert (yield store.room("team")) == Room("team", "public", "Team 2", "t", "", "ann", 100)
    assert (yield store.member_count("team")) == 1
    # a chatd 0.1 room (never created): room_updated makes its row, public, no owner
    yield store.append("old", "x", "X", None, "from 0.1", 1)
    yield event(store, "old", "room_updated", None, "x", 2, changes={"topic": "now"})
    assert (yield store.room("old")) == Room("old", "public", "", "now", "", None, 0)


@conv
@pytest_twisted.inlineCallbacks
def test_rejoin_moves_marker_forward(store):
    """A member who left and joins again has the marker at the new joined event."""
    yield team(store, "bob")
    yield store.append("team", "ann", "Ann", None, "m", 200)
    yield event(store, "team", "left", "bob", "bob", 201)
    yield store.append("team", "ann", "Ann", None, "while away", 202)
    j = yield event(store, "team", "joined", "bob", "bob", 203)
    row = yield store.member("team", "bob")
    assert (row.state, row.read_seq, row.since_seq) == ("member", j.message.seq, j.message.seq)
    (s,) = yield store.summaries("bob", ["team"])
    assert s.unread == 0


@conv
@pytest_twisted.inlineCallbacks
def test_dm_first_message_creates_both_rows(store):
    """A DM channel's first message creates both users' rows (peer set, the sender's
    marker at the message, the recipient's at 0); both are known users then."""
    assert not (yield store.has_user("bob"))
    a = yield store.append(DM, "ann", "Ann", "d1", "hi", 10)
    ann = yield store.member(DM, "ann")
    bob = yield store.member(DM, "bob")
    assert ann == Member(DM, "ann", "member", "member", "bob", a.message.seq, False, 0)
    assert bob == Member(DM, "bob", "member", "member", "ann", 0, False, 0)
    assert (yield store.has_user("bob")) and (yield store.has_user("ann"))
    (conv_bob,) = yield store.conversations("bob")
    assert (conv_bob.channel, conv_bob.kind, conv_bob.peer) == (DM, "dm", "ann")
    (s,) = yield store.summaries("bob", [DM])
    assert (s.unread, s.peer_read, s.last) == (1, 1, a.message)
    yield store.append(DM, "bob", "Bob", None, "yo", 11)
    (s,) = yield store.summaries("ann", [DM])
    assert (s.unread, s.peer_read, s.read_seq) == (1, 2, 1)


@conv
@pytest_twisted.inlineCallbacks
def test_add_user_and_has_user(store):
    """add_user records a user (idempotent); unknown users are not known."""
    assert not (yield store.has_user("zed"))
    yield store.add_user("zed", "Zed", 5)
    yield store.add_user("zed", "Zed", 6)
    assert (yield store.has_user("zed"))
    assert not (yield store.has_user("zedd"))


@conv
@pytest_twisted.inlineCallbacks
def test_unread_and_mentions_are_derived_from_markers(store):
    """unread counts messages after the marker not sent by the user (events, edits,
    reactions, recalls do not count); mentions those naming the user or @all; sending
    marks read; mark_read moves forward only, clamped to the newest seq."""
    yield team(store, "bob", "cat")  # seqs 1-3
    yield store.append(
        "team", "ann", "Ann", None, "hi bob", 10, "message", {"mentions": ["bob"]}
    )  # 4
    yield store.append(
        "team", "cat", "Cat", None, "all", 11, "message", {"mentions": ["@all"]}
    )  # 5
    yield store.append("team", "ann", "Ann", None, "plain", 12)  # 6
    yield store.append(
        "team", "ann", "Ann", None, "", 13, "reaction", {"target": 6, "emoji": "👍"}
    )  # 7
    yield event(store, "team", "joined", "dan", "dan", 14)  # 8
    s_bob, s_cat = (
        (yield store.summaries("bob", ["team"]))[0],
        (yield store.summaries("cat", ["team"]))[0],
    )
    assert (s_bob.unread, s_bob.mentions, s_bob.read_seq) == (3, 2, 2)
    assert (s_cat.unread, s_cat.mentions, s_cat.read_seq) == (1, 0, 5)  # cat sent 5: read up to it
    (s_ann,) = yield store.summaries("ann", ["team"])
    assert (s_ann.unread, s_ann.mentions, s_ann.read_seq) == (0, 0, 6)
    assert s_bob.last.seq == 6 and s_bob.last_seq == 8 and s_bob.last_ts == 14
    assert s_bob.title == "Team" and s_bob.kind == "private" and s_bob.peer_read is None
    assert (yield store.mark_read("bob", "team", 4)) == 4
    (s,) = yield store.summaries("bob", ["team"])
    assert (s.unread, s.mentions) == (2, 1)
    assert (yield store.mark_read("bob", "team", 2)) == 4  # never back
    assert (yield store.mark_read("bob", "team", 999)) == 8  # clamped
    (s,) = yield store.summaries("bob", ["team"])
    assert (s.unread, s.mentions, s.read_seq) == (0, 0, 8)
    assert (yield store.mark_read("nobody", "team", 3)) is None
    assert (yield store.member("team", "nobody")) is None
    (s_dan,) = yield store.summaries("dan", ["team"])
    assert (s_dan.unread, s_dan.read_seq) == (0, 8)


@conv
@pytest_twisted.inlineCallbacks
def test_read_marker_moves_counts_and_bounds_the_member_count(store):
    """read_marker: the marker before and after (forward only, clamped), the unread and
    mention counts after it as summaries gives them, the member count up to the bound
    (+1), and None for a user who is not a member (no row, or left)."""
    yield team(store, "bob", "cat")  # seqs 1-3: ann (owner), bob, cat
    yield store.append("team", "ann", "Ann", None, "hi bob", 10, "message", {"mentions": ["bob"]})
    yield store.append("team", "ann", "Ann", None, "plain", 11)  # 5
    yield store.append("team", "ann", "Ann", None, "more", 12)  # 6
    done = yield store.read_marker("bob", "team", 5, 100)
    assert (done.before, done.marker, done.unread, done.mentions) == (2, 5, 1, 0)
    assert done.members == 3
    (s,) = yield store.summaries("bob", ["team"])
    assert (s.read_seq, s.unread, s.mentions) == (5, 1, 0)
    again = yield store.read_marker("bob", "team", 3, 100)  # not forward
    assert (again.before, again.marker, again.unread) == (5, 5, 1)
    clamped = yield store.read_marker("bob", "team", 999, 1)
    assert (clamped.marker, clamped.unread, clamped.mentions) == (6, 0, 0)
    assert clamped.members == 2  # counted up to the bound + 1 only
    first = yield store.read_marker("cat", "team", 3, 100)
    assert (first.before, first.marker, first.unread, first.mentions) == (3, 3, 3, 0)
    assert (yield store.read_marker("nobody", "team", 3, 100)) is None


@conv
@pytest_twisted.inlineCallbacks
def test_mark_read_is_ordered_with_appends(store):
    """mark_read calls and appends made at once take effect in call order."""
    yield team(store, "bob")
    ds = []
    for i in range(30):
        ds.append(store.append("team", "ann", "Ann", None, f"m{i}", 200 + i))
        if i % 3 == 0:
            ds.append(store.mark_read("bob", "team", 3 + i))
    results = yield defer.gatherResults(ds)
    marks = [r for r in results if isinstance(r, int)]
    assert marks == [3 + i for i in range(0, 30, 3)]
    (s,) = yield store.summaries("bob", ["team"])
    assert (s.read_seq, s.unread) == (30, 2)


@conv
@pytest_twisted.inlineCallbacks
def test_recall_removes_text_of_message_and_its_edits(store):
    """recalled blanks the target's text and its edits' text and sets data.recalled;
    edited sets the latest text and edited_ts; reads return the current state; a
    recalled mention no longer counts."""
    yield team(store, "bob")  # 1-2
    yield store.append(
        "team", "ann", "Ann", None, "first", 10, "message", {"mentions": ["bob"], "reply_to": 1}
    )  # 3
    ed = yield store.append("team", "ann", "Ann", None, "second", 11, "edited", {"target": 3})  # 4
    assert ed.message.text == "second" and ed.message.kind == "edited"
    (m,) = (yield store.items("team", [3])).values()
    assert (m.text, m.data) == ("second", {"mentions": ["bob"], "reply_to": 1, "edited_ts": 11})
    (s,) = yield store.summaries("bob", ["team"])
    assert (s.unread, s.mentions, s.last.text) == (1, 1, "second")
    rc = yield store.append(
        "team", "ann", "Ann", "r1", "", 12, "recalled", {"target": 3, "by": "ann"}
    )  # 5
    assert rc.message.data == {"target": 3, "by": "ann"}
    page = yield store.history("team", None, 10)
    target, edit = page.messages[2], page.messages[3]
    assert target.text == "" and target.data["recalled"] == {"by": "ann", "ts": 12}
    assert target.data["reply_to"] == 1
    assert edit.text == "" and edit.kind == "edited"
    r = yield store.replay("team", 2, 10)
    assert r.messages[:2] == [target, edit]
    (s,) = yield store.summaries("bob", ["team"])
    assert (s.unread, s.mentions, s.last.text) == (1, 0, "")
    assert s.last.data["recalled"]["by"] == "ann"


@conv
@pytest_twisted.inlineCallbacks
def test_reactions_toggle(store):
    """The same reaction again takes it back; the item's data.on is the store's."""
    yield team(store, "bob")
    yield store.append("team", "ann", "Ann", None, "m", 10)  # 3
    on = yield store.append(
        "team", "bob", "Bob", None, "", 11, "reaction", {"target": 3, "emoji": "👍", "on": False}
    )
    assert on.message.data == {"target": 3, "emoji": "👍", "on": True}
    yield store.append("team", "ann", "Ann", None, "", 12, "reaction", {"target": 3, "emoji": "👍"})
    yield store.append("team", "ann", "Ann", None, "", 13, "reaction", {"target": 3, "emoji": "❤"})
    assert (yield store.reactions("team", [3, 4])) == {3: {"👍": ["ann", "bob"], "❤": ["ann"]}}
    off = yield store.append(
        "team", "bob", "Bob", None, "", 14, "reaction", {"target": 3, "emoji": "👍", "on": True}
    )
    assert off.message.data["on"] is False
    yield store.append("team", "ann", "Ann", None, "", 15, "reaction", {"target": 3, "emoji": "❤"})
    assert (yield store.reactions("team", [3])) == {3: {"👍": ["ann"]}}
    r = yield store.replay("team", 3, 10)
    assert [m.data["on"] for m in r.messages] == [True, True, True, False, False]


@conv
@pytest_twisted.inlineCallbacks
def test_items_are_exactly_once_with_their_side_effects(store):
    """A resent event, reaction or recall (same sender and client id) returns the
    original and applies nothing again."""
    yield team(store, "bob")
    yield store.append("team", "ann", "Ann", None, "m", 10)  # 3
    r1 = yield store.append(
        "team", "bob", "Bob", "x1", "", 11, "reaction", {"target": 3, "emoji": "👍"}
    )
    r2 = yield store.append(
        "team", "bob", "Bob", "x1", "", 12, "reaction", {"target": 3, "emoji": "👍"}
    )
    assert r2 == Appended(r1.message, True)
    assert (yield store.reactions("team", [3])) == {3: {"👍": ["bob"]}}
    k1 = yield event(store, "team", "kicked", "bob", "ann", 13, cid="k")
    yield event(store, "team", "joined", "bob", "bob", 14)
    k2 = yield event(store, "team", "kicked", "bob", "ann", 15, cid="k")
    assert k2.duplicate and k2.message == k1.message
    assert (yield store.member("team", "bob")).state == "member"


@conv
@pytest_twisted.inlineCallbacks
def test_members_pages_count_and_readers(store):
    """members pages ascending by user id over rows in state member; member_count;
    readers counts members whose marker reached a seq."""
    yield team(store, *[f"u{i:02d}" for i in range(12)])  # seqs 1..13
    yield event(store, "team", "left", "u03", "u03", 200)  # 14
    page, more = yield store.members("team", None, 5)
    assert [m.user for m in page] == ["ann", "u00", "u01", "u02", "u04"] and more
    page, more = yield store.members("team", "u04", 5)
    assert [m.user for m in page] == ["u05", "u06", "u07", "u08", "u09"] and more
    page, more = yield store.members("team", "u09", 5)
    assert [m.user for m in page] == ["u10", "u11"] and not more
    assert (yield store.members("nowhere", None, 5)) == ([], False)
    assert (yield store.member_count("team")) == 12
    count, users = yield store.readers("team", 12, 10)
    assert (count, users) == (2, ["u10", "u11"])  # u10 joined at 12, u11 at 13
    count, users = yield store.readers("team", 1, 3)
    assert (count, users) == (12, ["ann", "u00", "u01"])


@conv
@pytest_twisted.inlineCallbacks
def test_conversations_most_recent_first(store):
    """conversations lists rows in state member, newest activity first (ties by
    channel); summaries keeps the order asked and leaves out non-member channels."""
    yield event(store, "b-room", "joined", "ann", "ann", 100)
    yield event(store, "a-room", "joined", "ann", "ann", 100)
    yield event(store, "gone", "joined", "ann", "ann", 50)
    yield event(store, "gone", "left", "ann", "ann", 300)
    yield store.append(DM, "bob", "Bob", None, "hi", 200)
    got = yield store.conversations("ann")
    assert [(c.channel, c.kind, c.last_ts) for c in got] == [
        (DM, "dm", 200),
        ("a-room", "public", 100),
        ("b-room", "public", 100),
    ]
    assert got[0].peer == "bob" and got[1].peer is None and got[1].role == "member"
    summaries = yield store.summaries("ann", ["b-room", "gone", DM, "never"])
    assert [s.channel for s in summaries] == ["b-room", DM]
    assert summaries[0].last is None and summaries[0].unread == 0
    assert (yield store.conversations("nobody")) == []
    # conversation_page: a page of that order, complete (as summaries), and more
    first, more = yield store.conversation_page("ann", 0, 2)
    assert [c.channel for c in first] == [DM, "a-room"] and more is True
    assert first == (yield store.summaries("ann", [DM, "a-room"]))
    last, more = yield store.conversation_page("ann", 2, 2)
    assert [c.channel for c in last] == ["b-room"] and more is False
    assert (yield store.conversation_page("ann", 3, 2)) == ([], False)
    assert (yield store.conversation_page("nobody", 0, 50)) == ([], False)


@conv
@pytest_twisted.inlineCallbacks
def test_set_muted(store):
    """set_muted sets the row's muted flag; False without a row."""
    yield team(store, "bob")
    assert (yield store.set_muted("bob", "team", True)) is True
    assert (yield store.member("team", "bob")).muted is True
    (c,) = [c for c in (yield store.conversations("bob"))]
    assert c.muted is True
    assert (yield store.set_muted("bob", "team", False)) is True
    assert (yield store.member("team", "bob")).muted is False
    assert (yield store.set_muted("zed", "team", True)) is False


@conv
@pytest_twisted.inlineCallbacks
def test_cursors_newest_16_per_user(store):
    """A cursor is loaded by its user only; the newest 16 per user are kept."""
    day = 86_400_000
    for i in range(17):
        yield store.save_cursor("ann", f"c{i}", f"snap{i}".encode(), 1000 + i)
    yield store.save_cursor("bob", "b0", b"\x00bob", 1000)
    assert (yield store.load_cursor("ann", "c0")) is None
    assert (yield store.load_cursor("ann", "c1")) == b"snap1"
    assert (yield store.load_cursor("ann", "c16")) == b"snap16"
    assert (yield store.load_cursor("bob", "c1")) is None
    assert (yield store.load_cursor("ann", "b0")) is None
    assert (yield store.load_cursor("bob", "b0")) == b"\x00bob"
    # saved again under the same id: replaced
    yield store.save_cursor("bob", "b0", b"new", 2000)
    assert (yield store.load_cursor("bob", "b0")) == b"new"
    # a month later, a save drops the user's cursors older than 30 days
    yield store.save_cursor("ann", "late", b"late", 1000 + 31 * day)
    assert (yield store.load_cursor("ann", "c16")) is None
    assert (yield store.load_cursor("ann", "late")) == b"late"


#: (start, limit) of conversation_page reads: the first page, a middle one, past the end
PAGES = [(0, 2), (1, 2), (0, 50), (3, 1), (9, 5)]


def _conversation_ops(seed, n=300):
    """A seeded mix of every item kind and marker move over rooms and DMs."""
    import random

    rnd = random.Random(seed)
    users = ["ann", "bob", "cat", "dan"]
    channels = ["team", "lobby", dm_channel("ann", "bob"), dm_channel("cat", "ann")]
    events = ["joined", "invited", "left", "kicked", "banned", "unbanned", "role"]
    ops = []
    for i in range(n):
        ch = rnd.choice(channels)
        who = rnd.choice(users)
        cid = f"c{rnd.randrange(40)}" if rnd.random() < 0.3 else None
        roll = rnd.random()
        if roll < 0.35 or (ch.startswith("@dm:") and roll < 0.7):
            data = rnd.choice([None, {"mentions": [rnd.choice(users + ["@all"])]}])
            ops.append(("append", ch, who, who, cid, f"t{i}", i, "message", data))
        elif roll < 0.55 and not ch.startswith("@dm:"):
            data = {"event": rnd.choice(events), "user": rnd.choice(users), "by": who}
            if rnd.random() < 0.2:
                data = {"event": "room_updated", "by": who, "changes": {"title": f"T{i}"}}
            if data["event"] in ("joined", "invited", "role"):
                data["role"] = rnd.choice(["member", "admin"])
            ops.append(("append", ch, who, who, cid, "", i, "event", data))
        elif roll < 0.8:
            kind = rnd.choice(["recalled", "edited", "reaction"])
            data = {"target": rnd.randrange(1, 12)}
            if kind == "reaction":
                data["emoji"] = rnd.choice(["👍", "❤"])
            elif kind == "recalled":
                data["by"] = who
            text = f"e{i}" if kind == "edited" else ""
            ops.append(("append", ch, who, who, cid, text, i, kind, data))
        else:
            ops.append(("mark_read", who, ch, rnd.randrange(0, 30)))
    reads = [("conversations", u) for u in users]
    reads += [("summaries", u, channels) for u in users]
    reads += [("conversation_page", u, start, n) for u in users for start, n in PAGES]
    for ch in channels:
        reads += [
            ("members", ch, None, 10),
            ("member_count", ch),
            ("readers", ch, 3, 10),
            ("items", ch, list(range(1, 40))),
            ("reactions", ch, list(range(1, 40))),
            ("replay", ch, 0, 100),
            ("room", ch),
        ]
        reads += [("member", ch, u) for u in users]
    reads += [("has_user", u) for u in users + ["zed"]]
    return ops, reads


@conv
@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest_twisted.inlineCallbacks
def test_conversations_give_the_memory_stores_results(store, seed):
    """A seeded mix of events, messages with mentions, recalls, edits, reactions and
    marker moves, in rooms and DMs, gives exactly the MemoryStore's results for every
    write and every conversation read."""
    mem = MemoryStore()
    yield mem.start()
    ops, reads = _conversation_ops(seed)
    for op in ops + reads:
        expected = yield getattr(mem, op[0])(*op[1:])
        got = yield getattr(store, op[0])(*op[1:])
        assert got == expected, op


def _sync_json(store_items, sign=None) -> bytes:
    """The ``items`` array of a sync reply made of a store's SyncReplay items."""
    return wire.encode_with_raw({"items": wire.sync_items(store_items, sign)})


def _replay_json(messages) -> bytes:
    """The ``items`` array as chatd made it from ``replay`` before sync_replay."""
    return wire.encode({"items": [wire.item_object(m) for m in messages]})


@defer.inlineCallbacks
def _same_as_replay(store, channel, since, limit):
    """``sync_replay`` equals ``replay`` as a sync reply shows it: the same bytes, seq,
    truncation and characters of text."""
    expected = yield store.replay(channel, since, limit)
    (got,) = yield store.sync_replay([(channel, since)], limit)
    assert _sync_json(got.items) == _replay_json(expected.messages), (channel, since, limit)
    assert (got.last_seq, got.truncated) == (expected.last_seq, expected.truncated)
    assert got.text == sum(len(m.text) for m in expected.messages)
    return got


#: texts of plain messages: every character JSON escapes, quotes, non-ASCII, astral
ODD_TEXTS = [
    "".join(map(chr, range(0x20))),
    '"quoted" \\back\\slash/ \x7f',
    "é ü 中文 \u2028\u2029 \ufeff",
    "😀🇺🇳 \U0010ffff",
    "",
    "x" * 4000,
]


@conv
@pytest_twisted.inlineCallbacks
def test_sync_replay_is_replay_as_the_sync_reply_shows_it(store):
    """sync_replay's items are, byte for byte in the reply, what replay's messages
    give (``wire.item_object``), for rooms and DMs, plain messages with any text and
    client id, and every other item kind between them, at any since and limit."""
    dm = dm_channel("ann", "bob")
    for i, text in enumerate(ODD_TEXTS):
        for channel in ("plain", dm, "mixed"):
            sender = ("ann", "bob")[i % 2]
            cid = None if i % 3 else f"{channel[-3:]}-{i}"
            name = 'Ann "A" \x01é' if i % 2 == 0 else "Bob"
            yield store.append(channel, sender, name, cid, text, 1000 + i)
    yield store.append(dm_channel("cat", "cat"), "cat", "Cat", None, "note to self", 1)
    yield store.append("mixed", "ann", "A", None, "hi @bob", 2000, "message", {"mentions": ["bob"]})
    yield event(store, "mixed", "joined", "bob", "bob", 2001, role="member")
    yield store.append("mixed", "ann", "A", None, "", 2002, "recalled", {"target": 1, "by": "ann"})
    yield store.append("mixed", "bob", "B", None, "new", 2003, "edited", {"target": 2})
    yield store.append(
        "mixed", "bob", "B", None, "", 2004, "reaction", {"target": 3, "emoji": "👍"}
    )
    yield store.append("mixed", "ann", "A", None, "after", 2005)
    for channel in ("plain", dm, "mixed", dm_channel("cat", "cat"), "empty"):
        for since in (0, 1, 3, 5, 6, 9, 11, 12, 20):
            for limit in (0, 1, 2, 5, 100):
                yield _same_as_replay(store, channel, since, limit)
    got = yield store.sync_replay([("plain", None), ("empty", 0), ("plain", 5)], 10)
    assert [(r.last_seq, r.truncated, r.text) for r in got] == [
        (6, False, 0),
        (0, False, 0),
        (6, False, 4000),
    ]
    assert got[0].items == [] and got[1].items == []
    assert (yield store.sync_replay([], 10)) == []


@conv
@pytest.mark.parametrize("seed", [1, 2])
@pytest_twisted.inlineCallbacks
def test_sync_replay_matches_replay_after_a_seeded_mix(store, seed):
    """After the seeded mix of every item kind (recalls and edits change earlier
    messages in place), sync_replay still shows what replay does."""
    ops, _reads = _conversation_ops(seed)
    for op in ops:
        yield getattr(store, op[0])(*op[1:])
    for channel in ["team", "lobby", dm_channel("ann", "bob"), dm_channel("cat", "ann")]:
        for since in (0, 7, 30, 60):
            yield _same_as_replay(store, channel, since, 25)
