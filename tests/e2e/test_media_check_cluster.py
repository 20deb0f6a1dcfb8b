"""WeChat's asynchronous media check on a cluster: two in-process chatd nodes on one
private Redis and one shared media directory, with the WeChat stand-in. The trace id
kept by the node that asked is found by the node the verdict reaches, and the recall
reaches every connection on both nodes."""

from __future__ import annotations

import pytest
import pytest_twisted

from chatd.contentcheck import MEDIA_CHECK_USER
from tests.e2e.conftest import TUNING
from tests.support.frames import OTHER, next_of
from tests.support.inbox import member
from tests.support.media_check import PUSH_TOKEN, asked, checked, picture, stored_picture
from tests.support.push import ALICE, BOB, token
from tests.support.wechat import FakeWeChat, listening, media_verdict, push_event
from tests.wsclient import Client


@pytest.fixture
def wechat():
    yield from listening(FakeWeChat())


@pytest.mark.redis
@pytest_twisted.inlineCallbacks
def test_a_risky_verdict_on_one_node_recalls_the_picture_on_both(
    server_factory, wechat, tmp_path, redis_any
):
    """Two nodes on one Redis (and on a Redis Cluster) and one shared media directory:
    alice (on A) posts the picture, WeChat's verdict arrives at B (the load balancer's
    choice): the trace id is found in Redis and both bob on A and carol on B get
    ``recalled``."""
    cluster = ("--redis", f"{redis_any.url}?prefix=mc:&{TUNING}", "--media-shared")
    media = tmp_path / "shared-media"
    a = yield checked(server_factory, wechat, media, *cluster)
    b = yield checked(server_factory, wechat, media, *cluster)
    alice = yield Client.v1(a.port, token=token(ALICE))
    bob = yield Client.v1(a.port, token=token(BOB))
    carol = yield Client.v1(b.port, token=token("wx:o-carol"))
    for srv, client in ((a, alice), (a, bob), (b, carol)):
        yield member(srv, client, "team")
    pic = yield picture(a, ALICE)
    ack = yield stored_picture(alice, "team", pic["media_id"], "m1")
    for client in (bob, carol):
        yield next_of(client, "message", skip=OTHER, id="m1")
    yield asked(wechat, 1)
    assert (yield b.store.take_media_check("nothing-here")) is None
    status, _, body = yield push_event(b, PUSH_TOKEN, media_verdict("media-trace-1", "risky"))
    assert (status, body) == (200, b"success")
    for client in (bob, carol, alice):
        recalled = yield next_of(client, "recalled", skip=OTHER | {"message"}, target=ack["seq"])
        assert recalled["by"] == MEDIA_CHECK_USER
    # replayed at A: the trace was taken at B, so nothing more happens anywhere
    status, _, _ = yield push_event(a, PUSH_TOKEN, media_verdict("media-trace-1", "risky"))
    assert status == 200
    assert a.chat.content.outcomes["media_unknown"] == 1
    assert b.chat.content.outcomes["media_risky"] == 1
    for client in (alice, bob, carol):
        yield client.close()
