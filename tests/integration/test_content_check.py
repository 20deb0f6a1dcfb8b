"""Content security end to end: WeChat's msgSecCheck (the stand-in of
tests/support/wechat.py) on WeChat users' text before it is stored; blocked text is
never stored or delivered; fail-open and fail-closed; one sender's slow check never
holds up another's messages."""

from __future__ import annotations

import time
from urllib.parse import urlencode

import pytest
import pytest_twisted
from twisted.internet import defer

from chatd.wechatpush import signature
from tests.support.http import http, samples
from tests.support.push import ALICE, BOB, DAVE, token
from tests.support.wechat import FakeWeChat, listening, login_server
from tests.wsclient import Client, wait_for

CHECK = "/wxa/msg_sec_check"


@pytest.fixture
def wechat():
    yield from listening(FakeWeChat())


@defer.inlineCallbacks
def checked_server(server_factory, wechat, *extra):
    """A chatd checking WeChat users' text; Bob is a known user (DMs reach him offline)."""
    srv = yield login_server(server_factory, wechat.url, "--wechat-content-check", "on", *extra)
    yield srv.store.add_user(BOB, "Bob", 0)
    return srv


def texts(frames):
    return [m["text"] for m in frames]


@pytest_twisted.inlineCallbacks
def test_risky_text_is_never_stored_or_delivered(server_factory, wechat):
    """A risky DM and a risky room message get ``error content_blocked`` (ref = id); the
    recipient only ever sees the next, clean message; history holds only that; the
    check is msgSecCheck v2 with the sender's openid, the scene and the text."""
    srv = yield checked_server(server_factory, wechat)
    alice = yield Client.v1(srv.port, token=token(ALICE))
    bob = yield Client.v1(srv.port, token=token(BOB))
    alice.send(type="dm", to=BOB, text="buy RISKY stuff", id="d1")
    error = yield alice.expect("error")
    assert (error["code"], error["ref"]) == ("content_blocked", "d1")
    alice.send(type="dm", to=BOB, text="hello", id="d2")
    yield alice.expect("ack", id="d2")
    got = yield bob.expect("dm")
    assert got["text"] == "hello"
    for c in (alice, bob):
        yield c.join("team")
    yield alice.expect("presence")
    alice.send(type="send", room="team", text="RISKY in a room", id="s1")
    error = yield alice.expect("error")
    assert (error["code"], error["ref"]) == ("content_blocked", "s1")
    alice.send(type="send", room="team", text="clean", id="s2")
    yield alice.expect("ack", id="s2")
    got = yield bob.expect("message")
    assert got["text"] == "clean"
    bob.send(type="dm_history", **{"with": ALICE}, id="h1")
    history = yield bob.expect("dm_history")
    assert texts(history["messages"]) == ["hello"]
    bob.send(type="history", room="team", id="h2")
    history = yield bob.expect("history")
    assert "RISKY in a room" not in texts(history["messages"])
    first = wechat.checks[0]
    assert (first["version"], first["openid"], first["scene"]) == (2, "o-alice", 2)
    assert first["content"] == "buy RISKY stuff"
    assert srv.chat.content.outcomes["risky"] == 2
    _, _, text = yield http("GET", f"{srv.http_url}/metrics", key=None)
    metrics = samples(text.decode())
    assert metrics[("chatd_content_checks_total", frozenset({("outcome", "risky")}))] == 2
    assert metrics[("chatd_content_checks_total", frozenset({("outcome", "pass")}))] == 2
    yield alice.close()
    yield bob.close()


@pytest_twisted.inlineCallbacks
def test_review_passes_by_default_and_blocks_when_configured(server_factory, wechat):
    srv = yield checked_server(server_factory, wechat)
    alice = yield Client.v1(srv.port, token=token(ALICE))
    alice.send(type="dm", to=BOB, text="REVIEW me", id="d1")
    yield alice.expect("ack", id="d1")
    assert srv.chat.content.outcomes["review"] == 1
    srv.chat.settings.content_check_review = "block"  # as a SIGHUP reload sets it
    alice.send(type="dm", to=BOB, text="REVIEW me again", id="d2")
    error = yield alice.expect("error")
    assert (error["code"], error["ref"]) == ("content_blocked", "d2")
    yield alice.close()


@pytest_twisted.inlineCallbacks
def test_wechat_down_fails_open_or_closed(server_factory, wechat):
    """A check that does not answer within --content-check-timeout (or an error answer)
    lets the message through when failing open; failing closed it is refused with
    ``unavailable`` and not stored."""
    srv = yield checked_server(server_factory, wechat, "--content-check-timeout", "0.3")
    alice = yield Client.v1(srv.port, token=token(ALICE))
    bob = yield Client.v1(srv.port, token=token(BOB))
    wechat.inject(CHECK, "timeout")
    alice.send(type="dm", to=BOB, text="through", id="d1")
    yield alice.expect("ack", id="d1")
    assert (yield bob.expect("dm"))["text"] == "through"
    srv.chat.settings.content_check_failure = "closed"
    wechat.inject(CHECK, "500", -1)
    for mid in ("d2", "d3"):
        alice.send(type="dm", to=BOB, text="refused", id=mid)
        error = yield alice.expect("error")
        assert (error["code"], error["ref"]) == ("unavailable", mid)
    alice.send(type="dm", to=BOB, text="checked again", id="d4")
    yield alice.expect("ack", id="d4")
    assert (yield bob.expect("dm"))["text"] == "checked again"
    bob.send(type="dm_history", **{"with": ALICE}, id="h1")
    history = yield bob.expect("dm_history")
    assert texts(history["messages"]) == ["through", "checked again"]
    outcomes = srv.chat.content.outcomes
    assert (outcomes["unchecked"], outcomes["refused"], outcomes["pass"]) == (1, 2, 1)
    yield alice.close()
    yield bob.close()


@pytest_twisted.inlineCallbacks
def test_only_wechat_users_are_checked(server_factory, wechat):
    srv = yield checked_server(server_factory, wechat)
    carol = yield Client.v1(srv.port, token=token("carol"))
    guest = yield Client.v1(srv.port, "guest1")
    yield guest.join("lobby")
    guest.send(type="send", room="lobby", text="RISKY but anonymous", id="g1")
    yield guest.expect("ack", id="g1")
    carol.send(type="dm", to=BOB, text="RISKY but not a WeChat user", id="c1")
    yield carol.expect("ack", id="c1")
    assert wechat.checks == [] and not srv.chat.content.outcomes
    yield carol.close()
    yield guest.close()


@pytest_twisted.inlineCallbacks
def test_a_slow_check_holds_up_only_its_own_sender(server_factory, wechat):
    """While Alice's check waits for WeChat, Dave's message is checked, stored and
    delivered; Alice's own next message waits its turn behind hers (order kept)."""
    srv = yield checked_server(server_factory, wechat, "--content-check-timeout", "1")
    alice = yield Client.v1(srv.port, token=token(ALICE))
    dave = yield Client.v1(srv.port, token=token(DAVE))
    bob = yield Client.v1(srv.port, token=token(BOB))
    wechat.inject(CHECK, "timeout")
    alice.send(type="dm", to=BOB, text="slow", id="a1")
    alice.send(type="dm", to=BOB, text="after slow", id="a2")
    yield wait_for(lambda: srv.chat.content.in_flight == 1, what="alice's check waiting")
    dave.send(type="dm", to=BOB, text="fast", id="v1")
    yield dave.expect("ack", id="v1")
    assert (yield bob.expect("dm"))["text"] == "fast"
    assert srv.chat.content.in_flight == 1  # alice's still waits
    yield alice.expect("ack", id="a1")
    yield alice.expect("ack", id="a2")
    assert texts([(yield bob.expect("dm")), (yield bob.expect("dm"))]) == ["slow", "after slow"]
    for c in (alice, dave, bob):
        yield c.close()


@pytest_twisted.inlineCallbacks
def test_an_edit_to_risky_text_is_refused(server_factory, wechat):
    srv = yield checked_server(server_factory, wechat)
    alice = yield Client.v1(srv.port, token=token(ALICE))
    alice.send(type="dm", to=BOB, text="fine", id="d1")
    ack = yield alice.expect("ack", id="d1")
    alice.send(type="edit", **{"with": BOB}, seq=ack["seq"], text="now RISKY", id="e1")
    error = yield alice.expect("error")
    assert (error["code"], error["ref"]) == ("content_blocked", "e1")
    alice.send(type="dm_history", **{"with": BOB}, id="h1")
    history = yield alice.expect("dm_history")
    assert texts(history["messages"]) == ["fine"]
    assert srv.chat.content.outcomes["risky"] == 1
    yield alice.close()


@pytest_twisted.inlineCallbacks
def test_the_word_list_masks_before_wechats_check(server_factory, wechat, tmp_path):
    """A listed word is masked first; WeChat checks (and the store keeps) the masked
    text; /metrics counts it."""
    words = tmp_path / "words.txt"
    words.write_text("傻瓜\n", encoding="utf-8")
    srv = yield checked_server(server_factory, wechat, "--word-list", str(words))
    alice = yield Client.v1(srv.port, token=token(ALICE))
    bob = yield Client.v1(srv.port, token=token(BOB))
    alice.send(type="dm", to=BOB, text="你是傻瓜", id="d1")
    yield alice.expect("ack", id="d1")
    assert (yield bob.expect("dm"))["text"] == "你是**"
    assert wechat.checks[-1]["content"] == "你是**"
    _, _, text = yield http("GET", f"{srv.http_url}/metrics", key=None)
    metrics = samples(text.decode())
    assert metrics[("chatd_word_filter_total", frozenset({("outcome", "masked")}))] == 1
    assert metrics[("chatd_word_filter_words", frozenset())] == 1
    yield alice.close()
    yield bob.close()


@pytest_twisted.inlineCallbacks
def test_the_message_push_url_checks_wechats_signature(server_factory, wechat):
    """/api/wechat/events: WeChat's URL check (GET, echostr) and events (POST, answered
    ``success``) with a valid signature; a forged or missing signature, or a stale
    timestamp (a replay), is refused with 403 and changes nothing."""
    srv = yield checked_server(server_factory, wechat, "--wechat-push-token", "push-token")
    base = f"{srv.http_url}/api/wechat/events"
    now = str(int(time.time()))

    def url(timestamp=now, nonce="n1", sig=None, **extra):
        sig = sig or signature("push-token", timestamp, nonce)
        query = urlencode({"signature": sig, "timestamp": timestamp, "nonce": nonce, **extra})
        return f"{base}?{query}"

    status, _, body = yield http("GET", url(echostr="echo-123"), key=None)
    assert (status, body) == (200, b"echo-123")
    event = {
        "ToUserName": "gh_x",
        "Event": "wxa_media_check",
        "trace_id": "trace-9",
        "result": {"suggest": "risky", "label": 20002},
    }
    status, _, body = yield http("POST", url(), event, key=None)
    assert (status, body) == (200, b"success")
    assert srv.chat.content.outcomes["media_unknown"] == 1  # no such trace: ignored
    forged = [
        url(sig="0" * 40),
        url(sig=signature("wrong-token", now, "n1")),
        url(timestamp=str(int(time.time()) - 3600)),
        base,
        f"{base}?timestamp={now}&nonce=n1",
    ]
    for bad in forged:
        for method, body in (("GET", None), ("POST", event)):
            sep = "&" if "?" in bad else "?"
            status, _, _ = yield http(method, f"{bad}{sep}echostr=x", body, key=None)
            assert status == 403, (method, bad)
    assert srv.chat.content.outcomes["media_unknown"] == 1  # no such trace: ignored
    assert (
        srv.service.site.resource.children[b"api"].children[b"wechat"].children[b"events"].refused
        == 10
    )


@pytest_twisted.inlineCallbacks
def test_a_review_verdict_puts_the_stored_message_into_the_moderation_queue(server_factory, wechat):
    """A ``review`` verdict lets the message through and queues it (source
    ``content_check``, WeChat's label) once stored; a resend of the same id queues
    nothing more; a ``pass`` is not queued."""
    srv = yield checked_server(server_factory, wechat)
    alice = yield Client.v1(srv.port, token=token(ALICE))
    alice.send(type="dm", to=BOB, text="fine", id="d0")
    yield alice.expect("ack", id="d0")
    alice.send(type="dm", to=BOB, text="REVIEW me", id="d1")
    ack = yield alice.expect("ack", id="d1")
    alice.send(type="dm", to=BOB, text="REVIEW me", id="d1")
    yield alice.expect("ack", id="d1")
    latest = {}  # the newest answer of the store's queue read

    def flagged():
        srv.store.reports("open", None, 10).addCallback(lambda e: latest.update(entries=e))
        return latest.get("entries")

    entries = yield wait_for(flagged, what="the flagged message in the queue")
    [entry] = entries
    assert (entry["source"], entry["sender"], entry["seq"]) == ("content_check", ALICE, ack["seq"])
    assert entry["message"]["text"] == "REVIEW me" and entry["label"]
    assert sorted(entry["users"]) == sorted([ALICE, BOB]) and entry["room"] is None
    yield alice.close()
