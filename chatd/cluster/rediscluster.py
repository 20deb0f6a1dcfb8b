"""A Redis Cluster client for Twisted, the smallest layer on txredisapi that is correct.

txredisapi speaks to one server; this routes each command to the master of its
key's slot (:mod:`chatd.cluster.slots`):

* the **slot map** comes from ``CLUSTER SLOTS``, asked of a connected master or,
  when none is, of each known node in turn (the URL's seeds and every node a
  map named) with a one-off connection; it is refreshed every ``ping`` seconds,
  after a ``MOVED`` and whenever a master's connection drops;
* **one connection per master** (a reconnecting txredisapi connection with the
  node's backoff); a node that is no master any more is disconnected;
* a command is routed by its first key (``EVALSHA``/``EVAL``: ``KEYS[1]``); one
  without a key goes to any master;
* ``MOVED`` patches the map (and refreshes it) and the command is sent again to
  the new master; ``ASK`` sends ``ASKING`` and the command to the named node,
  once; at most :data:`MAX_REDIRECTS` redirections;
* while a slot has no reachable master, or the cluster answers ``TRYAGAIN`` /
  ``CLUSTERDOWN`` (the command did not run), the command is sent again with
  backoff for at most ``retry_for`` seconds, then fails with
  :class:`~chatd.cluster.redis.RedisUnavailable` (a
  :class:`~chatd.store.StoreUnavailable`: chat answers ``unavailable`` and the
  client resends from its outbox);
* a command whose connection was lost **after it was sent** is not sent again:
  it may have run (a commit whose reply was lost), so it fails at once with
  ``RedisUnavailable`` and the resend with the same client id is deduplicated.
"""

from __future__ import annotations

import txredisapi
from twisted.internet import defer
from twisted.internet.task import LoopingCall, deferLater
from twisted.logger import Logger

from chatd.cluster.follow import Follows
from chatd.cluster.redis import (
    RedisNode,
    RedisUnavailable,
    _Command,
    _Factory,
    _InOneTurn,
    endpoint,
)
from chatd.cluster.slots import (
    SlotMap,
    command_key,
    key_slot,
    redirection,
    retry_later,
    slot_tags,
)

#: redirections (MOVED/ASK) followed for one command before it fails
MAX_REDIRECTS = 5


class ClusterClient:
    """Commands over a Redis Cluster's masters (see the module docstring).

    *url* is a cluster :class:`~chatd.cluster.redis.RedisURL`; *prepare(conn)*
    (a Deferred allowed) runs on every new master connection before it is used
    (e.g. ``SCRIPT LOAD``).
    """

    log = Logger()

    def __init__(self, url, reactor=None, prepare=None):
        if reactor is None:
            from twisted.internet import reactor
        self.url = url
        self.reactor = reactor
        self.prepare = prepare
        self.map = SlotMap()
        self.known: list[tuple[str, int]] = list(url.seeds)
        self._factories: dict[tuple[str, int], _Factory] = {}
        self._conns: dict[tuple[str, int], object] = {}
        self._waiters: list[defer.Deferred] = []  # of the refresh running
        self._refresher: LoopingCall | None = None
        self._listeners = []
        self._stopped = False
        #: number of MOVED / ASK redirections and of refreshes of the slot map
        self.moved = 0
        self.asked = 0
        self.refreshes = 0

    # state

    @property
    def healthy(self) -> bool:
        """Every slot has a master and every master is connected."""
        return self.map.complete and all(a in self._conns for a in self.map.masters())

    def add_listener(self, listener) -> None:
        """Call *listener()* whenever :attr:`healthy` may have changed."""
        self._listeners.append(listener)

    def _changed(self):
        for listener in self._listeners:
            listener()

    def connections(self) -> dict:
        """Address -> live connection of every connected master."""
        return dict(self._conns)

    # lifecycle

    def start(self):
        """Load the slot map and connect to every master; fires once healthy, or
        fails with RedisUnavailable after ``connect_timeout`` seconds."""
        self._stopped = False
        self._refresher = LoopingCall(self._scheduled_refresh)
        self._refresher.clock = self.reactor
        self._refresher.start(self.url.ping, now=True)
        return self._wait_healthy(self.url.connect_timeout)

    @defer.inlineCallbacks
    def _wait_healthy(self, timeout):
        deadline = self.reactor.seconds() + timeout
        while not self.healthy:
            if self.reactor.seconds() >= deadline:
                raise RedisUnavailable(
                    f"could not reach every master of the Redis Cluster at {self.url.redacted()}"
                )
            yield deferLater(self.reactor, 0.05)

    @defer.inlineCallbacks
    def stop(self):
        """Stop refreshing and close every connection."""
        self._stopped = True
        if self._refresher is not None and self._refresher.running:
            self._refresher.stop()
        factories, self._factories = self._factories, {}
        for factory in factories.values():
            yield factory.disconnect()
        self._conns.clear()

    # the slot map

    def _scheduled_refresh(self):
        d = self.refresh()
        d.addErrback(
            lambda f: self.log.warn("Redis Cluster slot map refresh failed: {e}", e=f.value)
        )

    def refresh(self):
        """Load the slot map again; fires with the new :class:`SlotMap`. One refresh
        runs at a time: a call while one runs waits for that one."""
        waiter = defer.Deferred()
        self._waiters.append(waiter)
        if len(self._waiters) == 1:
            self._refresh().addBoth(self._refreshed)
        return waiter

    def _refreshed(self, result):
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.callback(result)  # a Failure goes down the errback chain

    @defer.inlineCallbacks
    def _refresh(self):
        reply = None
        errors = []
        for address, conn in list(self._conns.items()):
            try:
                reply = yield conn.execute_command("CLUSTER", "SLOTS")
                default = address[0]
                break
            except Exception as e:
                errors.append(e)
        if reply is None:
            for address in list(self.known):
                try:
                    reply = yield self._ask_once(address, "CLUSTER", "SLOTS")
                    default = address[0]
                    break
                except Exception as e:
                    errors.append(e)
        if reply is None:
            raise RedisUnavailable(f"no Redis Cluster node answered CLUSTER SLOTS: {errors[-1:]}")
        self.refreshes += 1
        self._apply(SlotMap(reply, default), reply, default)
        return self.map

    def _apply(self, slot_map, reply, default):
        self.map = slot_map
        for entry in reply:
            for node in entry[2:]:
                host = node[0].decode() if isinstance(node[0], bytes) else str(node[0])
                address = (host if host not in ("", "?") else default, int(node[1]))
                if address not in self.known:
                    self.known.append(address)
        masters = slot_map.masters()
        for address in masters:
            self._link(address)
        for address in list(self._factories):
            if address not in masters:
                self.log.info("Redis Cluster node {a} is no master any more", a=_show(address))
                self._conns.pop(address, None)
                self._factories.pop(address).disconnect()
        self._changed()

    def _ask_once(self, address, *args):
        """*args* on a one-off connection to *address* (no reconnecting)."""
        u = self.url
        factory = txredisapi.RedisFactory(
            _show(address),
            None,
            1,
            isLazy=False,
            password=u.password,
            username=u.username,
            convertNumbers=False,
        )
        factory.reconnect = False
        factory.protocol = _Command
        factory.startConnecting(endpoint(self.reactor, u, address))
        d = factory.deferred
        d.addCallback(
            lambda handler: handler.execute_command(*args).addTimeout(u.ping_timeout, self.reactor)
        )

        def close(result):
            return factory.disconnect().addBoth(lambda _: result)

        return d.addBoth(close)

    # master connections

    def _link(self, address):
        if address in self._factories or self._stopped:
            return
        factory = _Factory(self, address, _Command, None, address)
        self._factories[address] = factory
        factory.startConnecting(endpoint(self.reactor, self.url, address))

    @defer.inlineCallbacks
    def _connected(self, address, conn):
        if self.prepare is not None:
            try:
                yield self.prepare(conn)
            except Exception as e:
                self.log.warn("Preparing Redis connection {a} failed: {e}", a=_show(address), e=e)
                conn.transport.abortConnection()
                return
        if not conn.connected or self._factories.get(address) is None:
            return
        self._conns[address] = conn
        self.log.info("Redis Cluster master {a} connected", a=_show(address))
        self._changed()

    def _disconnected(self, address, conn):
        if self._conns.get(address) is conn:
            del self._conns[address]
            self.log.warn("Redis Cluster connection to {a} lost", a=_show(address))
            if not self._stopped:
                self._scheduled_refresh()
            self._changed()

    # commands

    def execute(self, *args):
        """Run one command on the master of its key's slot (see the module docstring)."""
        key = command_key(args)
        return self._send(args, None if key is None else key_slot(key))

    def execute_on_all(self, *args):
        """Run *args* on every master (e.g. ``SCRIPT LOAD``); fires with their replies."""
        return defer.gatherResults(
            [self._send(args, None, address) for address in sorted(self.map.masters())],
            consumeErrors=True,
        ).addErrback(lambda f: f.value.subFailure)

    def _address(self, slot):
        if slot is not None:
            return self.map.master(slot)
        for address in sorted(self.map.masters()):
            if address in self._conns:
                return address
        return None

    @defer.inlineCallbacks
    def _send(self, args, slot, pinned=None):
        deadline = self.reactor.seconds() + self.url.retry_for
        delay, redirects, asking = 0.05, 0, None
        while True:
            address = asking or pinned or self._address(slot)
            conn = self._conns.get(address)
            why = f"no connection to the master of slot {slot}"
            if conn is not None and conn.connected:
                try:
                    if asking is not None:
                        conn.execute_command("ASKING").addErrback(lambda _: None)
                    return (yield conn.execute_command(*args))
                except txredisapi.ConnectionError as e:
                    # sent, then lost: it may have run, so it is not sent again
                    raise RedisUnavailable(f"Redis connection to {_show(address)} lost: {e}") from e
                except txredisapi.ResponseError as e:
                    message = str(e)
                    moved = redirection(message, address[0])
                    if moved is None and not retry_later(message):
                        raise
                    if moved is not None:
                        redirects += 1
                        if redirects > MAX_REDIRECTS:
                            raise RedisUnavailable(
                                f"Redis Cluster: too many redirections: {e}"
                            ) from e
                        kind, rslot, target = moved
                        self._link(target)
                        if kind == "ASK":
                            self.asked += 1
                            asking = target
                        else:
                            self.moved += 1
                            asking = None
                            self.map.moved(rslot, target)
                            self._scheduled_refresh()
                        if target in self._conns:
                            continue  # at once: the target is connected
                    else:
                        asking = None
                    why = message
            elif not self._stopped:
                self._scheduled_refresh()
            if self._stopped or self.reactor.seconds() + delay > deadline:
                raise RedisUnavailable(f"Redis Cluster unavailable: {why}")
            yield deferLater(self.reactor, delay)
            delay = min(delay * 2, 0.5)


def _show(address) -> str:
    host, port = address
    return f"{host}:{port}"


class _ShardSubscriber(_InOneTurn, txredisapi.SubscriberProtocol):
    """A subscriber connection to one master holding ``SSUBSCRIBE``s (Redis 7's sharded
    pub/sub: ``smessage`` pushes)."""

    _sub_unsub_reponses = txredisapi.SubscriberProtocol._sub_unsub_reponses | {
        "ssubscribe",
        "sunsubscribe",
    }

    #: ``[confirmations still owed, Deferred]`` of the ssubscribe_all under way
    _bulk = None

    def connectionMade(self):
        #: channel -> SUNSUBSCRIBEs of it sent and not answered yet
        self.unsubscribing: dict[str, int] = {}
        return super().connectionMade()

    def ssubscribe_all(self, channels):
        """SSUBSCRIBE each of *channels* (each in its own slot: one command each) in one
        write, with no Deferred per command (16384 of them took a node ~1.4 CPU s to
        start): fires once each is confirmed, fails with the first error. Nothing else
        may be sent on the connection meanwhile."""
        done = defer.Deferred()
        if not channels:
            done.callback(None)
            return done
        self._bulk = [len(channels), done]
        out = []
        for channel in channels:
            raw = channel.encode()
            out.append(b"*2\r\n$10\r\nSSUBSCRIBE\r\n$%d\r\n%s\r\n" % (len(raw), raw))
        self.transport.write(b"".join(out))
        return done

    def _bulk_reply(self, reply) -> None:
        owed, done = self._bulk
        if isinstance(reply, Exception):
            self._bulk = None
            done.errback(reply)
        elif owed > 1:
            self._bulk[0] = owed - 1
        else:
            self._bulk = None
            done.callback(None)

    def connectionLost(self, why):
        if self._bulk is not None:
            self._bulk_reply(txredisapi.ConnectionError("Lost connection"))
        return super().connectionLost(why)

    def sunsubscribe(self, channel: str):
        """SUNSUBSCRIBE *channel*; its reply is told from one the server sends unasked."""
        self.unsubscribing[channel] = self.unsubscribing.get(channel, 0) + 1
        return self.execute_command("SUNSUBSCRIBE", channel)

    def replyReceived(self, reply):
        if self._bulk is not None and (
            isinstance(reply, Exception) or (isinstance(reply, list) and reply[0] == "ssubscribe")
        ):
            return self._bulk_reply(reply)
        if isinstance(reply, list) and len(reply) == 3:
            if reply[0] == "smessage":
                self.factory.node._bus_message(reply[2])
                return
            if reply[0] == "sunsubscribe":
                asked = self.unsubscribing.get(reply[1], 0)
                if not asked:
                    # never asked for: the server gave the channel's slot away (a
                    # failover, a migration) and dropped the subscription
                    self.factory.node._shard_dropped(self)
                    return
                if asked > 1:
                    self.unsubscribing[reply[1]] = asked - 1
                else:
                    del self.unsubscribing[reply[1]]
        super().replyReceived(reply)


class RedisClusterNode(RedisNode):
    """A :class:`~chatd.cluster.redis.RedisNode` on a Redis Cluster: commands and
    scripts go through a :class:`ClusterClient` (to the master of their first key's
    slot); the bus is **sharded pub/sub**.

    Every slot has one shard channel, ``<prefix>bus:{<tag>}`` (the tag of
    :func:`~chatd.cluster.slots.slot_tags`, so the channel is in that slot), and every
    room its own, ``<prefix>rbus:{<room>}`` (in the slot of the room's keys). A
    script publishes a room's items and presence with ``SPUBLISH`` on the room's
    channel, its membership events and recalls and a DM's items on the slot's
    channel, so each publish is carried by that slot's master alone (plain
    ``PUBLISH`` in a cluster is broadcast to every cluster node). Each chatd node
    holds one subscriber connection per master, ``SSUBSCRIBE``d to the shard
    channels of the master's slots (a fixed set, 16384 channels over the masters:
    what every node must see) and to the channels of the rooms it follows
    (:attr:`rooms`, :class:`~chatd.cluster.follow.Follows`: the rooms with
    connections here, held by the hub, and lingering ones). A PING on the
    subscriber of a slot's master is a barrier for both kinds of the slot's events.
    See docs/cluster.md, *Per-room shard subscriptions*.

    Healthy while every slot's master is connected and subscribed; the connect hooks
    run each time the cluster turns healthy.
    """

    def __init__(self, url, reactor=None, node_id=None):
        super().__init__(url, reactor, node_id)
        self.cluster: ClusterClient | None = None
        self._cluster_up = False
        #: master address -> (its subscriber factory, the slots it subscribes)
        self._shards: dict[tuple[str, int], tuple[_Factory, tuple[int, ...]]] = {}
        #: master address -> its subscribed connection
        self._subscribed: dict[tuple[str, int], object] = {}
        self._stopped_shards = False
        #: the rooms this node follows: their own shard channels are SSUBSCRIBEd
        self.rooms = Follows(
            self.reactor, self._follow, self._unfollow, linger=self.url.room_linger
        )
        #: room -> the subscriber connection its channel is subscribed on (confirmed)
        self._room_subs: dict[str, object] = {}
        #: room -> Deferreds of room_ready waiting for that
        self._room_waiters: dict[str, list[defer.Deferred]] = {}
        #: SSUBSCRIBEs of rooms refused (MOVED while the map was stale, a lost connection)
        self.room_subscribe_failures = 0

    def register_script(self, name: str, source: str) -> None:
        """As :meth:`RedisNode.register_script`, with a ``#!lua`` shebang: Redis then
        refuses a script that touches keys of more than one slot, even on one master
        (without it, Redis 7 lets a script reach any key its master holds)."""
        super().register_script(name, "#!lua\n" + source)

    def execute(self, *args):
        if self.cluster is None:
            return defer.fail(RedisUnavailable("Redis is not reachable"))
        return self.cluster.execute(*args)

    # the sharded bus

    def shard_channel(self, slot: int) -> str:
        """The bus's shard channel of *slot*."""
        return f"{self.prefix}bus:{{{slot_tags()[slot]}}}"

    def room_channel(self, room: str) -> str:
        """*room*'s own shard channel, ``<prefix>rbus:{<room>}``: in the slot of the
        room's keys (the same hash tag), so the room's commit script may SPUBLISH it."""
        return f"{self.prefix}rbus:{{{room}}}"

    def bus_route(self, key, bus, room=None):
        if room is not None and self.url.room_bus:
            return "SPUBLISH", self.room_channel(room)
        return "SPUBLISH", self.shard_channel(key_slot(key))

    def slot_prefix(self, tag: str) -> str:
        return f"{self.prefix}{{{tag}}}:"

    def publish(self, payload: str, room=None):
        """SPUBLISH *payload* on *room*'s own shard channel (typing), or on this node's
        own shard channel (relay, frames to users and rooms, sanctions): one node's
        events on one channel are delivered in the order published."""
        if room is not None and self.url.room_bus:
            channel = self.room_channel(room)
        else:
            channel = self.shard_channel(key_slot(self.node_id))
        d = self.execute("SPUBLISH", channel, payload)
        d.addErrback(lambda f: self.log.warn("Redis publish failed: {e}", e=f.value))
        return d

    def barrier(self, key=None):
        """Fires once this node's subscriber of *key*'s slot (every subscriber, without
        *key*) has received everything published on it before this call."""
        if key is None:
            conns = list(self._subscribed.values())
        else:
            address = self.cluster.map.master(key_slot(key)) if self.cluster else None
            conns = [self._subscribed[address]] if address in self._subscribed else []
        pings = []
        for conn in conns:
            try:
                pings.append(conn.execute_command("PING").addErrback(lambda _: None))
            except Exception:
                continue
        return defer.gatherResults(pings).addCallback(lambda _: None)

    # per-room shard subscriptions

    def _room_address(self, room):
        return self.cluster.map.master(key_slot(self.room_channel(room))) if self.cluster else None

    def room_ready(self, room):
        """Fires once *room*'s own shard channel is subscribed (at once when it is, or
        when the room is not followed); fails with RedisUnavailable after
        ``max(retry_for, 1)`` seconds (its master unreachable, the SSUBSCRIBE refused)."""
        if room not in self.rooms:
            return defer.succeed(None)
        conn = self._room_subs.get(room)
        if conn is not None and conn.connected:
            return defer.succeed(None)
        waiter = defer.Deferred()
        self._room_waiters.setdefault(room, []).append(waiter)

        def late():
            waiters = self._room_waiters.get(room, [])
            if waiter in waiters:
                waiters.remove(waiter)
                if not waiters:
                    del self._room_waiters[room]
            if not waiter.called:
                waiter.errback(
                    RedisUnavailable(f"Redis Cluster: room {room!r} could not be subscribed")
                )

        call = self.reactor.callLater(max(self.url.retry_for, 1.0), late)
        waiter.addBoth(lambda r: call.active() and call.cancel() or r)
        return waiter

    def _follow(self, room):
        """SSUBSCRIBE *room*'s channel on the subscriber of its slot's master (when that
        one is not subscribed yet, its connect subscribes every followed room)."""
        address = self._room_address(room)
        conn = self._subscribed.get(address)
        if conn is None or not conn.connected:
            return
        d = conn.execute_command("SSUBSCRIBE", self.room_channel(room))
        d.addCallbacks(self._room_subscribed, self._room_refused, (room, conn), None, (room,))

    def _room_subscribed(self, _reply, room, conn):
        if room not in self.rooms:  # released (and lingered out) meanwhile
            if conn.connected:
                conn.sunsubscribe(self.room_channel(room)).addErrback(lambda _: None)
            return
        if not conn.connected or self._subscribed.get(conn.factory.role[1]) is not conn:
            return  # lost meanwhile: its successor subscribes again
        self._room_subs[room] = conn
        for waiter in self._room_waiters.pop(room, ()):
            if not waiter.called:  # (a cancelled one has)
                waiter.callback(None)

    def _room_refused(self, failure, room):
        """A MOVED (the map was stale), a refusal or a lost connection: load the map
        again and try again 0.1 s later while the room is followed and not subscribed
        (a connection that comes up subscribes every followed room of its master
        anyway)."""
        self.room_subscribe_failures += 1
        self.log.warn("Redis SSUBSCRIBE of room {room} failed: {e}", room=room, e=failure.value)
        if self.cluster is None or self._stopped_shards:
            return
        d = self.cluster.refresh()
        d.addErrback(lambda _: None)

        def again(_):
            self._sync_shards()
            if room in self.rooms and room not in self._room_subs:
                self._follow(room)

        d.addCallback(lambda _: deferLater(self.reactor, 0.1, again, None))

    def _unfollow(self, room):
        conn = self._room_subs.pop(room, None)
        if conn is not None and conn.connected:
            conn.sunsubscribe(self.room_channel(room)).addErrback(lambda _: None)

    def _rooms_lost(self, conn):
        for room in [r for r, c in self._room_subs.items() if c is conn]:
            del self._room_subs[room]

    def _sync_shards(self):
        """One subscriber per master, subscribed to the shard channels of its slots."""
        if self.cluster is None or self._stopped_shards:
            return
        masters = self.cluster.map.masters()
        for address in list(self._shards):
            factory, slots = self._shards[address]
            if address not in masters or tuple(self.cluster.map.slots_of(address)) != slots:
                del self._shards[address]
                conn = self._subscribed.pop(address, None)
                if conn is not None:
                    self._rooms_lost(conn)
                factory.disconnect()
        for address in masters:
            if address not in self._shards:
                slots = tuple(self.cluster.map.slots_of(address))
                factory = _Factory(self, ("shard", address), _ShardSubscriber, None, address)
                self._shards[address] = (factory, slots)
                factory.startConnecting(endpoint(self.reactor, self.url, address))

    @defer.inlineCallbacks
    def _connected(self, role, conn):
        if not isinstance(role, tuple):
            return (yield super()._connected(role, conn))
        address = role[1]
        entry = self._shards.get(address)
        if entry is None or entry[0] is not conn.factory:
            conn.transport.loseConnection()
            return
        # the slots' channels and the followed rooms' of this master, in one write: the
        # rooms are subscribed again before the node is healthy
        slots = set(entry[1])
        rooms = [r for r in self.rooms.rooms() if key_slot(self.room_channel(r)) in slots]
        channels = [self.shard_channel(slot) for slot in entry[1]]
        try:
            yield conn.ssubscribe_all(channels + [self.room_channel(r) for r in rooms])
        except Exception as e:
            self.log.warn("Redis SSUBSCRIBE on {a} failed: {e}", a=_show(address), e=e)
            conn.transport.abortConnection()
            return
        if conn.connected and self._shards.get(address) is entry:
            self._subscribed[address] = conn
            self.log.info("Redis Cluster bus subscribed on {a}", a=_show(address))
            for room in rooms:
                self._room_subscribed(None, room, conn)
            # rooms followed while this subscription was being made
            for room in self.rooms.rooms():
                if room not in self._room_subs and self._room_address(room) == address:
                    self._follow(room)
        self._update_health()

    def _shard_dropped(self, conn):
        """The master behind *conn* dropped our shard subscriptions (its slots moved):
        subscribe again wherever they are served now."""
        address = conn.factory.role[1]
        entry = self._shards.get(address)
        if entry is None or entry[0] is not conn.factory:
            return
        del self._shards[address]
        self._subscribed.pop(address, None)
        self._rooms_lost(conn)
        self.log.warn(
            "Redis Cluster {a} gave slots away: the bus is subscribed again", a=_show(address)
        )
        self._update_health()
        entry[0].disconnect()
        d = self.cluster.refresh()
        d.addErrback(
            lambda f: self.log.warn("Redis Cluster slot map refresh failed: {e}", e=f.value)
        )
        d.addBoth(lambda _: self._sync_shards())

    def _disconnected(self, role, conn):
        if not isinstance(role, tuple):
            return super()._disconnected(role, conn)
        self._rooms_lost(conn)
        if self._subscribed.get(role[1]) is conn:
            del self._subscribed[role[1]]
            self.disconnects += 1
            self.log.warn("Redis Cluster bus subscriber on {a} lost", a=_show(role[1]))
        self._update_health()

    # lifecycle

    def _connect(self):
        self._stopped_shards = False
        self.cluster = ClusterClient(self.url, self.reactor, prepare=self._load_scripts)
        self.cluster.add_listener(self._cluster_changed)
        d = self.cluster.start()
        d.addErrback(lambda f: self.log.warn("Redis Cluster not reachable yet: {e}", e=f.value))

    @defer.inlineCallbacks
    def _disconnect(self):
        self._stopped_shards = True
        shards, self._shards = self._shards, {}
        self._subscribed.clear()
        self._room_subs.clear()
        for factory, _ in shards.values():
            yield factory.disconnect()
        if self.cluster is not None:
            yield self.cluster.stop()

    def _cluster_changed(self):
        self._sync_shards()
        up = self.cluster.healthy
        if up and not self._cluster_up:
            self._cluster_up = True
            self._run_connect_hooks().addCallback(lambda _: self._update_health())
            return
        self._cluster_up = up
        self._update_health()

    def _is_healthy(self) -> bool:
        if not self._cluster_up or self.cluster is None:
            return False
        return all(a in self._subscribed for a in self.cluster.map.masters())

    def _pinged(self):
        masters = self.cluster.connections().items() if self.cluster is not None else ()
        subscribers = list(self._subscribed.items())
        return [
            *((_show(a), c) for a, c in masters),
            *((f"bus {_show(a)}", c) for a, c in subscribers),
        ]
