"""Webhooks: POSTs to a real HTTP receiver on loopback, retried, never blocking delivery."""

from __future__ import annotations

import pytest_twisted
from twisted.internet import defer, reactor
from twisted.web.server import Site

from tests.support.http import Receiver
from tests.wsclient import Client
from tests.wsclient import wait_for as condition


@defer.inlineCallbacks
def wait_for(receiver, predicate, timeout=10):
    """The first received event matching *predicate*."""
    while True:
        event = yield receiver.arrived.get().addTimeout(timeout, reactor)
        if predicate(event):
            return event


@pytest_twisted.inlineCallbacks
def test_online_offline_and_room_messages_are_posted(server_factory):
    """A user's first connection posts ``online``, the last ``offline``; messages of the
    configured rooms are posted with seq and text, other rooms' are not; requests carry
    the API key."""
    receiver = Receiver()
    port = reactor.listenTCP(0, Site(receiver), interface="127.0.0.1")
    try:
        url = f"http://127.0.0.1:{port.getHost().port}/hook"
        srv = yield server_factory(
            "--webhook-url", url, "--webhook-rooms", "support", "--api-key", "hook-key"
        )
        eve = yield Client.v1(srv.port, "eve")
        online = yield wait_for(receiver, lambda e: e["event"] == "online")
        assert online["user"].endswith("eve") and online["mode"] == "chatd.v1"
        yield eve.join("support")
        yield eve.join("random")
        eve.send(type="send", room="random", text="not posted", id="r1")
        yield eve.expect("ack", id="r1")
        eve.send(type="send", room="support", text="help!", id="s1")
        ack = yield eve.expect("ack", id="s1")
        message = yield wait_for(receiver, lambda e: e["event"] == "message")
        assert message["room"] == "support" and message["text"] == "help!"
        assert message["seq"] == ack["seq"] and message["id"] == "s1"
        yield eve.close()
        offline = yield wait_for(receiver, lambda e: e["event"] == "offline")
        assert offline["user"] == online["user"]
        assert all(e.get("room") != "random" for e in receiver.events)
        assert set(receiver.headers) == {b"apikey hook-key"}
    finally:
        yield port.stopListening()


@pytest_twisted.inlineCallbacks
def test_failures_are_retried_with_backoff_and_never_block_delivery(server_factory):
    """A receiver answering 500 twice gets the event on the third try (after the
    backoff); a dead receiver does not delay a send's ack or its delivery."""
    receiver = Receiver(fail=2)
    port = reactor.listenTCP(0, Site(receiver), interface="127.0.0.1")
    try:
        url = f"http://127.0.0.1:{port.getHost().port}/hook"
        srv = yield server_factory("--webhook-url", url, "--webhook-rooms", "*")
        started = reactor.seconds()
        a = yield Client.v1(srv.port, "ann")
        event = yield wait_for(receiver, lambda e: e["event"] == "online")
        assert receiver.attempts == 3 and event["user"].endswith("ann")
        assert reactor.seconds() - started >= 0.5 + 1.0 - 0.05  # backoff 0.5 s, then 1 s
        hooks = srv.service.lifecycle.webhooks
        # chatd reads the 200 response
        yield condition(lambda: hooks.sent == 1, what="the delivery counted")
        assert hooks.retried == 2 and hooks.sent == 1
    finally:
        yield port.stopListening()

    # a receiver that refuses connections: chat traffic is as fast as ever
    hooks.configure("http://127.0.0.1:1/hook", "*")
    yield a.join("any")
    b = yield Client.v1(srv.port, "ben")
    yield b.join("any")
    yield a.expect("presence", event="join")
    t0 = reactor.seconds()
    for i in range(5):
        a.send(type="send", room="any", text=f"x{i}", id=f"x{i}")
        yield a.expect("ack", id=f"x{i}")
    assert reactor.seconds() - t0 < 1.0
    for i in range(5):
        yield b.expect("message", text=f"x{i}")
    # ben's online event and the 5 messages wait for the dead receiver meanwhile
    yield condition(lambda: hooks.pending + (hooks.retried - 2) >= 6, what="6 events waiting")
    assert hooks.pending + (hooks.retried - 2) >= 6 and hooks.sent == 1
    yield a.close()
    yield b.close()
