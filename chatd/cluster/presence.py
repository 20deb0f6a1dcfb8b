"""Presence: who is where, on this node or across a cluster (:class:`IDirectory`).

:class:`LocalDirectory`
    one process: answers from the chat's hub, announces joins and leaves
    through the chat's broker.
:class:`RedisDirectory`
    cluster-wide presence on a :class:`chatd.cluster.redis.RedisNode`: per
    node a set of its ``(room, user)`` memberships (``nr:<node>``) and of its
    online users (``nu:<node>``); per room a hash ``user -> number of nodes``
    (``rm:{room}``) and a hash ``online`` ``user -> number of nodes``. A
    presence ``join`` is published when the count goes 0 -> 1, ``leave`` when
    it goes 1 -> 0, by the same script (``lua/membership.lua``). Every node
    refreshes its heartbeat key ``hb:<node>`` (TTL ``node_ttl``) every
    ``heartbeat`` seconds and, in the same script (``lua/heartbeat.lua``),
    reaps every registered node whose heartbeat key has expired: its
    memberships are removed and the leaves published. A SIGKILLed node's users
    are gone from presence within ``node_ttl + heartbeat`` seconds. Anonymous
    names are claimed cluster-wide by ``lua/connect.lua``.
"""

from __future__ import annotations

import json

from twisted.internet import defer
from twisted.internet.defer import succeed
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from zope.interface import Attribute, Interface, implementer

from chatd.cluster import codec
from chatd.cluster.scripts import SOURCES

#: answers of a cluster-wide name claim (:meth:`IDirectory.connected`): the name is
#: this node's now; it is held on another node; it is this node's, but another
#: session held it since the claiming anonymous session last did
TAKEN, CLAIMED, SUPERSEDED = 0, 1, 2

#: the Lua scripts (chatd.cluster.scripts) the Redis directory runs
DIRECTORY_SCRIPTS = ("connect", "disconnect", "membership", "heartbeat", "reap_self", "resync")


class IDirectory(Interface):
    """Who is where: presence and online users, on this node or across a cluster.

    :class:`chatd.chat.Chat` keeps its connections in :class:`chatd.hub.Hub`
    and tells the directory about user-level changes on this node; the
    directory decides what the cluster (or the single process) sees. The
    local implementation (:class:`LocalDirectory`) answers from the hub; the
    Redis one (:class:`RedisDirectory`) counts users across nodes. ``members``
    and ``is_online`` always return a Deferred (the local one's has fired
    already).
    """

    def attach(chat):
        """Serve *chat* (this node's :class:`chatd.chat.Chat`)."""

    cluster_wide = Attribute(
        "True when names are claimed cluster-wide (connected answers with a Deferred)"
    )

    def connected(conn, epoch):
        """A chatd.v1 connection of ``conn.user`` opened on this node.

        *epoch* is the id of the connection's anonymous session
        (:class:`chatd.anonymous.AnonymousSession`), None for a token user.
        Returns None when this node alone decides names (the chat has checked
        it), else a Deferred firing with :data:`CLAIMED` (also when the name is
        held on other nodes by the same session, *epoch*: a reconnect that gave
        the session's secret), :data:`TAKEN` (an anonymous name held on another
        node by another session) or :data:`SUPERSEDED` (claimed, but another
        session had the name since *epoch* last held it). The chat executes none
        of the connection's frames before it fires.
        """

    def disconnected(conn, user):
        """A connection of *user* closed on this node (it has left its rooms already)."""

    def joined(room, user, origin):
        """*user* has its first connection in *room* on this node: announce the join
        (once per user across the cluster)."""

    def left(room, user, origin):
        """*user*'s last connection in *room* on this node left: announce the leave
        when it was the user's last anywhere."""

    def members(room):
        """A Deferred firing with the sorted distinct user ids in *room*."""

    def is_online(user):
        """A Deferred firing with True when *user* has a chatd.v1 connection."""


@implementer(IDirectory)
class LocalDirectory:
    """Presence of one process: answers from the chat's hub, announces through its broker."""

    cluster_wide = False

    def __init__(self):
        self.chat = None

    def attach(self, chat):
        self.chat = chat

    def connected(self, conn, epoch):
        return None  # the chat's own name check is the whole truth

    def disconnected(self, conn, user):
        pass

    def joined(self, room, user, origin):
        self.chat.broker.publish("presence", room, user, "join", origin)

    def left(self, room, user, origin):
        self.chat.broker.publish("presence", room, user, "leave", origin)

    def members(self, room):
        return succeed(self.chat.hub.members(room))

    def is_online(self, user):
        return succeed(self.chat.hub.is_online(user))


@implementer(IDirectory)
class RedisDirectory:
    """Cluster-wide presence, online users and names (see the module docstring)."""

    cluster_wide = True

    log = Logger()
    SCRIPTS = DIRECTORY_SCRIPTS

    def __init__(self, node):
        """*node* is this process's :class:`chatd.cluster.redis.RedisNode`."""
        self.node = node
        self.chat = None
        self._beat: LoopingCall | None = None
        for name in self.SCRIPTS:
            node.register_script(name, SOURCES[name])
        node.add_connect_hook(self._resync)
        node.add_stop_hook(self._leave_cluster)
        #: node ids this node found dead and reaped
        self.reaped: list[str] = []

    def attach(self, chat):
        self.chat = chat
        self._beat = LoopingCall(self._heartbeat)
        self._beat.clock = self.node.reactor
        self._beat.start(self.node.url.heartbeat, now=False)

    # keys

    def _k(self, name):
        return f"{self.node.prefix}{name}:{self.node.node_id}"

    def _room(self, room):
        return f"{self.node.prefix}rm:{{{room}}}"

    def _logged(self, d, what):
        d.addErrback(
            lambda f: self.log.warn("Redis presence {what} failed: {e}", what=what, e=f.value)
        )
        return d

    # heartbeat and reaping

    def _heartbeat(self):
        if "command" not in self.node._conns:
            return None
        u = self.node.url
        d = self.node.script(
            "heartbeat",
            [],
            [self.node.prefix, self.node.bus, self.node.node_id, int(u.node_ttl * 1000)],
        )

        d.addCallback(lambda result: self._beaten(*result))
        return self._logged(d, "heartbeat")

    def _beaten(self, alive, nodes):
        """After a heartbeat: *alive*, whether this node's heartbeat was still there;
        *nodes*, the dead nodes it reaped."""
        if not int(alive):
            # this node was silent too long (paused, partitioned) and may
            # have been reaped by the others: register everything again
            self.log.warn(
                "chatd node {node} lost its heartbeat: re-registering", node=self.node.node_id
            )
            self._resync()
        for node in nodes or ():
            self._found_dead(node)

    def _found_dead(self, node):
        self.reaped.append(node)
        self.log.warn("chatd node {node} stopped heartbeating: its users left", node=node)

    def _state(self):
        chat = self.chat
        members, users = set(), set()
        if chat is not None:
            for name, room in chat.hub.rooms.items():
                for user in room.users:
                    members.add(json.dumps([name, user], ensure_ascii=False))
            users.update(chat.hub.connections)
            users.update(chat.opening_users())  # their CONNECT may be ahead of this
        return sorted(members), sorted(users)

    def _resync(self):
        """After (re)connecting: heartbeat, then register exactly what this node has."""
        u = self.node.url
        members, users = self._state()
        d = self.node.script(
            "heartbeat",
            [],
            [self.node.prefix, self.node.bus, self.node.node_id, int(u.node_ttl * 1000)],
        )
        d.addCallback(
            lambda _: self.node.script(
                "resync",
                [],
                [
                    self.node.prefix,
                    self.node.bus,
                    self.node.node_id,
                    len(members),
                    *members,
                    *users,
                ],
            )
        )
        return self._logged(d, "resync")

    def _leave_cluster(self):
        if self._beat is not None and self._beat.running:
            self._beat.stop()
        d = self.node.script("reap_self", [], [self.node.prefix, self.node.bus, self.node.node_id])
        return self._logged(d, "leave")

    # IDirectory

    def _name_keys(self, user):
        p = self.node.prefix
        return [self._k("nu"), p + "online", p + "an:" + user]

    def connected(self, conn, epoch):
        exclusive = "0" if epoch is None else "1"
        d = self.node.script(
            "connect", self._name_keys(conn.user), [conn.user, exclusive, epoch or ""]
        )
        return d.addCallback(int)

    def _keep_ms(self, conn, user):
        """How long to keep ``an:<user>`` once *user* is offline (ms); None while this
        node still holds the user."""
        if self.chat is not None and self.chat.holds(user):
            return None
        if getattr(conn, "identity", None) is None and self.chat is not None:
            return int(self.chat.names.grace * 1000)
        return 0

    def disconnected(self, conn, user):
        keep = self._keep_ms(conn, user)
        if keep is None:
            return
        d = self.node.script("disconnect", self._name_keys(user), [user, keep])
        self._logged(d, "disconnect")

    def _membership(self, room, user, event, origin, delta):
        payload = codec.encode(
            codec.BusEvent("presence", self.node.node_id, (room, user, event, origin))
        )
        member = json.dumps([room, user], ensure_ascii=False)
        d = self.node.script(
            "membership",
            [self._k("nr"), self._room(room)],
            [member, user, self.node.bus, payload, delta],
        )
        self._logged(d, "membership")

    def joined(self, room, user, origin):
        self._membership(room, user, "join", origin, 1)

    def left(self, room, user, origin):
        self._membership(room, user, "leave", origin, -1)

    def members(self, room):
        d = self.node.execute("HKEYS", self._room(room))
        return d.addCallback(sorted)

    def is_online(self, user):
        d = self.node.execute("HEXISTS", self.node.prefix + "online", user)
        return d.addCallback(lambda n: bool(int(n)))


#: the Lua scripts (chatd.cluster.scripts) the Redis Cluster directory runs (one slot each)
CLUSTER_DIRECTORY_SCRIPTS = ("connect_user", "disconnect_user", "membership")


def _gather(ds):
    d = defer.gatherResults(ds, consumeErrors=True)
    return d.addErrback(lambda f: f.value.subFailure)


@implementer(IDirectory)
class RedisClusterDirectory(RedisDirectory):
    """:class:`RedisDirectory` on a Redis Cluster: every script touches one slot.

    Keys: per node (hash tag ``n:<node>``) ``hb:`` (the heartbeat), ``nu:`` (its
    online users) and ``nr:`` (its ``[room, user]`` memberships), the indexes a
    reaper reads; per user ``on:{user}`` (the nodes where the user is online) and
    ``an:{user}``; per room ``rn:{room}`` (its ``[node, user]`` memberships) and
    ``rm:{room}`` (user -> number of nodes, as with one Redis); ``nodes``. A join
    or a connect is sent to the node's index and the room's or user's slot at
    once, a leave or disconnect to the node's index only after the slot's script,
    so a node that dies in between leaves nothing its reaper cannot find;
    one ``(room, user)``'s or one user's changes are queued (:meth:`_in_turn`) so
    they reach Redis in the order made. Every step is idempotent (the set
    adds/removes guard the counters), so a resync repairs an index write that
    failed and two nodes reaping the same dead node do no harm.
    The heartbeat is ``SET hb PX ttl GET`` and reaping is per dead node, a few
    commands per key's slot.
    """

    SCRIPTS = CLUSTER_DIRECTORY_SCRIPTS

    def __init__(self, node):
        super().__init__(node)
        #: per (room, user) / user: the end of the last queued change (_in_turn)
        self._turns: dict[tuple, defer.Deferred] = {}

    def _nk(self, name, node=None):
        """A key of *node* (this one by default): ``P name:{n:<node>}``."""
        return f"{self.node.prefix}{name}:{{n:{node or self.node.node_id}}}"

    def _uk(self, name, user):
        return f"{self.node.prefix}{name}:{{{user}}}"

    # heartbeat and reaping

    def _heartbeat(self):
        if not self.node.healthy:
            return None
        return self._logged(self._beat_and_reap(), "heartbeat")

    def _refresh_heartbeat(self):
        """Refresh this node's heartbeat; fires with whether it was still alive."""
        ttl = int(self.node.url.node_ttl * 1000)
        d = self.node.execute("SET", self._nk("hb"), "1", "PX", ttl, "GET")
        d.addCallback(
            lambda old: self.node.execute(
                "SADD", self.node.prefix + "nodes", self.node.node_id
            ).addCallback(lambda _: old is not None)
        )
        return d

    @defer.inlineCallbacks
    def _beat_and_reap(self):
        alive = yield self._refresh_heartbeat()
        nodes = yield self.node.execute("SMEMBERS", self.node.prefix + "nodes")
        others = [n for n in nodes if n != self.node.node_id]
        beating = yield _gather([self.node.execute("EXISTS", self._nk("hb", n)) for n in others])
        dead = [n for n, up in zip(others, beating, strict=True) if not int(up)]
        self._beaten(alive, ())
        for node in dead:
            self._found_dead(node)  # logged first: the leaves are published while reaping
            yield self._reap(node)

    @defer.inlineCallbacks
    def _reap(self, node):
        """Remove *node*'s memberships and online users, announcing the leaves."""
        members = yield self.node.execute("SMEMBERS", self._nk("nr", node))
        leaves = [self._member(*json.loads(m), "leave", None, -1, node) for m in members]
        yield _gather(leaves)
        users = yield self.node.execute("SMEMBERS", self._nk("nu", node))
        yield _gather([self._user_gone(user, node, 0) for user in users])
        yield self.node.execute("DEL", self._nk("nr", node), self._nk("nu", node))
        yield self.node.execute("SREM", self.node.prefix + "nodes", node)

    @defer.inlineCallbacks
    def _resync_cluster(self):
        me = self.node.node_id
        yield self._refresh_heartbeat()
        members, users = self._state()
        had_members = yield self.node.execute("SMEMBERS", self._nk("nr"))
        had_users = yield self.node.execute("SMEMBERS", self._nk("nu"))
        ds = [
            self._member(*json.loads(m), "leave", None, -1, me)
            for m in set(had_members) - set(members)
        ]
        ds += [self._member(*json.loads(m), "join", None, 1, me) for m in members]
        ds += [self._user_gone(u, me, 0) for u in set(had_users) - set(users)]
        ds += [self._user_here(u, "0", "") for u in users]
        yield _gather(ds)

    def _resync(self):
        return self._logged(self._resync_cluster(), "resync")

    @defer.inlineCallbacks
    def _leave(self):
        yield self._reap(self.node.node_id)
        yield self.node.execute("DEL", self._nk("hb"))

    def _leave_cluster(self):
        if self._beat is not None and self._beat.running:
            self._beat.stop()
        return self._logged(self._leave(), "leave")

    # the steps

    def _in_turn(self, key, step):
        """Run *step()* (a Deferred) once the step queued before under *key* is over:
        one ``(room, user)``'s or one user's changes reach Redis in the order made."""
        before = self._turns.get(key)
        after = defer.Deferred()  # fires once this step is over
        self._turns[key] = after

        def go(_=None):
            def over(result):
                if self._turns.get(key) is after:
                    del self._turns[key]
                after.callback(None)
                return result

            return defer.maybeDeferred(step).addBoth(over)

        if before is None:
            return go()
        result = defer.Deferred()
        before.addCallback(lambda _: go().chainDeferred(result))
        return result

    def _member(self, room, user, event, origin, delta, node):
        """A membership change of *node* (join: delta 1, leave: -1): a join is sent to
        the node's index and the room at once (in the same reactor turn: the room's
        members read next see it); a leave goes to the room, then the index (a node
        dying between the two leaves nothing its reaper cannot find)."""
        payload = codec.encode(codec.BusEvent("presence", node, (room, user, event, origin)))
        entry = json.dumps([room, user], ensure_ascii=False)
        keys = [f"{self.node.prefix}rn:{{{room}}}", self._room(room)]
        publish, bus = self.node.bus_route(keys[0], self.node.bus, room)
        member = json.dumps([node, user], ensure_ascii=False)

        @defer.inlineCallbacks
        def step():
            args = [member, user, bus, payload, delta, publish]
            if delta > 0:  # at once: a read of the room right after sees the join
                yield _gather(
                    [
                        self.node.execute("SADD", self._nk("nr", node), entry),
                        self.node.script("membership", keys, args),
                    ]
                )
            else:
                yield self.node.script("membership", keys, args)
                yield self.node.execute("SREM", self._nk("nr", node), entry)

        return self._in_turn(("member", node, room, user), step)

    def _user_here(self, user, exclusive, epoch):
        """*user* online on this node: the node's index and the user's script, sent at
        once (a connect is answered as fast as with one Redis); fires with the
        script's answer (a name claim)."""

        @defer.inlineCallbacks
        def step():
            added, result = yield _gather(
                [
                    self.node.execute("SADD", self._nk("nu"), user),
                    self.node.script(
                        "connect_user",
                        [self._uk("on", user), self._uk("an", user)],
                        [self.node.node_id, exclusive, epoch],
                    ),
                ]
            )
            if not int(result) and int(added):  # TAKEN: not online here after all
                yield self.node.execute("SREM", self._nk("nu"), user)
            return int(result)

        return self._in_turn(("user", self.node.node_id, user), step)

    def _user_gone(self, user, node, keep_ms):
        """*user* offline on *node*: the user's script, then the node's index."""

        @defer.inlineCallbacks
        def step():
            keys = [self._uk("on", user), self._uk("an", user)]
            yield self.node.script("disconnect_user", keys, [node, keep_ms])
            yield self.node.execute("SREM", self._nk("nu", node), user)

        return self._in_turn(("user", node, user), step)

    # IDirectory

    def connected(self, conn, epoch):
        exclusive = "0" if epoch is None else "1"
        return self._user_here(conn.user, exclusive, epoch or "")

    def disconnected(self, conn, user):
        keep = self._keep_ms(conn, user)
        if keep is not None:
            self._logged(self._user_gone(user, self.node.node_id, keep), "disconnect")

    def _membership(self, room, user, event, origin, delta):
        d = self._member(room, user, event, origin, delta, self.node.node_id)
        self._logged(d, "membership")

    def is_online(self, user):
        d = self.node.execute("EXISTS", self._uk("on", user))
        return d.addCallback(lambda n: bool(int(n)))
