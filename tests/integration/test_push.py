"""Offline push end to end: a real chatd on loopback, real WebSocket clients, and the
WeChat stand-in (tests/support/wechat.py) in place of api.weixin.qq.com: subscribe
messages, the access token, WeChat's errors, the push webhook and
/api/push/subscriptions."""

from __future__ import annotations

import time

import jwt
import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.logger import formatEvent, globalLogPublisher
from twisted.web.server import Site

from chatd.auth import TokenVerifier
from tests.support.http import Receiver, http, samples
from tests.support.push import (
    ALICE,
    BOB,
    CAROL,
    DAVE,
    dm,
    push_server,
    settled,
    subscribed,
    token,
)
from tests.support.wechat import APP_SECRET, JWT_SECRET, FakeWeChat, listening
from tests.wsclient import Client, wait_for


@pytest.fixture
def wechat():
    yield from listening(FakeWeChat())


@pytest_twisted.inlineCallbacks
def test_an_offline_dm_sends_one_subscribe_message_with_page_and_data(server_factory, wechat):
    """The recipient of a DM who accepted 2 messages and went offline gets one
    subscribeMessage.send: its openid, the template, the conversation's page, the
    sender's name, the text and the time; a second DM of the same conversation
    within --push-interval sends nothing and leaves one message of the quota."""
    srv = yield push_server(server_factory, wechat)
    answer = yield subscribed(srv, BOB)
    assert answer["templates"] == [{"id": "TPL", "count": 2}] and answer["refused"] == []
    alice = yield Client.v1(srv.port, token=token(ALICE))
    before = time.time()
    yield dm(alice, BOB, "晚上一起吃饭吗？", "d1")
    yield wait_for(lambda: wechat.sends, what="a subscribe message")
    (sent,) = wechat.sends
    assert sent["touser"] == "o-bob" and sent["template_id"] == "TPL"
    assert sent["page"] == "pages/chat/chat?with=wx%3Ao-alice"
    assert sent["miniprogram_state"] == "formal"
    assert sent["data"]["thing1"] == {"value": "Alice"}
    assert sent["data"]["thing2"] == {"value": "晚上一起吃饭吗？"}
    shown = time.strftime("%Y-%m-%d %H:%M", time.gmtime(before + 8 * 3600))
    later = time.strftime("%Y-%m-%d %H:%M", time.gmtime(time.time() + 8 * 3600))
    assert sent["data"]["time3"]["value"] in (shown, later)
    yield dm(alice, BOB, "还在吗", "d2")
    yield settled(srv, 2)
    assert len(wechat.sends) == 1
    state = yield srv.store.push_state(BOB)
    assert state.templates == {"TPL": 1}
    assert [path for path, _ in wechat.token_requests] == ["/cgi-bin/stable_token"]
    _, _, text = yield http("GET", f"{srv.http_url}/metrics", key=None)
    metrics = samples(text.decode())
    assert metrics[("chatd_push_wechat_total", frozenset({("outcome", "sent")}))] == 1
    assert metrics[("chatd_push_decisions_total", frozenset({("outcome", "notified")}))] == 1
    assert metrics[("chatd_push_wechat_token_fetches_total", frozenset())] == 1
    yield alice.close()


@pytest_twisted.inlineCallbacks
def test_a_muted_conversation_sends_nothing(server_factory, wechat):
    srv = yield push_server(server_factory, wechat)
    bob = yield Client.v1(srv.port, token=token(BOB))
    bob.send(type="push_subscribe", templates=[{"id": "TPL", "count": 5}], id="p1")
    yield bob.expect("push_subscriptions", id="p1")
    alice = yield Client.v1(srv.port, token=token(ALICE))
    yield dm(alice, BOB, "bob is online: no push", "d1")
    yield bob.expect("dm")
    bob.send(type="mute", **{"with": ALICE}, muted=True, id="m1")
    yield bob.expect("muted")
    yield bob.close()
    yield srv.gone(bob)
    yield dm(alice, BOB, "muted", "d2")
    carol = yield Client.v1(srv.port, token=token(CAROL))
    yield dm(carol, BOB, "not muted", "d3")
    yield settled(srv, 3)
    assert [s["page"] for s in wechat.sends] == ["pages/chat/chat?with=wx%3Ao-carol"]
    yield alice.close()
    yield carol.close()


@pytest_twisted.inlineCallbacks
def test_a_spent_quota_sends_nothing(server_factory, wechat):
    """One accepted message: the first conversation's DM uses it, the second
    conversation's DM is decided (a push event) but sends no subscribe message."""
    srv = yield push_server(server_factory, wechat)
    yield subscribed(srv, BOB, count=1)
    alice = yield Client.v1(srv.port, token=token(ALICE))
    carol = yield Client.v1(srv.port, token=token(CAROL))
    yield dm(alice, BOB, "first", "d1")
    yield dm(carol, BOB, "second", "d2")
    yield settled(srv, 2)
    assert srv.chat.push.notified == 2 and srv.chat.push.queued == 1
    assert [s["data"]["thing2"]["value"] for s in wechat.sends] == ["first"]
    assert (yield srv.store.push_state(BOB)).templates == {}
    yield alice.close()
    yield carol.close()


@pytest_twisted.inlineCallbacks
def test_a_refused_token_is_replaced_and_the_send_made_again(server_factory, wechat):
    """40001 on a send: the token is dropped; stable_token hands back the same one, so
    chatd forces a new one and sends again with it (and after a timeout, again). A
    token knocked out elsewhere (revoked) is replaced the same way, without force.
    Neither the app secret nor a token is ever logged."""
    logged = []
    globalLogPublisher.addObserver(logged.append)
    srv = yield push_server(server_factory, wechat)
    yield subscribed(srv, BOB, count=5)
    wechat.inject("/cgi-bin/message/subscribe/send", 40001, "timeout")
    srv.chat.push.sender.api.timeout = 0.3
    srv.chat.push.sender.backoff = 0.05
    alice = yield Client.v1(srv.port, token=token(ALICE))
    yield dm(alice, BOB, "hello", "d1")
    yield settled(srv, 1)
    globalLogPublisher.removeObserver(logged.append)
    text = "\n".join(formatEvent(e) or "" for e in logged) + repr(logged)
    assert APP_SECRET not in text and "tok-" not in text  # nor in the URLs of failures
    del wechat.sends[1]  # the timed-out one
    assert [s["_token"] for s in wechat.sends] == ["tok-1", "tok-2"]
    assert [body["force_refresh"] for _, body in wechat.token_requests] == [False, False, True]
    assert srv.chat.push.sender.sent == 1
    wechat.revoke()
    carol = yield Client.v1(srv.port, token=token(CAROL))
    yield dm(carol, BOB, "hi", "d2")
    yield settled(srv, 2)
    assert [s["_token"] for s in wechat.sends][2:] == ["tok-2", "tok-3"]
    assert [body["force_refresh"] for _, body in wechat.token_requests][3:] == [False]
    assert srv.chat.push.sender.sent == 2
    yield alice.close()
    yield carol.close()


@pytest_twisted.inlineCallbacks
def test_43101_drops_the_users_quota(server_factory, wechat):
    srv = yield push_server(server_factory, wechat)
    yield subscribed(srv, BOB, count=5)
    wechat.inject("/cgi-bin/message/subscribe/send", 43101)
    alice = yield Client.v1(srv.port, token=token(ALICE))
    yield dm(alice, BOB, "hello", "d1")
    yield settled(srv, 1)
    yield wait_for(lambda: srv.chat.push.sender.refused == 1, what="the refusal")
    state = yield srv.store.push_state(BOB)
    assert state.templates == {} and len(wechat.sends) == 1
    yield alice.close()


@pytest_twisted.inlineCallbacks
def test_45009_pauses_sending_then_sends(server_factory, wechat):
    srv = yield push_server(server_factory, wechat)
    sender = srv.chat.push.sender
    sender.rate_pause = 0.3
    yield subscribed(srv, BOB, count=5)
    wechat.inject("/cgi-bin/message/subscribe/send", 45009)
    alice = yield Client.v1(srv.port, token=token(ALICE))
    yield dm(alice, BOB, "hello", "d1")
    yield settled(srv, 1)
    first, second = wechat.sends
    assert second["_at"] - first["_at"] >= 0.3
    assert (sender.rate_limited, sender.sent, sender.failed) == (1, 1, 0)
    assert (yield srv.store.push_state(BOB)).templates == {"TPL": 4}
    yield alice.close()


@pytest_twisted.inlineCallbacks
def test_busy_5xx_and_timeouts_are_retried_then_given_up_with_the_quota_back(
    server_factory, wechat
):
    """No access token (40164), -1, HTTP 500 and a silent WeChat are retried with
    backoff until one goes through; a notification that fails every retry gives its
    message back."""
    srv = yield push_server(server_factory, wechat)
    sender = srv.chat.push.sender
    sender.backoff, sender.retries = 0.05, 4
    sender.api.timeout = 0.5
    yield subscribed(srv, BOB, count=5)
    wechat.inject("/cgi-bin/message/subscribe/send", -1, "500", "timeout")
    wechat.inject("/cgi-bin/stable_token", 40164)  # no token at first (IP not whitelisted)
    alice = yield Client.v1(srv.port, token=token(ALICE))
    yield dm(alice, BOB, "hello", "d1")
    yield settled(srv, 1)
    assert (len(wechat.sends), sender.retried, sender.sent) == (4, 4, 1)
    wechat.inject("/cgi-bin/message/subscribe/send", -1, -1, "garbage", -1, "500")
    carol = yield Client.v1(srv.port, token=token(CAROL))
    yield dm(carol, BOB, "hi", "d2")
    yield settled(srv, 2)
    assert (len(wechat.sends), sender.failed, sender.sent) == (9, 1, 1)
    assert (yield srv.store.push_state(BOB)).templates == {"TPL": 4}  # 5 - 1 sent
    yield alice.close()
    yield carol.close()


@pytest_twisted.inlineCallbacks
def test_the_queue_is_bounded_and_never_delays_delivery(server_factory, wechat):
    """With WeChat silent and room for one waiting notification, a third one drops the
    oldest waiting one (its message of the quota comes back); DMs are delivered and
    acknowledged all the while."""
    srv = yield push_server(server_factory, wechat)
    sender = srv.chat.push.sender
    sender.queue_max, sender.concurrency, sender.retries = 1, 1, 0
    sender.api.timeout = 1.0
    yield subscribed(srv, BOB, count=5)
    wechat.inject("/cgi-bin/message/subscribe/send", "timeout")
    senders = []
    for i, user in enumerate((ALICE, CAROL, DAVE)):
        c = yield Client.v1(srv.port, token=token(user))
        senders.append(c)
        yield dm(c, BOB, f"m{i}", f"d{i}")
        if i == 0:
            yield wait_for(lambda: wechat.sends, what="the first send, left hanging")
    push = srv.chat.push
    yield wait_for(lambda: push.considered == 3 and push._deciding == 0, what="3 decisions")
    assert sender.dropped == 1 and sender.in_flight == 1
    yield settled(srv, 3)
    assert [s["data"]["thing2"]["value"] for s in wechat.sends] == ["m0", "m2"]
    # m0 timed out (no retries: given back), m1 dropped (given back), m2 sent
    assert (yield srv.store.push_state(BOB)).templates == {"TPL": 4}
    for c in senders:
        yield c.close()


@pytest_twisted.inlineCallbacks
def test_the_push_webhook_tells_a_bridge_about_offline_recipients(server_factory):
    """Without WeChat push, --webhook-push on POSTs a push event for an offline
    recipient (any token user): user, reason, the conversation, the preview."""
    receiver = Receiver()
    port = reactor.listenTCP(0, Site(receiver), interface="127.0.0.1")
    try:
        url = f"http://127.0.0.1:{port.getHost().port}/hook"
        srv = yield server_factory(
            "--jwt-secret", JWT_SECRET, "--webhook-url", url, "--webhook-push", "on"
        )
        bob = yield Client.v1(srv.port, token=token("bob"))
        yield bob.close()
        yield srv.gone(bob)
        alice = yield Client.v1(srv.port, token=token("alice"))
        yield dm(alice, "bob", "ping", "d1")
        yield wait_for(lambda: any(e["event"] == "push" for e in receiver.events))
        (event,) = [e for e in receiver.events if e["event"] == "push"]
        assert {k: event[k] for k in ("user", "reason", "with", "from", "preview", "seq")} == {
            "user": "bob",
            "reason": "dm",
            "with": "alice",
            "from": "alice",
            "preview": "ping",
            "seq": 1,
        }
        yield alice.close()
    finally:
        yield port.stopListening()


@pytest_twisted.inlineCallbacks
def test_http_subscriptions_with_a_bearer_token(server_factory, wechat):
    """POST /api/push/subscriptions takes the request's fields (the user from the
    token), GET reads them; foreign templates are refused; no token is 401 and bad
    fields are 400, before anything is stored."""
    srv = yield push_server(server_factory, wechat)
    url = f"{srv.http_url}/api/push/subscriptions"
    auth = {b"authorization": [f"Bearer {token(BOB)}".encode()]}
    body = {"templates": [{"id": "TPL", "count": 3}, {"id": "FOREIGN"}], "rooms": ["dev"]}
    status, _, answer = yield http("POST", url, body, key=None, headers=auth)
    assert status == 200, answer
    assert answer == {
        "templates": [{"id": "TPL", "count": 3}],
        "rooms": ["dev"],
        "refused": ["FOREIGN"],
    }
    status, _, answer = yield http("GET", url, key=None, headers=auth)
    assert (status, answer["templates"]) == (200, [{"id": "TPL", "count": 3}])
    status, headers, answer = yield http("POST", url, body, key=None)
    assert (status, answer["error"]) == (401, "unauthorized")
    assert headers.getRawHeaders(b"www-authenticate") == [b"Bearer"]
    for bad, code in [
        (b"not json", "bad_json"),
        ({"templates": "TPL"}, "bad_request"),
        ({"templates": [{"id": "TPL", "count": 10**9}]}, "bad_request"),
        ({"rooms": ["no spaces allowed"]}, "bad_room"),
    ]:
        status, _, answer = yield http("POST", url, bad, key=None, headers=auth)
        assert (status, answer["error"]) == (400, code), bad
    assert (yield srv.store.push_state(BOB)).templates == {"TPL": 3}


@pytest_twisted.inlineCallbacks
def test_hostile_subscriptions_are_refused_and_store_nothing_foreign(server_factory, wechat):
    """docs/security.md, *Offline push*: anonymous push_subscribe, counts out of range,
    too many templates or rooms, a room the token does not allow, a forged or missing
    Bearer token, an oversized body: refused. Foreign templates are answered as
    refused and never stored; repeated maximal counts stop at QUOTA_MAX."""
    srv = yield push_server(server_factory, wechat)
    guest = yield Client.v1(srv.port, "guest1")
    guest.send(type="push_subscribe", templates=[{"id": "TPL"}], id="g1")
    error = yield guest.expect("error")
    assert (error["code"], error["ref"]) == ("auth_required", "g1")
    bob = yield Client.v1(srv.port, token=token(BOB))
    for i, templates in enumerate(
        [[{"id": "TPL", "count": 10**9}], [{"id": "TPL", "count": 0}], [{"id": "T"}] * 11]
    ):
        bob.send(type="push_subscribe", templates=templates, id=f"b{i}")
        error = yield bob.expect("error")
        assert (error["code"], error["ref"]) == ("bad_request", f"b{i}")
    bob.send(type="push_subscribe", rooms=[f"r{i}" for i in range(101)], id="r1")
    assert (yield bob.expect("error"))["code"] == "bad_request"
    foreign = [{"id": f"F{i}", "count": 100} for i in range(9)]
    for i in range(3):
        bob.send(type="push_subscribe", templates=[{"id": "TPL", "count": 100}, *foreign],
                 id=f"f{i}")  # fmt: skip
        answer = yield bob.expect("push_subscriptions", id=f"f{i}")
    assert answer["templates"] == [{"id": "TPL", "count": 100}]
    assert answer["refused"] == [f"F{i}" for i in range(9)]
    assert (yield srv.store.push_state(BOB)).templates == {"TPL": 100}
    claims = {"sub": CAROL, "rooms": ["team-*"], "exp": int(time.time()) + 600}
    limited = jwt.encode(claims, JWT_SECRET, algorithm="HS256")
    carol = yield Client.v1(srv.port, token=limited)
    carol.send(type="push_subscribe", rooms=["team-a", "secret"], id="c1")
    error = yield carol.expect("error")
    assert (error["code"], error["ref"]) == ("forbidden", "c1")
    url = f"{srv.http_url}/api/push/subscriptions"
    status, _, answer = yield http(
        "POST", url, {"rooms": ["secret"]}, key=None,
        headers={b"authorization": [f"Bearer {limited}".encode()]},
    )  # fmt: skip
    assert (status, answer["error"]) == (403, "forbidden")
    forged = TokenVerifier(secret="another-secret-that-is-32-bytes-long").issue(BOB, "Bob")
    for header in (f"Bearer {forged}", "Bearer", f"apikey {forged}"):
        status, _, answer = yield http(
            "POST", url, {}, key=None, headers={b"authorization": [header.encode()]}
        )
        assert (status, answer["error"]) == (401, "unauthorized"), header
    big = {"rooms": ["r"], "pad": "x" * 20000}
    auth = {b"authorization": [f"Bearer {token(BOB)}".encode()]}
    status, _, answer = yield http("POST", url, big, key=None, headers=auth)
    assert status == 413
    assert (yield srv.store.push_state(CAROL)).rooms == ()
    assert (yield srv.store.push_state(BOB)).rooms == ()
    for c in (guest, bob, carol):
        yield c.close()


@pytest_twisted.inlineCallbacks
def test_a_restart_between_two_dms_does_not_send_twice(server_factory, wechat, tmp_path):
    """The digest and the quota are in the SQLite file: after a restart a DM of the
    same conversation within --push-interval sends nothing, and the quota is what the
    first send left."""
    db = str(tmp_path / "chatd.sqlite3")
    srv = yield push_server(server_factory, wechat, "--db", db)
    yield subscribed(srv, BOB, count=3)
    alice = yield Client.v1(srv.port, token=token(ALICE))
    yield dm(alice, BOB, "before", "d1")
    yield settled(srv, 1)
    yield alice.close()
    yield srv.service.stopService()
    srv = yield push_server(server_factory, wechat, "--db", db)
    alice = yield Client.v1(srv.port, token=token(ALICE))
    yield dm(alice, BOB, "after the restart", "d2")
    yield settled(srv, 1)
    assert [s["data"]["thing2"]["value"] for s in wechat.sends] == ["before"]
    assert (yield srv.store.push_state(BOB)).templates == {"TPL": 2}
    yield alice.close()
