"""The server API's conversation endpoints (docs/api.md, *Conversations*) on loopback.

A real chatd with a token secret and an API key; requests over real HTTP
(tests/support/http.py), token users over real chatd.v1 WebSocket connections
(tests/wsclient.py): what the API posts, lists and recalls is what the users'
connections see.
"""

from __future__ import annotations

import pytest_twisted

from tests.support.auth import SECRET, token
from tests.support.http import KEY, http
from tests.wsclient import Client


def _server(server_factory, *extra):
    return server_factory("--api-key", KEY, "--jwt-secret", SECRET, *extra)


@pytest_twisted.inlineCallbacks
def test_system_dm_to_an_offline_user_is_in_their_conversation_list(server_factory):
    """A known user (POST /api/users) gets a DM from a system user while offline:
    GET /api/users/U/conversations shows it with unread 1 and the mention; once the
    user reads it over chatd.v1 the list says unread 0, and the system user's own
    list shows the user's read marker. Pages follow the cursor."""
    srv = yield _server(server_factory)
    url = srv.http_url
    status, _, body = yield http("POST", url + "/api/users", {"user": "bob", "name": "Bob"})
    assert status == 200 and body == {"user": "bob", "name": "Bob"}
    status, _, sent = yield http(
        "POST",
        url + "/api/dm",
        {"from": "support", "name": "Support", "to": "bob", "text": "welcome", "mentions": ["bob"]},
    )
    assert status == 200 and sent["online"] is False and sent["seq"] == 1

    status, _, page = yield http("GET", url + "/api/users/bob/conversations")
    assert status == 200 and page["user"] == "bob" and page["cursor"] is None
    [dm] = page["conversations"]
    assert dm["with"] == "support" and dm["kind"] == "dm"
    assert dm["unread"] == 1 and dm["mentions"] == 1 and dm["read"] == 0
    assert dm["last"]["text"] == "welcome" and dm["last"]["from"] == "support"

    bob = yield Client.v1(srv.port, token=token("bob", name="Bob"))
    bob.send(type="read", **{"with": "support"}, seq=1)
    yield bob.expect("read", seq=1, unread=0)
    status, _, page = yield http("GET", url + "/api/users/bob/conversations")
    assert page["conversations"][0]["unread"] == 0 and page["conversations"][0]["read"] == 1
    status, _, page = yield http("GET", url + "/api/users/support/conversations")
    [dm] = page["conversations"]
    assert dm["with"] == "bob" and dm["unread"] == 0 and dm["peer_read"] == 1

    # a second conversation: pages of one, newest first, then the cursor ends
    yield http("POST", url + "/api/dm", {"from": "billing", "to": "bob", "text": "invoice"})
    status, _, first = yield http("GET", url + "/api/users/bob/conversations?limit=1")
    assert [c["with"] for c in first["conversations"]] == ["billing"] and first["cursor"]
    status, _, second = yield http(
        "GET", url + f"/api/users/bob/conversations?limit=1&cursor={first['cursor']}"
    )
    assert [c["with"] for c in second["conversations"]] == ["support"]
    assert second["cursor"] is None
    yield bob.close()


@pytest_twisted.inlineCallbacks
def test_moderator_recall_removes_the_text_for_everyone_exactly_once(server_factory):
    """POST /api/rooms/R/recall recalls any message at any time (the sender's window
    does not apply to the operator): members get ``recalled``, history shows the
    tombstone, a resend of the same id is a duplicate and delivers nothing, and a
    second recall of the message is ``no_such_message``."""
    srv = yield _server(server_factory, "--recall-window", "0.001")
    url = srv.http_url
    alice = yield Client.v1(srv.port, token=token("alice"))
    yield alice.join("news")
    status, _, posted = yield http(
        "POST", url + "/api/rooms/news/messages", {"from": "carol", "text": "oops, a secret"}
    )
    assert status == 200
    yield alice.expect("message", seq=posted["seq"], text="oops, a secret")

    recall = {"seq": posted["seq"], "by": "mod", "id": "mod-1"}
    status, _, body = yield http("POST", url + "/api/rooms/news/recall", recall)
    assert status == 200, body
    assert body["target"] == posted["seq"] and body["by"] == "mod" and body["duplicate"] is False
    frame = yield alice.expect("recalled", room="news", seq=body["seq"], target=posted["seq"])
    assert frame["by"] == "mod"

    status, _, again = yield http("POST", url + "/api/rooms/news/recall", recall)
    assert status == 200 and again["duplicate"] is True and again["seq"] == body["seq"]
    status, _, other = yield http(
        "POST", url + "/api/rooms/news/recall", {"seq": posted["seq"], "id": "mod-2"}
    )
    assert status == 404 and other["error"] == "no_such_message"
    yield alice.quiet()  # neither the resend nor the refusal delivered anything

    status, _, page = yield http("GET", url + "/api/rooms/news/history")
    [message] = [m for m in page["messages"] if m["seq"] == posted["seq"]]
    assert message["text"] == "" and message["recalled"]["by"] == "mod"
    assert "secret" not in repr(page)
    yield alice.close()


@pytest_twisted.inlineCallbacks
def test_hostile_input_to_the_conversation_endpoints(server_factory):
    """Bad JSON, wrong types, unknown rooms, messages and users, bad paging, and no
    key: each gets its documented status and code, nothing is stored or delivered,
    and chatd carries on (a valid post afterwards is delivered with the next seq)."""
    srv = yield _server(server_factory)
    url = srv.http_url
    alice = yield Client.v1(srv.port, token=token("alice"))
    yield alice.join("ops")
    status, _, first = yield http(
        "POST", url + "/api/rooms/ops/messages", {"from": "x", "text": "1"}
    )
    yield alice.expect("message", seq=first["seq"])

    recall = url + "/api/rooms/ops/recall"
    cases = [
        ("POST", recall, b"{nope", 400, "bad_json"),
        ("POST", recall, b"[1]", 400, "bad_json"),
        ("POST", recall, {"seq": "1"}, 400, "bad_request"),
        ("POST", recall, {"seq": 0}, 400, "bad_request"),
        ("POST", recall, {"seq": True}, 400, "bad_request"),
        ("POST", recall, {"seq": 1, "by": ""}, 400, "bad_request"),
        ("POST", recall, {"seq": 1, "id": "with space"}, 400, "bad_request"),
        ("POST", recall, {"seq": 99}, 404, "no_such_message"),
        ("POST", url + "/api/rooms/nowhere/recall", {"seq": 1}, 404, "no_such_message"),
        ("POST", url + "/api/rooms/bad%20room/recall", {"seq": 1}, 400, "bad_room"),
        ("GET", recall, None, 405, "bad_request"),
        ("POST", url + "/api/users", {"user": 5}, 400, "bad_request"),
        ("POST", url + "/api/users", {"user": "u", "name": ""}, 400, "bad_request"),
        ("GET", url + "/api/users/nobody/conversations", None, 404, "no_such_user"),
        ("GET", url + "/api/users/x/conversations?limit=0", None, 400, "bad_request"),
        ("GET", url + "/api/users/x/conversations?limit=201", None, 400, "bad_request"),
        ("GET", url + "/api/users/x/conversations?limit=ten", None, 400, "bad_request"),
        ("GET", url + "/api/users/x/conversations?cursor=abc", None, 400, "bad_request"),
        ("POST", url + "/api/rooms/ops/messages", {"from": "x", "text": "t", "mentions": "x"}),
        ("POST", url + "/api/rooms/ops/messages", {"from": "x", "text": "t", "mentions": [1]}),
        ("POST", url + "/api/dm", {"from": "x", "to": "y", "text": "t", "mentions": ["y"] * 51}),
    ]
    for method, target, body, *expected in cases:
        status, _, answer = yield http(method, target, body)
        want_status, want_code = expected or (400, "bad_request")
        assert (status, answer["error"]) == (want_status, want_code), (target, body, answer)
    # without the key nothing is done and nothing is said
    status, _, answer = yield http("POST", recall, {"seq": first["seq"]}, key=None)
    assert status == 401 and set(answer) == {"error", "message"}
    status, _, answer = yield http("GET", url + "/api/users/x/conversations", key=None)
    assert status == 401 and set(answer) == {"error", "message"}

    status, _, last = yield http(
        "POST", url + "/api/rooms/ops/messages", {"from": "x", "text": "2"}
    )
    assert status == 200 and last["seq"] == first["seq"] + 1
    yield alice.expect("message", seq=last["seq"], text="2")
    status, _, page = yield http("GET", url + "/api/rooms/ops/history")
    assert [m["text"] for m in page["messages"]] == ["1", "2"]
    yield alice.close()
