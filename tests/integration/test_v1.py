"""chatd.v1 over real sockets: every message type, every error code, identity and cleanup."""

import json

import pytest
import pytest_twisted

from tests.wsclient import Client


@pytest_twisted.inlineCallbacks
def test_welcome_carries_identity_and_limits(server):
    """The first frame is welcome with the name asked for, a session id and the limits."""
    c = yield Client.v1(server.port, "alice")
    w = c.welcome
    assert c.protocol_chosen == "chatd.v1"
    assert (w["user"], w["name"], w["protocol"]) == ("alice", "alice", "chatd.v1")
    assert len(w["session"]) == 16
    assert w["max_text_length"] == 4000 and w["max_message_size"] == 65536
    yield c.close()


@pytest_twisted.inlineCallbacks
def test_guest_names_are_unique_and_both_paths_work(server):
    """Without ?name= the server picks distinct guest names; / and /ws both upgrade."""
    a = yield Client.v1(server.port, path="/")
    b = yield Client.v1(server.port, path="/ws")
    assert a.welcome["user"].startswith("guest-")
    assert b.welcome["user"].startswith("guest-")
    assert a.welcome["user"] != b.welcome["user"]
    assert a.welcome["session"] != b.welcome["session"]
    yield a.close()
    yield b.close()


@pytest_twisted.inlineCallbacks
def test_name_taken_then_free_again(server):
    """A live name cannot be taken (error name_taken, close 4409); once closed it is free."""
    first = yield Client.v1(server.port, "alice")
    second = yield Client.connect(server.port, "/ws", protocols=["chatd.v1"], name="alice")
    err = yield second.expect("error", code="name_taken")
    assert err["ref"] is None
    code, _ = yield second.closed()
    assert code == 4409
    yield first.close()
    yield server.gone(first)
    third = yield Client.v1(server.port, "alice")
    assert third.welcome["user"] == "alice"
    yield third.close()


@pytest.mark.parametrize("name", ["a" * 33, "has space", "<b>x</b>", "tab\tname", "guest-123"])
@pytest_twisted.inlineCallbacks
def test_bad_names_are_refused(server, name):
    """Names breaking the rule get error bad_name and close 4400."""
    c = yield Client.connect(server.port, "/ws", protocols=["chatd.v1"], name=name)
    yield c.expect("error", code="bad_name")
    code, _ = yield c.closed()
    assert code == 4400


@pytest_twisted.inlineCallbacks
def test_unicode_names_and_rooms(server):
    """Names and rooms may use any script's letters."""
    c = yield Client.v1(server.port, "小明")
    joined = yield c.join("聊天室")
    assert joined["members"] == ["小明"]
    yield c.close()


@pytest_twisted.inlineCallbacks
def test_unknown_subprotocol_is_refused_with_http_400(server):
    """A client offering only an unknown subprotocol is refused during the handshake."""
    with pytest.raises(ConnectionError):
        yield Client.connect(server.port, "/ws", protocols=["mqtt"])


@pytest_twisted.inlineCallbacks
def test_join_leave_presence_and_members(server):
    """join/leave answer joined/left; others see presence join/leave; members are sorted users."""
    a = yield Client.v1(server.port, "alice")
    b = yield Client.v1(server.port, "bob")
    j = yield a.join("r")
    assert j["members"] == ["alice"] and j["seq"] == 0 and j["truncated"] is False
    j = yield b.join("r")
    assert j["members"] == ["alice", "bob"]
    yield a.expect("presence", room="r", user="bob", event="join")
    b.send(type="leave", room="r")
    yield b.expect("left", room="r")
    yield a.expect("presence", room="r", user="bob", event="leave")
    # joining twice answers joined again without a second presence
    yield a.join("r")
    yield a.quiet()
    yield a.close()
    yield b.close()


@pytest_twisted.inlineCallbacks
def test_send_ack_message_and_seq(server):
    """send → ack {id, seq, ts} to the sender, message to every other member, seq +1 each."""
    a = yield Client.v1(server.port, "alice")
    b = yield Client.v1(server.port, "bob")
    c = yield Client.v1(server.port, "carol")
    for x in (a, b, c):
        yield x.join("r")
    yield a.expect("presence")
    yield a.expect("presence")
    yield b.expect("presence")
    for i in range(1, 4):
        a.send(type="send", room="r", text=f"t{i}", id=f"m{i}")
        ack = yield a.expect("ack", id=f"m{i}", seq=i, room="r")
        for other in (b, c):
            m = yield other.expect("message", seq=i, text=f"t{i}", id=f"m{i}", room="r")
            assert m["from"] == "alice" and m["name"] == "alice" and m["ts"] == ack["ts"]
    yield a.quiet()  # no echo of its own messages (chatd fans out before it acks)
    # a send without an id is acked with id null
    a.send(type="send", room="r", text="no id")
    ack = yield a.expect("ack", seq=4)
    assert ack["id"] is None
    for x in (a, b, c):
        yield x.close()


@pytest_twisted.inlineCallbacks
def test_from_cannot_be_spoofed(server):
    """Fields a client adds (from, name, seq, ts) never override the server's values."""
    a = yield Client.v1(server.port, "alice")
    b = yield Client.v1(server.port, "bob")
    yield a.join("r")
    yield b.join("r")
    b.send(
        type="send",
        room="r",
        text="I am alice",
        id="s1",
        **{"from": "alice"},
        name="alice",
        seq=99,
        ts=1,
    )
    yield b.expect("ack", id="s1", seq=1)
    m = yield a.expect("presence")
    m = yield a.expect("message")
    assert (m["from"], m["name"], m["seq"]) == ("bob", "bob", 1) and m["ts"] != 1
    yield a.close()
    yield b.close()


@pytest_twisted.inlineCallbacks
def test_dm(server):
    """dm → ack to the sender; every connection of the recipient gets it; unknown user errors."""
    a = yield Client.v1(server.port, "alice")
    b = yield Client.v1(server.port, "bob")
    a.send(type="dm", to="bob", text="psst", id="d1")
    ack = yield a.expect("ack", id="d1", to="bob", seq=1)
    dm = yield b.expect("dm", text="psst", to="bob", id="d1", seq=1)
    assert dm["from"] == "alice" and dm["ts"] == ack["ts"]
    a.send(type="dm", to="nobody", text="hello?", id="d2")
    yield a.expect("error", code="no_such_user", ref="d2")
    b.send(type="dm", to="alice", text="back", id="d3")
    yield b.expect("ack", id="d3", seq=2)
    yield a.expect("dm", text="back", seq=2)
    yield a.close()
    yield b.close()


@pytest_twisted.inlineCallbacks
def test_typing_is_relayed_not_stored(server):
    """typing reaches the others in the room as typing {room, from} and takes no seq."""
    a = yield Client.v1(server.port, "alice")
    b = yield Client.v1(server.port, "bob")
    yield a.join("r")
    yield b.join("r")
    yield a.expect("presence")
    a.send(type="typing", room="r")
    t = yield b.expect("typing", room="r")
    assert t["from"] == "alice"
    yield a.quiet()  # no echo of its own typing
    a.send(type="send", room="r", text="x", id="1")
    yield a.expect("ack", seq=1)
    yield a.close()
    yield b.close()


@pytest_twisted.inlineCallbacks
def test_ping_pong(server):
    """ping → pong with the server time and the ping's id."""
    a = yield Client.v1(server.port, "alice")
    a.send(type="ping", id="p1")
    pong = yield a.expect("pong", id="p1")
    assert isinstance(pong["ts"], int)
    a.send(type="ping")
    pong = yield a.expect("pong")
    assert "id" not in pong
    yield a.close()


@pytest_twisted.inlineCallbacks
def test_history_pages_oldest_first(server):
    """history returns pages ascending by seq, before is exclusive, more says older exist."""
    a = yield Client.v1(server.port, "alice")
    yield a.join("r")
    for i in range(1, 8):
        a.send(type="send", room="r", text=f"t{i}", id=f"h{i}")
        yield a.expect("ack", seq=i)
    a.send(type="history", room="r", limit=3)
    page = yield a.expect("history", room="r", more=True)
    assert [m["seq"] for m in page["messages"]] == [5, 6, 7]
    assert page["messages"][0]["text"] == "t5" and page["messages"][0]["from"] == "alice"
    a.send(type="history", room="r", before=5, limit=3)
    page = yield a.expect("history", more=True)
    assert [m["seq"] for m in page["messages"]] == [2, 3, 4]
    a.send(type="history", room="r", before=2)
    page = yield a.expect("history", more=False)
    assert [m["seq"] for m in page["messages"]] == [1]
    a.send(type="history", room="empty")
    page = yield a.expect("history", room="empty", more=False, messages=[])
    yield a.close()


@pytest_twisted.inlineCallbacks
def test_dm_history(server):
    """dm_history returns the conversation with one user, with since or as pages."""
    a = yield Client.v1(server.port, "alice")
    b = yield Client.v1(server.port, "bob")
    for i in range(1, 4):
        a.send(type="dm", to="bob", text=f"d{i}", id=f"d{i}")
        yield a.expect("ack", seq=i)
        yield b.expect("dm", seq=i)
    b.send(type="dm_history", **{"with": "alice"}, since=1)
    got = yield b.expect("dm_history")
    assert got["with"] == "alice"
    assert [(m["seq"], m["from"], m["to"]) for m in got["messages"]] == [
        (2, "alice", "bob"),
        (3, "alice", "bob"),
    ]
    a.send(type="dm_history", **{"with": "bob"}, limit=2)
    got = yield a.expect("dm_history", more=True)
    assert [m["text"] for m in got["messages"]] == ["d2", "d3"]
    yield a.close()
    yield b.close()


@pytest_twisted.inlineCallbacks
def test_exactly_once_resend_returns_original_ack(server):
    """Resending an id (also on a new connection) stores nothing and returns the original ack."""
    a = yield Client.v1(server.port, "alice")
    b = yield Client.v1(server.port, "bob")
    yield a.join("r")
    yield b.join("r")
    yield a.expect("presence", user="bob")
    a.send(type="send", room="r", text="once", id="same")
    ack1 = yield a.expect("ack", id="same", seq=1)
    yield b.expect("message", seq=1)
    yield a.close()
    a2 = yield Client.v1(server.port, "alice")
    yield a2.join("r")
    a2.send(type="send", room="r", text="once", id="same")
    ack2 = yield a2.expect("ack", id="same", seq=1, duplicate=True)
    assert ack2["ts"] == ack1["ts"]
    yield b.expect("presence", event="leave")
    yield b.expect("presence", event="join")
    yield b.quiet()  # the resend delivered nothing (chatd would before acking it)
    yield a2.close()
    yield b.close()


ERROR_CASES = [
    (b"not json", "bad_json", None),
    (b"[1,2]", "bad_json", None),
    (b'"str"', "bad_json", None),
    (b"[" * 50000, "bad_json", None),
    (b'{"type":"join","room":"r","since":' + b"9" * 5000 + b"}", "bad_json", None),
    (json.dumps({"room": "r"}).encode(), "bad_request", None),
    (json.dumps({"type": 5}).encode(), "bad_request", None),
    (json.dumps({"type": "nope", "id": "q1"}).encode(), "unknown_type", "q1"),
    (json.dumps({"type": "join", "id": "q2"}).encode(), "bad_request", "q2"),
    (json.dumps({"type": "join", "room": 5, "id": "q3"}).encode(), "bad_request", "q3"),
    (json.dumps({"type": "join", "room": "a b", "id": "q4"}).encode(), "bad_room", "q4"),
    (json.dumps({"type": "join", "room": "x" * 65}).encode(), "bad_room", None),
    (json.dumps({"type": "join", "room": "r", "since": -1}).encode(), "bad_request", None),
    (json.dumps({"type": "join", "room": "r", "since": True}).encode(), "bad_request", None),
    (
        json.dumps({"type": "send", "room": "r", "text": "x", "id": "q5"}).encode(),
        "not_in_room",
        "q5",
    ),
    (json.dumps({"type": "typing", "room": "r"}).encode(), "not_in_room", None),
    (json.dumps({"type": "leave", "room": "r"}).encode(), "not_in_room", None),
    (json.dumps({"type": "dm", "to": "ghost", "text": "x"}).encode(), "no_such_user", None),
    (json.dumps({"type": "dm", "to": "bob", "text": 7}).encode(), "bad_request", None),
    (json.dumps({"type": "dm", "to": "bob", "text": ""}).encode(), "bad_request", None),
    (
        json.dumps({"type": "dm", "to": "bob", "text": "x" * 4001, "id": "q6"}).encode(),
        "too_large",
        "q6",
    ),
    (json.dumps({"type": "history", "room": "r", "limit": 0}).encode(), "bad_request", None),
    (json.dumps({"type": "history", "room": "r", "limit": 201}).encode(), "bad_request", None),
    (json.dumps({"type": "ping", "id": 5}).encode(), "bad_request", None),
    (json.dumps({"type": "ping", "id": "x" * 65}).encode(), "bad_request", None),
]


@pytest_twisted.inlineCallbacks
def test_every_error_code_keeps_the_connection_open(server):
    """Each bad request gets its documented error code and ref; the connection stays usable."""
    a = yield Client.v1(server.port, "alice")
    bob = yield Client.v1(server.port, "bob")
    for payload, code, ref in ERROR_CASES:
        a.send_raw(payload)
        err = yield a.expect("error")
        assert (err["code"], err["ref"]) == (code, ref), payload[:80]
        assert err["message"]
    a.send_raw(b'{"type":"ping"}', binary=True)
    yield a.expect("error", code="bad_request")
    a.send(type="ping", id="still-alive")
    yield a.expect("pong", id="still-alive")
    yield a.close()
    yield bob.close()


@pytest_twisted.inlineCallbacks
def test_oversize_frame_closes_1009_and_others_carry_on(server_factory):
    """A frame over --max-message-size closes that connection with 1009; others are fine."""
    srv = yield server_factory("--max-message-size", "1024")
    a = yield Client.v1(srv.port, "alice")
    b = yield Client.v1(srv.port, "bob")
    yield a.join("r")
    yield b.join("r")
    a.send(type="send", room="r", text="x" * 2000, id="big")
    code, _ = yield a.closed()
    assert code == 1009
    yield b.expect("presence", event="leave", user="alice")
    c = yield Client.v1(srv.port, "carol")
    yield c.join("r")
    c.send(type="send", room="r", text="fine", id="ok")
    yield b.expect("presence", user="carol")
    yield b.expect("message", text="fine")
    yield b.close()
    yield c.close()


@pytest_twisted.inlineCallbacks
def test_text_limit_option(server_factory):
    """--max-text-length bounds texts: at the limit is fine, one more is too_large."""
    srv = yield server_factory("--max-text-length", "10")
    a = yield Client.v1(srv.port, "alice")
    assert a.welcome["max_text_length"] == 10
    yield a.join("r")
    a.send(type="send", room="r", text="x" * 10, id="ok")
    yield a.expect("ack", id="ok")
    a.send(type="send", room="r", text="x" * 11, id="no")
    yield a.expect("error", code="too_large", ref="no")
    yield a.close()


@pytest_twisted.inlineCallbacks
def test_disconnect_leaves_every_room_and_leaks_nothing(server):
    """Closing (or dropping) a socket leaves all rooms with presence; no state is left behind."""
    a = yield Client.v1(server.port, "alice")
    b = yield Client.v1(server.port, "bob")
    for room in ("r1", "r2", "r3"):
        yield a.join(room)
    yield b.join("r1")
    yield b.join("r2")
    yield a.expect("presence", room="r1")
    yield a.expect("presence", room="r2")
    b.abort()
    rooms = []
    for _ in range(2):
        rooms.append((yield a.expect("presence", event="leave"))["room"])
    assert sorted(rooms) == ["r1", "r2"]
    assert server.chat.hub.members("r1") == ["alice"]
    yield a.close()
    yield server.gone(a)
    hub = server.chat.hub
    assert hub.rooms == {} and hub.connections == {} and hub._rooms_of == {}
    assert server.factory.connections == {} and not server.chat.names
