"""Services: the listening endpoints and the history store, started and stopped by twistd.

:class:`ChatService` is what ``makeService`` returns; its children are a
:class:`StoreService` (started first, stopped last) and one
:class:`ListeningService` per endpoint description.
"""

from __future__ import annotations

import gc
import os

from twisted.application.service import MultiService, Service
from twisted.internet import defer
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.endpoints import serverFromString
from twisted.logger import Logger


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


def settle_heap() -> None:
    """Move everything alive at start-up (modules, classes, the service tree) out of
    reach of the cyclic garbage collector (``gc.freeze``).

    Those objects live as long as the process, and scanning them made every full
    collection cost ~13 ms of stalled fan-out (p99 latency tripled at 50k
    deliveries/s); afterwards a full collection only walks what connections and
    messages created.
    """
    gc.collect()
    gc.freeze()


class ListeningService(Service):
    """Listens on one endpoint description with a factory, like ``strports.service``.

    A bind that fails synchronously (port in use, bad description) is raised
    from ``startService`` so twistd aborts start-up with an error instead of
    running without a socket.
    """

    log = Logger()

    def __init__(self, description: str, factory, reactor=None):
        self.description = description
        self.factory = factory
        self._reactor = reactor
        self.port = None
        self._listening = None

    def startService(self):
        super().startService()
        reactor = self._reactor
        if reactor is None:
            from twisted.internet import reactor
        endpoint = serverFromString(reactor, self.description)
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

    def __init__(self, factory, store, descriptions, reactor=None, ops=None):
        super().__init__()
        from chatd.web import build_site

        self.factory = factory
        self.store = store
        self._reactor = reactor
        self.ready = None
        #: chatd.operations.Operations: /metrics, /api, /readyz, sd_notify, SIGHUP, logs
        self.ops = ops
        self.site = build_site(factory, ops.resources() if ops is not None else None)
        self.store_service = StoreService(store)
        self.store_service.setServiceParent(self)
        self.listeners = [
            ListeningService(description, self.site, reactor) for description in descriptions
        ]
        if ops is not None and ops.metrics_site() is not None:
            self.listeners.append(ops.metrics_listener(ops.metrics_site(), reactor))
        for listener in self.listeners:
            listener.setServiceParent(self)

    def setServiceParent(self, parent):
        super().setServiceParent(parent)
        # twistd uses an ILogObserver component of its application as the log
        # observer: chatd's JSON / level-filtered logs (chatd/logs.py)
        options = getattr(self.ops, "options", None)
        observer = self.ops.log_observer(getattr(options, "parent", None)) if self.ops else None
        if observer is not None and hasattr(parent, "setComponent"):
            from twisted.logger import ILogObserver

            parent.setComponent(ILogObserver, observer)

    def startService(self):
        Service.startService(self)
        # open the store first; its jobs are queued in order, so connections
        # accepted while it is still opening simply wait for it
        opened = defer.maybeDeferred(self.store_service.startService)
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
        if self.ops is not None:
            opened.addCallback(lambda _: self.ops.started(self))
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
        if reactor is None:
            from twisted.internet import reactor
        if reactor.running:
            # twistd has no exit status of its own: leave with 1 once shut down
            reactor.addSystemEventTrigger("after", "shutdown", os._exit, 1)
            reactor.stop()
        return failure

    @defer.inlineCallbacks
    def stopService(self):
        Service.stopService(self)
        self.factory.stop_housekeeping()
        if self.ops is not None:
            self.ops.stopping(self)  # systemd STOPPING=1, /readyz 503, webhooks stop
        yield defer.gatherResults(
            [
                defer.maybeDeferred(listener.stopService)
                for listener in self.listeners
                if listener.running
            ]
        )
        yield self.close_connections()
        if self.store_service.running:
            yield self.store_service.stopService()

    def close_connections(self, code=1001, reason="server shutting down", timeout=None):
        """Close every connection with *code* (1001, going away) and wait for them.

        Fires once all are closed, or after *timeout* seconds (default:
        ``settings.close_timeout``), when the stragglers are dropped.
        """
        reactor = self._reactor
        if reactor is None:
            from twisted.internet import reactor
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
