"""Command-line options and ``makeService`` for ``twistd chatd`` (like ``twisted/web/tap.py``)."""

from __future__ import annotations

from twisted.python import usage

from chatd import config, extras
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


def _rate(value):
    number = float(value)
    if number < 0:
        raise ValueError(f"must be >= 0 (0: unlimited), not {value}")
    return number


def _count(value):
    number = int(value)
    if number < 0:
        raise ValueError(f"must be >= 0 (0: unlimited), not {value}")
    return number


SECURITY_PARAMETERS = [
    [
        "auth",
        None,
        None,
        "Token authentication: required, optional or off (default: optional "
        "when --jwt-secret or --jwt-public-key is given, else off).",
    ],
    [
        "jwt-secret",
        None,
        None,
        "HS256 secret for connection tokens (or env CHATD_JWT_SECRET); "
        "also signs the tokens issued by /api/login/wechat.",
    ],
    ["jwt-public-key", None, None, "PEM public key file to verify RS256/ES256 tokens."],
    [
        "jwt-algorithm",
        None,
        None,
        "Token algorithm (default HS256 with a secret, RS256 or ES256 from the key type).",
    ],
    ["jwt-audience", None, None, "Required 'aud' claim."],
    ["jwt-issuer", None, None, "Required 'iss' claim."],
    [
        "token-ttl",
        None,
        86400.0,
        "Lifetime in seconds of tokens issued by the login endpoint.",
        _positive_float,
    ],
    [
        "max-rooms",
        None,
        _defaults.max_rooms,
        "Most rooms one connection may be in (too_many_rooms beyond).",
        _positive_int,
    ],
    [
        "max-connections-per-ip",
        None,
        1000,
        "Most live connections from one IP address (HTTP 429 beyond; 0: unlimited).",
        _count,
    ],
    [
        "max-connections-per-user",
        None,
        10,
        "Most live connections of one token user (HTTP 429 beyond; 0: unlimited).",
        _count,
    ],
    [
        "rate-limit",
        None,
        _defaults.rate_limit,
        "Frames per second one connection may send (rate_limited beyond; 0: unlimited).",
        _rate,
    ],
    [
        "rate-burst",
        None,
        _defaults.rate_burst,
        "Burst allowance of the per-connection limit.",
        _rate,
    ],
    [
        "user-rate-limit",
        None,
        _defaults.user_rate_limit,
        "Frames per second one user may send over all connections (0: unlimited).",
        _rate,
    ],
    [
        "user-rate-burst",
        None,
        _defaults.user_rate_burst,
        "Burst allowance of the per-user limit.",
        _rate,
    ],
    [
        "flood-strikes",
        None,
        _defaults.flood_strikes,
        "Refused frames within 10 s before the connection is closed with 1008.",
        _positive_int,
    ],
    [
        "max-queue-bytes",
        None,
        _defaults.max_queue_bytes,
        "Bytes queued for a client that stopped reading before it is dropped (4008).",
        _positive_int,
    ],
    ["wechat-appid", None, None, "Mini-program app id: enables POST /api/login/wechat."],
    [
        "wechat-secret",
        None,
        None,
        "Mini-program app secret (prefer env CHATD_WECHAT_SECRET; never logged).",
    ],
    ["wechat-api", None, None, "Base URL of WeChat's API (default https://api.weixin.qq.com)."],
    [
        "idle-timeout",
        None,
        _defaults.idle_timeout,
        "Close connections that sent nothing for this many seconds with 4408 (0: never).",
        _rate,
    ],
]


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
        # --auth, --jwt-*, limits: identity and abuse limits (docs/security.md)
        *SECURITY_PARAMETERS,
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
        self["allowed-origin"] = []
        self["trusted-proxy"] = []
        config.track(self)  # which options the command line gives (they beat --config)

    def opt_allowed_origin(self, origin):
        """Browser origin allowed to connect, e.g. https://chat.example.com or
        https://*.example.com (repeatable; default: any). Clients that send no
        Origin (mini-programs, apps, servers) are always allowed."""
        self["allowed-origin"].append(origin)

    def opt_trusted_proxy(self, address):
        """IP address of a reverse proxy whose X-Forwarded-For names the client
        (repeatable; used for the per-IP connection limit)."""
        self["trusted-proxy"].append(address)

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
            extras.require("--redis")
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
            max_rooms=self["max-rooms"],
            rate_limit=self["rate-limit"],
            rate_burst=self["rate-burst"],
            user_rate_limit=self["user-rate-limit"],
            user_rate_burst=self["user-rate-burst"],
            flood_strikes=self["flood-strikes"],
            max_queue_bytes=self["max-queue-bytes"],
            idle_timeout=self["idle-timeout"],
        )
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
        gate=options["gate"],
        broker=broker,
        directory=directory,
    )
    from chatd.login import login_resources

    factory.login = login_resources(options, options["gate"].verifier, reactor)
    ops = Operations(options, factory, store, reactor)
    return ChatService(factory, store, options["listen"], reactor=reactor, ops=ops)
