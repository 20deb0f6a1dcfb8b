"""First end-to-end checks of the core over real sockets."""

import pytest_twisted

from tests.wsclient import Client


@pytest_twisted.inlineCallbacks
def test_v1_join_send_receive(server):
    """Two chatd.v1 clients in a room: one sends, the other receives, the sender gets an ack."""
    alice = yield Client.v1(server.port, "alice")
    bob = yield Client.v1(server.port, "bob")
    assert alice.welcome["user"] == "alice"
    joined = yield alice.join("room1")
    assert joined["members"] == ["alice"]
    yield bob.join("room1")
    presence = yield alice.expect("presence", user="bob", event="join")
    assert presence["room"] == "room1"
    alice.send(type="send", room="room1", text="hi", id="m1")
    ack = yield alice.expect("ack", id="m1", seq=1)
    msg = yield bob.expect("message", text="hi", seq=1)
    assert msg["from"] == "alice" and msg["ts"] == ack["ts"]
    yield alice.close()
    yield bob.close()
