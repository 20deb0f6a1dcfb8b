"""Command-line options and ``makeService`` for ``twistd chatd`` (like ``twisted/web/tap.py``)."""

from __future__ import annotations

import os
import sys

from twisted.python import usage
from twisted.web.static import File

from chatd import config, extras, workers
from chatd import options as options_table
from chatd.api import ApiKey, ApiResource
from chatd.auth import TokenVerifier
from chatd.cluster.local import LocalBroker, LocalMessageLog
from chatd.gate import AUTH_MODES, Gate
from chatd.lifecycle import Lifecycle
from chatd.login import login_resources
from chatd.logs import ConnectionLog, LogSettings
from chatd.media.web import make_media
from chatd.metrics import MetricsResource, TimedLog, make_registry
from chatd.notify import Notifier
from chatd.options import DEFAULT_PORT
from chatd.readiness import Readiness, ReadyResource
from chatd.reload import Reloader
from chatd.service import ChatService, MetricsListeningService, build
from chatd.store.sqlite import SQLiteStore
from chatd.web import STATIC, build_metrics_site, build_site
from chatd.webhooks import Webhooks


class Options(usage.Options):
    """``twistd chatd`` options, all generated from :data:`chatd.options.TABLE`
    (documented in README.md and docs/operations.md)."""

    synopsis = "[options]"
    longdesc = (
        "chatd serves WebSocket chat at / and /ws of every endpoint: the tutorial's relay "
        "for clients offering no subprotocol, and the chatd.v1 JSON room protocol for "
        "clients offering 'chatd.v1' (docs/protocol.md). GET / serves the web client."
    )

    optParameters = options_table.opt_parameters()
    optFlags = options_table.opt_flags()

    def __init__(self):
        super().__init__()
        options_table.start_lists(self)
        config.track(self)  # which options the command line gives (they beat --config)

    def parseOptions(self, options=None):  # noqa: N802 (usage.Options's name)
        #: the arguments as given, for the workers of --workers (chatd/workers.py)
        self.raw_argv = list(sys.argv[1:] if options is None else options)
        super().parseOptions(options)

    def postOptions(self):
        config.post_options(self)  # the --config file fills what the command line did not
        if self["port"] is not None:
            self["listen"].insert(0, f"tcp:{self['port']}")
        if not self["listen"]:
            self["listen"].append(f"tcp:{DEFAULT_PORT}")
        if self["redis"] is not None:
            extras.require("--redis")
            from chatd.cluster.redis import RedisURL

            try:
                RedisURL(self["redis"])
            except ValueError as e:
                raise usage.UsageError(f"--redis: {e}") from e
        if self["media-s3"] is not None:
            extras.require("--media-s3")
            from chatd.media.store import parse_s3_url

            try:
                parse_s3_url(self["media-s3"])
            except ValueError as e:
                raise usage.UsageError(f"--media-s3: {e}") from e
        refused = workers.check(self)
        if refused:
            raise usage.UsageError(refused)
        if self["worker-fds"] and len(self["worker-fds"]) != len(self["listen"]):
            raise usage.UsageError("--worker-fds must name one socket per --listen endpoint")
        self["settings"] = options_table.settings_from(self)
        self["gate"] = make_gate(self)
        if self["wechat-appid"]:
            if not (self["wechat-secret"] or os.environ.get("CHATD_WECHAT_SECRET")):
                raise usage.UsageError(
                    "--wechat-appid needs --wechat-secret or CHATD_WECHAT_SECRET"
                )
            verifier = self["gate"].verifier
            if verifier is None or not verifier.can_issue:
                raise usage.UsageError("--wechat-appid needs --jwt-secret to sign login tokens")


# opt_listen, opt_allowed_origin, opt_trusted_proxy: the repeatable rows of the table
for _name, _handler in options_table.repeatable_handlers().items():
    setattr(Options, _name, _handler)


def make_gate(options):
    """The handshake :class:`chatd.gate.Gate` the options describe."""
    secret = options["jwt-secret"] or os.environ.get("CHATD_JWT_SECRET") or None
    public_key = options["jwt-public-key"]
    if secret and public_key:
        raise usage.UsageError("give --jwt-secret or --jwt-public-key, not both")
    verifier = None
    if secret or public_key:
        try:
            verifier = TokenVerifier(
                secret=secret,
                public_key_file=public_key,
                algorithm=options["jwt-algorithm"],
                audience=options["jwt-audience"],
                issuer=options["jwt-issuer"],
            )
        except (OSError, ValueError) as e:
            raise usage.UsageError(f"--jwt-public-key / --jwt-algorithm: {e}") from None
    auth = options["auth"] or ("optional" if verifier else "off")
    if auth not in AUTH_MODES:
        raise usage.UsageError("--auth must be required, optional or off")
    if auth != "off" and verifier is None:
        raise usage.UsageError(f"--auth {auth} needs --jwt-secret or --jwt-public-key")
    return Gate(
        auth,
        verifier,
        options["allowed-origin"],
        max_per_ip=options["max-connections-per-ip"],
        max_per_user=options["max-connections-per-user"],
        trusted_proxies=options["trusted-proxy"],
    )


def make_cluster(options, reactor=None):
    """With ``--redis``: ``(RedisStore, RedisBroker, RedisDirectory, RedisMessageLog)``
    on one RedisNode.

    Without it: ``(None, None, None, None)`` (a single process: SQLite, LocalBroker).
    """
    if options.get("redis") is None:
        return None, None, None, None
    from chatd.cluster.presence import RedisClusterDirectory, RedisDirectory
    from chatd.cluster.redis import RedisBroker, RedisMessageLog, make_node
    from chatd.store.redis import RedisStore

    node = make_node(options["redis"], reactor=reactor)
    store = RedisStore(
        node,
        history_max=options["history-max"],
        history_days=options["history-days"],
        reactor=reactor,
    )
    directory = (RedisClusterDirectory if node.url.cluster else RedisDirectory)(node)
    return store, RedisBroker(node), directory, RedisMessageLog(store, node)


def make_store(options, reactor=None):
    """The history store the options ask for: SQLite, in a file or in memory."""
    return SQLiteStore(
        options["db"],
        history_max=options["history-max"],
        history_days=options["history-days"],
        synchronous=options["db-synchronous"],
        reactor=reactor,
    )


def makeService(options, reactor=None):
    """Build the chatd service tree from parsed :class:`Options`.

    Every part is made here and handed to the parts that use it: the store and
    the cluster's broker, directory and message log, the chat and its fan-out
    (:func:`chatd.service.build`), the Site and its resources, and the hooks
    run at start and stop (:class:`chatd.lifecycle.Lifecycle`).
    """
    if reactor is None:
        from twisted.internet import reactor
    if options["workers"] > 1 and not options["worker-fds"]:
        # the parent of --workers N: holds the sockets, supervises N chatd workers
        raw = getattr(options, "raw_argv", None)
        if raw is None:
            raise ValueError("--workers needs the Options parsed from a command line")
        return workers.Supervisor(options, reactor, Notifier(reactor), raw)
    store, broker, directory, messages = make_cluster(options, reactor)
    if store is None:
        store = make_store(options, reactor)
        broker = LocalBroker()
        messages = LocalMessageLog(store, broker)
    # the chat commits through TimedLog (append latency for /metrics); the
    # service starts and stops the store itself
    factory = build(
        store,
        options["settings"],
        reactor=reactor,
        gate=options["gate"],
        broker=broker,
        directory=directory,
        messages=TimedLog(messages, reactor),
    )
    chat = factory.chat
    api_key = ApiKey(options.get("api-key"))
    webhooks = Webhooks(reactor, options.get("webhook-url"), options.get("webhook-rooms"), api_key)
    chat.observers.append(webhooks)
    chat.observers.append(ConnectionLog())
    registry = make_registry(chat, webhooks)
    readiness = Readiness(store, broker, reactor)
    children = {
        b"readyz": ReadyResource(readiness),
        b"api": ApiResource(chat, api_key, reactor),
        b"admin": File(str(STATIC / "admin.html")),
    }
    extra = []
    index = options.get("worker-index") or 0
    if options.get("worker-fds"):
        readiness.worker = {"index": index, "pid": os.getpid()}
    metrics_listen = workers.metrics_description(options.get("metrics-listen"), index)
    if metrics_listen:
        # /metrics on its own endpoint only
        metrics_site = build_metrics_site(
            factory,
            {b"metrics": MetricsResource(registry), b"readyz": ReadyResource(readiness)},
        )
        extra.append(MetricsListeningService(metrics_listen, metrics_site, reactor))
    else:
        children[b"metrics"] = MetricsResource(registry)
    login = login_resources(options, options["gate"].verifier, reactor, store)
    # /api/media and /media (chatd/media/): needs a token verifier; a child service of
    # ChatService (its thread pool and sweep start and stop with chatd)
    media = make_media(options, options["gate"].verifier, reactor)
    if media is not None:
        media.attach(chat)  # send/dm may attach uploads
    site = build_site(factory, children, login, media)
    logs = LogSettings(options.get("log-format", "text"), options.get("log-level", "info"))
    notifier = Notifier(reactor)
    reloader = Reloader(options, factory, logs, api_key, webhooks, notifier, reactor)
    # twistd's own options when run by twistd (None when built in-process)
    twistd = getattr(options, "parent", None)
    lifecycle = Lifecycle(notifier, readiness, reloader, webhooks, logs, reactor, twistd)
    services = [media] if media is not None else []
    service = ChatService(
        factory,
        store,
        site,
        options["listen"],
        reactor,
        lifecycle,
        extra,
        services,
        adopt=options.get("worker-fds"),
    )
    hook = workers.ready_hook() if options.get("worker-fds") else None
    if hook is not None:
        service.ready_hooks.append(hook)
    return service
