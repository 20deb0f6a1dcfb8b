"""Offline push in cluster mode: two in-process chatd nodes on one private Redis and
the WeChat stand-in. The digest and the quotas are the cluster's (claimed in Redis),
presence is the cluster's, and both nodes share one stable access token."""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet import defer, reactor

from tests.e2e.conftest import TUNING
from tests.support.push import ALICE, BOB, CAROL, dm, push_server, settled, token
from tests.support.wechat import FakeWeChat, listening
from tests.wsclient import Client, deferLater


@pytest.fixture
def wechat():
    yield from listening(FakeWeChat())


@defer.inlineCallbacks
def offline_everywhere(srv, user, timeout=10.0):
    """Fires once *srv*'s directory (the cluster's) says *user* is offline."""
    deadline = reactor.seconds() + timeout
    while (yield srv.chat.directory.is_online(user)):
        assert reactor.seconds() < deadline, f"{user} still online after {timeout} s"
        yield deferLater(0.02)


@pytest_twisted.inlineCallbacks
def test_two_nodes_share_the_digest_the_quota_presence_and_the_token(server_factory, wechat, redis):
    cluster = ("--redis", f"{redis.url}?prefix=push:&{TUNING}")
    a = yield push_server(server_factory, wechat, *cluster)
    b = yield push_server(server_factory, wechat, *cluster)
    bob = yield Client.v1(b.port, token=token(BOB))
    bob.send(type="push_subscribe", templates=[{"id": "TPL", "count": 5}], id="p1")
    yield bob.expect("push_subscriptions", id="p1")
    alice_a = yield Client.v1(a.port, token=token(ALICE))
    yield dm(alice_a, BOB, "bob is online on the other node", "d0")
    yield bob.expect("dm")
    yield bob.close()
    yield b.gone(bob)
    yield offline_everywhere(a, BOB)
    yield dm(alice_a, BOB, "first", "d1")
    yield settled(a, 2)
    alice_b = yield Client.v1(b.port, token=token(ALICE))
    yield dm(alice_b, BOB, "same conversation, other node", "d2")
    yield settled(b, 1)
    carol_b = yield Client.v1(b.port, token=token(CAROL))
    yield dm(carol_b, BOB, "another conversation", "d3")
    yield settled(b, 2)
    assert [s["data"]["thing2"]["value"] for s in wechat.sends] == ["first", "another conversation"]
    assert (yield a.store.push_state(BOB)).templates == {"TPL": 3}
    assert {s["_token"] for s in wechat.sends} == {"tok-1"}
    assert [body["force_refresh"] for _, body in wechat.token_requests] == [False, False]
    for c in (alice_a, alice_b, carol_b):
        yield c.close()
