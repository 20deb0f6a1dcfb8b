"""Logging: text or one JSON object per line, a live log level, connection events.

twistd picks its log observer in this order: its own ``--logger`` option, then
an :class:`twisted.logger.ILogObserver` component on the application, then its
``--logfile``/``--syslog`` defaults. chatd uses the second, documented hook:
with ``--log-format json`` or a ``--log-level`` other than ``info`` the chatd
service puts its observer on the application twistd created (see
:meth:`chatd.service.ChatService.setServiceParent`), writing where twistd
would (stdout with ``-n``, else ``--logfile``, default ``twistd.log``).

JSON lines hold ``time`` (seconds since the epoch), ``level``, ``namespace``,
``text`` (the formatted message) and every plain field of the event
(``peer``, ``user``, ``mode``, ``code``, ...); a failure adds ``failure`` (the
traceback). Nothing chatd logs holds message text or access tokens: the
connection log below names peer, user, mode and session only.
"""

from __future__ import annotations

import json
import sys

from twisted.logger import (
    FilteringLogObserver,
    ILogObserver,
    Logger,
    LogLevel,
    LogLevelFilterPredicate,
    PredicateResult,
    formatEvent,
    textFileLogObserver,
)
from twisted.python.logfile import LogFile
from zope.interface import implementer

LEVELS = {"debug": LogLevel.debug, "info": LogLevel.info, "warn": LogLevel.warn}
LEVELS.update({"warning": LogLevel.warn, "error": LogLevel.error, "critical": LogLevel.critical})
FORMATS = ("text", "json")

_PLAIN = (str, int, float, bool, type(None))


def startup_passes(event: dict) -> PredicateResult:
    """Start-up lines (events logged with ``startup=True``: where chatd listens) pass
    every ``--log-level``; other events are left to the level filter."""
    return PredicateResult.yes if event.get("startup") is True else PredicateResult.maybe


def parse_level(value: str) -> str:
    """Validate a ``--log-level`` value (debug, info, warn, error, critical)."""
    value = value.lower()
    if value not in LEVELS:
        raise ValueError(f"must be one of debug, info, warn, error, critical, not {value!r}")
    return value


def parse_format(value: str) -> str:
    """Validate a ``--log-format`` value (text or json)."""
    value = value.lower()
    if value not in FORMATS:
        raise ValueError(f"must be text or json, not {value!r}")
    return value


def event_as_dict(event: dict) -> dict:
    """The JSON-able form of a twisted.logger event (see the module docstring)."""
    out = {
        "time": event.get("log_time"),
        "level": event["log_level"].name if "log_level" in event else None,
        "namespace": event.get("log_namespace"),
        "text": formatEvent(event),
    }
    for key, value in event.items():
        if key.startswith("log_") or key in out or key in ("format", "message", "isError"):
            continue
        if isinstance(value, _PLAIN):
            out[key] = value
    failure = event.get("log_failure")
    if failure is not None:
        out["failure"] = failure.getTraceback()
    return out


@implementer(ILogObserver)
class JSONLinesObserver:
    """Writes each event as one JSON object and a newline to *out*."""

    def __init__(self, out):
        self.out = out

    def __call__(self, event):
        try:
            line = json.dumps(event_as_dict(event), ensure_ascii=False, default=str)
        except Exception as e:  # an odd event must not break logging
            line = json.dumps({"level": "error", "text": f"unloggable event: {e!r}"})
        self.out.write(line + "\n")
        self.out.flush()


class LogSettings:
    """The observer chatd installs for twistd, and its live level (changed on SIGHUP).

    The level hides what is below it except start-up lines (:func:`startup_passes`):
    "chatd listening on …" shows even with ``--log-level critical``.
    """

    def __init__(self, fmt: str = "text", level: str = "info"):
        self.format = fmt
        self.level = level
        self.predicate = LogLevelFilterPredicate(defaultLogLevel=LEVELS[level])

    def set_level(self, level: str) -> None:
        """Change the lowest level logged, at once."""
        self.level = level
        self.predicate.defaultLogLevel = LEVELS[level]

    def wanted(self) -> bool:
        """Whether chatd must replace twistd's default observer."""
        return self.format != "text" or self.level != "info"

    def observer(self, twistd_options=None):
        """An observer writing where twistd would, filtered by the live level."""
        out = _destination(twistd_options)
        inner = JSONLinesObserver(out) if self.format == "json" else textFileLogObserver(out)
        return FilteringLogObserver(inner, [startup_passes, self.predicate])


def _destination(twistd_options):
    """stdout for ``twistd -n`` without ``--logfile`` (or ``--logfile -``), else the file."""
    if twistd_options is None:
        return sys.stdout
    logfile = twistd_options.get("logfile") or ""
    if logfile == "-" or (twistd_options.get("nodaemon") and not logfile):
        return sys.stdout
    return LogFile.fromFullPath(logfile or "twistd.log")


_connections = Logger(namespace="chatd.connections")


class ConnectionLog:
    """A chat observer logging connections opening and closing, and errors sent.

    Fields: ``peer``, ``user``, ``mode``, ``session``; errors add ``code``. Never
    the text of a message, never the URL (which may carry a token).
    """

    def __call__(self, event: str, **fields) -> None:
        if event in ("connect", "disconnect"):
            session = fields["session"]
            _connections.info(
                "connection {what} peer={peer} user={user} mode={mode}",
                what="open" if event == "connect" else "closed",
                peer=getattr(session.client, "peer", None),
                user=session.user,
                mode=session.mode,
                session=session.id,
            )
        elif event == "error":
            session = fields["session"]
            _connections.info(
                "error {code} sent to peer={peer} user={user}",
                code=fields["code"],
                peer=getattr(session.client, "peer", None),
                user=session.user,
                session=session.id,
            )
