"""Receipt batching on a cluster (docs/cluster.md, the bus kind ``receipt``;
docs/protocol.md, *Receipt batching*): two ``twistd -n chatd --redis`` nodes on one
private redis-server and on a Redis Cluster. Reads on node B reach a batching
connection on node A as one ``receipts_batch`` of A's window, and a connection on A
that did not ask for batches as each ``receipt``, at once."""

from __future__ import annotations

import pytest
import pytest_twisted

from tests.support.auth import SECRET, token
from tests.support.frames import OTHER, next_of
from tests.wsclient import Client

pytestmark = [pytest.mark.redis, pytest.mark.subprocess]

#: long enough that the reads of one step fall into one window on a loaded machine
WINDOW = "5"


@pytest.fixture
def cluster(any_nodes, monkeypatch):
    monkeypatch.setenv("CHATD_JWT_SECRET", SECRET)
    return any_nodes(2, "--receipt-window", WINDOW)


@pytest_twisted.inlineCallbacks
def test_reads_on_another_node_are_batched_by_the_receiving_node(cluster):
    a, b = cluster
    alice = yield Client.v1(a.port, token=token("alice"), features="receipts_batch")
    assert alice.welcome["features"] == ["receipts_batch"]
    web = yield Client.v1(a.port, token=token("alice"))  # her device that did not ask
    bob = yield Client.v1(b.port, token=token("bob"))
    carol = yield Client.v1(b.port, token=token("carol"))
    for client in (alice, web, bob, carol):
        client.send(type="join", room="team")
        yield next_of(client, "joined", room="team")
    for client in (alice, web, bob, carol):
        yield client.barrier()
    alice.send(type="send", room="team", text="hi", id="m1")
    ack = yield next_of(alice, "ack", id="m1")
    for client in (bob, carol):
        yield next_of(client, "message", seq=ack["seq"])
    bob.send(type="read", room="team", seq=ack["seq"])
    carol.send(type="read", room="team", seq=ack["seq"])
    seen = set()
    while len(seen) < 2:
        receipt = yield next_of(web, "receipt", skip=OTHER | {"message"})
        seen.add(receipt["user"])
    assert seen == {"bob", "carol"}
    # (the batch comes at the end of A's window, opened by the first receipt)
    batch = yield next_of(
        alice, "receipts_batch", skip=OTHER | {"message"}, timeout=float(WINDOW) + 10
    )
    assert batch["room"] == "team"
    assert sorted(r["user"] for r in batch["receipts"]) == ["bob", "carol"]
    assert {r["seq"] for r in batch["receipts"]} == {ack["seq"]}
    frames = yield alice.barrier()
    assert [f for f in frames if f["type"].startswith("receipt")] == []
    for client in (alice, web, bob, carol):
        yield client.close()
