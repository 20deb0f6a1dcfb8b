"""The Redis Cluster client (chatd.cluster.rediscluster) against a real local cluster:
three masters and three replicas of redis-server (tests/redis_cluster.py)."""

from __future__ import annotations

import json

import pytest
import pytest_twisted
import txredisapi
from twisted.internet import defer, reactor

from chatd.cluster.redis import RedisURL
from chatd.cluster.rediscluster import ClusterClient
from chatd.cluster.slots import SlotMap, key_slot
from chatd.store import StoreUnavailable
from tests.support.store import redis_log_with_listener
from tests.wsclient import wait_for

pytestmark = pytest.mark.redis


def test_fixture_cluster_is_three_masters_with_a_replica_each(redis_cluster):
    """The fixture's cluster: 3 masters and 3 replicas, every slot served, replicas in sync."""
    roles = [role for _, role in redis_cluster.nodes()]
    assert sorted(roles) == ["master"] * 3 + ["slave"] * 3
    assert redis_cluster.wait_ok(1)
    masters = {redis_cluster.master_of(k) for k in ("a", "b", "c", "d", "e", "f", "g", "h")}
    assert masters <= set(redis_cluster.master_ports()) and len(masters) > 1


def client_for(cluster, **query):
    """A ClusterClient on *cluster* with short timeouts (not started)."""
    extra = "".join(f"&{k}={v}" for k, v in query.items())
    url = RedisURL(f"{cluster.url}?ping=1&ping_timeout=1&backoff_max=0.3{extra}")
    return ClusterClient(url)


@pytest_twisted.async_yield_fixture
async def client(redis_cluster):
    c = client_for(redis_cluster)
    await c.start()
    yield c
    await c.stop()


def test_key_slot_agrees_with_cluster_keyslot(redis_cluster):
    """chatd's CRC16 slot of a key is the one Redis computes (hash tags, UTF-8)."""
    port = redis_cluster.master_ports()[0]
    keys = ["", "a", "chatd:m:{lobby}", "x{}{y}", "{{z}}", "ünï{cödé}", 't:d:["u","1"]']
    keys += [f"key-{i}" for i in range(40)]
    for key in keys:
        assert key_slot(key) == int(redis_cluster.command(port, "CLUSTER", "KEYSLOT", key)), key


@pytest_twisted.inlineCallbacks
def test_commands_go_to_the_master_of_their_slot(redis_cluster, client):
    """The client maps every slot, connects to each master and writes each key on its
    slot's master (read back from that master directly)."""
    assert client.healthy and client.map.complete
    assert {p for _, p in client.connections()} == set(redis_cluster.master_ports())
    keys = [f"k{i}" for i in range(30)]
    yield defer.gatherResults([client.execute("SET", k, f"v-{k}") for k in keys])
    for k in keys:
        assert redis_cluster.command(redis_cluster.master_of(k), "GET", k) == f"v-{k}"
    values = yield defer.gatherResults([client.execute("GET", k) for k in keys])
    assert values == [f"v-{k}" for k in keys]
    assert client.moved == 0


@pytest_twisted.inlineCallbacks
def test_scripts_are_routed_by_their_first_key(redis_cluster, client):
    """EVAL/EVALSHA run on the master of KEYS[1]; keys of one hash tag share it."""
    source = "redis.call('SET', KEYS[1], ARGV[1]); redis.call('SET', KEYS[2], ARGV[1]); return 1"
    shas = yield client.execute_on_all("SCRIPT", "LOAD", source)
    assert len(set(shas)) == 1 and len(shas) == 3
    for room in ("lobby", "kitchen", "garden"):
        keys = [f"t:s:{{{room}}}", f"t:m:{{{room}}}"]
        assert (yield client.execute("EVALSHA", shas[0], 2, *keys, room)) == 1
        port = redis_cluster.master_of(keys[0])
        assert [redis_cluster.command(port, "GET", k) for k in keys] == [room, room]
    with pytest.raises(txredisapi.ResponseError, match="CROSSSLOT"):
        yield client.execute("EVAL", source, 2, "t:s:{a}", "t:s:{b}", "x")


@pytest_twisted.inlineCallbacks
def test_moved_patches_the_map_and_retries(redis_cluster, client):
    """With a stale map (every slot on one master) commands are MOVED, land on the right
    master anyway, and the map is refreshed."""
    wrong = client.map.master(0)
    client.map = SlotMap([[0, 16383, [wrong[0], wrong[1], "x"]]])
    keys = [f"m{i}" for i in range(20)]
    yield defer.gatherResults([client.execute("SET", k, k) for k in keys])
    assert client.moved > 0
    for k in keys:
        assert redis_cluster.command(redis_cluster.master_of(k), "GET", k) == k
    yield wait_for(lambda: len(client.map) > 1, 5, what="the slot map refreshed")


@pytest_twisted.inlineCallbacks
def test_ask_during_a_slot_migration(redis_cluster, client):
    """A key of a slot being migrated that is not on the source any more is ASKed to
    the target: ASKING + the command there, the map unchanged."""
    key = "ask-me"
    slot = key_slot(key)
    source = redis_cluster.master_of(key)
    target = next(p for p in redis_cluster.master_ports() if p != source)
    ids = {p: redis_cluster.command(p, "CLUSTER", "MYID") for p in (source, target)}
    assert (
        redis_cluster.command(target, "CLUSTER", "SETSLOT", slot, "IMPORTING", ids[source]) == "OK"
    )
    assert (
        redis_cluster.command(source, "CLUSTER", "SETSLOT", slot, "MIGRATING", ids[target]) == "OK"
    )
    try:
        yield client.execute("SET", key, "at the target")
        assert client.asked == 1 and client.map.master(slot)[1] == source
        # not on the source: it redirects every client there
        assert redis_cluster.command(source, "GET", key).startswith("ASK ")
        assert (yield client.execute("GET", key)) == "at the target"
        assert client.asked == 2
    finally:
        for port in (source, target):
            redis_cluster.command(port, "CLUSTER", "SETSLOT", slot, "STABLE")


@pytest_twisted.inlineCallbacks
def test_failover_unavailable_then_the_promoted_replica(own_redis_cluster):
    """A SIGKILLed master's slots: commands fail with RedisUnavailable (a StoreUnavailable)
    within retry_for while the cluster fails over, then go to the promoted replica, which
    has what the old master acknowledged; other masters' slots keep working."""
    cluster = own_redis_cluster
    c = client_for(cluster, retry_for=0.5)
    yield c.start()
    try:
        keys = [f"f{i}" for i in range(40)]
        yield defer.gatherResults([c.execute("SET", k, k) for k in keys])
        victim = cluster.master_of(keys[0])
        mine = [k for k in keys if cluster.master_of(k) == victim]
        others = [k for k in keys if k not in mine]
        cluster.wait_replicated(victim)
        cluster.kill_node(victim)
        with pytest.raises(StoreUnavailable):
            yield c.execute("SET", mine[0], "during")
        assert (yield c.execute("GET", others[0])) == others[0]
        deadline = reactor.seconds() + 30
        while True:  # until the replica is promoted and in the client's map
            try:
                assert (yield c.execute("GET", mine[-1])) == mine[-1]
                break
            except StoreUnavailable:
                assert reactor.seconds() < deadline, "the replica was never promoted"
        assert c.map.master(key_slot(mine[0]))[1] != victim
        assert (yield defer.gatherResults([c.execute("GET", k) for k in keys])) == keys
        yield wait_for(lambda: c.healthy, 10, what="the client healthy again")
    finally:
        yield c.stop()


@pytest_twisted.inlineCallbacks
def test_the_bus_is_sharded_pub_sub(redis_cluster):
    """On a cluster the bus is one shard channel per slot: each node SSUBSCRIBEs, on
    every master, the channels of that master's slots (none with plain SUBSCRIBE); a
    room's messages are SPUBLISHed on the room's own shard channel (in the room's
    slot), which only a node following the room subscribes, in seq order; a
    membership event of the room stays on the slot's channel, which every node holds."""
    s, listener, seen, log = yield redis_log_with_listener(redis_cluster, rooms=["lobby"])
    try:
        room = "lobby"
        channel = s.node.shard_channel(key_slot(room))
        own = listener.room_channel(room)
        assert own == "t:rbus:{lobby}"
        master = redis_cluster.master_of(channel)
        assert master == redis_cluster.master_of(f"t:s:{{{room}}}") == redis_cluster.master_of(own)
        numsub = redis_cluster.command(master, "PUBSUB", "SHARDNUMSUB", channel).split()
        assert numsub == [channel, "2"]  # the store's node and the listener
        numsub = redis_cluster.command(master, "PUBSUB", "SHARDNUMSUB", own).split()
        assert numsub == [own, "1"]  # the listener only: the store's node has no member
        for port in redis_cluster.master_ports():
            assert redis_cluster.command(port, "PUBSUB", "CHANNELS") == ""
            shards = redis_cluster.command(port, "PUBSUB", "SHARDCHANNELS").split()
            slots = len(listener.cluster.map.slots_of(("127.0.0.1", port)))
            assert len(shards) == slots + (1 if port == master else 0)
        before = s.node.bus_events
        ds = [
            log.append("message", (room, "u", "U", f"c{i}", f"t{i}", i), ("sess", False))
            for i in range(30)
        ]
        event = {"event": "joined", "user": "u", "by": "u"}
        ds.append(log.append("message", (room, "u", "U", "e", "", 99, "event", event), ("s", 0)))
        yield defer.gatherResults(ds)
        yield listener.barrier(f"t:s:{{{room}}}")
        yield s.node.barrier(f"t:s:{{{room}}}")
        assert [json.loads(p)["m"][1] for p in seen] == list(range(1, 32))
        assert s.node.bus_events - before == 1  # the event only: it follows no room
    finally:
        yield listener.stop()
        yield s.stop()


@pytest_twisted.inlineCallbacks
def test_a_room_is_unsubscribed_after_its_linger(redis_cluster):
    """A node stops following a room its last holder released once the linger is over:
    SUNSUBSCRIBE (answered, not taken for a dropped slot), and the room's messages no
    longer reach it; a hold subscribes it again."""
    s, listener, seen, log = yield redis_log_with_listener(
        redis_cluster, rooms=["brief"], room_linger=0.2
    )
    try:
        own = listener.room_channel("brief")
        master = redis_cluster.master_of(own)

        def subscribers():
            return redis_cluster.command(master, "PUBSUB", "SHARDNUMSUB", own).split()[1]

        assert subscribers() == "1"
        listener.rooms.release("brief")
        yield wait_for(lambda: subscribers() == "0", 5, what="the room unsubscribed")
        assert listener.healthy and "brief" not in listener.rooms
        yield log.append("message", ("brief", "u", "U", "x", "unseen", 1), ("s", False))
        yield listener.barrier("t:s:{brief}")
        assert seen == []
        listener.rooms.hold("brief")
        yield listener.room_ready("brief")
        assert subscribers() == "1"
        yield log.append("message", ("brief", "u", "U", "y", "seen", 2), ("s", False))
        yield listener.barrier("t:s:{brief}")
        assert [json.loads(p)["m"][4] for p in seen] == ["seen"]
    finally:
        yield listener.stop()
        yield s.stop()


@pytest_twisted.inlineCallbacks
def test_a_manual_failover_is_followed_by_the_store_and_the_bus(own_redis_cluster):
    """CLUSTER FAILOVER on the replica of a room's master: the store follows (MOVED /
    a refreshed map), seqs continue, and once the node is healthy again its bus
    subscriber on the new master gets the room's messages in seq order."""
    cluster = own_redis_cluster
    s, listener, seen, log = yield redis_log_with_listener(cluster, rooms=["moving"])
    try:
        room = "moving"
        key = f"t:s:{{{room}}}"

        def send(i):
            return log.append("message", (room, "u", "U", f"c{i}", f"t{i}", i), ("sess", False))

        first = yield defer.gatherResults([send(i) for i in range(10)])
        old = cluster.master_of(key)
        replica = cluster.replica_of(old)
        cluster.wait_replicated(old)
        assert cluster.command(replica, "CLUSTER", "FAILOVER") == "OK"
        yield wait_for(lambda: cluster.master_of(key) == replica, 20, what="the replica promoted")
        nodes = (s.node, listener)
        yield wait_for(
            lambda: all(
                n.healthy and n.cluster.map.master(key_slot(key))[1] == replica for n in nodes
            ),
            20,
            what="both nodes following the new master, subscribed there",
        )
        yield listener.room_ready(room)  # the room's own channel, there too
        own = listener.room_channel(room)
        assert cluster.command(replica, "PUBSUB", "SHARDNUMSUB", own).split() == [own, "1"]
        seen.clear()
        later = yield defer.gatherResults([send(i) for i in range(10, 20)])
        assert [a.message.seq for a in first + later] == list(range(1, 21))
        yield listener.barrier(key)
        assert [json.loads(p)["m"][1] for p in seen] == list(range(11, 21))
        replay = yield s.replay(room, 0, 100)
        assert [m.seq for m in replay.messages] == list(range(1, 21))
    finally:
        yield listener.stop()
        yield s.stop()


@pytest_twisted.inlineCallbacks
def test_a_followed_room_moves_with_its_slot(own_redis_cluster):
    """The slot of a room a node follows is handed to another master (SETSLOT … NODE):
    the old master drops the node's shard subscriptions of the slot (an unasked
    ``sunsubscribe``), the node reloads the map and subscribes the room's channel on
    the new owner, where the room's next messages reach it."""
    cluster = own_redis_cluster
    room = "mover"
    s, listener, seen, log = yield redis_log_with_listener(cluster, rooms=[room])
    try:
        own = listener.room_channel(room)
        slot = key_slot(own)
        source = cluster.master_of(own)
        target = next(p for p in cluster.master_ports() if p != source)
        assert cluster.command(source, "PUBSUB", "SHARDNUMSUB", own).split() == [own, "1"]
        ids = {p: cluster.command(p, "CLUSTER", "MYID") for p in (source, target)}
        assert cluster.command(target, "CLUSTER", "SETSLOT", slot, "IMPORTING", ids[source]) == "OK"
        assert cluster.command(source, "CLUSTER", "SETSLOT", slot, "MIGRATING", ids[target]) == "OK"
        for port in (target, source):  # (the slot holds no key yet: nothing to MIGRATE)
            assert cluster.command(port, "CLUSTER", "SETSLOT", slot, "NODE", ids[target]) == "OK"
        yield wait_for(
            lambda: (
                listener.healthy
                and listener.cluster.map.master(slot)[1] == target
                and cluster.command(target, "PUBSUB", "SHARDNUMSUB", own).split() == [own, "1"]
            ),
            20,
            what="the room's channel subscribed on the slot's new master",
        )
        assert cluster.command(source, "PUBSUB", "SHARDNUMSUB", own).split() == [own, "0"]
        yield listener.room_ready(room)
        for i in range(5):
            yield log.append("message", (room, "u", "U", f"c{i}", f"t{i}", i), ("s", False))
        yield listener.barrier(own)
        assert [json.loads(p)["m"][1] for p in seen] == [1, 2, 3, 4, 5]
    finally:
        yield listener.stop()
        yield s.stop()
