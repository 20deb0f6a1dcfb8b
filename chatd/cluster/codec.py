"""The bus codec: how a chat event travels between cluster nodes, in one place.

Every event on the node bus (one Redis PUBLISH on ``<prefix>bus:<db>``) is one
JSON object, like a command of Synapse's replication (``commands.py``): typed by
its kind and carrying the id of the node that published it, so each node can
tell its own events (and the sessions they came from) from the others'::

    {"k": kind, "n": origin node id, "a": [args...]}

``message`` and ``dm`` events carry the committed message after the arguments, ``"m": [channel, seq, sender, name, text, ts,
client_id]``; a timeline item that is not a plain message (``Message.kind`` other
than ``"message"``, or ``Message.data`` set) has two more elements, ``kind`` and
``data`` (the JSON object as the store wrote it, :func:`data_json`): ``[..., client_id,
kind, data]``. A plain message keeps the seven elements, byte for byte as before
(a node of the previous version reads those; it cannot read the longer arrays, so
in a rolling upgrade conversations features must wait until every node runs this
version). Their payload is written by the history store's commit script
(``lua/append.lua``), atomically with the ``seq``: Python builds the head with
:func:`committed_head` and the script appends the message array and the closing
``}`` (``lua/bus.lua``, the codec's Lua half). The presence leaves and joins of
the presence scripts (reaping a dead node, a resync) are also written in Lua by
``lua/bus.lua``; their keys come in cjson's order and their origin is ``null``.

The arguments per kind (see :mod:`chatd.cluster`), as they are on the wire:

``message``  ``[origin session, from_relay]`` + ``"m"``
``dm``       ``[to, origin session]`` + ``"m"``
``presence`` ``[room, user, "join" | "leave", origin session or null]``
``typing``   ``[room, user, origin session]``
``relay``    ``[base64 of the frame, is_binary, origin session]``
``user``     ``[user, the chatd.v1 frame as a string (UTF-8 text), origin session]``
``room``     ``[room, the chatd.v1 frame as a string (UTF-8 text), origin session]``
``sanction`` ``[user, origin session]`` (a node of the previous version cannot read it)
``receipt``  ``[room, user, seq, origin session]`` (likewise: a node of a version before
it skips it, see docs/cluster.md, *Rolling upgrades*)

Forward compatibility: :func:`decode` raises :class:`UnknownKind` for a payload of a
kind this version does not know (one a newer node published during a rolling
upgrade), and the broker skips it with one log line per kind (docs/cluster.md, *Rolling upgrades*).

The bytes are a contract between chatd versions (a rolling upgrade runs old
and new nodes on one bus): tests/e2e/test_cluster_codec.py holds payloads captured
from the previous version and checks that this codec reads them and writes
the same bytes.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass

import orjson

from chatd.cluster import KINDS
from chatd.store import Message

#: kinds whose event carries a committed message (published by the commit script)
COMMITTED_KINDS = frozenset({"message", "dm"})
#: kinds whose first argument is a room and that only that room's connections consume
#: (``hub.receivers(room)``): on a Redis Cluster they travel on the room's own shard
#: channel, with the room's timeline items other than membership events and recalls.
#: (``room`` frames, receipts, stay on the publishing node's channel: a read's
#: ``user`` frame, ``read``, must reach the reader's other devices before the
#: ``receipt`` the same read sends to the room, and one channel keeps that order.)
ROOM_KINDS = frozenset({"presence", "typing"})
#: timeline item kinds of a room that every node must see (the users they are about
#: follow a membership event wherever they are connected; a recall removes uploads
#: whichever node holds the room): they stay on the per-slot bus
NODE_ITEM_KINDS = frozenset({"event", "recalled"})
#: kinds whose payload argument (bytes, a chatd.v1 JSON frame) travels as a string
FRAME_KINDS = frozenset({"user", "room"})


@dataclass(frozen=True, slots=True)
class BusEvent:
    """One event on the bus.

    ``args`` are the event's arguments after the message as the chat's
    ``deliver_<kind>`` takes them (a relay frame as bytes), the origin session
    included; ``message`` is set for :data:`COMMITTED_KINDS`.
    """

    kind: str
    node: str | None
    args: tuple
    message: Message | None = None

    def deliver_args(self, local: bool) -> tuple:
        """The arguments of ``chat.deliver_<kind>``.

        The origin session only means something on the node that published the
        event (*local*); elsewhere it is None, so no connection is skipped.
        """
        if self.kind == "message":
            origin, from_relay = self.args
            return (self.message, origin if local else None, from_relay)
        if self.kind == "dm":
            to, origin = self.args
            return (self.message, to, origin if local else None)
        *rest, origin = self.args
        return (*rest, origin if local else None)


def _wire_args(kind: str, args) -> list:
    if kind == "relay":
        payload, is_binary, origin = args
        return [base64.b64encode(payload).decode(), is_binary, origin]
    if kind in FRAME_KINDS:
        to, payload, origin = args
        return [to, payload.decode("utf-8"), origin]
    return list(args)


def _head(kind: str, node: str, args) -> str:
    return json.dumps({"k": kind, "n": node, "a": _wire_args(kind, args)})


def committed_head(kind: str, node: str, args) -> str:
    """The start of a ``message``/``dm`` payload, up to ``"m":`` (the commit script adds the rest)."""
    if kind not in COMMITTED_KINDS:
        raise ValueError(f"{kind!r} events are not committed messages")
    return _head(kind, node, args)[:-1] + ',"m":'


def lua_json(value) -> str:
    """*value* encoded the way Redis's Lua ``cjson.encode`` writes it.

    cjson escapes ``/`` and DEL and writes no spaces; numbers are integers here
    (a ``seq``, a ``ts`` in ms: cjson writes up to 14 digits exactly).
    """
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return text.replace("/", "\\/").replace("\x7f", "\\u007f")


def data_json(data: dict) -> str:
    """A timeline item's data as stored and carried on the bus (compact JSON, UTF-8)."""
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"))


def is_plain(m: Message) -> bool:
    """True for a message without data: the seven-element array of the previous version."""
    return m.kind == "message" and m.data is None


def message_array(m: Message) -> str:
    """The ``"m"`` array of a committed item as the commit script writes it."""
    array = lua_json([m.channel, m.seq, m.sender, m.name, m.text, m.ts, m.client_id])
    if is_plain(m):
        return array
    data = "null" if m.data is None else data_json(m.data)
    return f"{array[:-1]},{lua_json(m.kind)},{data}]"


def encode(event: BusEvent) -> str:
    """The payload of *event*, byte for byte what the publishing code sends.

    For a committed message that is the commit script's output
    (:func:`committed_head` + the message as cjson writes it + ``}``).
    """
    if event.kind in COMMITTED_KINDS:
        head = committed_head(event.kind, event.node, event.args)
        return head + message_array(event.message) + "}"
    return _head(event.kind, event.node, event.args)


class UnknownKind(ValueError):
    """A bus event of a kind this version does not know (a newer node's): skip it."""

    def __init__(self, kind):
        super().__init__(f"unknown bus event kind {kind!r}")
        self.kind = str(kind)[:64]


def decode(payload: str | bytes) -> BusEvent:
    """Parse one bus payload (of this chatd version or the previous one); raises
    :class:`UnknownKind` for an event of a kind this version does not know."""
    event = orjson.loads(payload)  # ~3x the json module's speed, on every node per event
    kind = event["k"]
    if kind not in KINDS:
        raise UnknownKind(kind)
    args = list(event["a"])
    message = Message(*event["m"]) if kind in COMMITTED_KINDS else None
    if kind == "relay":
        args[0] = base64.b64decode(args[0])
    elif kind in FRAME_KINDS:
        args[1] = args[1].encode("utf-8")
    return BusEvent(kind, event.get("n"), tuple(args), message)
