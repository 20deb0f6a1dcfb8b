"""Relay mode: the tutorial's behaviour, unchanged, and its bridge to chatd.v1 in the lobby."""

import pytest_twisted
from twisted.internet import reactor, threads

from tests.wsclient import Client, wait_for


@pytest_twisted.inlineCallbacks
def test_text_goes_to_every_other_client_not_the_sender(server):
    """A text frame reaches every other relay client verbatim and is not echoed back."""
    clients = []
    for _ in range(5):
        clients.append((yield Client.connect(server.port)))
    assert all(c.protocol_chosen is None for c in clients)
    clients[0].send_raw("hello from 0")
    for other in clients[1:]:
        payload, binary = yield other.recv_raw()
        assert (payload, binary) == (b"hello from 0", False)
    # a positive marker instead of a sleep: the next frame the sender gets is a later
    # one from another client, so its own came not back before it
    clients[1].send_raw("marker")
    assert (yield clients[0].recv_raw()) == (b"marker", False)
    for c in clients:
        yield c.close()


@pytest_twisted.inlineCallbacks
def test_binary_frames_are_relayed_as_binary(server):
    """A binary frame is relayed byte for byte as a binary frame."""
    a = yield Client.connect(server.port)
    b = yield Client.connect(server.port)
    blob = bytes(range(256)) * 4
    a.send_raw(blob, binary=True)
    payload, binary = yield b.recv_raw()
    assert binary and payload == blob
    b.send_raw("marker")  # the next frame at the sender: no echo came before it
    assert (yield a.recv_raw()) == (b"marker", False)
    yield a.close()
    yield b.close()


@pytest_twisted.inlineCallbacks
def test_relay_order_and_volume(server_factory):
    """Many frames from two senders arrive complete and in each sender's order."""
    server = yield server_factory("--rate-limit", "0", "--user-rate-limit", "0")
    a = yield Client.connect(server.port)
    b = yield Client.connect(server.port)
    c = yield Client.connect(server.port)
    for i in range(300):
        a.send_raw(f"a{i}")
        b.send_raw(f"b{i}")
    got = []
    for _ in range(600):
        payload, _binary = yield c.recv_raw()
        got.append(payload.decode())
    assert [x for x in got if x[0] == "a"] == [f"a{i}" for i in range(300)]
    assert [x for x in got if x[0] == "b"] == [f"b{i}" for i in range(300)]
    for x in (a, b, c):
        yield x.close()


@pytest_twisted.inlineCallbacks
def test_tutorial_client_at_root_with_another_websocket_library(server):
    """The tutorial's plain ws://host:port client (here the `websockets` package) works at /."""
    from websockets.sync.client import connect

    listener = yield Client.connect(server.port)

    def tutorial_client():
        with connect(server.ws_url) as ws:
            assert ws.subprotocol is None
            ws.send("hello from the tutorial")
            return ws.recv(timeout=5)

    reply = threads.deferToThread(tutorial_client)
    payload, _ = yield listener.recv_raw()
    assert payload == b"hello from the tutorial"
    listener.send_raw("hi back")
    assert (yield reply) == "hi back"
    yield listener.close()


@pytest_twisted.inlineCallbacks
def test_relay_text_appears_in_lobby_for_v1_clients(server):
    """A relay client's text appears in `lobby` as a chatd.v1 message from its guest name."""
    v1 = yield Client.v1(server.port, "carol")
    joined = yield v1.join("lobby")
    assert joined["members"] == ["carol"]
    relay = yield Client.connect(server.port)
    presence = yield v1.expect("presence", room="lobby", event="join")
    guest = presence["user"]
    assert guest.startswith("guest-")
    relay.send_raw("plain text")
    message = yield v1.expect("message", room="lobby", text="plain text")
    assert message["from"] == guest and message["seq"] == 1 and message["id"] is None
    yield relay.close()
    yield v1.expect("presence", room="lobby", user=guest, event="leave")
    yield v1.close()


@pytest_twisted.inlineCallbacks
def test_v1_lobby_text_reaches_relay_clients_as_bare_text(server):
    """A chatd.v1 send to `lobby` reaches relay clients as a bare text frame."""
    relay = yield Client.connect(server.port)
    v1 = yield Client.v1(server.port, "dave")
    joined = yield v1.join("lobby")
    assert len(joined["members"]) == 2  # dave and the relay guest
    v1.send(type="send", room="lobby", text="hello relay", id="x1")
    yield v1.expect("ack", id="x1")
    payload, binary = yield relay.recv_raw()
    assert (payload, binary) == (b"hello relay", False)
    # a send to another room does not reach relay clients
    yield v1.join("elsewhere")
    v1.send(type="send", room="elsewhere", text="not for relay", id="x2")
    yield v1.expect("ack", id="x2")
    v1.send(type="send", room="lobby", text="marker", id="x3")  # the next frame there
    assert (yield relay.recv_raw()) == (b"marker", False)
    yield relay.close()
    yield v1.close()


@pytest_twisted.inlineCallbacks
def test_relay_binary_is_not_bridged(server):
    """Binary relay frames are relayed to relay clients only, not posted to the lobby."""
    v1 = yield Client.v1(server.port, "erin")
    yield v1.join("lobby")
    relay = yield Client.connect(server.port)
    yield v1.expect("presence", event="join")
    relay.send_raw(b"\x00\x01", binary=True)
    # a positive marker: text sent after it is bridged, and it is the next frame at v1
    # (a bridged binary frame would have been stored, and delivered, first)
    relay.send_raw("marker")
    yield v1.expect("message", room="lobby", text="marker")
    yield relay.close()
    yield v1.close()


@pytest_twisted.inlineCallbacks
def test_relay_disconnect_cleans_up(server):
    """Closed relay connections leave no protocol instance, no name and no lobby member."""
    clients = []
    for _ in range(4):
        clients.append((yield Client.connect(server.port)))
    assert len(server.factory.connections) == 4
    for c in clients[:2]:
        yield c.close()
    clients[2].abort()
    yield wait_for(lambda: len(server.factory.connections) == 1, what="three closes handled")
    assert len(server.factory.connections) == 1
    assert len(server.chat.hub.relays) == 1
    assert len(server.chat.hub.members("lobby")) == 1
    yield clients[3].close()
    yield wait_for(lambda: not server.factory.connections, what="the last close handled")
    assert not server.factory.connections
    assert not server.chat.hub.relays
    assert server.chat.hub.rooms == {}
    assert not server.chat.names


@pytest_twisted.inlineCallbacks
def test_shutdown_stores_a_relay_post_still_looking_up_its_room(server_factory, tmp_path):
    """A relay frame's lobby copy that is still waiting for the lobby's kind (a store
    read) when shutdown begins is stored before the store closes, not refused with a
    traceback in the log (seen in CI: SIGTERM right after the tutorial's frames)."""
    from chatd.hub import LOBBY
    from chatd.store.sqlite import SQLiteStore

    db = str(tmp_path / "chatd.sqlite3")
    srv = yield server_factory("--db", db)
    assert LOBBY not in srv.chat.membership.kinds  # its kind is a store read away
    posted = srv.chat.post(LOBBY, "alice", "alice", "said just before SIGTERM", from_relay=True)
    results = []
    posted.addBoth(results.append)
    yield srv.service.stopService()
    assert len(results) == 1 and results[0].message.text == "said just before SIGTERM"
    store = SQLiteStore(db, reactor=reactor)
    yield store.start()
    try:
        page = yield store.history(LOBBY, None, 10)
    finally:
        yield store.stop()
    assert [m.text for m in page.messages] == ["said just before SIGTERM"]
