"""Cluster mode: many chatd nodes share one Redis (``twistd chatd --redis redis://…``).

Three pieces, all built on one :class:`RedisNode` (this process's Redis
connections):

:class:`RedisNode`
    two txredisapi connections, like Synapse's replication
    (``synapse/replication/tcp/redis.py``): a *command* connection for
    scripts and commands and a *subscriber* connection holding the node's one
    subscription, to the bus channel ``<prefix>bus:<db>``. Both reconnect
    forever with exponential backoff (txredisapi's ``ClientService``), are
    PINGed every ``ping`` seconds (a PING unanswered within ``ping_timeout``
    aborts the connection, which starts a reconnect) and log every state
    change. ``healthy`` is false while either is down.
:class:`RedisBroker`
    an :class:`~chatd.broker.IBroker`: every event is one JSON object on the
    bus, ``{"k": kind, "n": origin node id, "a": args}`` (``"m"``: the
    message of ``message``/``dm``); every node, the origin included, delivers
    it with ``chat.deliver_<kind>`` in the order Redis delivers it. Room
    messages and DMs are published by the history store's commit script
    (:mod:`chatd.store.redis`), atomically with their ``seq``: the chat
    commits them through :meth:`RedisBroker.append`, and the broker's own
    ``publish`` does nothing for those kinds.
:class:`RedisDirectory`
    cluster-wide presence (see :class:`chatd.broker.local.LocalDirectory`):
    per node a set of its ``(room, user)`` memberships (``nr:<node>``) and of
    its online users (``nu:<node>``); per room a hash ``user -> number of
    nodes`` (``rm:{room}``) and a hash ``online`` ``user -> number of nodes``.
    A presence ``join`` is published when the count goes 0 -> 1, ``leave``
    when it goes 1 -> 0, by the same script. Every node refreshes its
    heartbeat key ``hb:<node>`` (TTL ``node_ttl``) every ``heartbeat``
    seconds and, in the same script, reaps every registered node whose
    heartbeat key has expired: its memberships are removed and the leaves
    published. A SIGKILLed node's users are gone from presence within
    ``node_ttl + heartbeat`` seconds.

URL: ``redis://[[user]:password@]host[:port][/db][?prefix=chatd:&heartbeat=2&node_ttl=6&
ping=5&ping_timeout=5&backoff_max=5&connect_timeout=10]``, ``rediss://`` for TLS.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from urllib.parse import parse_qs, unquote, urlsplit

import txredisapi
from twisted.internet import defer
from twisted.internet.defer import fail, succeed
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from zope.interface import implementer

from chatd.broker import KINDS, IBroker, IDirectory
from chatd.store import Message, StoreUnavailable

#: the kinds the history store's commit script publishes
COMMITTED_KINDS = frozenset({"message", "dm"})


class RedisUnavailable(StoreUnavailable):
    """Redis is not connected (or a command to it failed)."""


class RedisURL:
    """A parsed ``--redis`` URL (see the module docstring)."""

    def __init__(self, url: str):
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss"):
            raise ValueError(f"--redis must be a redis:// or rediss:// URL, not {url!r}")
        self.url = url
        self.tls = parts.scheme == "rediss"
        self.host = parts.hostname or "localhost"
        self.port = parts.port or 6379
        self.username = unquote(parts.username) if parts.username else None
        self.password = unquote(parts.password) if parts.password is not None else None
        path = parts.path.strip("/")
        self.db = int(path) if path else 0
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        self.prefix = query.pop("prefix", "chatd:")
        numbers = {
            "heartbeat": 2.0,
            "node_ttl": 6.0,
            "ping": 5.0,
            "ping_timeout": 5.0,
            "backoff_max": 5.0,
            "connect_timeout": 10.0,
        }
        for key, default in numbers.items():
            value = float(query.pop(key, default))
            if value <= 0:
                raise ValueError(f"{key} in the --redis URL must be positive")
            setattr(self, key, value)
        if query:
            raise ValueError(f"unknown --redis URL parameters: {sorted(query)}")
        if self.node_ttl <= self.heartbeat:
            raise ValueError("node_ttl must be longer than heartbeat")

    def redacted(self) -> str:
        """The URL without its password (for logs)."""
        auth = f"{self.username or ''}:***@" if self.password is not None else ""
        scheme = "rediss" if self.tls else "redis"
        return f"{scheme}://{auth}{self.host}:{self.port}/{self.db}"


class _Subscriber(txredisapi.SubscriberProtocol):
    def messageReceived(self, pattern, channel, message):
        self.factory.node._bus_message(message)


class _Factory(txredisapi.RedisFactory):
    """One reconnecting txredisapi connection that reports up/down to the node."""

    factor = 2.0

    def __init__(self, node, role, protocol, dbid):
        u = node.url
        super().__init__(
            f"{u.host}:{u.port}",
            dbid,
            1,
            isLazy=True,
            password=u.password,
            username=u.username,
            convertNumbers=False,
        )
        self.protocol = protocol
        self.node = node
        self.role = role
        self.initialDelay = min(0.2, u.backoff_max)
        self.maxDelay = u.backoff_max
        self.deferred.addErrback(self._failed)

    def _failed(self, failure):
        self.node.log.critical(
            "Redis {role} connection failed for good: {e}", role=self.role, e=failure.value
        )

    def addConnection(self, conn):
        super().addConnection(conn)
        if conn in self.pool:
            self.node._connected(self.role, conn)

    def delConnection(self, conn):
        super().delConnection(conn)
        self.node._disconnected(self.role, conn)


class RedisNode:
    """This chatd process's connections to Redis and its identity in the cluster."""

    log = Logger()

    def __init__(self, url: str | RedisURL, reactor=None, node_id: str | None = None):
        if reactor is None:
            from twisted.internet import reactor
        self.url = url if isinstance(url, RedisURL) else RedisURL(url)
        self.reactor = reactor
        self.node_id = node_id or secrets.token_hex(6)
        self.prefix = self.url.prefix
        self.bus = f"{self.prefix}bus:{self.url.db}"
        self._scripts: dict[str, tuple[str, str]] = {}
        self._conns: dict[str, object] = {}
        self._factories: dict[str, _Factory] = {}
        self._handlers = []  # called with each bus payload
        self._on_up = []  # called (Deferred allowed) when the command connection is up
        self._starts = 0
        self._ready: defer.Deferred | None = None
        self._pinger: LoopingCall | None = None
        self._ever_up = False
        #: False while the command or the subscriber connection is down
        self.healthy = False
        #: number of times a connection was lost
        self.disconnects = 0

    # scripts and commands

    def register_script(self, name: str, source: str) -> None:
        """Make a Lua script callable with :meth:`script`; loaded on every connect."""
        self._scripts[name] = (hashlib.sha1(source.encode()).hexdigest(), source)

    def execute(self, *args):
        """Run one command on the command connection; fails fast while it is down."""
        conn = self._conns.get("command")
        if conn is None:
            return fail(RedisUnavailable("Redis is not reachable"))
        try:
            return conn.execute_command(*args)
        except Exception as e:
            return fail(RedisUnavailable(f"Redis: {e}"))

    def script(self, name: str, keys, args):
        """Run registered script *name* (EVALSHA; EVAL if Redis lost its script cache)."""
        sha, source = self._scripts[name]
        d = self.execute("EVALSHA", sha, len(keys), *keys, *args)

        def noscript(failure):
            if failure.check(txredisapi.ResponseError) and "NOSCRIPT" in str(failure.value):
                return self.execute("EVAL", source, len(keys), *keys, *args)
            return failure

        return d.addErrback(noscript)

    def barrier(self):
        """Fires once the subscriber has received everything published before this call.

        A PING on the subscriber connection is answered in order with the
        messages published to it, so its reply comes after them.
        """
        conn = self._conns.get("subscriber")
        if conn is None:
            return succeed(None)
        try:
            d = conn.execute_command("PING")
        except Exception:
            return succeed(None)
        return d.addErrback(lambda _: None)

    def publish(self, payload: str):
        """PUBLISH *payload* on the bus (fire and forget; failures are logged)."""
        d = self.execute("PUBLISH", self.bus, payload)
        d.addErrback(lambda f: self.log.warn("Redis publish failed: {e}", e=f.value))
        return d

    def add_bus_handler(self, handler) -> None:
        """Call *handler(payload)* for each message on the bus."""
        self._handlers.append(handler)

    def add_connect_hook(self, hook) -> None:
        """Call *hook()* every time the command connection is (re)established."""
        self._on_up.append(hook)

    # lifecycle

    def _endpoint(self):
        u = self.url
        endpoint = HostnameEndpoint(self.reactor, u.host, u.port, timeout=u.connect_timeout)
        if u.tls:
            from twisted.internet.ssl import optionsForClientTLS

            endpoint = wrapClientTLS(optionsForClientTLS(u.host), endpoint)
        return endpoint

    def start(self):
        """Connect (once, however many components start the node).

        Fires when both connections are up, or fails with
        :class:`RedisUnavailable` after ``connect_timeout`` seconds.
        """
        self._starts += 1
        if self._starts > 1:
            return self._ready if self._ready is not None else succeed(None)
        self.log.info(
            "chatd cluster node {node} connecting to {url}",
            node=self.node_id,
            url=self.url.redacted(),
        )
        self._ready = defer.Deferred()
        self._factories = {
            "command": _Factory(self, "command", txredisapi.RedisProtocol, self.url.db),
            "subscriber": _Factory(self, "subscriber", _Subscriber, None),
        }
        for factory in self._factories.values():
            factory.startConnecting(self._endpoint())
        self._pinger = LoopingCall(self._ping)
        self._pinger.clock = self.reactor
        self._pinger.start(self.url.ping, now=False)
        ready = self._ready
        timeout = self.reactor.callLater(
            self.url.connect_timeout,
            lambda: (
                ready.called
                or ready.errback(
                    RedisUnavailable(f"could not connect to Redis at {self.url.redacted()}")
                )
            ),
        )
        ready.addBoth(lambda r: timeout.active() and timeout.cancel() or r)
        return ready

    @defer.inlineCallbacks
    def stop(self):
        """Run the stop hooks (presence leaves), then close both connections."""
        self._starts -= 1
        if self._starts > 0:
            return
        if self._pinger is not None and self._pinger.running:
            self._pinger.stop()
        for hook in getattr(self, "_on_stop", ()):
            try:
                yield hook()
            except Exception as e:
                self.log.warn("Redis stop hook failed: {e}", e=e)
        factories, self._factories = self._factories, {}
        for factory in factories.values():
            yield factory.disconnect()
        self._conns.clear()
        self.healthy = False

    def add_stop_hook(self, hook) -> None:
        """Call *hook()* (Deferred allowed) before the connections close on stop."""
        self.__dict__.setdefault("_on_stop", []).append(hook)

    @defer.inlineCallbacks
    def _connected(self, role, conn):
        if role == "subscriber":
            try:
                yield conn.subscribe(self.bus)
            except Exception as e:
                self.log.warn("Redis SUBSCRIBE failed: {e}", e=e)
                conn.transport.abortConnection()
                return
        else:
            try:
                for sha, source in self._scripts.values():
                    loaded = yield conn.execute_command("SCRIPT", "LOAD", source)
                    assert loaded == sha, (loaded, sha)
            except Exception as e:
                self.log.warn("Loading scripts into Redis failed: {e}", e=e)
                conn.transport.abortConnection()
                return
        if not conn.connected:
            return
        self._conns[role] = conn
        self.log.info("Redis {role} connection up ({url})", role=role, url=self.url.redacted())
        if role == "command":
            for hook in self._on_up:
                try:
                    yield hook()
                except Exception as e:
                    self.log.warn("Redis connect hook failed: {e}", e=e)
        self._update_health()

    def _disconnected(self, role, conn):
        if self._conns.get(role) is conn:
            del self._conns[role]
            self.disconnects += 1
            self.log.warn(
                "Redis {role} connection lost; reconnecting with backoff (up to {max}s)",
                role=role,
                max=self.url.backoff_max,
            )
        self._update_health()

    def _update_health(self):
        healthy = "command" in self._conns and "subscriber" in self._conns
        if healthy == self.healthy:
            return
        self.healthy = healthy
        if healthy:
            self.log.info("chatd cluster node {node} healthy: Redis reachable", node=self.node_id)
            if self._ready is not None and not self._ready.called:
                self._ready.callback(None)
        elif self._factories:
            self.log.warn(
                "chatd cluster node {node} degraded: Redis unreachable; sends are refused "
                "with 'unavailable' until it is back",
                node=self.node_id,
            )

    def _ping(self):
        for role, conn in list(self._conns.items()):
            try:
                d = conn.execute_command("PING")
            except Exception:
                continue
            d.addTimeout(self.url.ping_timeout, self.reactor)

            def lost(failure, role=role, conn=conn):
                self.log.warn("Redis {role} PING failed: {e}", role=role, e=failure.value)
                if conn.transport is not None:
                    conn.transport.abortConnection()

            d.addErrback(lost)

    def _bus_message(self, payload):
        for handler in self._handlers:
            try:
                handler(payload)
            except Exception:
                self.log.failure("Delivering a bus message failed: {payload!r}", payload=payload)


# -- the broker -----------------------------------------------------------------


@implementer(IBroker)
class RedisBroker:
    """Carries chat events between nodes over the node bus (see the module docstring)."""

    log = Logger()

    def __init__(self, node: RedisNode):
        self.node = node
        self.chat = None
        node.add_bus_handler(self._received)
        #: events received from the bus, by kind
        self.received = dict.fromkeys(KINDS, 0)

    @property
    def healthy(self):
        return self.node.healthy

    def attach(self, chat):
        self.chat = chat
        self._deliver = {kind: getattr(chat, "deliver_" + kind) for kind in KINDS}

    def append(self, store, kind, fields, args):
        """Commit a message with *store* and publish it on the bus in the same script.

        *store* must offer ``append_published`` (:class:`chatd.store.redis.RedisStore`):
        the commit and the PUBLISH are one atomic step, so every node gets each
        channel's messages in seq order.
        """
        head = json.dumps({"k": kind, "n": self.node.node_id, "a": list(args)})
        return store.append_published(*fields, self.node.bus, head[:-1] + ',"m":')

    def publish(self, kind, *args):
        if kind in COMMITTED_KINDS:
            return  # published by the store's commit script, in seq order
        if kind == "relay":
            payload, is_binary, origin = args
            args = (base64.b64encode(payload).decode(), is_binary, origin)
        self.node.publish(json.dumps({"k": kind, "n": self.node.node_id, "a": list(args)}))

    def _received(self, payload):
        event = json.loads(payload)
        kind, args = event["k"], event["a"]
        self.received[kind] += 1
        if self.chat is None:
            return
        mine = event.get("n") == self.node.node_id
        if kind in COMMITTED_KINDS:
            message = Message(*event["m"])
            if kind == "message":
                origin, from_relay = args
                self._deliver[kind](message, origin if mine else None, from_relay)
            else:
                to, origin = args
                self._deliver[kind](message, to, origin if mine else None)
            return
        *rest, origin = args
        if kind == "relay":
            rest[0] = base64.b64decode(rest[0])
        self._deliver[kind](*rest, origin if mine else None)


# -- presence -------------------------------------------------------------------

#: KEYS: nu:<node>, online, an:<user>. ARGV: user, exclusive ("1" for anonymous
#: names), epoch (the anonymous session's id). Returns 1 (CLAIMED) when the user is
#: registered on this node, 0 (TAKEN) when an exclusive name is online on another
#: node, 2 (SUPERSEDED) when it is registered but ``an:<user>`` (the session that
#: last held the name, anywhere) was not *epoch*.
CONNECT = r"""
if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 1 then return 1 end
local result = 1
if ARGV[2] == '1' then
  if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1 then return 0 end
  if redis.call('GET', KEYS[3]) ~= ARGV[3] then result = 2 end
  redis.call('SET', KEYS[3], ARGV[3])
end
redis.call('SADD', KEYS[1], ARGV[1])
redis.call('HINCRBY', KEYS[2], ARGV[1], 1)
return result
"""

#: KEYS: nu:<node>, online, an:<user>. ARGV: user, ms to keep ``an:<user>`` once the
#: user is offline everywhere (its session's resume grace; 0: none kept)
DISCONNECT = r"""
if redis.call('SREM', KEYS[1], ARGV[1]) == 1 then
  if redis.call('HINCRBY', KEYS[2], ARGV[1], -1) <= 0 then
    redis.call('HDEL', KEYS[2], ARGV[1])
    if ARGV[2] ~= '0' then redis.call('PEXPIRE', KEYS[3], ARGV[2]) end
  end
end
return 1
"""

#: KEYS: nr:<node>, rm:{room}. ARGV: member, user, bus, payload, +1 / -1
MEMBERSHIP = r"""
if ARGV[5] == '1' then
  if redis.call('SADD', KEYS[1], ARGV[1]) == 1 then
    if redis.call('HINCRBY', KEYS[2], ARGV[2], 1) == 1 then
      redis.call('PUBLISH', ARGV[3], ARGV[4])
    end
  end
else
  if redis.call('SREM', KEYS[1], ARGV[1]) == 1 then
    if redis.call('HINCRBY', KEYS[2], ARGV[2], -1) <= 0 then
      redis.call('HDEL', KEYS[2], ARGV[2])
      redis.call('PUBLISH', ARGV[3], ARGV[4])
    end
  end
end
return 1
"""

_REAP = r"""
local function reap(p, bus, node)
  for _, m in ipairs(redis.call('SMEMBERS', p .. 'nr:' .. node)) do
    local ru = cjson.decode(m)
    local rm = p .. 'rm:{' .. ru[1] .. '}'
    if redis.call('HINCRBY', rm, ru[2], -1) <= 0 then
      redis.call('HDEL', rm, ru[2])
      redis.call('PUBLISH', bus, cjson.encode({k = 'presence', n = node,
        a = {ru[1], ru[2], 'leave', cjson.null}}))
    end
  end
  for _, u in ipairs(redis.call('SMEMBERS', p .. 'nu:' .. node)) do
    if redis.call('HINCRBY', p .. 'online', u, -1) <= 0 then redis.call('HDEL', p .. 'online', u) end
  end
  redis.call('DEL', p .. 'nr:' .. node, p .. 'nu:' .. node)
  redis.call('SREM', p .. 'nodes', node)
end
"""

#: ARGV: prefix, bus, node, ttl_ms. Refreshes this node's heartbeat and reaps
#: every node whose heartbeat expired; returns {1 if this node's heartbeat was
#: still alive else 0, reaped node ids}.
HEARTBEAT = (
    _REAP
    + r"""
local p, bus, me = ARGV[1], ARGV[2], ARGV[3]
local alive = redis.call('EXISTS', p .. 'hb:' .. me)
redis.call('SET', p .. 'hb:' .. me, '1', 'PX', ARGV[4])
redis.call('SADD', p .. 'nodes', me)
local reaped = {}
for _, node in ipairs(redis.call('SMEMBERS', p .. 'nodes')) do
  if node ~= me and redis.call('EXISTS', p .. 'hb:' .. node) == 0 then
    reap(p, bus, node)
    reaped[#reaped + 1] = node
  end
end
return {alive, reaped}
"""
)

#: ARGV: prefix, bus, node. A node leaving the cluster (clean shutdown).
REAP_SELF = (
    _REAP
    + r"""
reap(ARGV[1], ARGV[2], ARGV[3])
redis.call('DEL', ARGV[1] .. 'hb:' .. ARGV[3])
return 1
"""
)

#: ARGV: prefix, bus, node, n_members, members..., users...
#: Makes this node's registrations equal to what it really has (after a reconnect).
RESYNC = r"""
local p, bus, me = ARGV[1], ARGV[2], ARGV[3]
local n = tonumber(ARGV[4])
local want, users = {}, {}
for i = 5, 4 + n do want[ARGV[i]] = true end
for i = 5 + n, #ARGV do users[ARGV[i]] = true end
local nr, nu = p .. 'nr:' .. me, p .. 'nu:' .. me
for _, m in ipairs(redis.call('SMEMBERS', nr)) do
  if not want[m] then
    local ru = cjson.decode(m)
    local rm = p .. 'rm:{' .. ru[1] .. '}'
    redis.call('SREM', nr, m)
    if redis.call('HINCRBY', rm, ru[2], -1) <= 0 then
      redis.call('HDEL', rm, ru[2])
      redis.call('PUBLISH', bus, cjson.encode({k = 'presence', n = me, a = {ru[1], ru[2], 'leave', cjson.null}}))
    end
  else
    want[m] = nil
  end
end
for m, _ in pairs(want) do
  local ru = cjson.decode(m)
  redis.call('SADD', nr, m)
  if redis.call('HINCRBY', p .. 'rm:{' .. ru[1] .. '}', ru[2], 1) == 1 then
    redis.call('PUBLISH', bus, cjson.encode({k = 'presence', n = me, a = {ru[1], ru[2], 'join', cjson.null}}))
  end
end
for _, u in ipairs(redis.call('SMEMBERS', nu)) do
  if not users[u] then
    redis.call('SREM', nu, u)
    if redis.call('HINCRBY', p .. 'online', u, -1) <= 0 then redis.call('HDEL', p .. 'online', u) end
  else
    users[u] = nil
  end
end
for u, _ in pairs(users) do
  redis.call('SADD', nu, u)
  redis.call('HINCRBY', p .. 'online', u, 1)
end
return 1
"""

DIRECTORY_SCRIPTS = {
    "connect": CONNECT,
    "disconnect": DISCONNECT,
    "membership": MEMBERSHIP,
    "heartbeat": HEARTBEAT,
    "reap_self": REAP_SELF,
    "resync": RESYNC,
}


@implementer(IDirectory)
class RedisDirectory:
    """Cluster-wide presence, online users and names (see the module docstring)."""

    log = Logger()

    def __init__(self, node: RedisNode):
        self.node = node
        self.chat = None
        self._beat: LoopingCall | None = None
        for name, source in DIRECTORY_SCRIPTS.items():
            node.register_script(name, source)
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

        def reaped(result):
            alive, nodes = result
            if not int(alive):
                # this node was silent too long (paused, partitioned) and may
                # have been reaped by the others: register everything again
                self.log.warn(
                    "chatd node {node} lost its heartbeat: re-registering", node=self.node.node_id
                )
                self._resync()
            for node in nodes or ():
                self.reaped.append(node)
                self.log.warn("chatd node {node} stopped heartbeating: its users left", node=node)

        d.addCallback(reaped)
        return self._logged(d, "heartbeat")

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

    def disconnected(self, conn, user):
        if self.chat is not None and self.chat.holds(user):
            return
        keep = 0
        if getattr(conn, "identity", None) is None and self.chat is not None:
            keep = int(self.chat.names.grace * 1000)
        d = self.node.script("disconnect", self._name_keys(user), [user, keep])
        self._logged(d, "disconnect")

    def _membership(self, room, user, event, origin, delta):
        payload = json.dumps(
            {"k": "presence", "n": self.node.node_id, "a": [room, user, event, origin]}
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
