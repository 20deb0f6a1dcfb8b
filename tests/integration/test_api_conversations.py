"""The server API's conversation endpoints (docs/api.md, *Conversations*) on loopback.

A real chatd with a token secret and an API key; requests over real HTTP
(tests/support/http.py), token users over real chatd.v1 WebSocket connections
(tests/wsclient.py): what the API posts, lists and recalls is what the users'
connections see.
"""

from __future__ import annotations

import pytest_twisted
from twisted.internet import defer

from tests.support.auth import SECRET, token
from tests.support.http import KEY, http
from tests.wsclient import Client


def _server(server_factory, *extra):
    return server_factory("--api-key", KEY, "--jwt-secret", SECRET, *extra)


@defer.inlineCallbacks
def _event(client, kind, **fields):
    """The client's next frame is an ``event`` of *kind* with *fields*."""
    frame = yield client.expect("event", **fields)
    assert frame["kind"] == kind, frame
    return frame


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


@pytest_twisted.inlineCallbacks
def test_rooms_members_and_roles_through_the_api(server_factory):
    """POST /api/rooms creates a private room (owner, invited members; exactly-once by
    id, then room_exists); members are added, given roles, kicked, banned and
    unbanned through the API, each an ``event`` the members' connections get, and
    the users' connections follow (subscribed on invite, unsubscribed on kick); the
    owner cannot be kicked until the room is handed over; the member list and the
    conversation list show the result."""
    srv = yield _server(server_factory)
    url = srv.http_url + "/api"
    for user in ("alice", "bob", "carol"):
        yield http("POST", url + "/users", {"user": user})
    alice = yield Client.v1(srv.port, token=token("alice"))
    carol = yield Client.v1(srv.port, token=token("carol"))

    create = {"room": "team", "kind": "private", "title": "Team", "owner": "alice"}
    create.update(members=["bob"], id="c1")
    status, _, made = yield http("POST", url + "/rooms", create)
    assert status == 200, made
    assert (made["kind"], made["title"], made["owner"], made["members"]) == (
        "private",
        "Team",
        "alice",
        2,
    )
    assert made["duplicate"] is False
    yield alice.expect("subscribed", rooms=["team"])
    yield _event(alice, "created", user="alice")
    yield _event(alice, "invited", user="bob", by="alice")
    status, _, again = yield http("POST", url + "/rooms", create)
    assert status == 200 and again["duplicate"] is True and again["seq"] == made["seq"]
    status, _, other = yield http("POST", url + "/rooms", {**create, "id": "c2"})
    assert status == 409 and other["error"] == "room_exists"

    status, _, added = yield http("POST", url + "/rooms/team/members", {"user": "carol"})
    assert status == 200 and added["event"] == "invited" and added["by"] == "system"
    yield _event(alice, "invited", user="carol", by="system")
    yield alice.expect("presence", user="carol", event="join")
    yield carol.expect("subscribed", rooms=["team"])
    yield _event(carol, "invited", user="carol")
    status, _, promoted = yield http(
        "POST", url + "/rooms/team/role", {"user": "bob", "role": "admin"}
    )
    assert status == 200 and promoted["event"] == "role" and promoted["role"] == "admin"
    yield _event(alice, "role", user="bob", role="admin")
    yield _event(carol, "role", user="bob", role="admin")

    status, _, kicked = yield http("POST", url + "/rooms/team/kick", {"user": "carol"})
    assert status == 200 and kicked["event"] == "kicked"
    yield _event(alice, "kicked", user="carol")
    yield alice.expect("presence", user="carol", event="leave")
    yield _event(carol, "kicked", user="carol")
    yield carol.expect("left", room="team")
    status, _, posted = yield http(
        "POST", url + "/rooms/team/messages", {"from": "system", "text": "members only"}
    )
    yield alice.expect("message", seq=posted["seq"], text="members only")
    yield carol.quiet()  # kicked: the room's messages no longer reach carol

    status, _, refused = yield http("POST", url + "/rooms/team/kick", {"user": "alice"})
    assert status == 403 and refused["error"] == "forbidden"
    status, _, handed = yield http(
        "POST", url + "/rooms/team/role", {"user": "bob", "role": "owner", "id": "h1"}
    )
    assert status == 200 and handed["role"] == "owner"
    yield _event(alice, "role", user="bob", role="owner")
    yield _event(alice, "role", user="alice", role="admin")

    yield http("POST", url + "/rooms/team/ban", {"user": "carol"})
    status, _, banned = yield http("POST", url + "/rooms/team/members", {"user": "carol"})
    assert status == 403 and banned["error"] == "forbidden"
    status, _, _ = yield http("POST", url + "/rooms/team/unban", {"user": "carol"})
    assert status == 200
    status, _, _ = yield http("POST", url + "/rooms/team/members", {"user": "carol"})
    assert status == 200

    status, _, page = yield http("GET", url + "/rooms/team/members?limit=2")
    assert status == 200 and page["kind"] == "private" and page["count"] == 3
    assert page["members"] == [
        {"user": "alice", "role": "admin", "online": True},
        {"user": "bob", "role": "owner", "online": False},
    ]
    status, _, rest = yield http("GET", url + f"/rooms/team/members?cursor={page['cursor']}")
    assert [m["user"] for m in rest["members"]] == ["carol"] and rest["cursor"] is None
    status, _, listed = yield http("GET", url + "/users/bob/conversations")
    [team] = listed["conversations"]
    assert team["room"] == "team" and team["role"] == "owner" and team["title"] == "Team"

    # the private room's content is not given without the key
    for path in ("/rooms/team/history", "/rooms/team/members", "/users/bob/conversations"):
        status, _, body = yield http("GET", url + path, key=None)
        assert status == 401 and "members only" not in repr(body) and "alice" not in repr(body)
    yield alice.close()
    yield carol.close()


@pytest_twisted.inlineCallbacks
def test_hostile_input_to_the_room_endpoints(server_factory):
    """Bad kinds, titles, roles and users, unknown rooms and users, a kick of a
    non-member: each refused with its status and code, nothing created or changed,
    and the room works afterwards."""
    srv = yield _server(server_factory)
    url = srv.http_url + "/api"
    yield http("POST", url + "/users", {"user": "dave"})
    status, _, _ = yield http("POST", url + "/rooms", {"room": "ops", "owner": "dave"})
    assert status == 200
    cases = [
        ("/rooms", b"{nope", 400, "bad_json"),
        ("/rooms", {"room": "x1", "kind": "secret"}, 400, "bad_request"),
        ("/rooms", {"room": "x1", "title": "t" * 65}, 400, "bad_request"),
        ("/rooms", {"room": "x1", "avatar": "javascript:alert(1)"}, 400, "bad_request"),
        ("/rooms", {"room": "bad room"}, 400, "bad_room"),
        ("/rooms", {"room": "x1", "owner": ""}, 400, "bad_request"),
        ("/rooms", {"room": "x1", "members": ["dave", "nobody"]}, 404, "no_such_user"),
        ("/rooms", {"room": "x1", "members": "dave"}, 400, "bad_request"),
        ("/rooms", {"room": "lobby"}, 409, "room_exists"),
        ("/rooms/x1/members", {"user": "dave"}, 404, "no_such_room"),
        ("/rooms/ops/members", {"user": "nobody"}, 404, "no_such_user"),
        ("/rooms/ops/members", {"user": "dave"}, 400, "bad_request"),
        ("/rooms/ops/members", {"user": "dave", "role": "owner"}, 400, "bad_request"),
        ("/rooms/ops/members", {}, 400, "bad_request"),
        ("/rooms/ops/kick", {"user": "nobody"}, 400, "bad_request"),
        ("/rooms/ops/role", {"user": "dave", "role": "god"}, 400, "bad_request"),
        ("/rooms/ops/unban", {"user": "dave"}, 400, "bad_request"),
    ]
    for path, body, want_status, want_code in cases:
        status, _, answer = yield http("POST", url + path, body)
        assert (status, answer["error"]) == (want_status, want_code), (path, body, answer)
    for path, want_status in (
        ("/rooms/x1/members", 404),
        ("/rooms/ops/members?limit=0", 400),
        ("/rooms/ops/members?cursor=%01", 400),
    ):
        status, _, answer = yield http("GET", url + path)
        assert status == want_status, (path, answer)
    status, _, page = yield http("GET", url + "/rooms/ops/members")
    assert page["count"] == 1 and page["members"][0]["user"] == "dave"
    status, _, _ = yield http("POST", url + "/rooms/ops/messages", {"from": "dave", "text": "ok"})
    assert status == 200
