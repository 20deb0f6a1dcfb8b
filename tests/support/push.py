"""Helpers of the offline-push tests (tests/integration/test_push.py,
tests/e2e/test_push_cluster.py): test users, their tokens, a chatd with WeChat push
against the stand-in, and waiting for push decisions to settle."""

from __future__ import annotations

from twisted.internet import defer

from chatd.auth import TokenVerifier
from tests.support.wechat import JWT_SECRET, login_server
from tests.wsclient import Client, wait_for

ALICE, BOB, CAROL, DAVE = "wx:o-alice", "wx:o-bob", "wx:o-carol", "wx:o-dave"
NAMES = {ALICE: "Alice", BOB: "Bob", CAROL: "Carol", DAVE: "Dave"}


def token(user):
    return TokenVerifier(secret=JWT_SECRET).issue(user, NAMES.get(user, user))


def push_server(server_factory, wechat, *extra):
    return login_server(
        server_factory, wechat.url, "--push-template", "TPL", "--push-interval", "3600", *extra
    )


@defer.inlineCallbacks
def subscribed(srv, user, count=2, **fields):
    """*user* connects, accepts *count* messages of TPL and goes offline."""
    c = yield Client.v1(srv.port, token=token(user))
    c.send(type="push_subscribe", templates=[{"id": "TPL", "count": count}], id="p1", **fields)
    answer = yield c.expect("push_subscriptions", id="p1")
    yield c.close()
    yield srv.gone(c)
    return answer


@defer.inlineCallbacks
def dm(client, to, text, id):
    client.send(type="dm", to=to, text=text, id=id)
    yield client.expect("ack", id=id)


def settled(srv, considered):
    """Fires once *considered* recipients were looked at and every decision and send is
    done."""
    push = srv.chat.push
    sender = push.sender

    def done():
        idle = sender is None or (sender.in_flight == 0 and sender.waiting == 0)
        return push.considered >= considered and push._deciding == 0 and idle

    return wait_for(done, what=f"{considered} push decisions and their sends")
