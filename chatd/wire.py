"""The chatd.v1 wire format: parse and validate incoming frames, encode outgoing ones.

This is the only module that knows the JSON shape of frames (docs/protocol.md
is its specification). It does no I/O: :func:`parse` takes the payload bytes of
a text frame and returns a :class:`Request` or raises a
:class:`chatd.errors.ChatError`; the ``*_frame`` functions return the UTF-8
bytes of one outgoing frame, ready to be framed once and sent to many peers.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from chatd import errors
from chatd.store import Message

PROTOCOL = "chatd.v1"

ROOM_RULE = re.compile(r"[\w\-.:#]{1,64}")
NAME_RULE = re.compile(r"[\w\-.]{1,32}")
ID_RULE = re.compile(r"[\x21-\x7e]{1,64}")
#: user ids are display names for anonymous users, token subjects otherwise
USER_RULE = re.compile(r"[^\x00-\x1f\x7f\ud800-\udfff]{1,128}")
GUEST_PREFIX = "guest-"
HISTORY_LIMIT_MAX = 200
HISTORY_LIMIT_DEFAULT = 50

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


@dataclass(slots=True)
class Request:
    """One validated client request: its ``type``, optional ``id`` and fields."""

    type: str
    id: str | None
    fields: dict[str, Any]
    #: when the server received it (seconds, set by the receiver)
    received: float = 0.0


def _string(value, field, ref):
    if type(value) is not str:
        raise errors.BadRequest(f"'{field}' must be a string", ref)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate escaped in the JSON ("\ud800")
        raise errors.BadRequest(f"'{field}' is not valid Unicode text", ref) from None
    return value


def _room(value, field, ref, _max_text):
    value = _string(value, field, ref)
    if not ROOM_RULE.fullmatch(value):
        raise errors.BadRoom("room names are 1-64 letters, digits or _ - . : #", ref)
    return value


def _user(value, field, ref, _max_text):
    value = _string(value, field, ref)
    if not USER_RULE.fullmatch(value):
        raise errors.BadRequest(f"'{field}' is not a valid user id", ref)
    return value


def _text(value, field, ref, max_text):
    value = _string(value, field, ref)
    if not value:
        raise errors.BadRequest("'text' must not be empty", ref)
    if len(value) > max_text:
        raise errors.TooLarge(f"'text' is longer than {max_text} characters", ref)
    return value


def _seq(value, field, ref, _max_text):
    if type(value) is not int or value < 0 or value > 2**53:
        raise errors.BadRequest(f"'{field}' must be an integer >= 0", ref)
    return value


def _limit(value, field, ref, _max_text):
    if type(value) is not int or not 1 <= value <= HISTORY_LIMIT_MAX:
        raise errors.BadRequest(f"'limit' must be an integer from 1 to {HISTORY_LIMIT_MAX}", ref)
    return value


Validator = Callable[[Any, str, str | None, int], Any]

#: client -> server types: field -> (validator, required)
SCHEMAS: dict[str, dict[str, tuple[Validator, bool]]] = {
    "join": {"room": (_room, True), "since": (_seq, False)},
    "leave": {"room": (_room, True)},
    "send": {"room": (_room, True), "text": (_text, True)},
    "dm": {"to": (_user, True), "text": (_text, True)},
    "typing": {"room": (_room, True)},
    "history": {"room": (_room, True), "before": (_seq, False), "limit": (_limit, False)},
    "dm_history": {
        "with": (_user, True),
        "since": (_seq, False),
        "before": (_seq, False),
        "limit": (_limit, False),
    },
    "ping": {},
}


def parse(payload: bytes, max_text_length: int) -> Request:
    """Parse and validate one chatd.v1 text frame.

    Raises :class:`chatd.errors.BadJSON` for anything that is not a JSON
    object (including JSON too deeply nested or with absurd numbers),
    :class:`~chatd.errors.UnknownType` for an unknown ``type`` and the
    matching error for a bad field; the error's ``ref`` is the request's
    ``id`` when one could be read.
    """
    try:
        obj = json.loads(payload)
    except (ValueError, RecursionError) as e:
        raise errors.BadJSON(f"invalid JSON: {type(e).__name__}") from None
    if type(obj) is not dict:
        raise errors.BadJSON("a frame must be a JSON object")
    ref = obj.get("id")
    if ref is not None and (type(ref) is not str or not ID_RULE.fullmatch(ref)):
        raise errors.BadRequest("'id' must be 1-64 printable ASCII characters")
    kind = obj.get("type")
    if type(kind) is not str:
        raise errors.BadRequest("'type' must be a string", ref)
    schema = SCHEMAS.get(kind)
    if schema is None:
        raise errors.UnknownType(f"unknown type {kind[:64]!r}", ref)
    fields = {}
    for field, (validate, required) in schema.items():
        value = obj.get(field)
        if value is None:
            if required:
                raise errors.BadRequest(f"'{field}' is required for {kind}", ref)
            fields[field] = None
        else:
            fields[field] = validate(value, field, ref, max_text_length)
    return Request(kind, ref, fields)


def valid_name(name: str) -> bool:
    """True when *name* is a display name a client may ask for."""
    return bool(NAME_RULE.fullmatch(name)) and not name.startswith(GUEST_PREFIX)


def encode(obj: dict) -> bytes:
    """The UTF-8 JSON bytes of one outgoing frame."""
    return _dumps(obj).encode("utf-8")


def message_dict(m: Message) -> dict:
    """A stored room message as in the ``message`` frame (without ``type``)."""
    return {
        "room": m.channel,
        "seq": m.seq,
        "from": m.sender,
        "name": m.name,
        "text": m.text,
        "ts": m.ts,
        "id": m.client_id,
    }


def _dm_dict(m: Message, to: str) -> dict:
    return {
        "from": m.sender,
        "name": m.name,
        "to": to,
        "text": m.text,
        "ts": m.ts,
        "id": m.client_id,
        "seq": m.seq,
    }


def message_frame(m: Message) -> bytes:
    """``message`` for a stored room message."""
    return encode({"type": "message", **message_dict(m)})


def dm_frame(m: Message, to: str) -> bytes:
    """``dm`` for a stored direct message to *to*."""
    return encode({"type": "dm", **_dm_dict(m, to)})


def history_frame(room: str, messages: list[Message], more: bool) -> bytes:
    """``history`` reply: *messages* ascending by seq."""
    return encode(
        {
            "type": "history",
            "room": room,
            "messages": [message_dict(m) for m in messages],
            "more": more,
        }
    )


def dm_history_frame(me: str, other: str, messages: list[Message], more: bool) -> bytes:
    """``dm_history`` reply for the conversation of *me* with *other*."""
    return encode(
        {
            "type": "dm_history",
            "with": other,
            "messages": [_dm_dict(m, other if m.sender == me else me) for m in messages],
            "more": more,
        }
    )


def ack_frame(m: Message, duplicate: bool, **where) -> bytes:
    """``ack`` for a committed ``send`` (``room=``) or ``dm`` (``to=``)."""
    frame = {"type": "ack", "id": m.client_id, "seq": m.seq, "ts": m.ts, **where}
    if duplicate:
        frame["duplicate"] = True
    return encode(frame)


def frame(kind: str, **fields) -> bytes:
    """Any other server frame: ``{"type": kind, **fields}``."""
    return encode({"type": kind, **fields})


def error_frame(error: errors.ChatError) -> bytes:
    """``error {code, message, ref}`` for a refused request."""
    return frame("error", code=error.code, message=error.message, ref=error.ref)
