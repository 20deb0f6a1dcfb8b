"""A Redis Cluster master fails over under two chatd nodes (``redis+cluster://``).

A private cluster of three masters and three replicas (tests/redis_cluster.py,
``cluster-node-timeout`` 1 s); the master of the room's slot is SIGKILLed and its
replica promoted. Sends during the switch are refused with ``unavailable`` (or
acknowledged once the new master serves the slot) and resent by the client with the
same id, as a client's outbox does; nothing acknowledged is lost and nothing is
delivered twice.
"""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet import reactor

from chatd.cluster.slots import key_slot
from tests.e2e.conftest import node_starter
from tests.support.frames import OTHER, next_of
from tests.support.process import wait_log
from tests.wsclient import Client

pytestmark = [pytest.mark.redis, pytest.mark.subprocess]

#: frames a sender may see besides its acks and refusals
NOISE = OTHER | {"message", "typing"}


@pytest_twisted.inlineCallbacks
def send_until_acked(client, room, ids, deadline):
    """Send every id in *ids* to *room*, resending the refused ones (``unavailable``,
    ``rate_limited``) 0.2 s later until each is acked; fires with ``{id: ack}`` and the
    number of ``unavailable`` refusals."""
    acks, refused = {}, 0
    for cid in ids:
        client.send(type="send", room=room, text=f"text of {cid}", id=cid)
    while len(acks) < len(ids):
        assert reactor.seconds() < deadline, f"not acked: {set(ids) - set(acks)}"
        frame = yield client.recv(timeout=max(1.0, deadline - reactor.seconds()))
        kind = frame.get("type")
        if kind == "ack" and frame.get("id") in ids:
            assert frame["id"] not in acks, f"acked twice: {frame}"
            acks[frame["id"]] = frame
        elif kind == "error" and frame.get("code") in ("unavailable", "rate_limited"):
            # as an outbox does: resend with the same id a little later
            refused += frame["code"] == "unavailable"
            cid = frame["ref"]
            reactor.callLater(
                0.2, client.send, type="send", room=room, text=f"text of {cid}", id=cid
            )
        else:
            assert kind in NOISE, f"unexpected {frame}"
    return acks, refused


@pytest_twisted.inlineCallbacks
def test_master_failover_loses_no_acked_message_and_delivers_none_twice(
    own_redis_cluster, twistd_factory, tmp_path
):
    """SIGKILL of the room's master with two chatd nodes on the cluster: while the
    replica takes over, sends are refused with `unavailable` and resent; afterwards
    every acked message is in the history exactly once with gap-free seqs, the other
    node's member got none twice, and a rejoin with since fills what the live stream
    missed during the switch."""
    cluster = own_redis_cluster
    a, b = node_starter(twistd_factory, cluster.url, tmp_path)(2)
    room = "failover"
    victim = cluster.master_of(f"test:s:{{{room}}}")
    alice = yield Client.v1(a.port, "alice")
    bob = yield Client.v1(b.port, "bob")
    yield alice.join(room)
    yield bob.join(room)
    deadline = reactor.seconds() + 60
    before, _ = yield send_until_acked(alice, room, [f"b{i}" for i in range(20)], deadline)
    assert sorted(ack["seq"] for ack in before.values()) == list(range(1, 21))
    cluster.wait_replicated(victim)
    cluster.kill_node(victim)
    during, refused = yield send_until_acked(alice, room, [f"d{i}" for i in range(30)], deadline)
    assert refused > 0, "no send was refused while the master was down"
    for node in (a, b):  # each noticed the loss, then is whole again (/readyz 200)
        wait_log(node, "degraded: Redis unreachable", 1)
        wait_log(node, "healthy: Redis reachable", 2, timeout=30)
    acked = {**before, **during}
    seqs = sorted(ack["seq"] for ack in acked.values())
    assert seqs == list(range(1, 51)), "acked seqs are not one gap-free sequence"
    assert cluster.master_of(f"test:s:{{{room}}}") != victim
    assert key_slot(f"test:s:{{{room}}}") == key_slot(room)

    # bob's live stream: no message twice, in seq order
    live = []
    while True:
        try:
            frame = yield bob.recv(timeout=2.0)
        except Exception:
            break
        if frame.get("type") == "message":
            live.append(frame["seq"])
    assert len(live) == len(set(live)) and live == sorted(live), live
    # what the live stream missed while bob's node resubscribed: a rejoin with since
    prefix = 0
    while prefix + 1 in live:
        prefix += 1
    bob2 = yield Client.v1(b.port, "dave")  # bob again, on bob's node
    yield bob2.join(room, since=prefix)
    replayed = []
    while len(replayed) < 50 - prefix:
        frame = yield bob2.recv(timeout=10.0)
        if frame.get("type") == "message":
            replayed.append(frame["seq"])
    assert replayed == list(range(prefix + 1, 51))
    # every acked message is stored once, with its id
    carol = yield Client.v1(a.port, "carol")
    yield carol.join(room, since=0)
    history = []
    while len(history) < 50:
        frame = yield carol.recv(timeout=10.0)
        if frame.get("type") == "message":
            history.append((frame["seq"], frame["id"]))
    assert sorted(history) == sorted((ack["seq"], cid) for cid, ack in acked.items())
    # bob's node follows the room on the new master: the next message reaches bob live
    # (its own shard channel was subscribed again there before the node was healthy)
    alice.send(type="send", room=room, text="after the switch", id="a0")
    ack = yield next_of(alice, "ack", skip=OTHER | {"message"}, id="a0")
    assert ack["seq"] == 51
    got = yield next_of(bob, "message", skip=OTHER, room=room, seq=51)
    assert got["text"] == "after the switch"
    for client in (alice, bob, bob2, carol):
        yield client.close()
