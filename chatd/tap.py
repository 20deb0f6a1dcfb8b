"""Command-line options and ``makeService`` for ``twistd chatd`` (like ``twisted/web/tap.py``)."""

from __future__ import annotations

import os
import sys

from twisted.logger import Logger
from twisted.python import usage
from twisted.web.static import File

from chatd import config, extras, workers
from chatd import options as options_table
from chatd.api import ApiKey, ApiResource
from chatd.auth import TokenVerifier
from chatd.cluster.local import LocalBroker, LocalMessageLog
from chatd.contentcheck import media_url_maker
from chatd.gate import AUTH_MODES, Gate
from chatd.lifecycle import Lifecycle
from chatd.login import login_resources
from chatd.logs import ConnectionLog, LogSettings
from chatd.media.web import make_media
from chatd.metrics import MetricsResource, TimedLog, make_registry
from chatd.moderation import RetentionSweep
from chatd.notify import Notifier
from chatd.options import DEFAULT_PORT
from chatd.push import DEFAULT_FIELDS, DEFAULT_PAGE, PushConfig
from chatd.pushrules import parse_fields
from chatd.readiness import Readiness, ReadyResource
from chatd.reload import Reloader
from chatd.service import ChatService, MetricsListeningService, build
from chatd.store.sqlite import SQLiteStore
from chatd.web import STATIC, build_metrics_site, build_site
from chatd.webhooks import Webhooks
from chatd.wechat import PushSender, WeChatApi
from chatd.wechatpush import wechat_events_children
from chatd.wordfilter import WordList

log = Logger()


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
        if self["push-template"] and not self["wechat-appid"]:
            raise usage.UsageError("--push-template needs --wechat-appid and its secret")
        if self["word-list"]:
            try:
                WordList.read(self["word-list"])
            except (OSError, ValueError) as e:
                raise usage.UsageError(f"--word-list: {e}") from None
        if self["wechat-content-check"].lower() == "on" and not self["wechat-appid"]:
            raise usage.UsageError("--wechat-content-check on needs --wechat-appid and its secret")
        refused = media_refusal(self)
        if refused:
            raise usage.UsageError(refused)


def media_refusal(options) -> str | None:
    """Why the options cannot serve media as asked (None: they can). In a cluster
    (``--redis``) every node serves every upload, so the bytes must be where every
    node reads them: ``--media-s3``, or a ``--media-dir`` declared ``--media-shared``;
    and every node must sign URLs alike (``--media-url-key`` unless the key is derived
    from ``--jwt-secret``).
    A ``--media-dir`` given without either is refused; with no media option at all,
    uploads are just off (:func:`media_off`)."""
    if options["redis"] is None or options["gate"].verifier is None:
        return None
    if options["media-s3"] or options["media-shared"]:
        if options["gate"].verifier.secret is None and not (
            options["media-url-key"] or os.environ.get("CHATD_MEDIA_URL_KEY")
        ):
            return (
                "media with --redis and --jwt-public-key needs --media-url-key (or "
                "CHATD_MEDIA_URL_KEY): every node must sign media URLs with the same key"
            )
        return None
    if options["media-dir"] != options_table.BY_NAME["media-dir"].default:
        return (
            "--media-dir with --redis: every node serves every upload, so the files must "
            "be shared: give --media-s3, or --media-shared if --media-dir is one file "
            "system every node mounts (docs/cluster.md, 'Media')"
        )
    return None


def media_off(options) -> str | None:
    """Why uploads are off although a token verifier would allow them (None: on)."""
    if options.get("redis") is None or options.get("media-s3") or options.get("media-shared"):
        return None
    return (
        "media uploads are off: with --redis they need --media-s3 or --media-shared "
        "(docs/cluster.md, 'Media')"
    )


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


def make_wechat_api(options, reactor) -> WeChatApi | None:
    """The :class:`chatd.wechat.WeChatApi` of ``--wechat-appid`` (one access token for
    push and content checks), or None without it."""
    appid = options.get("wechat-appid")
    if not appid:
        return None
    secret = options.get("wechat-secret") or os.environ.get("CHATD_WECHAT_SECRET")
    return WeChatApi(reactor, appid, secret, options.get("wechat-api"))


def make_push(options, chat, webhooks, api, reactor):
    """Configure the chat's offline push (chatd/push.py) from the options; returns the
    :class:`chatd.wechat.PushSender` (a child service) or None without WeChat push."""
    sender = None
    template = options.get("push-template")
    if template:
        sender = PushSender(api, reactor, refused=chat.push.refused, failed=chat.push.given_up)
    config = PushConfig(
        template=template or None,
        page=options.get("push-page") or DEFAULT_PAGE,
        fields=parse_fields(options.get("push-fields") or DEFAULT_FIELDS),
        state=(options.get("push-state") or "formal").lower(),
        utc_offset=options.get("push-utc-offset", 8.0),
    )
    chat.push.configure(config, sender, lambda: bool(webhooks.url and webhooks.push))
    return sender


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
    webhooks = Webhooks(
        reactor,
        options.get("webhook-url"),
        options.get("webhook-rooms"),
        api_key,
        push=options.get("webhook-push"),
    )
    chat.observers.append(webhooks)
    wechat = make_wechat_api(options, reactor)
    sender = make_push(options, chat, webhooks, wechat, reactor)
    chat.content.configure(wechat, reactor)  # msgSecCheck with --wechat-content-check on
    chat.words.load(options.get("word-list"))
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
    off = media_off(options)
    if off is not None and options["gate"].verifier is not None:
        log.warn(off)
    node = getattr(store, "node", None) if options.get("redis") else None
    media = None if off else make_media(options, options["gate"].verifier, reactor, node)
    if media is not None:
        media.attach(chat)  # send/dm may attach uploads
        if options.get("public-url"):  # WeChat's mediaCheckAsync fetches from there
            chat.content.media_url = media_url_maker(options["public-url"], media.signer, reactor)
        elif str(options.get("wechat-content-check", "off")).lower() == "on":
            log.warn(
                "--wechat-content-check on without --public-url: images and voice are not checked"
            )
    parts = []
    push_token = options.get("wechat-push-token") or os.environ.get("CHATD_WECHAT_PUSH_TOKEN")
    if push_token:  # WeChat's message push URL: /api/wechat/events (chatd/wechatpush.py)
        parts.append(
            lambda root, rules: wechat_events_children(
                push_token, chat.content, reactor, root, rules
            )
        )
    site = build_site(factory, children, login, media, options["gate"].verifier, parts)
    logs = LogSettings(options.get("log-format", "text"), options.get("log-level", "info"))
    notifier = Notifier(reactor)
    reloader = Reloader(options, factory, logs, api_key, webhooks, notifier, reactor)
    # twistd's own options when run by twistd (None when built in-process)
    twistd = getattr(options, "parent", None)
    lifecycle = Lifecycle(notifier, readiness, reloader, webhooks, logs, reactor, twistd)
    services = [part for part in (media, sender, wechat) if part is not None]
    services.append(RetentionSweep(chat.moderation))  # the queue and audit log
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
    if hook is not None:  # started by a --workers parent
        service.ready_hooks.append(hook)
        service.ready_hooks.append(lambda: workers.watch_parent(reactor))
    return service
