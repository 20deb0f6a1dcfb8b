"""The inbox over real sockets: token users' read markers and receipts, unread badges
on several devices, recall (with an injected clock), edit, reactions, replies, the
conversation list and sync -- across a restart on a SQLite file -- and the hostile
rows of docs/security.md for these requests."""

from __future__ import annotations

import json

import pytest_twisted
from twisted.internet import defer
from twisted.internet.task import Clock

from tests.support.auth import SECRET
from tests.support.frames import OTHER, next_of
from tests.support.inbox import member, sent, user


@defer.inlineCallbacks
def drain(*clients):
    """Read every frame sent so far to each of *clients* (an ordering barrier)."""
    for client in clients:
        yield client.barrier()


def inbox_server(factory, *args):
    return factory("--jwt-secret", SECRET, *args)


@pytest_twisted.inlineCallbacks
def test_read_on_one_device_clears_the_badge_on_the_other(server_factory):
    srv = yield inbox_server(server_factory)
    alice = yield user(srv, "alice")
    phone, web = (yield user(srv, "bob")), (yield user(srv, "bob"))
    for client in (alice, phone, web):
        yield member(srv, client, "team")
    yield drain(alice, phone, web)
    acks = []
    for i in range(3):
        acks.append((yield sent(alice, "team", text=f"m{i}", id=f"m{i}")))
    web.send(type="conversations")
    listed = yield next_of(web, "conversations", skip=OTHER | {"message"})
    (team,) = listed["conversations"]
    assert (team["unread"], team["last"]["text"]) == (3, "m2")
    phone.send(type="read", room="team", seq=acks[-1]["seq"])
    for device in (phone, web):
        read = yield next_of(device, "read", skip=OTHER | {"message", "receipt"})
        assert (read["seq"], read["unread"], read["mentions"]) == (acks[-1]["seq"], 0, 0)
    receipt = yield next_of(alice, "receipt")
    assert (receipt["room"], receipt["user"], receipt["seq"]) == ("team", "bob", acks[-1]["seq"])
    web.send(type="conversations")
    listed = yield next_of(web, "conversations", skip=OTHER | {"receipt"})
    assert listed["conversations"][0]["unread"] == 0


@pytest_twisted.inlineCallbacks
def test_dm_receipt_and_the_list_of_both_sides(server_factory):
    srv = yield inbox_server(server_factory)
    alice, bob = (yield user(srv, "alice")), (yield user(srv, "bob"))
    ack = yield sent(alice, to="bob", text="hi", id="d1")
    dm = yield next_of(bob, "dm")
    assert dm["seq"] == ack["seq"]
    bob.send(type="read", **{"with": "alice"}, seq=ack["seq"])
    yield next_of(bob, "read", **{"with": "alice"}, seq=ack["seq"], unread=0)
    receipt = yield next_of(alice, "receipt")
    assert receipt == {"type": "receipt", "with": "bob", "user": "bob", "seq": ack["seq"]}
    alice.send(type="conversations")
    (c,) = (yield next_of(alice, "conversations"))["conversations"]
    assert (c["with"], c["kind"], c["peer_read"], c["unread"]) == ("bob", "dm", ack["seq"], 0)
    alice.send(type="receipts", **{"with": "bob"}, seq=ack["seq"])
    answer = yield next_of(alice, "receipts")
    assert (answer["count"], answer["users"]) == (1, ["bob"])


@pytest_twisted.inlineCallbacks
def test_recall_window_on_an_injected_clock(server_factory):
    srv = yield inbox_server(server_factory, "--recall-window", "120")
    clock = Clock()
    clock.advance(srv.chat.clock.seconds())
    srv.chat.clock = clock
    alice, bob = (yield user(srv, "alice")), (yield user(srv, "bob"))
    for client in (alice, bob):
        yield member(srv, client, "team")
    yield drain(alice, bob)
    early = yield sent(alice, "team", text="oops", id="m1")
    late = yield sent(alice, "team", text="stays", id="m2")
    clock.advance(119)
    recall = yield sent(alice, "team", type="recall", seq=early["seq"], id="r1")
    yield next_of(bob, "message", text="oops")
    yield next_of(bob, "message", text="stays")
    recalled = yield next_of(bob, "recalled")
    assert (recalled["seq"], recalled["target"], recalled["by"]) == (
        recall["seq"],
        early["seq"],
        "alice",
    )
    clock.advance(2)
    alice.send(type="recall", room="team", seq=late["seq"], id="r2")
    yield next_of(alice, "error", code="too_late", ref="r2")
    # history and sync show the tombstone, without the text
    bob.send(type="history", room="team")
    page = yield next_of(bob, "history")
    texts = [(m["seq"], m["text"], "recalled" in m) for m in page["messages"]]
    assert texts == [(early["seq"], "", True), (late["seq"], "stays", False)]
    bob.send(type="sync")
    reply = yield next_of(bob, "sync")
    assert "oops" not in json.dumps(reply) and "oops" not in json.dumps(page)


@pytest_twisted.inlineCallbacks
def test_edit_reactions_and_replies(server_factory):
    srv = yield inbox_server(server_factory)
    alice, bob = (yield user(srv, "alice")), (yield user(srv, "bob"))
    for client in (alice, bob):
        yield member(srv, client, "team")
    yield drain(alice, bob)
    original = yield sent(alice, "team", text="lunch at 12?", id="m1")
    yield next_of(bob, "message")
    yield sent(alice, "team", type="edit", seq=original["seq"], text="lunch at 1?", id="e1")
    edited = yield next_of(bob, "edited")
    assert (edited["target"], edited["text"]) == (original["seq"], "lunch at 1?")
    for i in range(2):
        yield sent(bob, "team", type="react", seq=original["seq"], emoji="👍", id=f"r{i}")
        reaction = yield next_of(alice, "reaction")
        assert (reaction["user"], reaction["on"]) == ("bob", i == 0)
    yield sent(bob, "team", type="react", seq=original["seq"], emoji="🍕", id="r2")
    yield sent(bob, "team", text="yes", id="b1", reply_to=original["seq"])
    bob.send(type="history", room="team")
    first, reply = (yield next_of(bob, "history"))["messages"]
    assert (first["text"], first["reactions"]) == (
        "lunch at 1?",
        [{"emoji": "🍕", "count": 1, "me": True}],
    )
    assert "edited_ts" in first
    assert reply["quote"] == {
        "seq": original["seq"],
        "from": "alice",
        "name": "alice",
        "text": "lunch at 1?",
    }


@pytest_twisted.inlineCallbacks
def test_sync_after_a_reconnect_across_a_restart_on_a_sqlite_file(server_factory, tmp_path):
    db = str(tmp_path / "chat.sqlite3")
    srv = yield inbox_server(server_factory, "--db", db)
    alice, bob = (yield user(srv, "alice")), (yield user(srv, "bob"))
    for client in (alice, bob):
        yield member(srv, client, "team")
    yield sent(alice, "team", text="before", id="m1")
    bob.send(type="sync")
    first = yield next_of(bob, "sync", skip=OTHER | {"message"})
    assert [
        i.get("text") for i in first["conversations"][0]["items"] if i["type"] == "message"
    ] == ["before"]
    yield bob.close()
    yield srv.gone(bob)
    yield sent(alice, "team", text="while away", id="m2")
    yield sent(alice, to="bob", text="call me", id="d1")  # bob is offline: stored
    yield alice.close()
    yield srv.service.stopService()

    srv = yield inbox_server(server_factory, "--db", db)
    bob = yield user(srv, "bob")
    bob.send(type="sync", since=first["cursor"])
    reply = yield next_of(bob, "sync")
    assert reply["reset"] is False
    dm, team = reply["conversations"]  # most recent first
    assert (dm["with"], dm["unread"], [i["text"] for i in dm["items"]]) == ("alice", 1, ["call me"])
    assert [i["text"] for i in team["items"]] == ["while away"]
    assert (team["unread"], team["last"]["text"]) == (2, "while away")  # nothing was read
    bob.send(type="sync", since=reply["cursor"])
    assert (yield next_of(bob, "sync"))["conversations"] == []


@pytest_twisted.inlineCallbacks
def test_hostile_inbox_requests_are_refused_and_lose_nothing(server_factory):
    """Forged cursors, reads beyond the end or negative, recall of someone else's
    message, edit of a recalled one, a reactions flood, 10,000 mentions, and every
    request on a private room one is not in: each gets its documented answer; the
    server, the other connections and every acknowledged message carry on. (Rate
    limits raised: the flood cap is the inbox's, not the rate limiter's.)"""
    limits = ("--rate-burst", "1000", "--user-rate-burst", "1000")
    srv = yield inbox_server(server_factory, *limits)
    alice, mallory = (yield user(srv, "alice")), (yield user(srv, "mallory"))
    for client in (alice, mallory):
        yield member(srv, client, "team")
    yield drain(alice, mallory)
    mine = yield sent(alice, "team", text="keep me", id="k1")
    yield next_of(mallory, "message")

    def refused(code, ref):
        return next_of(mallory, "error", skip=OTHER | {"message"}, code=code, ref=ref)

    for i, forged in enumerate(("forged", "0" * 64, "c9f0%00")):
        mallory.send(type="sync", since=forged, id=f"s{i}")
        assert (yield next_of(mallory, "sync"))["reset"] is True
    mallory.send(type="sync", since="x" * 65, id="s-long")
    yield refused("bad_request", "s-long")
    mallory.send(type="conversations", cursor="99999999999", id="c-bad")
    yield refused("bad_request", "c-bad")
    mallory.send(type="read", room="team", seq=2**53, id="far")
    assert (yield next_of(mallory, "read"))["seq"] == mine["seq"]  # clamped to the end
    mallory.send(type="read", room="team", seq=-5, id="neg")
    yield refused("bad_request", "neg")
    mallory.send(type="recall", room="team", seq=mine["seq"], id="steal")
    yield refused("forbidden", "steal")
    mallory.send(type="edit", room="team", seq=mine["seq"], text="pwned", id="edit")
    yield refused("forbidden", "edit")
    own = yield sent(mallory, "team", text="gone soon", id="g1")
    yield sent(mallory, "team", type="recall", seq=own["seq"], id="g2")
    mallory.send(type="edit", room="team", seq=own["seq"], text="back", id="g3")
    yield refused("no_such_message", "g3")
    for i in range(20):
        yield sent(mallory, "team", type="react", seq=mine["seq"], emoji=f"e{i}", id=f"f{i}")
    mallory.send(type="react", room="team", seq=mine["seq"], emoji="one-too-many", id="f20")
    yield refused("too_large", "f20")
    mallory.send(type="send", room="team", text="@everyone", mentions=["a"] * 10_000, id="m10k")
    yield refused("bad_request", "m10k")
    mallory.send(type="send", room="team", text="@all", mentions=["@all"], id="all")
    yield refused("forbidden", "all")
    # a private room mallory is not in: nothing about it
    data = {"event": "created", "user": "alice", "by": "alice", "changes": {"kind": "private"}}
    fields = ("vault", "alice", "alice", None, "", srv.chat.now_ms(), "event", data)
    yield srv.chat.messages.append("message", fields, (None, False))
    # alice saw every accepted item and none of the refused ones
    frames = yield alice.barrier()
    assert {f["type"] for f in frames} - OTHER == {"message", "receipt", "recalled", "reaction"}
    assert "pwned" not in json.dumps(frames) and "back" not in json.dumps(frames)
    yield sent(alice, "team", text="still here", id="k2")
    for kind, extra in (("read", {"seq": 1}), ("mute", {"muted": True}), ("recall", {"seq": 1})):
        mallory.send(type=kind, room="vault", id="v-" + kind, **extra)
        yield refused("no_such_room", "v-" + kind)
    mallory.send(type="receipts", room="vault", seq=1, id="v-receipts")
    yield refused("forbidden", "v-receipts")
    # her message is intact
    alice.send(type="history", room="team")
    page = yield next_of(alice, "history", skip=OTHER | {"message", "reaction", "recalled"})
    kept = {m["seq"]: m for m in page["messages"]}
    assert kept[mine["seq"]]["text"] == "keep me"
    assert len(kept[mine["seq"]]["reactions"]) == 20
    mallory.send(type="ping", id="alive")
    yield next_of(mallory, "pong", skip=OTHER | {"message", "reaction"}, id="alive")


@pytest_twisted.inlineCallbacks
def test_rooms_over_the_receipt_threshold_only_count_and_mute_reaches_every_device(
    server_factory,
):
    srv = yield inbox_server(server_factory, "--receipt-members", "2")
    alice, bob, carol = (
        (yield user(srv, "alice")),
        (yield user(srv, "bob")),
        (yield user(srv, "carol")),
    )
    for client in (alice, bob, carol):
        yield member(srv, client, "big")
    yield drain(alice, bob, carol)
    ack = yield sent(alice, "big", text="hi all", id="m1")
    for client in (bob, carol):
        client.send(type="read", room="big", seq=ack["seq"])
        yield next_of(client, "read", skip=OTHER | {"message"}, seq=ack["seq"])
    alice.send(type="receipts", room="big", seq=ack["seq"])
    answer = yield next_of(alice, "receipts")  # no receipt frame came before it
    assert (answer["count"], answer["users"]) == (2, None)
    web = yield user(srv, "bob")
    yield drain(web)
    bob.send(type="mute", room="big", muted=True)
    for device in (bob, web):
        yield next_of(device, "muted", room="big", muted=True)
    web.send(type="conversations")
    (c,) = (yield next_of(web, "conversations"))["conversations"]
    assert (c["muted"], c["unread"]) == (True, 0)


@pytest_twisted.inlineCallbacks
def test_checked_sends_are_never_overtaken_by_the_plain_ones_after_them(server_factory):
    """On SQLite a ``reply_to`` is checked with a store read before the message is
    stored; the plain sends written right after it still get later seqs."""
    srv = yield inbox_server(server_factory)
    alice, bob = (yield user(srv, "alice")), (yield user(srv, "bob"))
    for client in (alice, bob):
        yield member(srv, client, "team")
    yield drain(alice, bob)
    first = yield sent(alice, "team", text="q", id="q")
    for i in range(20):  # one write burst: no frame waits for an answer
        extra = {"reply_to": first["seq"]} if i % 2 else {}
        alice.send(type="send", room="team", text=f"t{i}", id=f"t{i}", **extra)
    seqs, texts = [], []
    for i in range(20):
        seqs.append((yield next_of(alice, "ack", id=f"t{i}"))["seq"])
    for _ in range(21):
        texts.append((yield next_of(bob, "message"))["text"])
    assert seqs == list(range(first["seq"] + 1, first["seq"] + 21))
    assert texts == ["q"] + [f"t{i}" for i in range(20)]


@pytest_twisted.inlineCallbacks
def test_a_sync_flood_is_answered_in_turn_or_refused_and_keeps_16_cursors(server_factory):
    """60 ``sync`` requests in one write: each is answered once, by ``sync`` or (past
    the 32 reads a connection may have waiting) ``rate_limited``; the store keeps the
    user's newest 16 cursors, the newest one works, and the connection carries on."""
    srv = yield inbox_server(server_factory, "--rate-burst", "1000", "--user-rate-burst", "1000")
    bob = yield user(srv, "bob")
    yield member(srv, bob, "team")
    yield drain(bob)
    for i in range(60):
        bob.send(type="sync", id=f"s{i}")
    answers = {}
    while len(answers) < 60:
        got = yield bob.recv()
        if got["type"] == "sync":
            answers[f"sync-{len(answers)}"] = got
        else:
            assert (got["type"], got["code"]) == ("error", "rate_limited"), got
            answers[got["ref"]] = got
    cursors = [a["cursor"] for a in answers.values() if a["type"] == "sync"]
    assert cursors, "no sync was answered"
    kept = 0
    for cursor in cursors:
        kept += (yield srv.store.load_cursor("bob", cursor)) is not None
    assert kept == min(16, len(cursors))
    bob.send(type="sync", since=cursors[-1])
    assert (yield next_of(bob, "sync"))["reset"] is False
    yield bob.quiet()
