"""The chat's parts put together, and the services twistd starts and stops.

:func:`build` makes a :class:`chatd.factory.ChatFactory` from a history store and
settings: the :class:`chatd.chat.Chat` (:func:`build_chat`), the fan-out
(:class:`chatd.fanout.Fanout`) and the handshake gate, on one process's broker,
directory and message log unless given the cluster's. ``makeService``
(chatd/tap.py) and the tests both build through it.

:class:`ChatService` is what ``makeService`` returns; its children are a
:class:`StoreService` (started first, stopped last) and one
:class:`ListeningService` per endpoint description (and a
:class:`MetricsListeningService` for ``--metrics-listen``).
"""

from __future__ import annotations

import gc
import os

from twisted.application.service import MultiService, Service
from twisted.internet import defer
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.endpoints import serverFromString
from twisted.logger import ILogObserver, Logger

from chatd import __version__
from chatd.auth import ANONYMOUS_PREFIX
from chatd.chat import Chat
from chatd.cluster.local import LocalBroker, LocalMessageLog
from chatd.cluster.presence import LocalDirectory
from chatd.factory import ChatFactory
from chatd.fanout import Fanout, direct_support
from chatd.gate import Gate
from chatd.settings import Settings
from chatd.stats import Stats

#: the Server header and the ``server`` of every ``welcome``
SERVER = f"chatd/{__version__}"


def build_chat(
    store,
    fanout,
    settings: Settings,
    clock,
    *,
    broker=None,
    directory=None,
    messages=None,
    stats: Stats | None = None,
    anonymous_prefix: str = "",
) -> Chat:
    """A :class:`Chat` on *store* writing through *fanout*, with this process's own
    parts for those not given: a :class:`LocalBroker`, a :class:`LocalDirectory`
    and a :class:`LocalMessageLog` (the store, then the broker)."""
    broker = broker if broker is not None else LocalBroker()
    return Chat(
        store,
        fanout,
        settings,
        clock,
        broker=broker,
        directory=directory if directory is not None else LocalDirectory(),
        messages=messages if messages is not None else LocalMessageLog(store, broker),
        stats=stats if stats is not None else Stats(),
        server=SERVER,
        anonymous_prefix=anonymous_prefix,
    )


def build(
    store,
    settings: Settings | None = None,
    *,
    reactor=None,
    gate: Gate | None = None,
    broker=None,
    directory=None,
    messages=None,
) -> ChatFactory:
    """The :class:`ChatFactory` serving a new :class:`Chat` on *store*.

    The fan-out and the chat share one :class:`Stats`; *gate* (default: no auth, any
    origin, no caps) also decides the anonymous user-id prefix. *reactor* defaults
    to the global one (the only place that falls back to it).
    """
    if reactor is None:
        from twisted.internet import reactor
    settings = settings if settings is not None else Settings()
    gate = gate if gate is not None else Gate()
    stats = Stats()
    fanout = Fanout(reactor, settings, stats, direct_support(reactor))
    chat = build_chat(
        store,
        fanout,
        settings,
        reactor,
        broker=broker,
        directory=directory,
        messages=messages,
        stats=stats,
        # anonymous ids get "~" while tokens are accepted, so no anonymous
        # name can pass for a token's user
        anonymous_prefix="" if gate.auth == "off" else ANONYMOUS_PREFIX,
    )
    return ChatFactory(chat, fanout, gate, reactor=reactor)


def describe_address(description: str, address) -> str:
    """A human- and test-readable URL for where an endpoint listens."""
    if isinstance(address, IPv4Address | IPv6Address):
        scheme = "wss" if description.split(":", 1)[0] in ("ssl", "tls") else "ws"
        host = f"[{address.host}]" if isinstance(address, IPv6Address) else address.host
        return f"{scheme}://{host}:{address.port}/"
    if isinstance(address, UNIXAddress):
        name = address.name.decode() if isinstance(address.name, bytes) else address.name
        return f"unix:{name}"
    return str(address)


#: allocations between two collections of the youngest generation (see settle_heap)
GC_YOUNG = 50_000


def settle_heap() -> None:
    """Move everything alive at start-up (modules, classes, the service tree) out of
    reach of the cyclic garbage collector (``gc.freeze``).

    Those objects live as long as the process, and scanning them made every full
    collection cost ~13 ms of stalled fan-out (p99 latency tripled at 50k
    deliveries/s); afterwards a full collection only walks what connections and
    messages created.

    The youngest generation is collected every :data:`GC_YOUNG` allocations (not
    CPython's 700): a durable send keeps a dozen objects alive until its commit, so
    with 700 every young collection walked hundreds of in-flight sends' objects
    and moved them on to the older generations, whose collections walked them
    again (~10 % of the reactor's time at 6,000 sends/s). Objects that die before
    the next collection (most of a send's) are never walked.
    """
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG, older, oldest)


class ListeningService(Service):
    """Listens on one endpoint description with a factory, like ``strports.service``.

    A bind that fails synchronously (port in use, bad description) is raised
    from ``startService`` so twistd aborts start-up with an error instead of
    running without a socket.
    """

    log = Logger()

    def __init__(self, description: str, factory, reactor, fd: int | None = None):
        self.description = description
        self.factory = factory
        self._reactor = reactor
        #: a listening socket inherited from the ``--workers`` parent, made from *description*
        self.fd = fd
        self.port = None
        self._listening = None

    def startService(self):
        super().startService()
        if self.fd is not None:
            from chatd.workers import adopt

            self._listened(adopt(self._reactor, self.description, self.fd, self.factory))
            return
        endpoint = serverFromString(self._reactor, self.description)
        self._listening = endpoint.listen(self.factory)
        failure = []
        self._listening.addCallbacks(self._listened, failure.append)
        if failure:
            failure[0].raiseException()

    def _listened(self, port):
        self.port = port
        self.log.info(
            "chatd listening on {url} (endpoint {description})",
            url=describe_address(self.description, port.getHost()),
            description=self.description,
            startup=True,  # shown at every --log-level (chatd.logs.startup_passes)
        )
        return port

    def stopService(self):
        super().stopService()
        if self.port is not None:
            port, self.port = self.port, None
            return defer.maybeDeferred(port.stopListening)
        return None


class MetricsListeningService(ListeningService):
    """Listens on ``--metrics-listen``; its log line says where /metrics is."""

    def _listened(self, port):
        self.port = port
        url = describe_address(self.description, port.getHost()).replace("ws", "http", 1)
        self.log.info(
            "chatd metrics on {url}metrics (endpoint {description})",
            url=url,
            description=self.description,
            startup=True,
        )
        return port


class StoreService(Service):
    """Opens the history store on start and flushes and closes it on stop."""

    def __init__(self, store):
        self.store = store

    def startService(self):
        super().startService()
        return self.store.start()

    def stopService(self):
        super().stopService()
        return self.store.stop()


class ChatService(MultiService):
    """chatd as a whole: the history store and the listening endpoints.

    Start-up begins opening the store and binds every endpoint at once: an
    endpoint that cannot bind makes ``startService`` raise, so twistd exits
    with an error before it daemonises; a store that cannot open stops the
    process with exit status 1. Shutdown stops listening first and closes the
    store last, after everything queued is committed.
    """

    log = Logger()

    def __init__(
        self,
        factory,
        store,
        site,
        descriptions,
        reactor,
        lifecycle=None,
        extra=(),
        services=(),
        adopt=None,
    ):
        super().__init__()
        self.factory = factory
        self.store = store
        self._reactor = reactor
        self.ready = None
        #: chatd.lifecycle.Lifecycle: sd_notify, SIGHUP, /readyz's stopping, webhooks, logs
        self.lifecycle = lifecycle
        #: the Site of every endpoint in *descriptions* (chatd.web.build_site)
        self.site = site
        self.store_service = StoreService(store)
        self.store_service.setServiceParent(self)
        #: one ListeningService per endpoint description, then the *extra* ones
        #: (e.g. a MetricsListeningService)
        #: with *adopt* (a ``--workers`` worker): one inherited socket per description
        fds = adopt or [None] * len(descriptions)
        self.listeners = [
            ListeningService(description, site, reactor, fd)
            for description, fd in zip(descriptions, fds, strict=True)
        ]
        #: called once the store is open and every endpoint listens (a worker tells
        #: its parent)
        self.ready_hooks = []
        self.listeners.extend(extra)
        for listener in self.listeners:
            listener.setServiceParent(self)
        #: other parts with a life of their own (e.g. chatd.media.web.Media): started
        #: before the endpoints listen, stopped once the connections are closed
        #: (not ``services``: that is MultiService's own list of children)
        self.parts = list(services)
        for part in self.parts:
            part.setServiceParent(self)

    def setServiceParent(self, parent):
        super().setServiceParent(parent)
        # twistd uses an ILogObserver component of its application as the log
        # observer: chatd's JSON / level-filtered logs (chatd/logs.py)
        observer = self.lifecycle.log_observer() if self.lifecycle is not None else None
        if observer is not None and hasattr(parent, "setComponent"):
            parent.setComponent(ILogObserver, observer)

    def startService(self):
        Service.startService(self)
        if self.lifecycle is not None:
            self.lifecycle.starting()  # SIGHUP handled before anything listens
        # open the store first; its jobs are queued in order, so connections
        # accepted while it is still opening simply wait for it
        opened = defer.maybeDeferred(self.store_service.startService)
        for part in self.parts:
            part.startService()
        # bind every endpoint now, before twistd daemonises or reports success:
        # a bind error raises here and twistd exits 1 (also in daemon mode)
        for listener in self.listeners:
            listener.startService()
        self.factory.start_housekeeping()
        out = self.factory.fanout
        # direct sends off (a Twisted without the names they read) is worth a warning
        (self.log.info if out.direct else self.log.warn)(
            "fan-out loop: {impl}", impl=out.describe()
        )
        if self.lifecycle is not None:
            opened.addCallback(lambda _: self.lifecycle.started(self))
        opened.addCallback(lambda _: [hook() for hook in self.ready_hooks])
        opened.addCallback(lambda _: settle_heap())
        opened.addCallback(lambda _: self)
        opened.addErrback(self._fatal)
        #: fires with this service once the store is open and every endpoint listens
        self.ready = opened

    def _fatal(self, failure):
        """Start-up failed after the reactor started (e.g. the store refused to open)."""
        self.log.critical(
            "chatd could not start: {error}", error=failure.getErrorMessage(), failure=failure
        )
        reactor = self._reactor
        if reactor.running:
            # twistd has no exit status of its own: leave with 1 once shut down
            reactor.addSystemEventTrigger("after", "shutdown", os._exit, 1)
            reactor.stop()
        return failure

    @defer.inlineCallbacks
    def stopService(self):
        Service.stopService(self)
        self.factory.stop_housekeeping()
        if self.lifecycle is not None:
            self.lifecycle.stopping(self)  # systemd STOPPING=1, /readyz 503, webhooks stop
        yield defer.gatherResults(
            [
                defer.maybeDeferred(listener.stopService)
                for listener in self.listeners
                if listener.running
            ]
        )
        yield self.close_connections()
        yield defer.gatherResults(
            [defer.maybeDeferred(part.stopService) for part in self.parts if part.running]
        )
        # posts already begun (e.g. a relay frame's lobby copy waiting for the room's
        # kind) reach the store before it closes
        yield self.factory.chat.drain()
        if self.store_service.running:
            yield self.store_service.stopService()

    def close_connections(self, code=1001, reason="server shutting down", timeout=None):
        """Close every connection with *code* (1001, going away) and wait for them.

        Fires once all are closed, or after *timeout* seconds (default:
        ``settings.close_timeout``), when the stragglers are dropped.
        """
        reactor = self._reactor
        if timeout is None:
            timeout = self.factory.settings.close_timeout
        conns = list(self.factory.connections)
        if not conns:
            return defer.succeed(None)
        done = defer.Deferred()

        def check():
            if not self.factory.connections:
                if not done.called:
                    done.callback(None)
            elif reactor.seconds() >= deadline:
                for conn in list(self.factory.connections):
                    conn.transport.abortConnection()
                if not done.called:
                    done.callback(None)
            else:
                reactor.callLater(0.02, check)

        deadline = reactor.seconds() + timeout
        for conn in conns:
            conn.close(code, reason)
        check()
        return done
