"""Conversations on a cluster: two ``twistd -n chatd --redis`` nodes on one private
redis-server (and on a private 3-master Redis Cluster), token users connected to
either (docs/protocol.md, *Conversations*).

What a user does on node A is seen on node B: read markers clear the badge on the
other node at once, a sync cursor handed out by A works on B, recall/edit/reaction
items and the conversation list are the same from both nodes; membership made on A
holds on B after a reconnect, a kick on A stops the kicked user's connection on B,
and a DM to an offline user stored via A reaches them via ``sync`` on B.
"""

from __future__ import annotations

import secrets

import jwt
import pytest
import pytest_twisted
from twisted.internet import defer, reactor

from chatd import modrules
from chatd.moderation import BANNED
from tests.support.auth import SECRET, token
from tests.support.frames import OTHER, next_of
from tests.wsclient import Client, wait_for

pytestmark = [pytest.mark.redis, pytest.mark.subprocess]


@pytest.fixture
def cluster(any_nodes, monkeypatch):
    """Two nodes that accept tokens signed with tests.support.auth's SECRET, on one
    redis-server and on a Redis Cluster."""
    monkeypatch.setenv("CHATD_JWT_SECRET", SECRET)
    return any_nodes(2)


def connect(node, sub):
    """A chatd.v1 connection of the token user *sub* to *node*."""
    return Client.v1(node.port, token=token(sub))


@defer.inlineCallbacks
def dm(client, to, text, cid, skip=OTHER):
    """Send a DM and fire with its ack."""
    client.send(type="dm", to=to, text=text, id=cid)
    ack = yield next_of(client, "ack", skip=skip, id=cid)
    return ack


@defer.inlineCallbacks
def listed(client, peer):
    """The conversation with *peer* in *client*'s conversation list."""
    client.send(type="conversations")
    reply = yield next_of(client, "conversations", skip=OTHER | {"dm", "receipt", "read"})
    (conv,) = [c for c in reply["conversations"] if c.get("with") == peer]
    return conv


@pytest_twisted.inlineCallbacks
def test_read_on_one_node_clears_the_badge_on_the_other(cluster):
    """bob on two nodes: DMs from alice count as unread on both; bob reads on A and
    his connection on B gets ``read`` with unread 0 at once, alice (on A) the
    receipt, and B's conversation list shows the marker."""
    a, b = cluster
    alice = yield connect(a, "alice")
    bob_a, bob_b = (yield connect(a, "bob")), (yield connect(b, "bob"))
    acks = []
    for i in range(3):
        acks.append((yield dm(alice, "bob", f"m{i}", f"d{i}")))
    for i, ack in enumerate(acks):
        got = yield next_of(bob_b, "dm", seq=ack["seq"], text=f"m{i}")
        assert got["from"] == "alice"
    conv = yield listed(bob_b, "alice")
    assert (conv["unread"], conv["read"], conv["last"]["text"]) == (3, 0, "m2")
    bob_a.send(type="read", **{"with": "alice"}, seq=acks[-1]["seq"])
    for device in (bob_a, bob_b):
        read = yield next_of(device, "read", skip=OTHER | {"dm"}, **{"with": "alice"})
        assert (read["seq"], read["unread"], read["mentions"]) == (acks[-1]["seq"], 0, 0)
    receipt = yield next_of(alice, "receipt")
    assert receipt == {"type": "receipt", "with": "bob", "user": "bob", "seq": acks[-1]["seq"]}
    conv = yield listed(bob_b, "alice")
    assert (conv["unread"], conv["read"]) == (0, acks[-1]["seq"])
    conv = yield listed(alice, "bob")
    assert (conv["unread"], conv["peer_read"]) == (0, acks[-1]["seq"])
    for client in (alice, bob_a, bob_b):
        yield client.close()


@pytest_twisted.inlineCallbacks
def test_a_sync_cursor_from_one_node_works_on_the_other(cluster):
    """bob's web client syncs on A and goes away (his phone stays online on A); alice
    sends, edits, reacts and recalls on A; the web client's cursor from A, given to
    B, answers exactly what changed, in seq order, with the recalled text gone; the
    next cursor from B works on A."""
    a, b = cluster
    alice, phone = (yield connect(a, "alice")), (yield connect(a, "bob"))
    bob = yield connect(a, "bob")
    first = yield dm(alice, "bob", "hello", "d1")
    yield next_of(bob, "dm", seq=first["seq"])
    bob.send(type="sync")
    synced = yield next_of(bob, "sync")
    (conv,) = synced["conversations"]
    assert [i["text"] for i in conv["items"]] == ["hello"]
    yield bob.close()
    second = yield dm(alice, "bob", "oops, a secret", "d2")
    third = yield dm(alice, "bob", "third", "d3")
    skip = OTHER | {"dm", "edited", "reaction", "recalled"}
    alice.send(type="edit", **{"with": "bob"}, seq=third["seq"], text="third, edited", id="e1")
    edit = yield next_of(alice, "ack", skip=skip, id="e1")
    alice.send(type="react", **{"with": "bob"}, seq=first["seq"], emoji="👍", id="r1")
    react = yield next_of(alice, "ack", skip=skip, id="r1")
    alice.send(type="recall", **{"with": "bob"}, seq=second["seq"], id="x1")
    recall = yield next_of(alice, "ack", skip=skip, id="x1")

    bob = yield connect(b, "bob")
    bob.send(type="sync", since=synced["cursor"])
    reply = yield next_of(bob, "sync")
    assert reply["reset"] is False
    (conv,) = reply["conversations"]
    items = conv["items"]
    assert [i["seq"] for i in items] == [
        second["seq"],
        third["seq"],
        edit["seq"],
        react["seq"],
        recall["seq"],
    ]
    assert [i["type"] for i in items] == ["dm", "dm", "edited", "reaction", "recalled"]
    assert "secret" not in repr(reply)
    assert items[0]["text"] == "" and items[0]["recalled"]["by"] == "alice"
    assert items[1]["text"] == "third, edited"
    assert (conv["unread"], conv["last"]["text"]) == (3, "third, edited")
    yield bob.close()
    bob = yield connect(a, "bob")
    bob.send(type="sync", since=reply["cursor"])
    again = yield next_of(bob, "sync")
    assert (again["reset"], again["conversations"]) == (False, [])
    for client in (alice, bob, phone):
        yield client.close()


@defer.inlineCallbacks
def acked(client, skip=OTHER, **request):
    """Send *request* (with its ``id``) and fire with its ack."""
    client.send(**request)
    ack = yield next_of(client, "ack", skip=skip, id=request["id"])
    return ack


@pytest_twisted.inlineCallbacks
def test_membership_made_on_one_node_holds_on_the_other_after_a_reconnect(cluster):
    """alice creates a private room on A with bob in it; bob's next connection, on B,
    is subscribed at welcome and gets the room's messages from A without joining;
    room_info on B knows the room, the role and the member count."""
    a, b = cluster
    alice, bob = (yield connect(a, "alice")), (yield connect(a, "bob"))
    alice.send(type="create", room="team", kind="private", title="Team", members=["bob"], id="c1")
    info = yield next_of(alice, "room_info", skip=OTHER | {"ack"})
    assert (info["kind"], info["role"], info["members"]) == ("private", "owner", 2)
    yield next_of(bob, "subscribed", rooms=["team"])
    yield bob.close()

    bob = yield connect(b, "bob")
    yield next_of(bob, "subscribed", rooms=["team"], more=False)
    ack = yield acked(alice, type="send", room="team", text="hello from A", id="m1")
    got = yield next_of(bob, "message", room="team", seq=ack["seq"])
    assert (got["from"], got["text"]) == ("alice", "hello from A")
    bob.send(type="room_info", room="team", id="i1")
    info = yield next_of(bob, "room_info", room="team")
    assert (info["kind"], info["title"], info["role"], info["members"]) == (
        "private",
        "Team",
        "member",
        2,
    )
    bob.send(type="members", room="team", id="p1")
    page = yield next_of(bob, "members", room="team")
    assert [(m["user"], m["role"]) for m in page["members"]] == [
        ("alice", "owner"),
        ("bob", "member"),
    ]
    for client in (alice, bob):
        yield client.close()


@pytest_twisted.inlineCallbacks
def test_a_kick_on_one_node_stops_the_users_connection_on_the_other_at_once(cluster):
    """bob (on B) is kicked by alice (on A): his connection gets the event and
    ``left {room}`` and nothing of the room after it -- carol, also on B, gets
    alice's next message, and bob's ping barrier right after finds no trace of it."""
    a, b = cluster
    alice = yield connect(a, "alice")
    bob, carol = (yield connect(b, "bob")), (yield connect(b, "carol"))
    for client in (bob, carol):  # B has recorded them as known users (at admission)
        yield client.barrier()
    alice.send(type="create", room="team", kind="private", members=["bob", "carol"], id="c1")
    yield next_of(alice, "room_info", skip=OTHER | {"ack"})
    for client in (bob, carol):
        yield next_of(client, "subscribed", rooms=["team"])
    before = yield acked(alice, type="send", room="team", text="before", id="m1")
    for client in (bob, carol):
        yield next_of(client, "message", seq=before["seq"], text="before")
    kick = yield acked(alice, type="kick", room="team", user="bob", id="k1")
    got = yield next_of(bob, "event", skip=OTHER - {"event"}, seq=kick["seq"], kind="kicked")
    assert (got["user"], got["by"]) == ("bob", "alice")
    yield next_of(bob, "left", room="team")
    after = yield acked(alice, type="send", room="team", text="after the kick", id="m2")
    yield next_of(carol, "message", seq=after["seq"], text="after the kick")
    frames = yield bob.barrier()
    assert not [f for f in frames if f.get("room") == "team"], frames
    bob.send(type="history", room="team", id="h1")
    yield next_of(bob, "error", code="forbidden", ref="h1")
    for client in (alice, bob, carol):
        yield client.close()


@pytest_twisted.inlineCallbacks
def test_an_offline_dm_stored_via_one_node_reaches_the_user_via_sync_on_the_other(cluster):
    """bob has connected once (a known user) and is gone; alice's DM on A is stored and
    acked; bob's next connection, on B, gets it from ``sync`` with the unread badge."""
    a, b = cluster
    alice, bob = (yield connect(a, "alice")), (yield connect(a, "bob"))
    yield bob.barrier()
    yield bob.close()
    ack = yield dm(alice, "bob", "while you were away", "d1")
    bob = yield connect(b, "bob")
    bob.send(type="sync")
    reply = yield next_of(bob, "sync")
    (conv,) = reply["conversations"]
    assert (conv["with"], conv["unread"], conv["last"]["text"]) == (
        "alice",
        1,
        "while you were away",
    )
    (item,) = conv["items"]
    assert (item["type"], item["seq"], item["from"]) == ("dm", ack["seq"], "alice")
    for client in (alice, bob):
        yield client.close()


@pytest_twisted.inlineCallbacks
def test_a_user_welcomed_on_one_node_is_known_at_once_on_the_other(cluster):
    """Ten users never seen before, each connecting to B: the moment its ``welcome``
    is here (no barrier), alice on A invites it to a private room and DMs it; never
    ``no_such_user`` (docs/protocol.md: ``welcome`` comes once the user is recorded)."""
    a, b = cluster
    alice = yield connect(a, "alice")
    alice.send(type="create", room="crew", kind="private", id="c0")
    yield next_of(alice, "room_info", skip=OTHER | {"ack"})
    for i in range(10):
        user = f"new{i}-{secrets.token_hex(3)}"
        newcomer = yield connect(b, user)
        yield acked(alice, type="invite", room="crew", user=user, id=f"i{i}")
        yield dm(alice, user, "welcome aboard", f"d{i}")
        yield newcomer.close()
    yield alice.close()


@pytest_twisted.inlineCallbacks
def test_a_read_in_a_small_room_on_one_node_sends_receipts_on_the_other(cluster):
    """bob reads a small room on B: his phone on A gets ``read`` (the ``user`` bus
    kind) and alice on A the room receipt (the ``room`` bus kind); receipts answers
    the same from either node."""
    a, b = cluster
    alice, phone = (yield connect(a, "alice")), (yield connect(a, "bob"))
    alice.send(type="create", room="team", kind="private", members=["bob"], id="c1")
    yield next_of(alice, "room_info", skip=OTHER | {"ack"})
    yield next_of(phone, "subscribed", rooms=["team"])
    web = yield connect(b, "bob")
    yield next_of(web, "subscribed", rooms=["team"])
    ack = yield acked(alice, type="send", room="team", text="hi", id="m1")
    for device in (phone, web):
        yield next_of(device, "message", seq=ack["seq"])
    web.send(type="read", room="team", seq=ack["seq"])
    for device in (web, phone):
        read = yield next_of(device, "read", room="team")
        assert (read["seq"], read["unread"]) == (ack["seq"], 0)
    receipt = yield next_of(alice, "receipt", room="team")
    assert (receipt["user"], receipt["seq"]) == ("bob", ack["seq"])
    # the others who read up to the message: bob for alice; alice (sending is reading)
    # for bob
    for client, other in ((alice, "bob"), (web, "alice")):
        client.send(type="receipts", room="team", seq=ack["seq"], id="q")
        answer = yield next_of(client, "receipts", skip=OTHER | {"receipt"})
        assert (answer["count"], answer["users"]) == (1, [other]), answer
    for client in (alice, phone, web):
        yield client.close()


@pytest_twisted.inlineCallbacks
def test_a_mute_or_ban_by_a_moderator_on_one_node_holds_on_the_other(cluster):
    """mia (a moderator, on A) mutes bob everywhere: bob's DM on B is refused with
    ``muted`` at once (the bus event ``sanction``); the unmute on A lets it through
    on B; a global ban on A closes bob's connection on B with 4451."""
    a, b = cluster
    mia = yield Client.v1(a.port, token=jwt.encode({"sub": "mia", "mod": True}, SECRET))
    bob = yield connect(b, "bob")
    mia.send(type="mute_user", user="bob", seconds=600, id="m1")
    yield next_of(mia, "mute_user", id="m1")
    refused = None
    for attempt in range(50):  # the bus event reaches B in the next moments
        bob.send(type="dm", to="mia", text="x", id=f"d{attempt}")
        frame = yield bob.recv()
        if frame["type"] == "error" and frame["code"] == "muted":
            refused = frame
            break
        assert frame["type"] in ("ack", *OTHER), frame
    assert refused is not None and refused["seconds"] > 590
    mia.send(type="unmute_user", user="bob", id="u1")
    yield next_of(mia, "unmute_user", skip=OTHER | {"dm"}, id="u1")
    for attempt in range(50):
        bob.send(type="dm", to="mia", text="back", id=f"e{attempt}")
        frame = yield bob.recv()
        if frame["type"] == "ack":
            break
        assert frame.get("code") == "muted" or frame["type"] in OTHER, frame
    else:
        pytest.fail("the unmute did not reach node B")
    mia.send(type="ban_user", user="bob", id="b1")
    code, _reason = yield bob.closed()
    assert code == BANNED
    yield mia.close()


@pytest_twisted.inlineCallbacks
def test_the_report_rate_limit_is_the_clusters(cluster):
    """carl files reports from a connection on A and one on B: together at most
    ``REPORTS_PER_WINDOW`` a minute (a counter in Redis, ``rl:{carl}:report:<minute>``),
    the next is ``rate_limited`` on either node; on one redis-server and on a Redis
    Cluster (the queue's scripts on their own slot)."""
    a, b = cluster
    alice = yield connect(a, "alice")
    carl_a, carl_b = (yield connect(a, "carl")), (yield connect(b, "carl"))
    ack = yield dm(alice, "carl", "report me", "d1")
    # the limit is per fixed minute: start early in one, so it cannot roll over meanwhile
    yield wait_for(lambda: reactor.seconds() % 60 < 40, 30, what="an early moment of a minute")
    n = modrules.REPORTS_PER_WINDOW
    for i in range(n):
        client = carl_a if i % 2 else carl_b
        client.send(type="report", **{"with": "alice"}, seq=ack["seq"], reason="x", id=f"r{i}")
        reply = yield next_of(client, "report", skip=OTHER | {"dm"}, id=f"r{i}")
        assert reply["duplicate"] is False
    for client, ref in ((carl_a, "over-a"), (carl_b, "over-b")):
        client.send(type="report", **{"with": "alice"}, seq=ack["seq"], reason="x", id=ref)
        error = yield next_of(client, "error", skip=OTHER | {"dm", "report"}, ref=ref)
        assert error["code"] == "rate_limited"
    for client in (alice, carl_a, carl_b):
        yield client.close()
