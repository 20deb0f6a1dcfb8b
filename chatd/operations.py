"""Running chatd in production: the pieces operators use, wired in one place.

:class:`Operations` is built by ``makeService`` from the parsed options and
handed to :class:`chatd.service.ChatService`, which calls it at three points:

* building the Site: :meth:`resources` adds ``/readyz``, ``/api/``, ``/admin``
  and ``/metrics`` (``/metrics`` only when no ``--metrics-listen`` moves it to
  its own endpoint, :meth:`metrics_site`);
* once chatd listens and its store is open: :meth:`started` sends systemd
  ``READY=1`` (and starts watchdog pings) and, under twistd, installs the
  SIGHUP handler that reloads the configuration (:meth:`reload`);
* when it begins to stop: :meth:`stopping` sends ``STOPPING=1``, makes
  ``/readyz`` answer 503 and stops webhook retries.

Options handled here (all documented in README.md and chatd.example.toml):
``--config``, ``--api-key`` (or ``CHATD_API_KEY``), ``--metrics-listen``,
``--log-format``, ``--log-level``, ``--webhook-url``, ``--webhook-rooms``.
What a reload does with each changed option is the option's ``reload`` in
:data:`chatd.options.TABLE`: the ``_reload_<applier>`` method it names.
"""

from __future__ import annotations

import json
import os
import signal

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python import usage
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site
from twisted.web.static import File

from chatd import config
from chatd import options as options_table
from chatd.api import ApiKey, ApiResource
from chatd.logs import ConnectionLog, LogSettings
from chatd.metrics import MetricsResource, make_registry
from chatd.notify import Notifier
from chatd.service import ListeningService, describe_address
from chatd.webhooks import Webhooks

STATIC = os.path.join(os.path.dirname(__file__), "static")


class Ready(Resource):
    """``GET /readyz``: 200 when the store answers a round-trip, its latest commit
    succeeded and the broker is healthy.

    503 (with what failed) otherwise and while chatd shuts down, so a load
    balancer stops sending new clients before the 1001 closes go out. A store
    whose commits fail (a full disk) still answers reads, so the round-trip
    alone would stay 200 while every ``send`` gets ``unavailable``.
    """

    isLeaf = True
    TIMEOUT = 2.0

    def __init__(self, ops):
        super().__init__()
        self.ops = ops

    def render_GET(self, request):
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"cache-control", b"no-store")
        d = self.ops.check_ready()

        def answer(result):
            ok, body = result
            if request._disconnected:
                return
            request.setResponseCode(200 if ok else 503)
            request.write(json.dumps(body).encode())
            request.finish()

        d.addCallback(answer)
        return NOT_DONE_YET


def defer_stop_signals(reactor) -> dict:
    """Make SIGTERM and SIGINT run the reactor's own handlers (``sigTerm``,
    ``sigInt``) from the main loop instead of inside the signal handler; returns
    the handlers they replace.

    Twisted's handlers log ("Received SIGTERM, shutting down.") right inside the
    interrupted frame. twistd's file log observer is guarded by a pure-Python
    RLock (twisted.python.threadable), so a signal landing between that lock's
    acquire and its owner being recorded made the handler's log call wait for a
    lock its own thread held: the daemon hung instead of stopping (caught with
    py-spy, about one stop in 300). Scheduling the handler with callFromThread
    (what Twisted's handler itself does to stop) keeps the log call out of the
    interrupted frame.
    """
    previous = {}
    for signum, name in ((signal.SIGTERM, "sigTerm"), (signal.SIGINT, "sigInt")):
        handler = getattr(reactor, name, None)
        if handler is not None:

            def on_signal(number, frame, handler=handler):
                reactor.callFromThread(handler, number, None)

            previous[signum] = signal.signal(signum, on_signal)
    return previous


class Operations:
    """Production features of one chatd process (see the module docstring)."""

    log = Logger()

    def __init__(self, options, factory, store, reactor=None):
        if reactor is None:
            from twisted.internet import reactor
        self.options = options
        self.factory = factory
        self.chat = factory.chat
        self.store = store
        self.reactor = reactor
        self.stopping_now = False
        self.api_key = ApiKey(options.get("api-key"))
        self.webhooks = Webhooks(
            reactor, options.get("webhook-url"), options.get("webhook-rooms"), self.api_key
        )
        self.registry = make_registry(self.chat, self.chat.store, self.webhooks)
        self.logs = LogSettings(options.get("log-format", "text"), options.get("log-level", "info"))
        self.chat.observers.append(self.webhooks)
        self.chat.observers.append(ConnectionLog())
        self.notifier = Notifier(reactor)
        self.service = None
        self._previous_sighup = None

    # the Site

    def resources(self) -> dict[bytes, Resource]:
        """Children of the main Site's root."""
        children = {
            b"readyz": Ready(self),
            b"api": ApiResource(self.chat, self.api_key, self.reactor),
            b"admin": File(os.path.join(STATIC, "admin.html")),
        }
        if not self.options.get("metrics-listen"):
            children[b"metrics"] = MetricsResource(self.registry)
        return children

    def metrics_site(self) -> Site | None:
        """The Site for ``--metrics-listen`` (``/metrics`` and ``/healthz`` only), or None."""
        if not self.options.get("metrics-listen"):
            return None
        from chatd.web import Health

        root = Resource()
        root.putChild(b"metrics", MetricsResource(self.registry))
        root.putChild(b"healthz", Health(self.factory))
        root.putChild(b"readyz", Ready(self))
        site = Site(root)
        site.noisy = False
        return site

    def check_ready(self):
        """Fires with ``(ok, body)``: store round-trip and broker health."""
        if self.stopping_now:
            return defer.succeed((False, {"status": "stopping"}))
        broker_ok = bool(getattr(self.chat.broker, "healthy", True))
        d = self.chat.store.replay("@readyz", None, 0)
        d.addTimeout(Ready.TIMEOUT, self.reactor)

        def result(outcome):
            commit_error = getattr(self.store, "commit_error", None)
            if isinstance(outcome, Failure):
                store = outcome.getErrorMessage() or "failed"
            elif commit_error is not None:
                store = f"commits fail: {commit_error}"
            else:
                store = "ok"
            store_ok = store == "ok"
            body = {
                "status": "ready" if store_ok and broker_ok else "unavailable",
                "store": store,
                "broker": "ok" if broker_ok else "unhealthy",
            }
            return (store_ok and broker_ok, body)

        return d.addBoth(result)

    # lifecycle

    def started(self, service) -> None:
        """chatd listens and its store is open: SIGHUP reloads (under twistd); READY=1.

        The SIGHUP handler goes in first: systemd may send a reload the moment
        it hears READY=1, and SIGHUP's default action would end the process.
        """
        self.service = service
        if getattr(self.options, "parent", None) is not None:
            self._previous_sighup = signal.signal(signal.SIGHUP, self._on_sighup)
            self.log.info("chatd reloads {config} on SIGHUP", config=self.options.get("config"))
            defer_stop_signals(self.reactor)
        urls = ", ".join(listener.description for listener in service.listeners)
        self.notifier.ready(f"listening on {urls}")

    def stopping(self, service) -> None:
        """Shutdown began: STOPPING=1, /readyz says 503, webhooks stop retrying."""
        self.stopping_now = True
        self.notifier.stopping()
        if self._previous_sighup is not None:
            signal.signal(signal.SIGHUP, self._previous_sighup)
            self._previous_sighup = None
        self.webhooks.stop()

    def log_observer(self, twistd_options):
        """The observer to put on twistd's application, or None for twistd's default."""
        if twistd_options is None or twistd_options.get("syslog"):
            return None
        if not self.logs.wanted():
            return None
        return self.logs.observer(twistd_options)

    # SIGHUP

    def _on_sighup(self, signum, frame):
        self.reactor.callFromThread(self.reload)

    def reload(self):
        """Re-read the config file and apply what can change live; log what changed.

        Returns ``(applied, needs_restart)``: lists of option names. A file that
        cannot be read or holds a bad value is logged and changes nothing.
        Whatever happens, systemd hears ``READY=1`` after ``RELOADING=1``
        (``systemctl reload`` waits for it).
        """
        self.notifier.reloading()
        status = "reload failed"
        try:
            try:
                fresh = config.reparse(self.options)
            except usage.UsageError as e:
                status = f"reload failed: {e}"
                self.log.error(
                    "configuration reload failed, nothing changed: {error}", error=str(e)
                )
                return [], []
            except Exception as e:
                status = f"reload failed: {e!r}"
                self.log.failure("configuration reload failed, nothing changed")
                return [], []
            applied, restart = self._apply_changes(fresh)
            status = "configuration reloaded"
            return applied, restart
        finally:
            self.notifier.reloaded(" ".join(status.split()))

    def _apply_changes(self, fresh):
        """Apply every changed option of *fresh* its table row lets change live."""
        changed = [
            row
            for row in options_table.TABLE
            if row.in_file and self.options.get(row.name) != fresh.get(row.name)
        ]
        live = sorted((row for row in changed if row.reload), key=lambda row: row.name)
        restart = sorted(row.name for row in changed if not row.reload)
        appliers = []
        for row in live:
            if row.reload.applier not in appliers:
                appliers.append(row.reload.applier)
        applied = []
        for applier in appliers:
            rows = [row for row in live if row.reload.applier == applier]
            try:
                getattr(self, "_reload_" + applier)(fresh, rows)
            except Exception:
                self.log.failure(
                    "configuration reload failed to apply {keys}",
                    keys=", ".join(row.name for row in rows),
                )
                continue
            for row in rows:
                self.options[row.name] = fresh[row.name]
                applied.append(row.name)
        applied.sort()
        if applied:
            self.log.info("configuration reloaded: {keys}", keys=", ".join(applied))
        else:
            self.log.info("configuration reloaded: nothing changed that can change live")
        if restart:
            self.log.warn(
                "changed but needs a restart to take effect: {keys}", keys=", ".join(restart)
            )
        return applied, restart

    # the appliers named by the table's reload policies (chatd/options.py)

    def _reload_settings(self, fresh, rows) -> None:
        """Settings read on every request: the new value is used from the next one on."""
        for row in rows:
            setattr(self.factory.settings, row.setting, fresh[row.name])

    def _reload_protocol(self, fresh, rows) -> None:
        """autobahn reads these from the factory's protocol class: every
        connection, open or new, uses the new values."""
        self._reload_settings(fresh, rows)
        settings = self.factory.settings
        self.factory.setProtocolOptions(
            maxFramePayloadSize=settings.max_message_size,
            maxMessagePayloadSize=settings.max_message_size,
            autoPingInterval=settings.ping_interval,
            autoPingTimeout=settings.ping_timeout,
            openHandshakeTimeout=settings.open_handshake_timeout,
            allowNullOrigin=getattr(self.factory, "allowNullOrigin", False),
        )

    def _reload_limits(self, fresh, rows) -> None:
        """Take the gate's rules and the rate/queue/room limits from *fresh* options."""
        self.factory.gate.update_from(fresh["gate"])
        self.factory.chat.apply_limits(fresh["settings"])
        self.factory.stop_housekeeping()
        self.factory.start_housekeeping()

    def _reload_log_level(self, fresh, rows) -> None:
        self.logs.set_level(fresh["log-level"])

    def _reload_api_key(self, fresh, rows) -> None:
        self.api_key.key = fresh["api-key"] or os.environ.get("CHATD_API_KEY") or None

    def _reload_webhooks(self, fresh, rows) -> None:
        self.webhooks.configure(fresh["webhook-url"], fresh["webhook-rooms"])

    def metrics_listener(self, site, reactor=None):
        """The service listening on ``--metrics-listen`` with *site*."""
        return MetricsListeningService(self.options["metrics-listen"], site, reactor)


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
