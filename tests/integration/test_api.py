"""The server HTTP API (docs/api.md) against a real chatd on loopback.

Requests go over real HTTP with ``twisted.web.client.Agent``; WebSocket
clients (tests/wsclient.py) check that what the API publishes reaches members
exactly like a client's ``send``.
"""

from __future__ import annotations

import pytest_twisted

from tests.support.http import KEY, http
from tests.wsclient import Client


@pytest_twisted.inlineCallbacks
def test_publish_reaches_members_with_seq_and_is_stored(server_factory):
    """POST /api/rooms/R/messages stores the message with the room's next seq, delivers
    it to every member as a ``message`` frame, and GET …/history returns it."""
    srv = yield server_factory("--api-key", KEY)
    alice = yield Client.v1(srv.port, "alice")
    yield alice.join("general")
    alice.send(type="send", room="general", text="first", id="a1")
    yield alice.expect("ack", seq=1)
    status, _, body = yield http(
        "POST",
        srv.http_url + "/api/rooms/general/messages",
        {"from": "deploybot", "name": "Deploy Bot", "text": "v2 is live", "id": "d-1"},
    )
    assert status == 200, body
    assert body["room"] == "general" and body["seq"] == 2 and body["duplicate"] is False
    msg = yield alice.expect("message", seq=2, text="v2 is live")
    assert msg["from"] == "deploybot" and msg["name"] == "Deploy Bot" and msg["id"] == "d-1"
    assert msg["ts"] == body["ts"]

    # the same id again: exactly-once, nothing delivered twice
    status, _, again = yield http(
        "POST",
        srv.http_url + "/api/rooms/general/messages",
        {"from": "deploybot", "text": "v2 is live", "id": "d-1"},
    )
    assert status == 200 and again["duplicate"] is True and again["seq"] == 2
    yield alice.quiet()  # chatd would have delivered a second copy before answering

    status, _, page = yield http("GET", srv.http_url + "/api/rooms/general/history?limit=10")
    assert status == 200
    assert [m["seq"] for m in page["messages"]] == [1, 2]
    assert page["messages"][1]["text"] == "v2 is live" and page["more"] is False
    status, _, page = yield http("GET", srv.http_url + "/api/rooms/general/history?limit=1")
    assert [m["seq"] for m in page["messages"]] == [2] and page["more"] is True
    yield alice.close()


@pytest_twisted.inlineCallbacks
def test_dm_rooms_members_and_disconnect(server_factory):
    """POST /api/dm delivers a ``dm`` to the recipient's connections; GET /api/rooms and
    /api/rooms/R list rooms and members; POST /api/users/U/disconnect closes U."""
    srv = yield server_factory("--api-key", KEY)
    bob = yield Client.v1(srv.port, "bob")
    carol = yield Client.v1(srv.port, "carol")
    yield bob.join("ops")
    yield carol.join("ops")
    yield bob.expect("presence", user="carol")

    status, _, body = yield http(
        "POST", srv.http_url + "/api/dm", {"from": "support", "to": "bob", "text": "hello bob"}
    )
    assert status == 200 and body["to"] == "bob" and body["seq"] == 1 and body["online"] is True
    dm = yield bob.expect("dm", text="hello bob")
    assert dm["from"] == "support" and dm["to"] == "bob"

    status, _, rooms = yield http("GET", srv.http_url + "/api/rooms")
    assert status == 200
    assert rooms["rooms"]["ops"] == ["bob", "carol"] and rooms["users"] == 2
    assert rooms["connections"]["chatd.v1"] == 2
    status, _, room = yield http("GET", srv.http_url + "/api/rooms/ops")
    assert status == 200 and room == {"room": "ops", "members": ["bob", "carol"], "seq": 0}

    status, _, body = yield http("POST", srv.http_url + "/api/users/carol/disconnect")
    assert status == 200 and body == {"user": "carol", "closed": 1}
    code, _ = yield carol.closed()
    assert code == 4403
    yield bob.expect("presence", user="carol", event="leave")
    status, _, room = yield http("GET", srv.http_url + "/api/rooms/ops")
    assert room["members"] == ["bob"]
    yield bob.close()


@pytest_twisted.inlineCallbacks
def test_authentication_and_validation(server_factory):
    """No key or a wrong key is 401 (wrong scheme too); invalid input is 400/413 with the
    wire protocol's error code; unknown paths are 404; nothing is stored on errors."""
    srv = yield server_factory("--api-key", KEY, "--max-text-length", "10")
    url = srv.http_url + "/api/rooms/general/messages"
    status, headers, body = yield http("POST", url, {"from": "x", "text": "hi"}, key=None)
    assert status == 401 and body["error"] == "unauthorized"
    assert headers.getRawHeaders(b"www-authenticate") == [b"apikey"]
    status, _, _ = yield http("POST", url, {"from": "x", "text": "hi"}, key=KEY + "x")
    assert status == 401
    status, _, _ = yield http(
        "GET",
        srv.http_url + "/api/rooms",
        key=None,
        headers={b"authorization": [b"Bearer " + KEY.encode()]},
    )
    assert status == 401

    cases = [
        (
            srv.http_url + "/api/rooms/bad%20room/messages",
            {"from": "x", "text": "hi"},
            400,
            "bad_room",
        ),
        (url, {"text": "hi"}, 400, "bad_request"),
        (url, {"from": "x", "text": ""}, 400, "bad_request"),
        (url, {"from": "x", "text": "x" * 11}, 413, "too_large"),
        (url, b"{not json", 400, "bad_json"),
        (url, {"from": "x", "text": "hi", "id": "with space"}, 400, "bad_request"),
    ]
    for target, payload, want_status, want_code in cases:
        status, _, body = yield http("POST", target, payload)
        assert (status, body["error"]) == (want_status, want_code), (payload, body)
    status, _, body = yield http("GET", srv.http_url + "/api/nothing")
    assert status == 404 and body["error"] == "not_found"
    status, _, body = yield http("DELETE", srv.http_url + "/api/rooms")
    assert status == 405
    status, _, page = yield http("GET", srv.http_url + "/api/rooms/general/history")
    assert page["messages"] == []


@pytest_twisted.inlineCallbacks
def test_api_disabled_without_key_and_key_from_environment(server_factory, monkeypatch):
    """Without --api-key or CHATD_API_KEY every API request is 403; CHATD_API_KEY enables it."""
    monkeypatch.delenv("CHATD_API_KEY", raising=False)
    srv = yield server_factory()
    status, _, body = yield http("GET", srv.http_url + "/api/rooms")
    assert status == 403 and body["error"] == "forbidden"
    monkeypatch.setenv("CHATD_API_KEY", "from-env")
    srv2 = yield server_factory()
    status, _, _ = yield http("GET", srv2.http_url + "/api/rooms", key="from-env")
    assert status == 200
    status, _, _ = yield http("GET", srv2.http_url + "/api/rooms", key=KEY)
    assert status == 401


@pytest_twisted.inlineCallbacks
def test_stats_for_the_admin_page(server_factory):
    """GET /api/stats reports live connections, rooms, counters and recent errors."""
    srv = yield server_factory("--api-key", KEY)
    dave = yield Client.v1(srv.port, "dave")
    yield dave.join("lobby2")
    dave.send(type="send", room="nowhere", text="hi", id="n1")
    yield dave.expect("error", code="not_in_room")
    status, _, stats = yield http("GET", srv.http_url + "/api/stats")
    assert status == 200
    assert stats["connections"]["chatd.v1"] == 1 and stats["rooms"] == {"lobby2": ["dave"]}
    assert stats["counters"]["errors"] == {"not_in_room": 1}
    assert stats["recent_errors"][-1]["code"] == "not_in_room"
    assert stats["broker_healthy"] is True
    yield dave.close()
