"""Per-room shard subscriptions on a Redis Cluster (docs/cluster.md, *Per-room shard
subscriptions*): two ``twistd -n chatd --redis redis+cluster://`` nodes on the private
3+3 cluster (tests/redis_cluster.py).

A node receives a room's messages only while it has connections in the room (its own
shard channel ``<prefix>rbus:{<room>}`` is SSUBSCRIBEd then); a connection that makes
a node follow a room while messages stream into it gets every message once: a join's
replay is read after the subscription is confirmed, and a connection subscribed
without a replay (after an ``invited`` event) is caught up from the event's seq.
"""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet import defer

from tests.e2e.conftest import node_starter
from tests.support.auth import SECRET, token
from tests.support.frames import OTHER, next_of
from tests.wsclient import Client, wait_for

pytestmark = [pytest.mark.redis, pytest.mark.subprocess]

#: no rate limit gets in the way of a sender streaming into the rooms
UNLIMITED = ("--rate-limit", "0", "--user-rate-limit", "0")


@pytest.fixture
def two_nodes(redis_cluster, twistd_factory, tmp_path, monkeypatch):
    monkeypatch.setenv("CHATD_JWT_SECRET", SECRET)
    url = f"{redis_cluster.url}?room_linger=0.5"
    return node_starter(twistd_factory, url, tmp_path)(2, *UNLIMITED)


@pytest.fixture
def gated_nodes(redis_cluster, twistd_factory, tmp_path, monkeypatch):
    """``(a, b, grant)``: node A as the default user, node B as the Redis user
    ``late``, who may use the per-slot bus channels but no room's own channel until
    ``grant(room)``: B's SSUBSCRIBE of a room is refused with NOPERM (and retried)
    until then, so the time between B starting to follow a room and the subscription
    being active is as long as the test wants, while A commits."""
    monkeypatch.setenv("CHATD_JWT_SECRET", SECRET)
    ports = [port for port, _ in redis_cluster.nodes()]
    for port in ports:
        reply = redis_cluster.command(
            port, "ACL", "SETUSER", "late", "reset", "on", ">pw", "~*", "+@all", "&test:bus:*"
        )
        assert reply == "OK"
    procs = []
    for name, url in (
        ("a", redis_cluster.url),
        ("b", redis_cluster.url.replace("//", "//late:pw@")),
    ):
        (tmp_path / name).mkdir()
        procs += node_starter(twistd_factory, url, tmp_path / name)(1, *UNLIMITED)

    def grant(room):
        for port in ports:
            assert (
                redis_cluster.command(port, "ACL", "SETUSER", "late", f"&test:rbus:{{{room}}}")
                == "OK"
            )

    yield (*procs, grant)
    for port in ports:
        redis_cluster.command(port, "ACL", "DELUSER", "late")


class Stream:
    """Messages sent round-robin over *rooms* with up to *window* unacked; ``at[n]()``
    is called once *n* of them are acked (``at`` may grow meanwhile: ``later(k, f)``
    calls ``f()`` *k* acks from now), ``on_ack[id]()`` once the ack of another request
    *id* (an invite's) is here."""

    def __init__(self, client, rooms, count, window=64):
        self.client, self.rooms, self.count, self.window = client, rooms, count, window
        self.at, self.on_ack, self.done = {}, {}, 0

    def later(self, acks, f):
        self.at[self.done + acks] = f

    @pytest_twisted.inlineCallbacks
    def run(self):
        """Fires with ``{room: [acked seqs]}``."""
        client, rooms = self.client, self.rooms
        acked = {room: [] for room in rooms}
        sent = unacked = 0
        while sent < self.count or unacked:
            while sent < self.count and unacked < self.window:
                room = rooms[sent % len(rooms)]
                client.send(type="send", room=room, text=f"m{sent}", id=f"s-{room}-{sent}")
                sent, unacked = sent + 1, unacked + 1
            frame = yield client.recv()
            if frame.get("type") == "ack" and frame.get("id", "").startswith("s-"):
                acked[frame["room"]].append(frame["seq"])
                unacked, self.done = unacked - 1, self.done + 1
                if self.done in self.at:
                    self.at.pop(self.done)()
            elif frame.get("type") == "ack" and frame.get("id") in self.on_ack:
                self.on_ack.pop(frame["id"])()
            else:
                assert frame.get("type") in OTHER | {"message"}, frame
        assert not self.at and not self.on_ack, "the stream ended too soon"
        return acked


@pytest_twisted.inlineCallbacks
def seqs_until(client, room, last):
    """The seqs of *room*'s ``message`` frames *client* gets up to seq *last*."""
    got = []
    while not got or got[-1] < last:
        frame = yield client.recv()
        if frame.get("type") == "message" and frame.get("room") == room:
            got.append(frame["seq"])
        else:
            assert frame.get("type") in OTHER | {"presence", "event"}, frame
    return got


@pytest_twisted.inlineCallbacks
def test_a_node_gets_only_the_rooms_it_has_connections_in(two_nodes, redis_cluster):
    """A room with members on A only is subscribed on A only: B's subscriptions are the
    per-slot channels; once a connection on B joins, B subscribes the room too, and
    after its last connection left (and the linger) only A again."""
    a, b = two_nodes
    alice = yield Client.v1(a.port, "alice")
    yield alice.join("only-a")
    master = redis_cluster.master_of("test:rbus:{only-a}")

    def subscribers():
        reply = redis_cluster.command(master, "PUBSUB", "SHARDNUMSUB", "test:rbus:{only-a}")
        return int(reply.split()[1])

    assert subscribers() == 1
    bob = yield Client.v1(b.port, "bob")
    yield bob.join("only-a")
    assert subscribers() == 2
    alice.send(type="send", room="only-a", text="hi", id="h")
    got = yield next_of(bob, "message", skip=OTHER | {"presence"}, room="only-a", text="hi")
    assert got["from"] == "~alice"  # (an anonymous user, tokens being accepted)
    yield bob.close()
    yield wait_for(lambda: subscribers() == 1, 10, what="B unsubscribed after the linger")
    yield alice.close()


@pytest_twisted.inlineCallbacks
def test_joins_on_a_node_that_just_followed_the_room_miss_nothing(gated_nodes):
    """A sender on A streams into a room; meanwhile a connection on B joins it with
    ``since: 0`` (the first on B: B starts following the room), and B's subscription
    of the room's channel only becomes active 40 messages later (a Redis ACL refuses
    it until then). The joiner gets every seq exactly once, in order: its replay is
    read once the subscription is active, the live messages after it. Three rooms."""
    a, b, grant = gated_nodes
    sender = yield Client.v1(a.port, "sender")
    joiners = {}
    for room in ("flow0", "flow1", "flow2"):
        yield sender.join(room)
        flow, joining = Stream(sender, [room], 200), []

        def join(room=room, flow=flow, joining=joining):
            d = Client.v1(b.port, f"j-{room}")

            def opened(joiner):
                joiners[room] = joiner
                joiner.send(type="join", room=room, since=0)
                # B's subscription of the room allowed 40 acks after the join
                flow.later(40, lambda: grant(room))

            joining.append(d.addCallback(opened))

        flow.at[20] = join  # the join while the room's messages stream in
        acked = yield flow.run()
        yield defer.gatherResults(joining)
        assert acked[room] == list(range(1, 201))
        got = yield seqs_until(joiners[room], room, 200)
        assert got == acked[room], f"{room}: missed or doubled seqs"
    for client in (sender, *joiners.values()):
        yield client.close()


@pytest_twisted.inlineCallbacks
def test_a_connection_subscribed_by_an_invite_is_caught_up(gated_nodes):
    """alice on A streams into a private room and, meanwhile, invites bob (on B, with
    no connection in the room): B starts following the room, and its subscription of
    the room's channel only becomes active 40 messages later (a Redis ACL refuses it
    until then). bob's connection gets ``subscribed``, the ``invited`` event and
    every message after it, none missed and none twice: it is caught up from the
    event's seq once the subscription is active. Three rooms."""
    a, b, grant = gated_nodes
    rooms = ["team0", "team1", "team2"]
    alice = yield Client.v1(a.port, token=token("alice"))
    for room in rooms:
        alice.send(type="create", room=room, kind="private", id=f"c-{room}")
        yield next_of(alice, "room_info", skip=OTHER | {"ack"}, room=room)
    bobs = {}
    for i, room in enumerate(rooms):
        bobs[room] = yield Client.v1(b.port, token=token(f"bob{i}"))
        yield bobs[room].barrier()  # recorded as a known user
    for i, room in enumerate(rooms):
        bob, flow = bobs[room], Stream(alice, [room], 200)

        def invite(i=i, room=room, flow=flow):
            alice.send(type="invite", room=room, user=f"bob{i}", id=f"i-{room}")
            # B's subscription of the room allowed 40 acks after the invite's
            flow.on_ack[f"i-{room}"] = lambda: flow.later(40, lambda: grant(room))

        flow.at[20] = invite  # the invite while the room's messages stream in
        acked = yield flow.run()
        yield next_of(bob, "subscribed", rooms=[room], more=False)
        event = yield next_of(bob, "event", room=room, kind="invited")
        after = [s for s in acked[room] if s > event["seq"]]
        assert len(after) > 40, f"{room}: the invite came too late in the stream"
        got = yield seqs_until(bob, room, after[-1])
        expected = list(range(event["seq"] + 1, after[-1] + 1))
        assert got == expected, f"{room}: missed or doubled seqs"
    for client in (alice, *bobs.values()):
        yield client.close()
