"""History stores: where room messages and direct messages are kept.

Every store implements :class:`IHistoryStore`. The protocol code only talks to
that interface, so the embedded SQLite store, the in-memory store and a Redis
store for cluster mode are interchangeable.

A *channel* is where a message lives: a room name for room messages, or
:func:`dm_channel` of the two users for a direct-message conversation. Each
channel has its own ``seq``: 1 for the first message, +1 for each message,
never reused, also not after pruning or a restart.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from zope.interface import Attribute, Interface


@dataclass(frozen=True, slots=True)
class Message:
    """One stored message."""

    channel: str
    seq: int
    sender: str
    name: str
    text: str
    ts: int
    client_id: str | None


@dataclass(frozen=True, slots=True)
class Appended:
    """The result of :meth:`IHistoryStore.append`.

    ``duplicate`` is true when ``(sender, client_id)`` had been stored before:
    ``message`` is then the original message and nothing new was stored.
    """

    message: Message
    duplicate: bool


@dataclass(frozen=True, slots=True)
class Replay:
    """The result of :meth:`IHistoryStore.replay`."""

    messages: list[Message]
    last_seq: int
    truncated: bool


@dataclass(frozen=True, slots=True)
class Page:
    """The result of :meth:`IHistoryStore.history`: ``messages`` ascending by seq."""

    messages: list[Message]
    more: bool


def dm_channel(a: str, b: str) -> str:
    """The channel of the direct-message conversation between users *a* and *b*.

    It is the same whichever user is named first, and it can never collide with
    a room name (room names cannot contain ``@``).
    """
    first, second = sorted((a, b))
    return "@dm:" + json.dumps([first, second], ensure_ascii=False, separators=(",", ":"))


class StoreUnavailable(Exception):
    """The store could not commit; the message was not stored."""


class SchemaTooNew(Exception):
    """The store's data was written by a newer chatd than this one."""


class IHistoryStore(Interface):
    """A durable (or not) log of messages per channel.

    All methods return Deferreds that fire in the reactor thread. ``append``
    results fire in the order the appends were made, so callers that fan out
    on the result deliver each channel's messages in ``seq`` order.
    """

    durable = Attribute("True when committed messages survive a restart.")

    def start():
        """Open the store (create or migrate the schema). Returns a Deferred."""

    def stop():
        """Flush everything pending and close. Returns a Deferred."""

    def append(channel, sender, name, client_id, text, ts):
        """Store a message, assigning the channel's next seq.

        If ``client_id`` is not None and ``(sender, client_id)`` was stored
        before (in any channel), store nothing and return the original.
        Fires with :class:`Appended` once the message is committed, or fails
        with :class:`StoreUnavailable`.
        """

    def replay(channel, since, limit):
        """Messages of *channel* with ``seq > since``, ascending, at most *limit*.

        When more than *limit* match, the newest *limit* are returned and
        ``truncated`` is true. ``since=None`` returns no messages, only
        ``last_seq``. Fires with :class:`Replay`; ``last_seq`` is the channel's
        newest committed seq (0 for an empty channel).
        """

    def history(channel, before, limit):
        """Up to *limit* messages with ``seq < before`` (None: newest), ascending.

        Fires with :class:`Page`; ``more`` is true when older ones exist.
        """
