"""Media messages over real sockets: upload over HTTP (``POST /api/media``), ``send``/
``dm`` with ``attachments``, the other user's frame with URLs that fetch the bytes,
history and sync after a restart on SQLite, recall removing the media (404), and
the hostile rows of docs/security.md for attachments and ``GET /api/media/ID``."""

from __future__ import annotations

import json

import pytest_twisted
from twisted.internet import defer, reactor
from twisted.web.server import Site

from tests import media_samples
from tests.support.auth import SECRET, token
from tests.support.frames import OTHER, next_of
from tests.support.http import Receiver, http
from tests.support.inbox import member, sent, user
from tests.wsclient import deferLater


def media_server(factory, tmp_path, *args):
    return factory("--jwt-secret", SECRET, "--media-dir", str(tmp_path / "media"), *args)


def bearer(sub) -> dict:
    return {b"authorization": [b"Bearer " + token(sub).encode()]}


@defer.inlineCallbacks
def upload(srv, sub, data, filename="pic.png"):
    """*sub* uploads *data*: the answer (201)."""
    body, ctype = media_samples.form(data, filename, "image/png")
    headers = {**bearer(sub), b"content-type": [ctype.encode()]}
    status, _, answer = yield http("POST", srv.http_url + "/api/media", body, None, headers)
    assert status == 201, answer
    return answer


def fetch(srv, url):
    """GET a signed media URL: ``(status, headers, body)``."""
    return http("GET", srv.http_url + url, key=None)


def metadata(srv, sub, media_id):
    """``GET /api/media/ID`` as *sub*: ``(status, headers, body)``."""
    return http("GET", f"{srv.http_url}/api/media/{media_id}", key=None, headers=bearer(sub))


@defer.inlineCallbacks
def eventually(request, status, what, timeout=10.0):
    """Repeat *request()* until it answers *status*; fails once *timeout* seconds pass."""
    deadline = reactor.seconds() + timeout
    while True:
        answer = yield request()
        if answer[0] == status:
            return answer
        assert reactor.seconds() < deadline, f"timed out waiting for {what}: {answer[0]}"
        yield deferLater(0.02)


@defer.inlineCallbacks
def fetched_like(srv, shown, data_kind):
    """Both URLs of an attachment fetch its bytes with the sniffed type."""
    status, headers, body = yield fetch(srv, shown["url"])
    assert status == 200 and headers.getRawHeaders(b"content-type") == [shown["mime"].encode()]
    assert len(body) == shown["size"]
    if data_kind == "image":
        status, headers, thumb = yield fetch(srv, shown["thumb_url"])
        assert status == 200 and headers.getRawHeaders(b"content-type") == [b"image/webp"]
        assert len(thumb) == shown["thumb"]["size"]
    return body


@pytest_twisted.inlineCallbacks
def test_a_picture_from_upload_to_the_other_user_and_back_after_a_restart(server_factory, tmp_path):
    """alice uploads and sends a picture; bob's frame has URLs that fetch it; after a
    restart on the same SQLite file bob's history has fresh URLs that still fetch
    it; alice recalls it and the URLs answer 404."""
    db = str(tmp_path / "chat.sqlite3")
    srv = yield media_server(server_factory, tmp_path, "--db", db)
    alice, bob = (yield user(srv, "alice")), (yield user(srv, "bob"))
    for client in (alice, bob):
        yield member(srv, client, "team")
    pic = yield upload(srv, "alice", media_samples.jpeg_with_gps((320, 240)), "trip.jpg")
    ack = yield sent(
        alice, "team", text="look", attachments=[{"media_id": pic["media_id"]}], id="m1"
    )
    message = yield next_of(bob, "message", id="m1")
    [shown] = message["attachments"]
    assert (shown["media_id"], shown["kind"], shown["mime"]) == (
        pic["media_id"],
        "image",
        "image/jpeg",
    )
    assert (shown["width"], shown["height"], shown["name"]) == (320, 240, "trip.jpg")
    original = yield fetched_like(srv, shown, "image")
    assert media_samples.GPS_MARK not in original
    # bob, a member, may ask for fresh URLs too (once the post is recorded)
    _, _, fresh = yield eventually(
        lambda: metadata(srv, "bob", pic["media_id"]), 200, "bob's GET /api/media/ID"
    )
    assert fresh["media_id"] == pic["media_id"] and "url" in fresh
    for client in (alice, bob):
        yield client.close()
    yield srv.service.stopService()

    srv = yield media_server(server_factory, tmp_path, "--db", db)
    bob = yield user(srv, "bob")
    yield member(srv, bob, "team")  # (a room never created: each connection joins it)
    bob.send(type="history", room="team", id="h")
    page = yield next_of(bob, "history", skip=OTHER | {"message"})
    [again] = [m for m in page["messages"] if m["id"] == "m1"]
    assert again["text"] == "look"
    assert (yield fetched_like(srv, again["attachments"][0], "image")) == original
    alice = yield user(srv, "alice")
    yield sent(alice, "team", type="recall", seq=ack["seq"], id="r1")
    yield next_of(bob, "recalled", skip=OTHER | {"message"}, target=ack["seq"])
    yield eventually(lambda: fetch(srv, shown["url"]), 404, "the recalled picture to go")
    status, _, _ = yield fetch(srv, again["attachments"][0]["thumb_url"])
    assert status == 404
    status, _, _ = yield metadata(srv, "alice", pic["media_id"])
    assert status == 404
    for client in (alice, bob):
        yield client.close()


@pytest_twisted.inlineCallbacks
def test_a_voice_dm_to_an_offline_user_arrives_by_sync(server_factory, tmp_path):
    srv = yield media_server(server_factory, tmp_path)
    bob = yield user(srv, "bob")
    yield bob.close()
    yield srv.gone(bob)
    alice = yield user(srv, "alice")
    data, seconds = media_samples.mp3(2.0)
    voice = yield upload(srv, "alice", data, "note.mp3")
    yield sent(alice, to="bob", attachments=[{"media_id": voice["media_id"]}], id="d1")
    bob = yield user(srv, "bob")
    bob.send(type="sync", id="s")
    reply = yield next_of(bob, "sync")
    [dm] = [c for c in reply["conversations"] if c.get("with") == "alice"]
    [item] = dm["items"]
    [shown] = item["attachments"]
    assert (item["type"], item["text"], shown["kind"]) == ("dm", "", "voice")
    assert abs(shown["duration_ms"] - seconds * 1000) < 60 and "thumb_url" not in shown
    yield fetched_like(srv, shown, "voice")
    for client in (alice, bob):
        yield client.close()


@pytest_twisted.inlineCallbacks
def test_hostile_attachments_and_media_lookups(server_factory, tmp_path):
    """Someone else's upload, an unknown id, too many and malformed attachments are
    refused and store nothing; a non-member never gets URLs of a private room's
    picture, nor its metadata, not after being kicked either."""
    srv = yield media_server(server_factory, tmp_path)
    alice, bob = (yield user(srv, "alice")), (yield user(srv, "bob"))
    mallory = yield user(srv, "mallory")
    alice.send(type="create", room="vault", kind="private", members=["bob"], id="c")
    yield next_of(alice, "room_info", skip=OTHER | {"ack"}, room="vault")
    yield next_of(bob, "subscribed", rooms=["vault"])
    yield member(srv, mallory, "hall")
    yield member(srv, alice, "hall")
    secret = yield upload(srv, "alice", media_samples.image("PNG", (64, 48)))
    theirs = {"media_id": secret["media_id"]}
    refusals = [
        ("foreign", [theirs], "bad_attachment"),
        ("unknown", [{"media_id": "A" * 22}], "bad_attachment"),
        ("many", [{"media_id": f"m{i}"} for i in range(10)], "too_large"),
        ("shape", [{"media": "x"}], "bad_request"),
        ("type", "x", "bad_request"),
    ]
    for ref, attachments, _code in refusals:
        mallory.send(type="send", room="hall", attachments=attachments, id=ref)
    codes = {}  # (the refusals found after a metadata read come after the others)
    for _ in refusals:
        error = yield next_of(mallory, "error", skip=OTHER | {"message"})
        codes[error["ref"]] = error["code"]
    assert codes == {ref: code for ref, _attachments, code in refusals}
    yield alice.quiet()  # nothing of mallory's reached the hall
    yield sent(alice, "vault", attachments=[theirs], id="v1")
    message = yield next_of(bob, "message", id="v1")
    assert message["attachments"][0]["media_id"] == secret["media_id"]
    yield eventually(lambda: metadata(srv, "bob", secret["media_id"]), 200, "bob's metadata")
    for sub in ("mallory", "nobody"):
        status, _, body = yield metadata(srv, sub, secret["media_id"])
        assert (status, body["error"]) == (404, "not_found")
    mallory.send(type="history", room="vault", id="h")
    yield next_of(mallory, "error", code="forbidden", ref="h")
    status, _, _ = yield http("GET", f"{srv.http_url}/api/media/{secret['media_id']}", key=None)
    assert status == 401
    yield sent(alice, "vault", type="kick", user="bob", id="k")
    status, _, _ = yield metadata(srv, "bob", secret["media_id"])
    assert status == 404
    yield mallory.quiet()
    for client in (alice, bob, mallory):
        yield client.close()


@pytest_twisted.inlineCallbacks
def test_webhook_message_events_show_attachments_without_urls(server_factory, tmp_path):
    """A public room's event lists the attachments' fields but no URL (the receiver
    gets nothing to fetch); a private room's carries neither text nor attachments."""
    receiver = Receiver()
    port = reactor.listenTCP(0, Site(receiver), interface="127.0.0.1")
    try:
        url = f"http://127.0.0.1:{port.getHost().port}/hook"
        srv = yield media_server(
            server_factory, tmp_path, "--webhook-url", url, "--webhook-rooms", "*"
        )
        alice = yield user(srv, "alice")
        pic = yield upload(srv, "alice", media_samples.image("PNG", (32, 32)))
        for room, kind in (("open", "public"), ("closed", "private")):
            alice.send(type="create", room=room, kind=kind, id=room)
            yield next_of(alice, "room_info", skip=OTHER | {"ack"}, room=room)
            attachments = [{"media_id": pic["media_id"]}]
            yield sent(alice, room, text=f"in {room}", attachments=attachments, id=f"m-{room}")
        got = {}
        while len(got) < 2:
            event = yield receiver.arrived.get().addTimeout(10, reactor)
            if event["event"] == "message":
                got[event["room"]] = event
        [shown] = got["open"]["attachments"]
        assert (shown["media_id"], shown["kind"], shown["size"]) == (
            pic["media_id"],
            "image",
            pic["size"],
        )
        assert not {"url", "thumb_url", "expires"} & set(shown)
        assert "attachments" not in got["closed"] and "text" not in got["closed"]
        assert "/media/" not in json.dumps(receiver.events)
        yield alice.close()
    finally:
        yield port.stopListening()
