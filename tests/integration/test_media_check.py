"""WeChat's asynchronous media check end to end (docs/operations.md, *Content
security*): a WeChat user's picture is stored and delivered, chatd asks the stand-in's
``media_check_async`` with a signed, fetchable ``--public-url`` media URL, and the
verdict pushed later to ``/api/wechat/events`` (signed; JSON or XML) recalls the
message (``risky``: every connection, on every node, sees ``recalled``) or queues it
(``review``). A forged signature is refused, a replayed or unknown verdict changes
nothing."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
import pytest_twisted

from chatd.contentcheck import MEDIA_CHECK_USER
from tests import media_samples
from tests.support.frames import OTHER, next_of
from tests.support.http import http
from tests.support.inbox import member
from tests.support.media_check import (
    PUBLIC,
    PUSH_TOKEN,
    asked,
    checked,
    picture,
    stored_picture,
    wait_for_status,
)
from tests.support.push import ALICE, BOB, token
from tests.support.wechat import FakeWeChat, listening, media_verdict, push_event
from tests.wsclient import Client, wait_for


@pytest.fixture
def wechat():
    yield from listening(FakeWeChat())


@pytest_twisted.inlineCallbacks
def test_a_risky_picture_is_recalled_and_a_replayed_or_forged_verdict_changes_nothing(
    server_factory, wechat, tmp_path
):
    srv = yield checked(server_factory, wechat, tmp_path / "media")
    alice = yield Client.v1(srv.port, token=token(ALICE))
    bob = yield Client.v1(srv.port, token=token(BOB))
    for client in (alice, bob):
        yield member(srv, client, "team")
    pic = yield picture(srv, ALICE)
    ack = yield stored_picture(alice, "team", pic["media_id"], "m1")
    shown = yield next_of(bob, "message", skip=OTHER, id="m1")
    assert shown["attachments"][0]["media_id"] == pic["media_id"]
    yield asked(wechat, 1)
    [check] = wechat.media_checks
    assert (check["media_type"], check["version"], check["openid"]) == (2, 2, "o-alice")
    assert check["scene"] == 2 and check["_token"] == wechat.current
    url = urlsplit(check["media_url"])
    assert f"{url.scheme}://{url.netloc}" == PUBLIC
    assert url.path == f"/media/{pic['media_id']}"
    status, _, body = yield http("GET", f"{srv.http_url}{url.path}?{url.query}", key=None)
    assert status == 200 and body.startswith(b"\x89PNG")  # WeChat can fetch it
    record = yield srv.store.take_media_check("media-trace-1")  # durable, then put back
    assert (record["channel"], record["seq"], record["media_id"]) == (
        "team",
        ack["seq"],
        pic["media_id"],
    )
    yield srv.store.add_media_check("media-trace-1", record, 60_000)

    verdict = media_verdict("media-trace-1", "risky")
    for forged in ({"sig": "0" * 40}, {"timestamp": "1000"}):
        status, _, _ = yield push_event(srv, PUSH_TOKEN, verdict, **forged)
        assert status == 403
    status, _, _ = yield push_event(srv, "another-token", verdict)
    assert status == 403
    assert srv.chat.content.outcomes["media_risky"] == 0
    status, _, body = yield push_event(srv, PUSH_TOKEN, verdict, xml=True)
    assert (status, body) == (200, b"success")
    for client in (bob, alice):
        recalled = yield next_of(client, "recalled", skip=OTHER | {"message"}, target=ack["seq"])
        assert recalled["by"] == MEDIA_CHECK_USER
    # the replay (JSON this time) and an unknown trace: answered, nothing done
    for event in (verdict, media_verdict("media-trace-404", "risky")):
        status, _, body = yield push_event(srv, PUSH_TOKEN, event)
        assert (status, body) == (200, b"success")
    assert srv.chat.content.outcomes["media_risky"] == 1
    assert srv.chat.content.outcomes["media_unknown"] == 2
    bob.send(type="history", room="team", id="h")
    page = yield next_of(bob, "history", skip=OTHER | {"recalled"})
    [original] = [m for m in page["messages"] if m.get("seq") == ack["seq"]]
    assert original.get("recalled") and "attachments" not in original, original
    status, _, _ = yield wait_for_status(srv, f"{url.path}?{url.query}", 404)
    audit = yield srv.store.audit_log(None, 10)
    assert [(a["action"], a["by"], a["target"]) for a in audit] == [
        ("recall", MEDIA_CHECK_USER, ALICE)
    ]
    for client in (alice, bob):
        yield client.close()


@pytest_twisted.inlineCallbacks
def test_a_review_verdict_queues_the_picture_and_a_pass_does_nothing(
    server_factory, wechat, tmp_path
):
    srv = yield checked(server_factory, wechat, tmp_path / "media")
    alice = yield Client.v1(srv.port, token=token(ALICE))
    yield member(srv, alice, "team")
    for i, verdict in enumerate(("review", "pass")):
        pic = yield picture(srv, ALICE, media_samples.image("PNG", size=(64 + i, 48)))
        yield stored_picture(alice, "team", pic["media_id"], f"m{i}")
        yield asked(wechat, i + 1)
        event = media_verdict(f"media-trace-{i + 1}", verdict, label=10001)
        status, _, body = yield push_event(srv, PUSH_TOKEN, event)
        assert (status, body) == (200, b"success")
    latest = {}

    def queued():
        srv.store.reports("open", None, 10).addCallback(lambda e: latest.update(entries=e))
        return latest.get("entries")

    [entry] = yield wait_for(queued, what="the flagged picture in the queue")
    assert (entry["source"], entry["sender"], entry["label"]) == ("content_check", ALICE, "10001")
    assert entry["message"]["attachments"][0]["media_id"]
    assert srv.chat.content.outcomes["media_pass"] == 1
    yield alice.close()


@pytest_twisted.inlineCallbacks
def test_a_risky_voice_dm_is_recalled_for_both_users(server_factory, wechat, tmp_path):
    """Voice goes to the check as media_type 1; a DM recalled by the verdict reaches
    the sender and the recipient."""
    srv = yield checked(server_factory, wechat, tmp_path / "media")
    alice = yield Client.v1(srv.port, token=token(ALICE))
    bob = yield Client.v1(srv.port, token=token(BOB))
    data, _seconds = media_samples.mp3(2.0)
    voice = yield picture(srv, ALICE, data, "note.mp3", "audio/mpeg")
    ack = yield stored_picture(alice, None, voice["media_id"], "d1", to=BOB)
    yield next_of(bob, "dm", skip=OTHER, id="d1")
    yield asked(wechat, 1)
    assert (wechat.media_checks[0]["media_type"], wechat.media_checks[0]["openid"]) == (
        1,
        "o-alice",
    )
    status, _, _ = yield push_event(srv, PUSH_TOKEN, media_verdict("media-trace-1", "risky"))
    assert status == 200
    for client in (bob, alice):
        recalled = yield next_of(client, "recalled", skip=OTHER | {"dm"}, target=ack["seq"])
        assert recalled["by"] == MEDIA_CHECK_USER
    for client in (alice, bob):
        yield client.close()
