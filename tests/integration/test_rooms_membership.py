"""Durable membership and private rooms over real sockets: WebSocket clients on
loopback against an in-process chatd on SQLite (docs/protocol.md, *Conversations*)."""

from __future__ import annotations

import json

import pytest
import pytest_twisted
from twisted.internet import defer, reactor
from twisted.web.server import Site

from tests.conftest import start_server
from tests.support.auth import SECRET, token
from tests.support.http import Receiver, http
from tests.support.wechat import FakeJscode2session, listening, login_server
from tests.wsclient import Client

AUTH = ("--jwt-secret", SECRET)


def user(port, sub, **params):
    return Client.v1(port, token=token(sub), **params)


@defer.inlineCallbacks
def expect_event(conn, **fields):
    """The next frame is an ``event`` with *fields* (``kind`` among them)."""
    event = yield conn.expect("event")
    assert {k: event.get(k) for k in fields} == fields, event
    return event


@pytest_twisted.inlineCallbacks
def test_a_kicked_users_connections_stop_receiving_at_once(server_factory):
    """bob's phone and web are both subscribed to the private room; a kick reaches
    both as the ``kicked`` event, then ``left``, and nothing of the room after it."""
    srv = yield server_factory(*AUTH)
    alice = yield user(srv.port, "alice")
    phone = yield user(srv.port, "bob")
    alice.send(type="create", room="team", kind="private", members=["bob"], id="c1")
    yield alice.expect("presence", user="bob", event="join")  # bob is subscribed at once
    yield alice.expect("ack", id="c1", room="team", seq=1)
    yield alice.expect("room_info", room="team", members=2, role="owner")
    yield phone.expect("subscribed", rooms=["team"], more=False)
    yield expect_event(phone, kind="invited", user="bob", by="alice", seq=2)
    web = yield user(srv.port, "bob")
    yield web.expect("subscribed", rooms=["team"], more=False)
    phone.send(type="send", room="team", text="hi", id="m1")
    yield phone.expect("ack", id="m1")
    yield web.expect("message", text="hi")
    yield alice.expect("message", text="hi")
    alice.send(type="kick", room="team", user="bob", id="k1")
    yield alice.expect("presence", user="bob", event="leave")  # bob's last connection left
    yield alice.expect("ack", id="k1", room="team", seq=4)
    for conn in (phone, web):
        yield expect_event(conn, kind="kicked", user="bob", by="alice", seq=4)
        yield conn.expect("left", room="team")
    alice.send(type="send", room="team", text="after the kick", id="m2")
    yield alice.expect("ack", id="m2")
    phone.send(type="history", room="team", id="h")
    yield phone.expect("error", code="forbidden", ref="h")
    yield web.quiet()
    for conn in (alice, phone, web):
        yield conn.close()


@pytest_twisted.inlineCallbacks
def test_membership_survives_a_restart(tmp_path):
    """Members, roles and the room's kind are in the SQLite file: after a restart a
    reconnect is subscribed to the created room without joining, the owner is still
    the owner, and the membership of a chatd 0.1 room is kept too."""
    db = str(tmp_path / "chat.sqlite3")
    srv = yield start_server("--db", db, *AUTH)
    try:
        alice = yield user(srv.port, "alice")
        bob = yield user(srv.port, "bob")
        alice.send(type="create", room="team", kind="private", title="T", members=["bob"], id="c")
        yield alice.expect("presence", user="bob", event="join")
        yield alice.expect("ack", id="c")
        yield bob.expect("subscribed", rooms=["team"])
        yield bob.expect("event", seq=2)
        bob.send(type="join", room="public-room", id="j")
        yield bob.expect("joined", room="public-room")
        for conn in (alice, bob):
            yield conn.close()
    finally:
        yield srv.service.stopService()
    srv = yield start_server("--db", db, *AUTH)
    try:
        bob = yield user(srv.port, "bob")
        yield bob.expect("subscribed", rooms=["team"], more=False)
        bob.send(type="room_info", room="public-room")  # a chatd 0.1 room: joined by hand
        info = yield bob.expect("room_info", room="public-room", role="member")
        assert info["members"] == 1
        alice = yield user(srv.port, "alice")
        yield alice.expect("subscribed", rooms=["team"], more=False)
        alice.send(type="send", room="team", text="after restart", id="m1")
        yield alice.expect("ack", id="m1")
        yield bob.expect("presence", user="alice", event="join")
        yield bob.expect("message", text="after restart")
        alice.send(type="room_info", room="team", id="i")
        info = yield alice.expect("room_info")
        assert (info["kind"], info["title"], info["role"], info["members"]) == (
            "private",
            "T",
            "owner",
            2,
        )
        eve = yield Client.v1(srv.port, "eve")
        eve.send(type="join", room="team", id="j")
        yield eve.expect("error", code="forbidden", ref="j")
        for conn in (alice, bob, eve):
            yield conn.close()
    finally:
        yield srv.service.stopService()


@pytest_twisted.inlineCallbacks
def test_pipelined_join_and_send_to_a_private_room_store_nothing(server_factory):
    """The join's check reads the (asynchronous) store: a ``send`` right behind the
    join waits for it and gets ``not_in_room``; members see nothing."""
    srv = yield server_factory(*AUTH)
    alice = yield user(srv.port, "alice")
    alice.send(type="create", room="vault", kind="private", id="c")
    yield alice.expect("ack", id="c")
    yield alice.expect("room_info")
    for intruder in ((yield Client.v1(srv.port, "eve")), (yield user(srv.port, "mallory"))):
        batch = [
            {"type": "join", "room": "vault", "id": "j"},
            {"type": "send", "room": "vault", "text": "spam", "id": "s"},
            {"type": "typing", "room": "vault", "id": "t"},
        ]
        intruder.send_raw("".join(json.dumps(f) for f in batch[:1]))
        for frame in batch[1:]:
            intruder.send(**frame)
        yield intruder.expect("error", code="forbidden", ref="j")
        yield intruder.expect("error", code="not_in_room", ref="s")
        yield intruder.expect("error", code="not_in_room", ref="t")
        yield intruder.close()
    alice.send(type="history", room="vault", id="h")
    page = yield alice.expect("history", room="vault")
    assert page["messages"] == [] and [e["kind"] for e in page["events"]] == ["created"]
    yield alice.quiet()
    yield alice.close()


@pytest_twisted.inlineCallbacks
def test_private_room_webhook_events_carry_no_text(server_factory):
    receiver = Receiver()
    port = reactor.listenTCP(0, Site(receiver), interface="127.0.0.1")
    try:
        url = f"http://127.0.0.1:{port.getHost().port}/hook"
        srv = yield server_factory("--webhook-url", url, "--webhook-rooms", "*", *AUTH)
        alice = yield user(srv.port, "alice")
        for room, kind in (("open", "public"), ("closed", "private")):
            alice.send(type="create", room=room, kind=kind, id=room)
            yield alice.expect("ack", id=room)
            yield alice.expect("room_info", room=room)
            alice.send(type="send", room=room, text=f"words in {room}", id=f"m-{room}")
            yield alice.expect("ack", id=f"m-{room}")
        got = {}
        while len(got) < 2:
            event = yield receiver.arrived.get().addTimeout(10, reactor)
            if event["event"] == "message":
                got[event["room"]] = event
        assert got["open"]["text"] == "words in open" and "private" not in got["open"]
        assert "text" not in got["closed"] and got["closed"]["private"] is True
        assert "words in closed" not in json.dumps(receiver.events)
        yield alice.close()
    finally:
        yield port.stopListening()


@pytest_twisted.inlineCallbacks
def test_offline_dms_reach_known_users(server_factory):
    """A DM to a user who connected before (and is offline now) is stored and acked,
    and read when they are back; an unknown user gets no_such_user."""
    srv = yield server_factory(*AUTH)
    bob = yield user(srv.port, "bob")
    yield bob.close()
    yield srv.gone(bob)
    alice = yield user(srv.port, "alice")
    alice.send(type="dm", to="bob", text="while you were away", id="d1")
    yield alice.expect("ack", id="d1", to="bob")
    alice.send(type="dm", to="nobody", text="hello?", id="d2")
    yield alice.expect("error", code="no_such_user", ref="d2")
    back = yield user(srv.port, "bob")
    back.send(type="dm_history", since=0, **{"with": "alice"})
    page = yield back.expect("dm_history")
    assert [m["text"] for m in page["messages"]] == ["while you were away"]
    for conn in (alice, back):
        yield conn.close()


@pytest.fixture
def wechat():
    yield from listening(FakeJscode2session())


@pytest_twisted.inlineCallbacks
def test_a_user_issued_a_token_is_known_before_connecting(server_factory, wechat):
    """/api/login/wechat records the user it issues a token to: a DM reaches them
    before their first connection."""
    srv = yield login_server(server_factory, wechat.url)
    url = f"http://127.0.0.1:{srv.port}/api/login/wechat"
    status, _, newcomer = yield http("POST", url, {"code": "abc"}, key=None)
    assert status == 200
    status, _, sender = yield http("POST", url, {"code": "xyz"}, key=None)
    first = yield Client.v1(srv.port, token=sender["token"])
    first.send(type="dm", to=newcomer["user"], text="hi, new friend", id="d1")
    yield first.expect("ack", id="d1", to=newcomer["user"])
    first.send(type="dm", to="wx:o-never-logged-in", text="hi?", id="d2")
    yield first.expect("error", code="no_such_user", ref="d2")
    yield first.close()
