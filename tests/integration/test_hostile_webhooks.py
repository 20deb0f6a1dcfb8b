"""Webhooks under presence churn: message events are never starved or dropped first.

A real slow receiver (20 ms per request, a twisted.web server on loopback), a
real in-process chatd and real WebSocket clients: anonymous relay connections
opened and closed as fast as the test can, a room message in the middle of it.
"""

from __future__ import annotations

import pytest_twisted
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import defer, reactor
from twisted.logger import globalLogPublisher
from twisted.web.server import Site

from chatd.webhooks import Event, PresenceQueue
from tests.support.http import Receiver, http, samples
from tests.wsclient import Client, wait_for

#: the receiver's answer time (seconds per request)
RECEIVER_DELAY = 0.02
#: the bound on a message event's delay under churn that docs/operations.md states
MESSAGE_BOUND = 2.0


class Churn:
    """*parallel* loops, each opening an anonymous relay connection and closing it."""

    def __init__(self, port, parallel=16):
        self.port = port
        self.running = True
        self.pairs = 0
        self.loops = [self._loop() for _ in range(parallel)]

    @defer.inlineCallbacks
    def _loop(self):
        while self.running:
            client = yield Client.connect(self.port, "/")
            yield client.close()
            self.pairs += 1

    def stop(self):
        """Fires once every loop has finished its last pair."""
        self.running = False
        return defer.gatherResults(self.loops, consumeErrors=True)


def presence_at(receiver) -> dict:
    """``{user: "online" | "offline"}``: the last presence event the receiver saw for each."""
    state = {}
    for event in receiver.events:
        if event["event"] in ("online", "offline"):
            state[event["user"]] = event["event"]
    return state


def webhook_metrics(srv):
    d = http("GET", srv.http_url + "/metrics", key=None)
    return d.addCallback(lambda result: samples(result[2].decode()))


def settled(hooks):
    """Nothing queued, in flight or waiting for a retry."""
    return hooks.pending == 0 and not hooks._timers


@pytest_twisted.inlineCallbacks
def test_message_event_is_not_starved_by_presence_churn(server_factory):
    """With a 20 ms receiver and anonymous connect/close churn far beyond what it can
    take one request at a time, a ``support`` message reaches the receiver within 2 s
    while the churn goes on; afterwards every user's last presence event at the receiver
    matches who is online, and online/offline pairs were coalesced rather than sent."""
    receiver = Receiver(delay=RECEIVER_DELAY)
    port = reactor.listenTCP(0, Site(receiver), interface="127.0.0.1")
    churn = None
    try:
        url = f"http://127.0.0.1:{port.getHost().port}/hook"
        srv = yield server_factory(
            "--webhook-url", url, "--webhook-rooms", "support", "--max-connections-per-ip", "0"
        )
        hooks = srv.service.lifecycle.webhooks
        eve = yield Client.v1(srv.port, "eve")
        yield eve.join("support")
        user = eve.welcome["user"]
        yield wait_for(lambda: presence_at(receiver).get(user) == "online", timeout=10)

        churn = Churn(srv.port)
        # 600 pairs are 1,200 presence events: 6 s of work for 4 requests at a time
        yield wait_for(lambda: churn.pairs >= 600, timeout=60)
        eve.send(type="send", room="support", text="help!", id="s1")
        ack = yield eve.expect("ack", id="s1")
        sent_at, pairs_at, backlog = reactor.seconds(), churn.pairs, hooks.pending

        def arrived():
            return next(
                (
                    t
                    for e, t in zip(receiver.events, receiver.times, strict=True)
                    if e["event"] == "message"
                ),
                None,
            )

        yield wait_for(lambda: arrived() is not None, timeout=60)
        delay = arrived() - sent_at
        # the churn goes on around the message: more pairs after it arrived
        yield wait_for(lambda: churn.pairs >= pairs_at + 100, timeout=60)
        yield churn.stop()
        churn = None
        print(
            f"message webhook delay under churn: {delay * 1000:.0f} ms "
            f"(sent after {pairs_at} pairs, {backlog} webhooks queued or in flight)"
        )
        message = next(e for e in receiver.events if e["event"] == "message")
        assert message["seq"] == ack["seq"] and message["text"] == "help!"
        assert delay < MESSAGE_BOUND, f"message event took {delay:.2f} s"

        yield wait_for(lambda: settled(hooks), timeout=120)
        state = presence_at(receiver)
        assert state[user] == "online"
        wrong = {u: s for u, s in state.items() if (s == "online") != srv.chat.hub.is_online(u)}
        assert wrong == {}
        m = yield webhook_metrics(srv)
        sent = sum(
            v
            for (n, labels), v in m.items()
            if n == "chatd_webhook_sent_total" and dict(labels)["event"] in ("online", "offline")
        )
        coalesced = m[("chatd_webhook_coalesced_total", frozenset())]
        print(
            f"{churn_total(srv)} pairs: presence events sent {sent:.0f}, coalesced {coalesced:.0f}"
        )
        assert sent + coalesced == 2 * churn_total(srv) + 1  # every event sent or coalesced
        assert coalesced > 0
    finally:
        if churn is not None:
            yield churn.stop()
        yield port.stopListening()


def churn_total(srv):
    """Relay connections the server saw open."""
    return srv.chat.stats.connections_opened["relay"]


@pytest_twisted.inlineCallbacks
def test_full_queue_drops_presence_before_messages_counted_and_logged(server_factory):
    """With the receiver stalled and the queue full of presence events, message events
    queued earlier are kept (the oldest presence events go instead); the drops show in
    /metrics by event and are logged in a few lines, not one per drop; once the receiver
    answers again, every message event arrives."""
    receiver = Receiver(delay=RECEIVER_DELAY)
    port = reactor.listenTCP(0, Site(receiver), interface="127.0.0.1")
    lines = []

    def observe(event):
        if "webhook queue full" in (event.get("log_format") or ""):
            lines.append(event)

    globalLogPublisher.addObserver(observe)
    try:
        url = f"http://127.0.0.1:{port.getHost().port}/hook"
        srv = yield server_factory("--webhook-url", url, "--webhook-rooms", "support")
        hooks = srv.service.lifecycle.webhooks
        hooks.queue_max = 50
        receiver.hold()
        eve = yield Client.v1(srv.port, "eve")
        yield eve.join("support")
        for i in range(10):
            eve.send(type="send", room="support", text=f"m{i}", id=f"m{i}")
            yield eve.expect("ack", id=f"m{i}")
        users = []
        for i in range(120):  # 120 users who stay online: nothing to coalesce
            users.append((yield Client.v1(srv.port, f"u{i}")))
        receiver.release()
        yield wait_for(
            lambda: sum(e["event"] == "message" for e in receiver.events) == 10, timeout=15
        )
        assert sorted(e["text"] for e in receiver.events if e["event"] == "message") == [
            f"m{i}" for i in range(10)
        ]
        m = yield webhook_metrics(srv)
        dropped = {
            dict(labels)["event"]: v
            for (n, labels), v in m.items()
            if n == "chatd_webhook_dropped_total"
        }
        assert dropped.get("message", 0) == 0
        assert dropped["online"] >= 120 - 50
        assert 1 <= len(lines) <= 3
        for client in users:
            yield client.close()
    finally:
        globalLogPublisher.removeObserver(observe)
        yield port.stopListening()


@defer.inlineCallbacks
def connect_users(port, n, prefix):
    """*n* chatd.v1 users ``prefix0`` … that stay online."""
    users = []
    for i in range(n):
        users.append((yield Client.v1(port, f"{prefix}{i}")))
    return users


@pytest_twisted.inlineCallbacks
def test_message_events_overtake_a_presence_backlog(server_factory):
    """Presence events that cannot coalesce (40 users who stay online) are queued while
    the receiver is stalled; message events queued after them are sent first once it
    answers again: each waits for at most the requests already in flight."""
    receiver = Receiver(delay=RECEIVER_DELAY)
    port = reactor.listenTCP(0, Site(receiver), interface="127.0.0.1")
    try:
        url = f"http://127.0.0.1:{port.getHost().port}/hook"
        srv = yield server_factory("--webhook-url", url, "--webhook-rooms", "support")
        hooks = srv.service.lifecycle.webhooks
        eve = yield Client.v1(srv.port, "eve")
        yield eve.join("support")
        yield wait_for(lambda: hooks.pending == 0, timeout=10)
        receiver.hold()
        users = yield connect_users(srv.port, 40, "u")
        for i in range(5):
            eve.send(type="send", room="support", text=f"m{i}", id=f"m{i}")
            yield eve.expect("ack", id=f"m{i}")
        before = len(receiver.events)  # eve's online and the 4 requests in flight
        receiver.release()
        yield wait_for(lambda: len(receiver.events) == before + 40 + 5 - 4, timeout=30)
        kinds = [e["event"] for e in receiver.events[before:]]
        # presence keeps one of the 4 slots while messages wait: 5 messages, 1 online
        last_message = max(i for i, k in enumerate(kinds) if k == "message")
        assert last_message <= 5, kinds
        for client in users:
            yield client.close()
    finally:
        yield port.stopListening()


USERS = st.sampled_from(["ann", "ben", "cat"])
MODES = st.sampled_from(["chatd.v1", "relay"])
STEPS = st.lists(
    st.one_of(
        st.tuples(st.just("add"), USERS, st.sampled_from(["online", "offline"]), MODES),
        st.tuples(st.just("send")),
        st.tuples(st.just("answer"), st.integers(0, 3), st.booleans()),
        st.tuples(st.just("retry")),
    ),
    max_size=80,
)


@settings(max_examples=300, deadline=None)
@given(STEPS)
def test_presence_queue_keeps_each_users_final_state(steps):
    """Any interleaving of online/offline events (duplicates and mixed modes included),
    sends, 2xx answers, failures and retries: a user never has two events in flight, every
    event is sent or coalesced, and once drained the receiver's last event of each user is
    the last one chatd emitted (an ``offline`` may also have collapsed to "never seen")."""
    queue = PresenceQueue()
    in_flight, failed, seen, last, added, sent = [], [], {}, {}, 0, 0

    def send():
        event = queue.pop()
        if event is not None:
            assert event.user not in {e.user for e in in_flight + failed}
            in_flight.append(event)
        return event

    def answer(event, ok):
        nonlocal sent
        in_flight.remove(event)
        if ok:
            seen[event.user] = (event.kind, event.mode)
            sent += 1
            queue.done(event)
        else:
            event.attempt += 1
            failed.append(event)

    for step in steps:
        if step[0] == "add":
            _, user, kind, mode = step
            queue.add(Event(b"{}", kind, 0.0, user, mode))
            last[user] = (kind, mode)
            added += 1
        elif step[0] == "send":
            send()
        elif step[0] == "answer" and in_flight:
            answer(in_flight[step[1] % len(in_flight)], step[2])
        elif step[0] == "retry" and failed:
            queue.retry(failed.pop(0))
    while failed:
        queue.retry(failed.pop(0))
    while True:
        for event in list(in_flight):
            answer(event, True)
        if send() is None and not in_flight:
            break
    assert queue.size == 0
    assert sent + queue.coalesced == added
    for user, (kind, mode) in last.items():
        if kind == "online":
            assert seen.get(user) == ("online", mode)
        else:
            assert seen.get(user, ("offline", None))[0] == "offline"
