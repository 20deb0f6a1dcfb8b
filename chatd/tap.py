"""Command-line options and ``makeService`` for ``twistd chatd`` (like ``twisted/web/tap.py``)."""

from __future__ import annotations

from twisted.python import usage

from chatd import config, extras
from chatd import options as options_table
from chatd.options import DEFAULT_PORT


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
        self["settings"] = options_table.settings_from(self)
        self["gate"] = make_gate(self)
        if self["wechat-appid"]:
            import os

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
    import os

    from chatd.auth import TokenVerifier
    from chatd.gate import AUTH_MODES, Gate

    secret = options["jwt-secret"] or os.environ.get("CHATD_JWT_SECRET") or None
    public_key = options["jwt-public-key"]
    if secret and public_key:
        raise usage.UsageError("give --jwt-secret or --jwt-public-key, not both")
    verifier = None
    if public_key:
        extras.require("--jwt-public-key")
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
    from chatd.cluster.presence import RedisDirectory
    from chatd.cluster.redis import RedisBroker, RedisMessageLog, RedisNode
    from chatd.store.redis import RedisStore

    node = RedisNode(options["redis"], reactor=reactor)
    store = RedisStore(
        node,
        history_max=options["history-max"],
        history_days=options["history-days"],
        reactor=reactor,
    )
    return store, RedisBroker(node), RedisDirectory(node), RedisMessageLog(store, node)


def make_store(options, reactor=None):
    """The history store the options ask for: SQLite, in a file or in memory."""
    from chatd.store.sqlite import SQLiteStore

    return SQLiteStore(
        options["db"],
        history_max=options["history-max"],
        history_days=options["history-days"],
        synchronous=options["db-synchronous"],
        reactor=reactor,
    )


def makeService(options, reactor=None):
    """Build the chatd service tree from parsed :class:`Options`."""
    from chatd.factory import ChatFactory
    from chatd.metrics import TimedLog
    from chatd.operations import Operations
    from chatd.service import ChatService

    store, broker, directory, messages = make_cluster(options, reactor)
    if store is None:
        from chatd.cluster.local import LocalBroker, LocalMessageLog

        store = make_store(options, reactor)
        broker = LocalBroker()
        messages = LocalMessageLog(store, broker)
    if reactor is None:
        from twisted.internet import reactor
    # the chat commits through TimedLog (append latency for /metrics); the
    # service starts and stops the store itself
    factory = ChatFactory(
        store,
        options["settings"],
        reactor=reactor,
        gate=options["gate"],
        broker=broker,
        directory=directory,
        messages=TimedLog(messages, reactor),
    )
    from chatd.login import login_resources

    factory.login = login_resources(options, options["gate"].verifier, reactor)
    from chatd.media.web import make_media

    # /api/media and /media (chatd/media/): needs a token verifier; its thread pool
    # and sweep start with the reactor and stop before it shuts down
    factory.media = make_media(options, options["gate"].verifier, reactor)
    if factory.media is not None:
        reactor.callWhenRunning(factory.media.startService)
        reactor.addSystemEventTrigger("before", "shutdown", factory.media.stopService)
    ops = Operations(options, factory, store, reactor)
    return ChatService(factory, store, options["listen"], reactor=reactor, ops=ops)
