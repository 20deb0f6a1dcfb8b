"""Room receipt batching over real sockets (``--receipt-window``, ``?features=``,
docs/protocol.md *Receipt batching*), and its rows of the hostile-input table
(docs/security.md, *Receipt batching*)."""

from __future__ import annotations

import pytest_twisted
from twisted.internet import defer
from twisted.internet.task import Clock

from chatd.receipts import ReceiptBatcher
from tests.support.auth import SECRET, token
from tests.support.frames import OTHER, next_of
from tests.support.inbox import member, sent, user
from tests.wsclient import Client

RECEIPTS = OTHER | {"message", "receipt", "read", "room_info", "ack"}


def batching(srv, sub, features="receipts_batch"):
    return Client.v1(srv.port, token=token(sub), features=features)


def windows_on(srv) -> Clock:
    """The server's receipt windows on a clock the test advances (the real batcher and
    flush; its windows end when the test says, however slow the machine is)."""
    clock = Clock()
    srv.chat.receipts = ReceiptBatcher(clock, srv.chat._receipts_due)
    return clock


@defer.inlineCallbacks
def drain(*clients):
    for client in clients:
        yield client.barrier()


@pytest_twisted.inlineCallbacks
def test_a_batching_member_gets_one_frame_for_the_window_the_others_each_receipt(
    server_factory,
):
    srv = yield server_factory("--jwt-secret", SECRET)
    clock = windows_on(srv)
    alice = yield batching(srv, "alice")
    assert alice.welcome["features"] == ["receipts_batch"]
    web = yield user(srv, "alice")  # her other device did not ask
    assert "features" not in web.welcome
    bob, carol = (yield user(srv, "bob")), (yield user(srv, "carol"))
    for client in (alice, web, bob, carol):
        yield member(srv, client, "team")
    yield drain(alice, web, bob, carol)
    first = yield sent(alice, "team", text="one", id="m1")
    last = yield sent(alice, "team", text="two", id="m2")
    bob.send(type="read", room="team", seq=first["seq"])
    carol.send(type="read", room="team", seq=last["seq"])
    bob.send(type="read", room="team", seq=last["seq"])
    # the plain device: each receipt, as without the window
    seen = []
    while len(seen) < 3:
        receipt = yield next_of(web, "receipt", skip=OTHER | {"message", "read"})
        seen.append((receipt["user"], receipt["seq"]))
    assert seen == [("bob", first["seq"]), ("carol", last["seq"]), ("bob", last["seq"])]
    yield alice.quiet()  # the window is open: nothing yet
    clock.advance(0.2)
    # the batching one: one frame, each user once with the newest seq
    batch = yield next_of(alice, "receipts_batch", skip=OTHER | {"message"})
    assert batch == {
        "type": "receipts_batch",
        "room": "team",
        "receipts": [{"user": "bob", "seq": last["seq"]}, {"user": "carol", "seq": last["seq"]}],
    }
    frames = yield alice.barrier()  # nothing else: no receipt frame, no second batch
    assert {f["type"] for f in frames} <= OTHER


@pytest_twisted.inlineCallbacks
def test_window_off_grants_nothing_and_sends_todays_receipts(server_factory):
    srv = yield server_factory("--jwt-secret", SECRET, "--receipt-window", "0")
    alice = yield batching(srv, "alice")
    assert alice.welcome["features"] == []
    bob = yield user(srv, "bob")
    for client in (alice, bob):
        yield member(srv, client, "team")
    yield drain(alice, bob)
    ack = yield sent(alice, "team", text="one", id="m1")
    bob.send(type="read", room="team", seq=ack["seq"])
    receipt = yield next_of(alice, "receipt", skip=OTHER | {"message"})
    assert receipt == {"type": "receipt", "room": "team", "user": "bob", "seq": ack["seq"]}


@pytest_twisted.inlineCallbacks
def test_hostile_features_parameters_are_ignored(server_factory):
    """Rows of docs/security.md: a 10,000-character ``features``, 1,000 names, unknown
    names and repeats grant nothing they do not name within the first 256 characters
    and 8 names; each connection works and a bystander pair still talks."""
    srv = yield server_factory("--jwt-secret", SECRET)
    cases = {
        "x" * 10_000 + ",receipts_batch": [],
        ",".join(f"f{i}" for i in range(1000)) + ",receipts_batch": [],
        "receipts_batch," * 500: ["receipts_batch"],
        "<script>,__proto__,receipts_batch\x00": [],
        "": None,  # an empty parameter is no parameter: no features in welcome
    }
    for i, (features, granted) in enumerate(cases.items()):
        client = yield batching(srv, f"mallory{i}", features=features)
        assert client.welcome.get("features") == granted, features[:40]
        client.send(type="ping", id="alive")
        yield next_of(client, "pong", id="alive")
    a, b = (yield user(srv, "ann")), (yield user(srv, "ben"))
    for client in (a, b):
        yield member(srv, client, "bystanders")
    yield drain(a, b)
    yield sent(a, "bystanders", text="still fine", id="ok")
    got = yield next_of(b, "message")
    assert got["text"] == "still fine"


@pytest_twisted.inlineCallbacks
def test_a_member_kicked_during_the_window_gets_nothing_of_it(server_factory):
    """Row of docs/security.md: who gets a batch is decided at the window's end, so a
    batching member kicked from a private room after a read and before the window
    ended gets no receipt of it (the owner, batching too, gets the batch)."""
    srv = yield server_factory("--jwt-secret", SECRET)
    clock = windows_on(srv)
    alice = yield batching(srv, "alice")
    bob = yield user(srv, "bob")
    mallory = yield batching(srv, "mallory")
    alice.send(type="create", room="vault", kind="private", members=["bob", "mallory"], id="c1")
    yield next_of(alice, "room_info", skip=RECEIPTS, room="vault")
    yield next_of(mallory, "event", kind="invited", user="mallory")
    yield drain(alice, bob, mallory)
    ack = yield sent(alice, "vault", text="secret", id="m1")
    bob.send(type="read", room="vault", seq=ack["seq"])
    yield next_of(bob, "read", skip=RECEIPTS, seq=ack["seq"])
    yield sent(alice, "vault", type="kick", user="mallory", id="k1")
    yield next_of(mallory, "event", skip=RECEIPTS, kind="kicked", user="mallory")
    clock.advance(0.2)  # the window ends after the kick
    batch = yield next_of(alice, "receipts_batch", skip=RECEIPTS)
    assert batch["receipts"] == [{"user": "bob", "seq": ack["seq"]}]
    frames = yield mallory.barrier()
    assert [f["type"] for f in frames if f["type"].startswith("receipt")] == []
