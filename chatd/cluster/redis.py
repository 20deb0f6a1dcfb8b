"""Cluster mode: many chatd nodes share one Redis (``twistd chatd --redis redis://…``).

Built on one :class:`RedisNode` (this process's Redis connections):

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
    an :class:`~chatd.cluster.IBroker`: every event is one JSON object on the
    bus (:mod:`chatd.cluster.codec`); every node, the origin included,
    delivers it with ``chat.deliver_<kind>`` in the order Redis delivers it.
:class:`RedisMessageLog`
    an :class:`~chatd.interfaces.IMessageLog`: room messages and DMs are
    published by the history store's commit script
    (:mod:`chatd.store.redis`, ``lua/append.lua``), atomically with their
    ``seq``; the broker's own ``publish`` does nothing for those kinds.

Presence across the cluster is :class:`chatd.cluster.presence.RedisDirectory`,
on the same node.

URL: ``redis://[[user]:password@]host[:port][/db][?prefix=chatd:&heartbeat=2&node_ttl=6&
ping=5&ping_timeout=5&backoff_max=5&connect_timeout=10]``, ``rediss://`` for TLS
(``tls_ca=/path/ca.pem``: trust that PEM bundle instead of the system's);
``redis+cluster://host:port,host:port/?…`` (``rediss+cluster://``) for a Redis Cluster,
served by :class:`chatd.cluster.rediscluster.RedisClusterNode` (:func:`make_node`).
"""

from __future__ import annotations

import hashlib
import secrets
from urllib.parse import parse_qs, unquote, urlsplit

import txredisapi
from twisted.internet import defer
from twisted.internet.defer import fail, succeed
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from zope.interface import implementer

from chatd.cluster import KINDS, IBroker, codec
from chatd.cluster.codec import COMMITTED_KINDS
from chatd.interfaces import IMessageLog
from chatd.store import StoreUnavailable


class RedisUnavailable(StoreUnavailable):
    """Redis is not connected (or a command to it failed)."""


class RedisURL:
    """A parsed ``--redis`` URL (see the module docstring).

    ``redis+cluster://[[user]:password@]host1[:port],host2[:port],…/[?params]``
    (``rediss+cluster`` for TLS) names a Redis Cluster by one or more seed nodes:
    the rest of the cluster is discovered from them (``CLUSTER SLOTS``). A cluster
    has only db 0. ``retry_for`` (seconds, default 2) bounds how long a command
    waits for a slot's master while the cluster fails over. ``room_linger``
    (seconds, default 30) is how long a cluster node keeps following a room after
    its last local connection left it; ``room_bus=0`` publishes rooms' events on the
    per-slot bus as the previous release did (a rolling upgrade, docs/cluster.md).
    """

    SCHEMES = ("redis", "rediss", "redis+cluster", "rediss+cluster")

    def __init__(self, url: str):
        parts = urlsplit(url)
        if parts.scheme not in self.SCHEMES:
            raise ValueError(
                "--redis must be a redis://, rediss://, redis+cluster:// or "
                f"rediss+cluster:// URL, not {url!r}"
            )
        self.url = url
        self.tls = parts.scheme.startswith("rediss")
        self.cluster = parts.scheme.endswith("+cluster")
        auth, _, hosts = parts.netloc.rpartition("@")
        user, colon, password = auth.partition(":")
        self.username = unquote(user) if user else None
        self.password = unquote(password) if colon else None
        self.seeds = [_address(h) for h in hosts.split(",")] if self.cluster else []
        if self.cluster:
            self.host, self.port = self.seeds[0]
        else:
            self.host = parts.hostname or "localhost"
            self.port = parts.port or 6379
        path = parts.path.strip("/")
        self.db = int(path) if path else 0
        if self.cluster and self.db != 0:
            raise ValueError("a Redis Cluster has only db 0")
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        self.prefix = query.pop("prefix", "chatd:")
        self.tls_ca = query.pop("tls_ca", None)
        room_bus = query.pop("room_bus", "1")
        if room_bus not in ("0", "1"):
            raise ValueError("room_bus in the --redis URL must be 0 or 1")
        #: Redis Cluster: publish a room's events on the room's own shard channel
        #: (0: on the per-slot bus, as the previous release did: for a rolling upgrade)
        self.room_bus = room_bus == "1"
        if self.tls_ca is not None and not self.tls:
            raise ValueError("tls_ca in the --redis URL needs rediss:// (TLS)")
        #: the certificates of tls_ca (None: the system trust store)
        self.trust = _certificates(self.tls_ca) if self.tls_ca is not None else None
        numbers = {
            "heartbeat": 2.0,
            "node_ttl": 6.0,
            "ping": 5.0,
            "ping_timeout": 5.0,
            "backoff_max": 5.0,
            "connect_timeout": 10.0,
            "retry_for": 2.0,
            "room_linger": 30.0,
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
        scheme = ("rediss" if self.tls else "redis") + ("+cluster" if self.cluster else "")
        if self.cluster:
            return f"{scheme}://{auth}" + ",".join(f"{h}:{p}" for h, p in self.seeds) + "/"
        return f"{scheme}://{auth}{self.host}:{self.port}/{self.db}"


def _certificates(path: str):
    """The Twisted trust root of the PEM certificates in the file *path*."""
    from twisted.internet import ssl

    try:
        with open(path, encoding="ascii") as f:
            pem = f.read()
    except (OSError, ValueError) as e:
        raise ValueError(f"tls_ca in the --redis URL: cannot read {path}: {e}") from e
    end = "-----END CERTIFICATE-----"
    blocks = [b + end for b in pem.split(end) if "-----BEGIN CERTIFICATE-----" in b]
    try:
        certs = [ssl.Certificate.loadPEM(b.encode("ascii")) for b in blocks]
    except Exception as e:
        raise ValueError(f"tls_ca in the --redis URL: {path} is not PEM: {e}") from e
    if not certs:
        raise ValueError(f"tls_ca in the --redis URL: no certificate in {path}")
    return ssl.trustRootFromCertificates(certs)


def _address(text: str) -> tuple[str, int]:
    """``host[:port]`` or ``[v6]:port`` of a cluster URL's seed list."""
    text = text.strip()
    if not text:
        raise ValueError("an empty host in the --redis cluster URL")
    parsed = urlsplit("//" + text)
    return parsed.hostname or "localhost", parsed.port or 6379


try:  # a dependency (setup.cfg); txredisapi parses replies with it too
    from hiredis import pack_command as _pack_command
except ImportError:  # pragma: no cover
    _pack_command = None
#: the argument types hiredis packs as txredisapi would (UTF-8 text, decimal ints)
_PACKED = frozenset((str, bytes, int))


class _InOneTurn:
    """Parse every reply a read brought in that read (a mixin of txredisapi's protocols),
    and pack commands in C (:meth:`_build_command`).

    txredisapi's parser goes back to line mode after each bulk string with the rest
    of the data handed to ``callLater(0, …)``, i.e. one reactor turn per bulk
    element: a reply of 1,000 elements, or 200 pipelined replies, took a thousand
    turns (~50-100 µs each). Here the rest is parsed in the same call, in a loop
    (not recursively).
    """

    _rest = b""

    def _build_command(self, *args, **kwargs):
        """The command's bytes, packed by hiredis (C, ~20x txredisapi's Python loop
        per command: that loop was ~10% of a cluster node's reactor thread) when every
        argument is a str, bytes or int; else (a float, bytearray…) txredisapi's."""
        if _pack_command is not None and all(type(a) in _PACKED for a in args):
            try:
                return _pack_command(args)
            except UnicodeError:
                pass  # (a lone surrogate): txredisapi's error, InvalidData
        return super()._build_command(*args, **kwargs)

    def setLineMode(self, extra=b""):
        self.line_mode = 1
        if extra:
            self._rest = extra

    def dataReceived(self, data, unpause=False):
        while True:
            self._rest = b""
            why = super().dataReceived(data, unpause)
            data, unpause = self._rest, False
            if why or not data:
                return why


class _Command(_InOneTurn, txredisapi.RedisProtocol):
    pass


class _Subscriber(_InOneTurn, txredisapi.SubscriberProtocol):
    def messageReceived(self, pattern, channel, message):
        self.factory.node._bus_message(message)


class _Factory(txredisapi.RedisFactory):
    """One reconnecting txredisapi connection that reports up/down to the node."""

    factor = 2.0

    def __init__(self, node, role, protocol, dbid, address=None):
        u = node.url
        host, port = address or (u.host, u.port)
        super().__init__(
            f"{host}:{port}",
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


def endpoint(reactor, url: RedisURL, address=None):
    """A client endpoint to *address* (``(host, port)``; the URL's by default), TLS
    for ``rediss`` (the certificate checked against the host, with the system trust
    store or the URL's ``tls_ca``)."""
    host, port = address or (url.host, url.port)
    ep = HostnameEndpoint(reactor, host, port, timeout=url.connect_timeout)
    if url.tls:
        from twisted.internet.ssl import optionsForClientTLS

        ep = wrapClientTLS(optionsForClientTLS(host, trustRoot=url.trust), ep)
    return ep


def make_node(url: str | RedisURL, reactor=None, node_id: str | None = None) -> RedisNode:
    """The :class:`RedisNode` for *url*: a
    :class:`~chatd.cluster.rediscluster.RedisClusterNode` for a ``redis+cluster`` URL."""
    url = url if isinstance(url, RedisURL) else RedisURL(url)
    if url.cluster:
        from chatd.cluster.rediscluster import RedisClusterNode

        return RedisClusterNode(url, reactor, node_id)
    return RedisNode(url, reactor, node_id)


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
        self._on_stop = []  # called (Deferred allowed) before the connections close on stop
        self._starts = 0
        self._ready: defer.Deferred | None = None
        self._pinger: LoopingCall | None = None
        self._ever_up = False
        #: False while the command or the subscriber connection is down
        self.healthy = False
        #: number of times a connection was lost
        self.disconnects = 0
        #: bus events and their bytes received by this node
        self.bus_events = 0
        self.bus_bytes = 0

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

    def bus_route(self, key, bus, room=None):
        """``(publish command, channel)`` a script touching *key* publishes *bus*'s
        events with (*room*: events of that room only its connections consume):
        ``PUBLISH`` on the one bus here (see RedisClusterNode)."""
        return "PUBLISH", bus

    #: the rooms this node follows (chatd.cluster.follow.Follows): None, one Redis
    #: carries every event to every node
    rooms = None

    def room_ready(self, room):
        """Fires once this node receives *room*'s events (here: always)."""
        return succeed(None)

    def slot_prefix(self, tag: str) -> str:
        """The key prefix of a group of keys that one script may touch together (the
        moderation queue, the media metadata): the node's prefix here, on one Redis
        (the layout of earlier releases); ``<prefix>{tag}:`` on a Redis Cluster, where
        the hash tag puts the whole group in one slot (see RedisClusterNode)."""
        return self.prefix

    def barrier(self, key=None):
        """Fires once the subscriber has received everything published before this call
        (by scripts touching *key*: here, by anyone).

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

    def publish(self, payload: str, room=None):
        """PUBLISH *payload* on the bus (fire and forget; failures are logged); *room*:
        an event of that room (see :meth:`bus_route`)."""
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
        self._connect()
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

    def _connect(self):
        """Open the connections (a command and a subscriber connection)."""
        self._factories = {
            "command": _Factory(self, "command", _Command, self.url.db),
            "subscriber": _Factory(self, "subscriber", _Subscriber, None),
        }
        for factory in self._factories.values():
            factory.startConnecting(endpoint(self.reactor, self.url))

    @defer.inlineCallbacks
    def _disconnect(self):
        """Close every connection."""
        factories, self._factories = self._factories, {}
        for factory in factories.values():
            yield factory.disconnect()

    @defer.inlineCallbacks
    def stop(self):
        """Run the stop hooks (presence leaves), then close both connections."""
        self._starts -= 1
        if self._starts > 0:
            return
        if self._pinger is not None and self._pinger.running:
            self._pinger.stop()
        for hook in self._on_stop:
            try:
                yield hook()
            except Exception as e:
                self.log.warn("Redis stop hook failed: {e}", e=e)
        yield self._disconnect()
        self._conns.clear()
        self.healthy = False

    def add_stop_hook(self, hook) -> None:
        """Call *hook()* (Deferred allowed) before the connections close on stop."""
        self._on_stop.append(hook)

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
                yield self._load_scripts(conn)
            except Exception as e:
                self.log.warn("Loading scripts into Redis failed: {e}", e=e)
                conn.transport.abortConnection()
                return
        if not conn.connected:
            return
        self._conns[role] = conn
        self.log.info("Redis {role} connection up ({url})", role=role, url=self.url.redacted())
        if role == "command":
            yield self._run_connect_hooks()
        self._update_health()

    @defer.inlineCallbacks
    def _load_scripts(self, conn):
        """SCRIPT LOAD every registered script on *conn*."""
        for sha, source in self._scripts.values():
            loaded = yield conn.execute_command("SCRIPT", "LOAD", source)
            assert loaded == sha, (loaded, sha)

    @defer.inlineCallbacks
    def _run_connect_hooks(self):
        for hook in self._on_up:
            try:
                yield hook()
            except Exception as e:
                self.log.warn("Redis connect hook failed: {e}", e=e)

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

    def _is_healthy(self) -> bool:
        return "command" in self._conns and "subscriber" in self._conns

    def _update_health(self):
        healthy = self._is_healthy()
        if healthy == self.healthy:
            return
        self.healthy = healthy
        if healthy:
            self.log.info("chatd cluster node {node} healthy: Redis reachable", node=self.node_id)
            if self._ready is not None and not self._ready.called:
                self._ready.callback(None)
        elif self._starts > 0:
            self.log.warn(
                "chatd cluster node {node} degraded: Redis unreachable; sends are refused "
                "with 'unavailable' until it is back",
                node=self.node_id,
            )

    def _pinged(self):
        """``(role, connection)`` of every connection PINGed every ``ping`` seconds."""
        return list(self._conns.items())

    def _ping(self):
        for role, conn in self._pinged():
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
        self.bus_events += 1
        self.bus_bytes += len(payload)
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
        #: events of kinds this version does not know (a newer node's), skipped, by kind
        self.skipped: dict[str, int] = {}

    @property
    def healthy(self):
        return self.node.healthy

    def attach(self, chat):
        self.chat = chat
        self._deliver = {kind: getattr(chat, "deliver_" + kind) for kind in KINDS}
        rooms = self.node.rooms
        if rooms is not None:  # a Redis Cluster: follow the rooms with connections here
            chat.hub.watch(rooms.hold, rooms.release)

    def ready(self, room):
        """Fires once this node receives *room*'s events (see :meth:`IBroker.ready`)."""
        return self.node.room_ready(room)

    def _skip(self, kind: str) -> None:
        if kind not in self.skipped:
            self.log.warn(
                "Skipping bus events of the unknown kind {kind!r} (a newer chatd node's?)",
                kind=kind,
            )
        self.skipped[kind] = self.skipped.get(kind, 0) + 1

    def publish(self, kind, *args):
        if kind in COMMITTED_KINDS:
            return  # published by the store's commit script, in seq order
        room = args[0] if kind in codec.ROOM_KINDS else None
        self.node.publish(codec.encode(codec.BusEvent(kind, self.node.node_id, args)), room)

    def _received(self, payload):
        try:
            event = codec.decode(payload)
        except codec.UnknownKind as e:
            self._skip(e.kind)
            return
        self.received[event.kind] += 1
        if self.chat is None:
            return
        local = event.node == self.node.node_id
        self._deliver[event.kind](*event.deliver_args(local))


@implementer(IMessageLog)
class RedisMessageLog:
    """Commits a message to a :class:`chatd.store.redis.RedisStore` and publishes it
    on *node*'s bus in the same script: every node gets each channel's messages
    in seq order."""

    def __init__(self, store, node: RedisNode):
        self.store = store
        self.node = node

    def append(self, kind, fields, args):
        """Commit and publish (see :meth:`chatd.interfaces.IMessageLog.append`)."""
        head = codec.committed_head(kind, self.node.node_id, args)
        item_kind = fields[6] if len(fields) > 6 else "message"
        room = kind == "message" and item_kind not in codec.NODE_ITEM_KINDS
        return self.store.append_published(*fields, bus=self.node.bus, head=head, room=room)
