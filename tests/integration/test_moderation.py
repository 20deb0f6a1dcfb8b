"""Moderation on loopback (docs/protocol.md, *Moderation*; docs/api.md, *Moderation*).

A real chatd with a token secret and an API key, token users over real chatd.v1
WebSocket connections (tests/wsclient.py), the API over real HTTP
(tests/support/http.py): mute and unmute in a room and everywhere, global bans
that close connections, reports into the queue, queue actions and the audit log.
"""

from __future__ import annotations

import json
import sqlite3

import jwt
import pytest
import pytest_twisted

from chatd.moderation import BANNED
from tests.support.auth import SECRET, token
from tests.support.http import KEY, http
from tests.wsclient import Client, wait_for


def _server(server_factory, *extra):
    return server_factory("--api-key", KEY, "--jwt-secret", SECRET, *extra)


@pytest_twisted.inlineCallbacks
def seen(client, frame_type, **fields):
    """Read *client*'s frames (each under the client's deadline) until one of
    *frame_type* with *fields* comes; the others in between are skipped."""
    for _ in range(100):
        frame = yield client.recv()
        if frame.get("type") == frame_type and all(frame.get(k) == v for k, v in fields.items()):
            return frame
    raise AssertionError(f"no {frame_type} {fields} within 100 frames")


def moderator_token(sub):
    return jwt.encode({"sub": sub, "mod": True}, SECRET, algorithm="HS256")


@pytest_twisted.inlineCallbacks
def _room(srv):
    """olga owns public room dev, bob is a member; both connected."""
    olga = yield Client.v1(srv.port, token=token("olga"))
    olga.send(type="create", room="dev", kind="public", id="c")
    yield seen(olga, "room_info", room="dev")
    bob = yield Client.v1(srv.port, token=token("bob"))
    yield bob.join("dev")
    return olga, bob


@pytest_twisted.inlineCallbacks
def test_a_room_owner_mutes_a_member_whose_sends_are_refused_until_unmuted(server_factory):
    srv = yield _server(server_factory)
    olga, bob = yield _room(srv)
    olga.send(type="mute_user", room="dev", user="bob", seconds=300, id="m1")
    reply = yield seen(olga, "mute_user", id="m1")
    event = yield seen(bob, "event", kind="muted")
    assert event["until"] == reply["muted_until"] and event["by"] == "olga"
    bob.send(type="send", room="dev", text="let me talk", id="s1")
    error = yield seen(bob, "error", ref="s1")
    assert error["code"] == "muted" and error["muted_until"] == reply["muted_until"]
    assert 295 <= error["seconds"] <= 300
    bob.send(type="dm", to="olga", text="a room mute leaves DMs alone", id="d1")
    yield seen(bob, "ack", id="d1")
    status, _, got = yield http("GET", srv.http_url + "/api/users/bob/sanctions")
    assert status == 200
    assert got["sanctions"] == [{"kind": "mute", "scope": "dev", "until": reply["muted_until"]}]
    olga.send(type="unmute_user", room="dev", user="bob", id="u1")
    yield seen(olga, "unmute_user", id="u1", muted_until=0)
    yield seen(bob, "event", kind="unmuted")
    bob.send(type="send", room="dev", text="thanks", id="s2")
    yield seen(bob, "ack", id="s2")
    yield olga.close()
    yield bob.close()


@pytest_twisted.inlineCallbacks
def test_a_global_mute_over_the_api_reaches_a_live_connection_and_expires(server_factory):
    srv = yield _server(server_factory)
    olga, bob = yield _room(srv)
    status, _, body = yield http(
        "POST", srv.http_url + "/api/users/bob/mute", {"seconds": 1, "by": "ops"}
    )
    assert status == 200 and body["room"] is None and body["muted_until"] > 0
    bob.send(type="dm", to="olga", text="x", id="d1")
    error = yield seen(bob, "error", ref="d1")
    assert error["code"] == "muted"
    # it ends by itself: resend until the ack comes, under the client's deadline
    for attempt in range(40):
        bob.send(type="dm", to="olga", text="x", id=f"d{attempt + 2}")
        frame = yield bob.recv()
        if frame["type"] == "ack":
            break
        assert frame["code"] == "muted"
        yield bob.silent(0.1)
    else:
        pytest.fail("the mute did not expire")
    status, _, log = yield http("GET", srv.http_url + "/api/moderation/audit")
    assert [(e["action"], e["by"], e["target"]) for e in log["entries"]] == [("mute", "ops", "bob")]
    yield olga.close()
    yield bob.close()


@pytest_twisted.inlineCallbacks
def test_a_moderator_token_mutes_everywhere_and_a_forged_one_is_a_token_failure(
    server_factory,
):
    srv = yield _server(server_factory, "--auth", "required")
    _olga, bob = yield _room(srv)
    forged = jwt.encode({"sub": "mia", "mod": True}, "not the server's secret" * 2)
    with pytest.raises(ConnectionError):
        yield Client.v1(srv.port, token=forged)
    optional = yield _server(server_factory)  # --auth optional: refused all the same
    with pytest.raises(ConnectionError):
        yield Client.v1(optional.port, token=forged)
    mia = yield Client.v1(srv.port, token=moderator_token("mia"))
    mia.send(type="mute_user", user="bob", seconds=600, id="g")
    yield seen(mia, "mute_user", id="g", room=None)
    bob.send(type="send", room="dev", text="x", id="s1")
    yield seen(bob, "error", code="muted", ref="s1")
    bob.send(type="mute_user", room="dev", user="olga", seconds=60, id="m")
    yield seen(bob, "error", code="forbidden", ref="m")
    yield mia.close()
    yield bob.close()


@pytest_twisted.inlineCallbacks
def test_a_global_ban_closes_connections_and_refuses_new_ones(server_factory):
    srv = yield _server(server_factory)
    bob = yield Client.v1(srv.port, token=token("bob"))
    status, _, body = yield http("POST", srv.http_url + "/api/users/bob/ban", {})
    assert status == 200 and body["banned_until"] > 0
    code, _reason = yield bob.closed()
    assert code == BANNED
    again = yield Client.v1(srv.port, token=token("bob"))
    code, _reason = yield again.closed()
    assert code == BANNED
    status, _, _ = yield http("POST", srv.http_url + "/api/users/bob/unban", {})
    assert status == 200
    third = yield Client.v1(srv.port, token=token("bob"))
    third.send(type="ping", id="p")
    yield seen(third, "pong", id="p")
    yield third.close()


@pytest_twisted.inlineCallbacks
def test_a_report_goes_to_the_queue_and_a_recall_action_closes_it(server_factory):
    srv = yield _server(server_factory)
    url = srv.http_url
    olga, bob = yield _room(srv)
    bob.send(type="send", room="dev", text="buy cheap stuff", id="s1")
    seq = (yield seen(bob, "ack", id="s1"))["seq"]
    yield seen(olga, "message", text="buy cheap stuff")
    olga.send(type="report", room="dev", seq=seq, reason="spam", id="r1")
    reply = yield seen(olga, "report", id="r1")
    status, _, queue = yield http("GET", url + "/api/moderation/queue")
    assert status == 200
    [entry] = queue["entries"]
    assert entry["id"] == reply["report"] and entry["state"] == "open"
    assert entry["message"]["text"] == "buy cheap stuff" and entry["reason"] == "spam"
    status, _, closed = yield http(
        "POST", url + f"/api/moderation/queue/{entry['id']}", {"action": "recall", "by": "ops"}
    )
    assert status == 200 and closed["state"] == "closed"
    yield seen(bob, "recalled", target=seq)
    status, _, again = yield http(
        "POST", url + f"/api/moderation/queue/{entry['id']}", {"action": "dismiss"}
    )
    assert status == 409 and again["error"] == "closed"
    status, _, missing = yield http(
        "POST", url + "/api/moderation/queue/999", {"action": "dismiss"}
    )
    assert status == 404
    status, _, bad = yield http(
        "POST", url + f"/api/moderation/queue/{entry['id']}", {"action": "mute"}
    )
    assert status == 400
    status, _, open_ = yield http("GET", url + "/api/moderation/queue?state=open")
    assert open_["entries"] == []
    status, _, done = yield http("GET", url + "/api/moderation/queue?state=closed")
    assert [e["id"] for e in done["entries"]] == [entry["id"]]
    status, _, log = yield http("GET", url + "/api/moderation/audit")
    assert [(e["action"], e["by"], e["target"]) for e in log["entries"]] == [
        ("recall", "ops", "bob")
    ]
    status, _, _ = yield http("GET", url + "/api/moderation/queue", key="wrong")
    assert status == 401
    yield olga.close()
    yield bob.close()


@pytest_twisted.inlineCallbacks
def test_hostile_reports_and_mutes_leak_nothing(server_factory):
    """A report of a message one cannot read gets the very answer of a missing one;
    a huge reason is too_large; a member's mute_user is forbidden."""
    srv = yield _server(server_factory)
    olga = yield Client.v1(srv.port, token=token("olga"))
    olga.send(type="create", room="secret", kind="private", id="c")
    yield seen(olga, "room_info", room="secret")
    olga.send(type="send", room="secret", text="private words", id="s1")
    seq = (yield seen(olga, "ack", id="s1"))["seq"]
    eve = yield Client.v1(srv.port, token=token("eve"))
    eve.send(type="report", room="secret", seq=seq, reason="x", id="r1")
    unreadable = yield seen(eve, "error", ref="r1")
    eve.send(type="report", room="secret", seq=seq + 100, reason="x", id="r1")
    missing = yield seen(eve, "error", ref="r1")
    assert unreadable == missing and missing["code"] == "no_such_message"
    olga.send(type="report", room="secret", seq=seq, reason="x" * 100_00, id="big")
    yield seen(olga, "error", code="too_large", ref="big")
    eve.send(type="mute_user", room="secret", user="olga", seconds=60, id="m")
    yield seen(eve, "error", code="forbidden", ref="m")
    status, _, queue = yield http("GET", srv.http_url + "/api/moderation/queue?state=all")
    assert queue["entries"] == []
    yield olga.close()
    yield eve.close()


@pytest_twisted.inlineCallbacks
def test_mutes_fail_closed_when_the_sanctions_cannot_be_read(server_factory, tmp_path):
    """The sanctions table is gone (a broken store) while messages can still be stored:
    a muted user's send is refused with ``unavailable`` (logged, counted), never let
    through; reading and DMs of other users are untouched."""
    db = tmp_path / "chatd.sqlite3"
    srv = yield _server(server_factory, "--db", str(db))
    olga, bob = yield _room(srv)
    olga.send(type="mute_user", room="dev", user="bob", seconds=300, id="m1")
    yield seen(olga, "mute_user", id="m1")
    yield bob.close()
    yield srv.gone(bob)
    with sqlite3.connect(db, timeout=10) as conn:
        conn.execute("DROP TABLE sanctions")
    bob = yield Client.v1(srv.port, token=token("bob"))
    yield seen(bob, "subscribed")  # a member again, in its rooms
    moderation = srv.chat.moderation
    # the admission's read failed (not still in flight, where the send would wait for
    # its answer instead of reading again): then the send reads again and fails too
    yield wait_for(lambda: moderation.unreadable >= 1, what="the admission's sanctions read")
    bob.send(type="send", room="dev", text="sneaking past the mute", id="s1")
    error = yield seen(bob, "error", ref="s1")
    assert error["code"] == "unavailable"
    assert moderation.unreadable == 2 and moderation.refused_unreadable == 1
    bob.send(type="history", room="dev", id="h")
    history = yield seen(bob, "history", room="dev")
    assert "sneaking past the mute" not in json.dumps(history)
    status, _, text = yield http("GET", srv.http_url + "/metrics")
    assert status == 200
    assert b'chatd_moderation_sanction_reads_total{outcome="refused"} 1.0' in text
    yield olga.close()
    yield bob.close()
