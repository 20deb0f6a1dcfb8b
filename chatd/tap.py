"""Command-line options and ``makeService`` for ``twistd chatd`` (like ``twisted/web/tap.py``)."""

from __future__ import annotations

from twisted.python import usage

from chatd import config
from chatd.settings import Settings

DEFAULT_PORT = 8080


def _positive_int(value):
    number = int(value)
    if number < 1:
        raise ValueError(f"must be a positive integer, not {value}")
    return number


def _positive_float(value):
    number = float(value)
    if number <= 0:
        raise ValueError(f"must be a positive number, not {value}")
    return number


_defaults = Settings()


class Options(usage.Options):
    """``twistd chatd`` options. Every option is documented in README.md."""

    synopsis = "[options]"
    longdesc = (
        "chatd serves WebSocket chat at / and /ws of every endpoint: the tutorial's relay "
        "for clients offering no subprotocol, and the chatd.v1 JSON room protocol for "
        "clients offering 'chatd.v1' (docs/protocol.md). GET / serves the web client."
    )

    optParameters = [
        [
            "port",
            "p",
            None,
            f"TCP port to listen on, all interfaces (default {DEFAULT_PORT} "
            "when no --listen is given).",
            int,
        ],
        [
            "max-message-size",
            None,
            _defaults.max_message_size,
            "Largest WebSocket frame/message in bytes; larger ones close the connection with 1009.",
            _positive_int,
        ],
        [
            "max-text-length",
            None,
            _defaults.max_text_length,
            "Longest message text in characters; longer gets error too_large.",
            _positive_int,
        ],
        [
            "ping-interval",
            None,
            _defaults.ping_interval,
            "Seconds between WebSocket pings the server sends.",
            _positive_float,
        ],
        [
            "ping-timeout",
            None,
            _defaults.ping_timeout,
            "Seconds to wait for a pong before dropping the peer.",
            _positive_float,
        ],
        [
            "handshake-timeout",
            None,
            _defaults.open_handshake_timeout,
            "Seconds a client may take to finish the WebSocket opening handshake.",
            _positive_float,
        ],
        [
            "replay-limit",
            None,
            _defaults.replay_limit,
            "Most messages replayed by join {since}; beyond it joined says truncated.",
            _positive_int,
        ],
        [
            "db",
            None,
            "chatd.sqlite3",
            "SQLite history file (created if missing); ':memory:' keeps history in memory only.",
        ],
        [
            "history-max",
            None,
            10000,
            "Messages kept per room and per DM conversation (older ones are pruned in the "
            "background).",
            _positive_int,
        ],
        [
            "history-days",
            None,
            None,
            "Also prune messages older than this many days (default: keep by count only).",
            _positive_float,
        ],
        [
            "db-synchronous",
            None,
            "FULL",
            "SQLite synchronous mode: FULL (an ack survives power loss) or NORMAL (survives a "
            "crash of the process only).",
        ],
        # --config, --api-key, --metrics-listen, --log-*, --webhook-*: chatd/config.py
        *config.OPT_PARAMETERS,
        [
            "redis",
            None,
            None,
            "Cluster mode: share history, fan-out and presence with every chatd node using "
            "this Redis, e.g. redis://:password@host:6379/0?prefix=chatd: (rediss:// for TLS; "
            "docs/cluster.md). Without it chatd is a single process and needs no Redis.",
        ],
    ]

    def __init__(self):
        super().__init__()
        self["listen"] = []
        config.track(self)  # which options the command line gives (they beat --config)

    def opt_listen(self, description):
        """Listen on a Twisted endpoint description, e.g. tcp:8080:interface=127.0.0.1,
        ssl:8443:privateKey=key.pem:certKey=cert.pem, unix:/run/chatd.sock or
        systemd:domain=INET:index=0 (repeatable)."""
        self["listen"].append(description)

    def postOptions(self):
        config.post_options(self)  # the --config file fills what the command line did not
        if self["port"] is not None:
            if not 0 <= self["port"] <= 65535:
                raise usage.UsageError("--port must be from 0 to 65535")
            self["listen"].insert(0, f"tcp:{self['port']}")
        if not self["listen"]:
            self["listen"].append(f"tcp:{DEFAULT_PORT}")
        if self["db-synchronous"].upper() not in ("FULL", "NORMAL"):
            raise usage.UsageError("--db-synchronous must be FULL or NORMAL")
        if self["redis"] is not None:
            from chatd.broker.redis import RedisURL

            try:
                RedisURL(self["redis"])
            except ValueError as e:
                raise usage.UsageError(f"--redis: {e}") from e
        self["settings"] = Settings(
            max_message_size=self["max-message-size"],
            max_text_length=self["max-text-length"],
            ping_interval=self["ping-interval"],
            ping_timeout=self["ping-timeout"],
            replay_limit=self["replay-limit"],
            open_handshake_timeout=self["handshake-timeout"],
        )


def make_cluster(options, reactor=None):
    """With ``--redis``: ``(RedisStore, RedisBroker, RedisDirectory)`` on one RedisNode.

    Without it: ``(None, None, None)`` (a single process: SQLite, LocalBroker).
    """
    if options.get("redis") is None:
        return None, None, None
    from chatd.broker.redis import RedisBroker, RedisDirectory, RedisNode
    from chatd.store.redis import RedisStore

    node = RedisNode(options["redis"], reactor=reactor)
    store = RedisStore(
        node,
        history_max=options["history-max"],
        history_days=options["history-days"],
        reactor=reactor,
    )
    return store, RedisBroker(node), RedisDirectory(node)


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
    from chatd.metrics import TimedStore
    from chatd.operations import Operations
    from chatd.service import ChatService

    store, broker, directory = make_cluster(options, reactor)
    if store is None:
        store = make_store(options, reactor)
    if reactor is None:
        from twisted.internet import reactor
    # the chat posts through TimedStore (append latency for /metrics); the
    # service starts and stops the store itself
    factory = ChatFactory(
        TimedStore(store, reactor),
        options["settings"],
        reactor=reactor,
        broker=broker,
        directory=directory,
    )
    ops = Operations(options, factory, store, reactor)
    return ChatService(factory, store, options["listen"], reactor=reactor, ops=ops)
