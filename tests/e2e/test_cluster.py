"""Cluster mode end to end: a private redis-server and several ``twistd -n chatd --redis`` nodes.

Every node is a real twistd process on a free loopback port; every client
is a real WebSocket client (tests/wsclient.py). Heartbeats are fast
(``heartbeat=0.5&node_ttl=2``) so a killed node is noticed within seconds.
"""

from __future__ import annotations

import signal
import time

import pytest
import pytest_twisted
from twisted.internet import defer

from tests.support.process import wait_log
from tests.wsclient import Client

pytestmark = [pytest.mark.redis, pytest.mark.subprocess]
REDIS_AOF = True  # the `redis` fixture (tests/e2e/conftest.py) can be restarted


@pytest_twisted.inlineCallbacks
def test_rooms_dms_and_presence_span_nodes(any_nodes):
    """Members, presence, room messages (in seq order, once) and DMs cross nodes."""
    a, b = any_nodes(2)
    alice = yield Client.v1(a.port, "alice")
    bob = yield Client.v1(b.port, "bob")
    joined = yield alice.join("r")
    assert joined["members"] == ["alice"] and joined["seq"] == 0
    joined = yield bob.join("r")
    assert joined["members"] == ["alice", "bob"]
    yield alice.expect("presence", room="r", user="bob", event="join")
    for i in range(20):
        alice.send(type="send", room="r", text=f"m{i}", id=f"a{i}")
    for i in range(20):
        ack = yield alice.expect("ack", id=f"a{i}")
        assert ack["seq"] == i + 1
        msg = yield bob.expect("message", room="r", seq=i + 1, text=f"m{i}", id=f"a{i}")
        assert msg["from"] == "alice"
    bob.send(type="dm", to="alice", text="psst", id="d1")
    yield bob.expect("ack", id="d1", to="alice", seq=1)
    dm = yield alice.expect("dm", text="psst", to="alice")
    assert dm["from"] == "bob"
    bob.send(type="dm", to="nobody", text="?", id="d2")
    yield bob.expect("error", code="no_such_user", ref="d2")
    bob.send(type="typing", room="r")
    yield alice.expect("typing", room="r", **{"from": "bob"})
    # a name in use on node A is taken on node B too (no welcome: the name never was hers)
    imposter = yield Client.connect(b.port, "/ws", protocols=["chatd.v1"], name="alice")
    yield imposter.expect("error", code="name_taken")
    code, _ = yield imposter.closed()
    assert code == 4409
    # the imposter changed nothing at alice: the next frame she gets is bob's leave,
    # which node B publishes after anything the imposter made it publish (one bus,
    # in order), so nothing came before it
    yield bob.close()
    yield alice.expect("presence", room="r", user="bob", event="leave")
    yield alice.close()


@pytest_twisted.inlineCallbacks
def test_killed_node_users_leave_within_bounded_time(any_nodes):
    """SIGKILL of a node: the others announce its users' leaves within node_ttl + heartbeat."""
    a, b = any_nodes(2)
    alice = yield Client.v1(a.port, "alice")
    carol = yield Client.v1(b.port, "carol")
    yield alice.join("r")
    yield carol.join("r")
    yield alice.expect("presence", room="r", user="carol", event="join")
    killed = time.monotonic()
    b.stop(signal.SIGKILL)
    yield alice.expect("presence", room="r", user="carol", event="leave", timeout=8)
    assert time.monotonic() - killed < 2 + 0.5 + 2.0  # node_ttl + heartbeat + slack
    # the reaping node logs once its script has answered, which can be after the
    # leave it published reached alice: read its log under a deadline
    wait_log(a, "stopped heartbeating", 1, timeout=5)
    again = yield alice.join("r")
    assert again["members"] == ["alice"]
    # carol's name is free again cluster-wide
    carol2 = yield Client.v1(a.port, "carol")
    yield carol2.close()
    yield alice.close()


@pytest_twisted.inlineCallbacks
def test_redis_restart_refuses_sends_then_resumes(nodes, redis):
    """Redis killed: sends get 'unavailable', clients stay connected; after restart the
    resend with the same id is stored once, fan-out resumes and since recovers the rest."""
    a, b = nodes(2)
    alice = yield Client.v1(a.port, "alice")
    bob = yield Client.v1(b.port, "bob")
    yield alice.join("r")
    yield bob.join("r")
    yield alice.expect("presence", room="r", user="bob", event="join")
    alice.send(type="send", room="r", text="before", id="x1")
    yield alice.expect("ack", id="x1", seq=1)
    yield bob.expect("message", seq=1)

    redis.kill()
    wait_log(a, "degraded: Redis unreachable", 1)
    wait_log(b, "degraded: Redis unreachable", 1)
    alice.send(type="send", room="r", text="during", id="x2")
    yield alice.expect("error", code="unavailable", ref="x2")
    assert alice.close_code is None and bob.close_code is None

    redis.start()
    wait_log(a, "healthy: Redis reachable", 2)
    wait_log(b, "healthy: Redis reachable", 2)
    alice.send(type="send", room="r", text="during", id="x2")
    yield alice.expect("ack", id="x2", seq=2)
    yield bob.expect("message", seq=2, text="during")
    alice.send(type="send", room="r", text="during", id="x2")
    dup = yield alice.expect("ack", id="x2", seq=2)
    assert dup.get("duplicate") is True
    # no second delivery: node A would have published it before acking the resend, so
    # it would reach bob before alice's typing, published after the ack on the same bus
    alice.send(type="typing", room="r")
    yield bob.expect("typing", room="r", **{"from": "alice"})
    # bob recovers everything with since (here: history survived the restart via AOF)
    bob2 = yield Client.v1(a.port, "bob2")
    joined = yield bob2.join("r", since=0)
    assert joined["seq"] == 2
    yield bob2.expect("message", seq=1, text="before")
    yield bob2.expect("message", seq=2, text="during")
    for c in (alice, bob, bob2):
        yield c.close()


@defer.inlineCallbacks
def next_of(client, kind, **fields):
    """The next frame of type *kind* (skipping presence frames), checked against *fields*."""
    while True:
        frame = yield client.recv()
        if frame["type"] == "presence" and kind != "presence":
            continue
        assert frame["type"] == kind, f"expected {kind}, got {frame}"
        for key, value in fields.items():
            assert frame.get(key) == value, f"{key}: expected {value!r} in {frame}"
        return frame


@pytest_twisted.inlineCallbacks
def test_reconnect_to_other_node_resumes_without_duplicates(any_nodes):
    """A client that drops and rejoins on another node with since gets exactly the missed
    messages, then the live stream, with no duplicate; resent ids are acked as duplicates."""
    a, b, c = any_nodes(3)
    alice = yield Client.v1(a.port, "alice")
    bob = yield Client.v1(b.port, "bob")
    yield alice.join("r")
    yield bob.join("r")
    for i in range(5):
        alice.send(type="send", room="r", text=f"m{i}", id=f"a{i}")
        yield next_of(alice, "ack", id=f"a{i}")
    last = 0
    for i in range(5):
        msg = yield next_of(bob, "message", seq=i + 1)
        last = msg["seq"]
    bob.abort()
    yield bob.closed()
    for i in range(5, 8):
        alice.send(type="send", room="r", text=f"m{i}", id=f"a{i}")
    bob = yield Client.v1(c.port, "bob")
    # alice keeps sending while bob rejoins: replay and live stream join without gap or duplicate
    for i in range(8, 12):
        alice.send(type="send", room="r", text=f"m{i}", id=f"a{i}")
    joined = yield bob.join("r", since=last)
    seqs = []
    while not seqs or seqs[-1] < 12:
        frame = yield next_of(bob, "message")
        seqs.append(frame["seq"])
    assert seqs == list(range(6, 13)), (joined, seqs)
    for i in range(5, 12):
        yield next_of(alice, "ack", id=f"a{i}", seq=i + 1)
    alice.send(type="send", room="r", text="m1", id="a1")
    dup = yield next_of(alice, "ack", id="a1", seq=2)
    assert dup.get("duplicate") is True
    bob.send(type="send", room="r", text="own id space", id="a1")
    yield next_of(bob, "ack", id="a1", seq=13)
    yield next_of(alice, "message", seq=13)
    # no echo of its own message: it would come off the bus before alice's typing
    alice.send(type="typing", room="r")
    yield next_of(bob, "typing", room="r", **{"from": "alice"})
    yield alice.close()
    yield bob.close()
