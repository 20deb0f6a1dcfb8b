"""The option table of ``twistd chatd``: one row per option, everything else derived.

:data:`TABLE` holds every option once: its name (and short flag), how its value
is parsed and range-checked, its default, the :class:`chatd.settings.Settings`
field it sets, what a SIGHUP reload does with a new value, and its help text.
From it come:

* the ``optParameters`` / ``optFlags`` / repeatable ``opt_*`` handlers of
  :class:`chatd.tap.Options` (:func:`opt_parameters`, :func:`opt_flags`,
  :func:`repeatable_handlers`);
* the :class:`Settings` built from parsed options (:func:`settings_from`);
* the keys of the TOML configuration file (:func:`config_keys`, chatd/config.py);
* the SIGHUP reload: :class:`chatd.reload.Reloader` applies every changed
  row whose :attr:`Option.reload` is set, with the applier that row names;
* the option table in docs/operations.md (:func:`markdown_table`; run
  ``python -m chatd.options docs/operations.md`` to rewrite it, and a test
  checks it is current).

Every refused value names its option and the accepted range:
``--flood-strikes: must be an integer from 0 (off) to 1000, not 'x'`` on the
command line (:class:`OptionError`), and ``chatd.toml: flood-strikes: must be
…`` from the configuration file. Numbers are finite (``nan`` and ``inf`` are
refused) and have a documented upper bound; where 0 is allowed it means off
or unlimited, and the message says which.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from dataclasses import dataclass

from twisted.python import usage

from chatd.logs import parse_format, parse_level
from chatd.pushrules import parse_fields
from chatd.settings import Settings

DEFAULT_PORT = 8080


class OptionError(usage.UsageError):
    """A refused option value: ``--NAME: REASON`` (REASON states the accepted range)."""

    def __init__(self, name: str, reason: str):
        super().__init__(f"--{name}: {reason}")
        self.option = name
        self.reason = reason


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


@dataclass(frozen=True)
class Number:
    """Parse an int or a finite float from *low* (0 with *zero*) to *high*.

    ``zero``: 0 is allowed and means this (``"off"``, ``"unlimited"``,
    ``"never"``). ``low``: the smallest other value (default 1 for integers;
    for floats any positive number unless set). Raises :class:`ValueError`
    stating the range.
    """

    kind: type
    high: float
    zero: str | None = None
    low: float | None = None

    def describe(self) -> str:
        """The accepted values, e.g. ``an integer from 0 (off) to 1000``."""
        noun = "an integer" if self.kind is int else "a number"
        high = _number(self.high)
        if self.zero is not None and self.low is not None:
            return f"0 ({self.zero}) or {noun} from {_number(self.low)} to {high}"
        if self.zero is not None:
            return f"{noun} from 0 ({self.zero}) to {high}"
        if self.low is not None:
            return f"{noun} from {_number(self.low)} to {high}"
        positive = "a positive integer" if self.kind is int else "a positive number"
        return f"{positive} up to {high}"

    @property
    def coerceDoc(self) -> str:  # noqa: N802 (twisted.python.usage's name)
        """Shown after the option's help by ``--help``."""
        text = self.describe()
        return text[0].upper() + text[1:] + "."

    def __call__(self, raw) -> int | float:
        refused = ValueError(f"must be {self.describe()}, not {str(raw)!r}")
        try:
            value = self.kind(raw)
        except (TypeError, ValueError):
            raise refused from None
        if not math.isfinite(value) or value > self.high:
            raise refused
        if value == 0 and self.zero is not None:
            return value
        if self.low is not None:
            ok = value >= self.low
        else:
            ok = value >= 1 if self.kind is int else value > 0
        if not ok:
            raise refused
        return value


@dataclass(frozen=True)
class Choice:
    """One of a few words (compared without case); the value is kept as given."""

    words: tuple[str, ...]

    def describe(self) -> str:
        """``FULL or NORMAL``."""
        return ", ".join(self.words[:-1]) + " or " + self.words[-1]

    def __call__(self, raw) -> str:
        if str(raw).upper() not in {w.upper() for w in self.words}:
            raise ValueError(f"must be {self.describe()}, not {str(raw)!r}")
        return str(raw)


@dataclass(frozen=True)
class Reload:
    """What a SIGHUP reload does with a changed value.

    ``applier``: the ``Reloader._reload_<applier>`` method that applies it
    (called once per reload for all the changed rows naming it); ``effect``:
    what the docs say.
    """

    applier: str
    effect: str


#: None: a changed value is logged as needing a restart
RESTART = None
SETTINGS = Reload("settings", "every request from then on")
PROTOCOL = Reload(
    "protocol", "every connection (autobahn reads them from the factory's protocol class)"
)
GATE = Reload("limits", "every new handshake (live connection counts are kept)")
LIMITS = Reload("limits", "every connection, open ones included (rate buckets start afresh)")
LOG_LEVEL = Reload("log_level", "at once")
API_KEY = Reload("api_key", "at once (old key refused)")
WEBHOOKS = Reload("webhooks", "events from then on")


@dataclass(frozen=True)
class Option:
    """One option of ``twistd chatd``.

    ``kind``: ``param`` (takes a value), ``list`` (repeatable, a list in the
    config file) or ``flag``. ``parse`` turns the raw string into the value
    (None: kept as a string). ``setting``: the :class:`Settings` field it
    sets. ``in_file``: whether the config file may hold it. ``value`` and
    ``shown_default`` are for the docs table.
    """

    name: str
    help: str
    default: object = None
    parse: Callable | None = None
    short: str | None = None
    setting: str | None = None
    reload: Reload | None = RESTART
    kind: str = "param"
    in_file: bool = True
    value: str = "text"
    shown_default: str | None = None

    def coerce(self, raw):
        """The parsed value of *raw*; :class:`OptionError` names this option and the range."""
        if self.parse is None:
            return raw
        try:
            return self.parse(raw)
        except ValueError as e:
            raise OptionError(self.name, str(e)) from None

    def describe_value(self) -> str:
        """The accepted values, for the docs."""
        if isinstance(self.parse, Number | Choice):
            return self.parse.describe()
        return self.value


_d = Settings()


def _push_fields(raw) -> str:
    parse_fields(raw)  # refused with the accepted form; kept as given (chatd.push parses it)
    return str(raw)


def _int(high, zero=None, low=None):
    return Number(int, high, zero, low)


def _float(high, zero=None, low=None):
    return Number(float, high, zero, low)


def _fd_list(raw) -> list[int]:
    """``3,4`` -> ``[3, 4]`` (``--worker-fds``)."""
    try:
        fds = [int(part) for part in str(raw).split(",")]
    except ValueError:
        fds = []
    if not fds or any(fd < 0 for fd in fds):
        raise ValueError(f"must be file descriptors, comma-separated, not {str(raw)!r}")
    return fds


def _worker_index(raw) -> int:
    """``--worker-index``: 0 to 255 (not a tunable, so not in the numeric-row checks)."""
    if not str(raw).isdigit() or int(raw) > 255:
        raise ValueError(f"must be an integer from 0 to 255, not {str(raw)!r}")
    return int(raw)


_SECONDS_DAY = 86400
_UNLIMITED = "unlimited"

#: every option of ``twistd chatd``, in ``--help`` order
TABLE: tuple[Option, ...] = (
    Option(
        "port",
        f"TCP port to listen on, all interfaces (default {DEFAULT_PORT} "
        "when no --listen is given).",
        short="p",
        parse=_int(65535, low=0),
        shown_default=f"{DEFAULT_PORT} when no `--listen`",
    ),
    Option(
        "max-message-size",
        "Largest WebSocket frame/message in bytes; larger ones close the connection with 1009.",
        _d.max_message_size,
        _int(64 << 20),
        setting="max_message_size",
        reload=PROTOCOL,
    ),
    Option(
        "compression",
        "permessage-deflate (RFC 7692) for clients that offer it: on or off. Always "
        "without server context takeover, so each message is compressed once for all "
        "its recipients; messages under 128 bytes go uncompressed.",
        _d.compression,
        Choice(("on", "off")),
        setting="compression",
        reload=Reload("settings", "every new handshake (open connections keep theirs)"),
    ),
    Option(
        "max-text-length",
        "Longest message text in characters; longer gets error too_large.",
        _d.max_text_length,
        _int(1_000_000),
        setting="max_text_length",
        reload=SETTINGS,
    ),
    Option(
        "ping-interval",
        "Seconds between WebSocket pings the server sends.",
        _d.ping_interval,
        _float(_SECONDS_DAY),
        setting="ping_interval",
        reload=PROTOCOL,
    ),
    Option(
        "ping-timeout",
        "Seconds to wait for a pong before dropping the peer.",
        _d.ping_timeout,
        _float(_SECONDS_DAY),
        setting="ping_timeout",
        reload=PROTOCOL,
    ),
    Option(
        "handshake-timeout",
        "Seconds from accept to a complete HTTP request (the WebSocket opening handshake "
        "included): one absolute deadline that trickled bytes do not extend.",
        _d.open_handshake_timeout,
        _float(3600),
        setting="open_handshake_timeout",
        reload=PROTOCOL,
    ),
    Option(
        "replay-limit",
        "Most messages replayed by join {since}; beyond it joined says truncated.",
        _d.replay_limit,
        _int(100_000),
        setting="replay_limit",
        reload=SETTINGS,
    ),
    Option(
        "db",
        "SQLite history file (created if missing); ':memory:' keeps history in memory only.",
        "chatd.sqlite3",
        value="file path or `:memory:`",
    ),
    Option(
        "history-max",
        "Messages kept per room and per DM conversation (older ones are pruned in the background).",
        10000,
        _int(100_000_000),
    ),
    Option(
        "history-days",
        "Also prune messages older than this many days (default: keep by count only).",
        None,
        _float(36500),
    ),
    Option(
        "db-synchronous",
        "SQLite synchronous mode: FULL (an ack survives power loss) or NORMAL (survives a "
        "crash of the process only).",
        "FULL",
        Choice(("FULL", "NORMAL")),
    ),
    # identity and abuse limits (docs/security.md)
    Option(
        "auth",
        "Token authentication: required, optional or off (default: optional "
        "when --jwt-secret or --jwt-public-key is given, else off).",
        value="`required`, `optional` or `off`",
        shown_default="`optional` with a JWT key, else `off`",
    ),
    Option(
        "jwt-secret",
        "HS256 secret for connection tokens (or env CHATD_JWT_SECRET); "
        "also signs the tokens issued by /api/login/wechat.",
    ),
    Option(
        "jwt-public-key",
        "PEM public key file to verify RS256/ES256 tokens.",
        value="file path",
    ),
    Option(
        "jwt-algorithm",
        "Token algorithm (default HS256 with a secret, RS256 or ES256 from the key type).",
    ),
    Option("jwt-audience", "Required 'aud' claim."),
    Option("jwt-issuer", "Required 'iss' claim."),
    Option(
        "token-ttl",
        "Lifetime in seconds of tokens issued by the login endpoint.",
        86400.0,
        _float(365 * _SECONDS_DAY),
    ),
    Option(
        "max-rooms",
        "Most rooms one connection may be in (too_many_rooms beyond).",
        _d.max_rooms,
        _int(100_000),
        setting="max_rooms",
        reload=LIMITS,
    ),
    Option(
        "recall-window",
        "Seconds a sender may recall their own message (room owners and admins: any time).",
        _d.recall_window,
        _float(86_400 * 365),
        setting="recall_window",
        reload=SETTINGS,
    ),
    Option(
        "receipt-members",
        "Rooms with at most this many members send every read receipt to the members.",
        _d.receipt_members,
        _int(100_000),
        setting="receipt_members",
        reload=SETTINGS,
    ),
    Option(
        "receipt-window",
        "Seconds a small room's receipts are batched for clients that ask for "
        "receipts_batch (0: off).",
        _d.receipt_window,
        _float(5.0, "off", low=0.01),
        setting="receipt_window",
        reload=SETTINGS,
    ),
    Option(
        "sync-limit",
        "Most timeline items per conversation in one sync reply; beyond it truncated.",
        _d.sync_limit,
        _int(10_000, low=1),
        setting="sync_limit",
        reload=SETTINGS,
    ),
    Option(
        "max-connections-per-ip",
        "Most live connections from one IP address (HTTP 429 beyond; 0: unlimited).",
        1000,
        _int(1_000_000, _UNLIMITED),
        reload=GATE,
    ),
    Option(
        "max-connections-per-user",
        "Most live connections of one token user (HTTP 429 beyond; 0: unlimited).",
        10,
        _int(1_000_000, _UNLIMITED),
        reload=GATE,
    ),
    Option(
        "rate-limit",
        "Frames per second one connection may send (rate_limited beyond; 0: unlimited).",
        _d.rate_limit,
        _float(1_000_000, _UNLIMITED),
        setting="rate_limit",
        reload=LIMITS,
    ),
    Option(
        "rate-burst",
        "Burst allowance of the per-connection limit.",
        _d.rate_burst,
        _float(1_000_000, _UNLIMITED, low=1),
        setting="rate_burst",
        reload=LIMITS,
    ),
    Option(
        "user-rate-limit",
        "Frames per second one user may send over all connections (0: unlimited).",
        _d.user_rate_limit,
        _float(1_000_000, _UNLIMITED),
        setting="user_rate_limit",
        reload=LIMITS,
    ),
    Option(
        "user-rate-burst",
        "Burst allowance of the per-user limit.",
        _d.user_rate_burst,
        _float(1_000_000, _UNLIMITED, low=1),
        setting="user_rate_burst",
        reload=LIMITS,
    ),
    Option(
        "flood-strikes",
        "Refused frames within 10 s before the connection is closed with 1008.",
        _d.flood_strikes,
        _int(1000, "off"),
        setting="flood_strikes",
        reload=LIMITS,
    ),
    Option(
        "max-queue-bytes",
        "Bytes queued for a client that stopped reading before it is dropped (4008).",
        _d.max_queue_bytes,
        _int(1 << 30),
        setting="max_queue_bytes",
        reload=LIMITS,
    ),
    Option("wechat-appid", "Mini-program app id: enables POST /api/login/wechat."),
    Option(
        "wechat-secret",
        "Mini-program app secret (prefer env CHATD_WECHAT_SECRET; never logged).",
    ),
    Option(
        "wechat-api",
        "Base URL of WeChat's API (default https://api.weixin.qq.com).",
        value="URL",
        shown_default="`https://api.weixin.qq.com`",
    ),
    Option(
        "wechat-push-token",
        "Token of the mini-program's message push URL (/api/wechat/events; or env "
        "CHATD_WECHAT_PUSH_TOKEN; never logged): enables that URL.",
    ),
    Option(
        "public-url",
        "chatd's public https base URL (e.g. https://chat.example.com): WeChat's "
        "mediaCheckAsync fetches signed /media/ URLs under it; without it images and "
        "voice are not sent to WeChat's check.",
        value="URL",
    ),
    # offline push (chatd/push.py, chatd/wechat.py; docs/operations.md "Offline push")
    Option(
        "push-template",
        "WeChat one-time subscribe-message template id of offline notifications "
        "(needs --wechat-appid); without it no subscribe message is sent.",
    ),
    Option(
        "push-page",
        "Mini-program page a notification opens; chatd adds ?room=ROOM or ?with=USER.",
        "pages/chat/chat",
        value="page path",
    ),
    Option(
        "push-fields",
        "The template's data fields: KEY=SOURCE pairs, comma-separated; SOURCE is name "
        "(the sender's), preview (the text, or a placeholder), time or room.",
        "thing1=name,thing2=preview,time3=time",
        _push_fields,
        value="`KEY=SOURCE,...`",
    ),
    Option(
        "push-interval",
        "Seconds between two notifications of one conversation to one user (a digest; "
        "0: one per message).",
        _d.push_interval,
        _float(7 * _SECONDS_DAY, "one per message"),
        setting="push_interval",
        reload=SETTINGS,
    ),
    Option(
        "push-previews",
        "Notifications show the message text (on) or only that a message came (off).",
        _d.push_previews,
        Choice(("on", "off")),
        setting="push_previews",
        reload=SETTINGS,
    ),
    Option(
        "push-state",
        "miniprogram_state of subscribe messages: formal, trial or developer.",
        "formal",
        Choice(("formal", "trial", "developer")),
    ),
    Option(
        "push-utc-offset",
        "Hours from UTC of the time shown in notifications (8: China Standard Time).",
        8.0,
        _float(14, low=-12),
    ),
    # content security (chatd/contentcheck.py; docs/operations.md "Content security")
    Option(
        "word-list",
        "File of forbidden words, one per line (UTF-8; # comments), matched as substrings "
        "of every send/dm/edit text; re-read on every SIGHUP.",
        reload=Reload("word_list", "at once; the file is also re-read on every SIGHUP"),
        value="file path",
    ),
    Option(
        "word-filter",
        "A text holding a listed word: mask (the word becomes ***) or block (error "
        "content_blocked).",
        _d.word_filter,
        Choice(("mask", "block")),
        setting="word_filter",
        reload=SETTINGS,
    ),
    Option(
        "wechat-content-check",
        "Check WeChat users' text with WeChat's msgSecCheck before it is stored: on or "
        "off (needs --wechat-appid).",
        _d.content_check,
        Choice(("on", "off")),
        setting="content_check",
        reload=SETTINGS,
    ),
    Option(
        "content-check-failure",
        "When WeChat's check is slow or down: open (let the message through) or closed "
        "(refuse it with error unavailable).",
        _d.content_check_failure,
        Choice(("open", "closed")),
        setting="content_check_failure",
        reload=SETTINGS,
    ),
    Option(
        "content-check-timeout",
        "Seconds a content check may take (the latency budget) before it counts as unavailable.",
        _d.content_check_timeout,
        _float(60, low=0.05),
        setting="content_check_timeout",
        reload=SETTINGS,
    ),
    Option(
        "content-check-review",
        "A 'review' verdict: pass (stored, delivered, logged) or block (refused as "
        "content_blocked).",
        _d.content_check_review,
        Choice(("pass", "block")),
        setting="content_check_review",
        reload=SETTINGS,
    ),
    Option(
        "content-check-scene",
        "msgSecCheck scene: 1 profile, 2 comment, 3 forum, 4 social log.",
        _d.content_check_scene,
        _int(4),
        setting="content_check_scene",
        reload=SETTINGS,
    ),
    Option(
        "moderation-retention-days",
        "Days closed moderation queue entries and audit log entries are kept (swept hourly; "
        "open queue entries are kept until acted on; 0: keep for good).",
        _d.moderation_retention_days,
        _float(36500, "keep for good"),
        setting="moderation_retention_days",
        reload=SETTINGS,
    ),
    Option(
        "idle-timeout",
        "Close connections that sent nothing for this many seconds with 4408 (0: never).",
        _d.idle_timeout,
        _float(7 * _SECONDS_DAY, "never"),
        setting="idle_timeout",
        reload=LIMITS,
    ),
    # operations (chatd/config.py, chatd/tap.py, chatd/reload.py)
    Option(
        "config",
        "TOML configuration file holding any of these options (command-line options win); "
        "see chatd.example.toml. SIGHUP reloads it.",
        in_file=False,
        value="file path",
    ),
    Option(
        "api-key",
        "Key for the HTTP API under /api/ and the admin page (header 'Authorization: apikey "
        "KEY'); default: $CHATD_API_KEY; without one the API answers 403.",
        reload=API_KEY,
    ),
    Option(
        "metrics-listen",
        "Serve /metrics only on this endpoint (e.g. tcp:9100:interface=127.0.0.1) instead "
        "of on every --listen endpoint.",
        value="endpoint description",
    ),
    Option(
        "log-format",
        "Log format: text or json (one JSON object per line).",
        "text",
        parse_format,
        value="`text` or `json`",
    ),
    Option(
        "log-level",
        "Lowest level logged: debug, info, warn, error or critical.",
        "info",
        parse_level,
        reload=LOG_LEVEL,
        value="`debug`, `info`, `warn`, `error` or `critical`",
    ),
    Option(
        "webhook-url",
        "POST user online/offline (and room message) events here.",
        reload=WEBHOOKS,
        value="URL",
    ),
    Option(
        "webhook-rooms",
        "Comma-separated rooms whose messages are POSTed to --webhook-url ('*': all rooms).",
        reload=WEBHOOKS,
        value="rooms, comma-separated",
    ),
    Option(
        "webhook-push",
        "POST a push event to --webhook-url for each notification of an offline user "
        "(on or off): the bridge to APNs/FCM.",
        "off",
        Choice(("on", "off")),
        reload=WEBHOOKS,
    ),
    Option(
        "redis",
        "Cluster mode: share history, fan-out and presence with every chatd node using "
        "this Redis, e.g. redis://:password@host:6379/0?prefix=chatd: (rediss:// for TLS; "
        "docs/cluster.md). Without it chatd is a single process and needs no Redis.",
        value="`redis://` or `rediss://` URL",
    ),
    Option(
        "workers",
        "Worker processes sharing the listening sockets, each a full chatd node on the "
        "--redis bus (needs --redis above 1); the parent supervises them (docs/cluster.md).",
        1,
        _int(256),
    ),
    Option(
        "worker-fds",
        "Internal (set by the --workers parent): the inherited listening sockets, one file "
        "descriptor per --listen endpoint, comma-separated.",
        parse=_fd_list,
        in_file=False,
        value="file descriptors",
    ),
    Option(
        "worker-index",
        "Internal (set by the --workers parent): this worker's number, from 0.",
        0,
        _worker_index,
        in_file=False,
        value="0 to 255",
    ),
    # repeatable
    Option(
        "allowed-origin",
        "Browser origin allowed to connect, e.g. https://chat.example.com or "
        "https://*.example.com (repeatable; default: any). Clients that send no "
        "Origin (mini-programs, apps, servers) are always allowed.",
        kind="list",
        reload=GATE,
        value="origin, repeatable",
        shown_default="any",
    ),
    Option(
        "trusted-proxy",
        "IP address of a reverse proxy whose X-Forwarded-For names the client "
        "(repeatable; used for the per-IP connection limit).",
        kind="list",
        reload=GATE,
        value="IP address, repeatable",
    ),
    Option(
        "listen",
        "Listen on a Twisted endpoint description, e.g. tcp:8080:interface=127.0.0.1, "
        "ssl:8443:privateKey=key.pem:certKey=cert.pem, unix:/run/chatd.sock or "
        "systemd:domain=INET:index=0 (repeatable).",
        kind="list",
        value="endpoint description, repeatable",
        shown_default=f"`tcp:{DEFAULT_PORT}`",
    ),
    # media uploads (chatd/media/, docs/api.md "Media"); on with a JWT secret or key
    Option(
        "media-dir",
        "Directory of media uploads: the stored files (unless --media-s3), their "
        "metadata (media.sqlite3) and temporary files; made on the first upload.",
        "chatd-media",
        value="directory path",
    ),
    Option(
        "media-s3",
        "Store media in an S3-compatible service instead of --media-dir "
        "(credentials from the environment, e.g. AWS_ACCESS_KEY_ID).",
        value="`s3://bucket/prefix?endpoint=URL&region=R`",
    ),
    Option(
        "media-shared",
        "--media-dir is one file system every node mounts at the same path (NFS, a "
        "cluster file system; or the --workers of one host): with --redis, uploads need "
        "it or --media-s3.",
        kind="flag",
        value="flag",
    ),
    Option(
        "media-url-key",
        "Key signing media URLs (or env CHATD_MEDIA_URL_KEY; default: derived from --jwt-secret).",
    ),
    Option(
        "media-url-ttl",
        "Seconds a signed media URL stays valid.",
        3600.0,
        _float(7 * _SECONDS_DAY, low=60),
    ),
    Option(
        "max-image-bytes",
        "Largest image upload (JPEG, PNG, GIF, WebP) in bytes; larger: HTTP 413.",
        20 << 20,
        _int(1 << 30),
    ),
    Option(
        "max-voice-bytes",
        "Largest voice upload (MP3, AAC, M4A) in bytes; larger: HTTP 413.",
        2 << 20,
        _int(1 << 30),
    ),
    Option(
        "max-file-bytes",
        "Largest upload of any other kind (video, files) in bytes; larger: HTTP 413.",
        50 << 20,
        _int(1 << 30),
    ),
    Option(
        "media-quota-bytes",
        "Bytes one user may upload per rolling day; beyond: HTTP 429.",
        500 << 20,
        _int(1 << 40, zero=_UNLIMITED),
    ),
    Option(
        "media-grace-hours",
        "Hours an upload that no message uses is kept before the sweep removes it.",
        24.0,
        _float(24 * 365, low=0.01),
    ),
)

BY_NAME: dict[str, Option] = {row.name: row for row in TABLE}


def _coercer(row: Option):
    def coerce(raw):
        return row.coerce(raw)

    if hasattr(row.parse, "coerceDoc"):
        coerce.coerceDoc = row.parse.coerceDoc
    return coerce


def _help(row: Option) -> str:
    # twistd's --help adds ". <range>." after the help of a range-checked option
    return row.help.rstrip(".") if hasattr(row.parse, "coerceDoc") else row.help


def opt_parameters() -> list[list]:
    """``optParameters`` for :class:`usage.Options`: every ``param`` row."""
    return [
        [row.name, row.short, row.default, _help(row), _coercer(row)]
        for row in TABLE
        if row.kind == "param"
    ]


def opt_flags() -> list[list]:
    """``optFlags`` for :class:`usage.Options`: every ``flag`` row."""
    return [[row.name, row.short, row.help] for row in TABLE if row.kind == "flag"]


def _appender(row: Option) -> Callable:
    def handler(self, value):
        self[row.name].append(row.coerce(value))

    handler.__doc__ = row.help
    handler.__name__ = "opt_" + row.name.replace("-", "_")
    return handler


def repeatable_handlers() -> dict[str, Callable]:
    """``opt_<name>`` methods for the ``list`` rows: each value is appended."""
    handlers = (_appender(row) for row in TABLE if row.kind == "list")
    return {handler.__name__: handler for handler in handlers}


def start_lists(options) -> None:
    """Give every repeatable option its empty list (in ``Options.__init__``)."""
    for row in TABLE:
        if row.kind == "list":
            options[row.name] = []


def settings_from(options) -> Settings:
    """The :class:`Settings` the parsed *options* describe."""
    return Settings(**{row.setting: options[row.name] for row in TABLE if row.setting})


def config_keys() -> list[str]:
    """Every key a configuration file may hold (the long option names), sorted."""
    return sorted(row.name for row in TABLE if row.in_file)


def _shown_default(row: Option) -> str:
    if row.shown_default is not None:
        return row.shown_default
    if row.default is None:
        return "–"
    if isinstance(row.default, float | int) and not isinstance(row.default, bool):
        return _number(row.default)
    return f"`{row.default}`"


BEGIN = (
    "<!-- options table: generated from chatd/options.py; "
    "`python -m chatd.options docs/operations.md` rewrites it -->"
)
END = "<!-- end of options table -->"


def markdown_table() -> str:
    """The option table of docs/operations.md, between :data:`BEGIN` and :data:`END`."""
    lines = [
        BEGIN,
        "",
        "| option | accepted values | default | on SIGHUP |",
        "|---|---|---|---|",
    ]
    for row in TABLE:
        name = f"`--{row.name}`" + (f" / `-{row.short}`" if row.short else "")
        reload = "needs a restart" if row.reload is None else f"applied: {row.reload.effect}"
        if not row.in_file:
            reload = "–"
        lines.append(f"| {name} | {row.describe_value()} | {_shown_default(row)} | {reload} |")
    lines += ["", END]
    return "\n".join(lines)


def rewrite_docs(text: str) -> str:
    """*text* with its option table (from :data:`BEGIN` to :data:`END`) regenerated."""
    start = text.index(BEGIN)
    end = text.index(END, start) + len(END)
    return text[:start] + markdown_table() + text[end:]


def main(argv=None) -> int:
    """``python -m chatd.options FILE…``: rewrite the option table in each FILE."""
    for path in (argv if argv is not None else sys.argv[1:]) or ["docs/operations.md"]:
        with open(path, encoding="utf-8") as f:
            text = f.read()
        new = rewrite_docs(text)
        if new != text:
            with open(path, "w", encoding="utf-8") as f:
                f.write(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
