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

from orjson import Fragment
from orjson import JSONDecodeError as _OrjsonError
from orjson import dumps as _orjson_dumps
from orjson import loads as _orjson_loads

from chatd import errors, modrules, pushrules
from chatd.media.attach import MAX_ATTACHMENTS
from chatd.store import Message, dm_users

PROTOCOL = "chatd.v1"

ROOM_RULE = re.compile(r"[\w\-.:#]{1,64}")
NAME_RULE = re.compile(r"[\w\-.]{1,32}")
ID_RULE = re.compile(r"[\x21-\x7e]{1,64}")
#: user ids are display names for anonymous users, token subjects otherwise
USER_RULE = re.compile(r"[^\x00-\x1f\x7f\ud800-\udfff]{1,128}")
GUEST_PREFIX = "guest-"
HISTORY_LIMIT_MAX = 200
HISTORY_LIMIT_DEFAULT = 50
#: most user ids in a message's ``mentions``
MENTIONS_MAX = 50
#: the mention of every member (owners and admins only)
MENTION_ALL = "@all"
#: most characters of an emoji in ``react``
EMOJI_MAX = 16
#: characters of quoted and previewed text (reply quotes, ``last.text``, notifications)
PREVIEW_CHARS = pushrules.PREVIEW_CHARS


class RawJSON:
    """JSON text that goes into a frame as it is (:func:`encode_with_raw`)."""

    __slots__ = ("text",)

    def __init__(self, text: str):
        self.text = text


def _loaded(obj):
    if type(obj) is RawJSON:
        return json.loads(obj.text)
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")


def _fragment(obj):
    if type(obj) is RawJSON:
        return Fragment(obj.text)
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")


_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=_loaded).encode


@dataclass(slots=True)
class Request:
    """One validated client request: its ``type``, optional ``id`` and fields."""

    type: str
    id: str | None
    fields: dict[str, Any]
    #: when the server received it (seconds, set by the receiver)
    received: float = 0.0
    #: the EXTRAS fields the request carried, as sent (not validated: see :func:`extras`)
    raw_extras: dict[str, Any] | None = None


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


def _cursor(value, field, ref, _max_text):
    """An opaque cursor from an earlier reply: 1-64 printable ASCII characters."""
    if type(value) is not str or not ID_RULE.fullmatch(value):
        raise errors.BadRequest(f"'{field}' must be a cursor from an earlier reply", ref)
    return value


def _bool(value, field, ref, _max_text):
    if type(value) is not bool:
        raise errors.BadRequest(f"'{field}' must be true or false", ref)
    return value


def _emoji(value, field, ref, _max_text):
    value = _string(value, field, ref)
    if not 1 <= len(value) <= EMOJI_MAX or not USER_RULE.fullmatch(value):
        raise errors.BadRequest(f"'{field}' must be 1-{EMOJI_MAX} printable characters", ref)
    return value


def _attachments(value, field, ref, _max_text):
    """1 to MAX_ATTACHMENTS objects ``{media_id}`` (distinct ids; other members
    ignored): the list of ids, in order."""
    if type(value) is not list or not value:
        raise errors.BadRequest(f"'{field}' must be a list of {{media_id}} objects", ref)
    if len(value) > MAX_ATTACHMENTS:
        raise errors.TooLarge(f"at most {MAX_ATTACHMENTS} attachments on one message", ref)
    ids = []
    for item in value:
        media_id = item.get("media_id") if type(item) is dict else None
        if type(media_id) is not str or not ID_RULE.fullmatch(media_id):
            raise errors.BadRequest(f"each of '{field}' must be {{media_id: an upload id}}", ref)
        ids.append(media_id)
    if len(set(ids)) != len(ids):
        raise errors.BadRequest(f"'{field}' names one upload twice", ref)
    return ids


def _mentions(value, field, ref, _max_text):
    """Up to MENTIONS_MAX user ids (or MENTION_ALL), deduplicated in order."""
    if type(value) is not list or len(value) > MENTIONS_MAX:
        raise errors.BadRequest(f"'{field}' must be a list of at most {MENTIONS_MAX} users", ref)
    return list(dict.fromkeys(_user(v, field, ref, _max_text) for v in value))


#: room settings: most characters of a title, a topic, an avatar URL
TITLE_MAX, TOPIC_MAX, AVATAR_MAX = 64, 500, 500
#: most user ids in create's ``members``
CREATE_MEMBERS_MAX = 100
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_TOPIC_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f\x7f]")
#: an avatar: an https:// URL or a /media/ path, printable ASCII without quotes,
#: angle brackets or backslashes ("" clears it)
_AVATAR = re.compile(r"(https://[\x21-\x7e]+|/media/[\x21-\x7e]+)")
_AVATAR_BAD = re.compile(r"[\"'<>\\`]")


def _one_of(name, *values):
    def validate(value, field, ref, _max_text):
        if type(value) is not str or value not in values:
            raise errors.BadRequest(f"'{field}' must be one of {', '.join(values)}", ref)
        return value

    validate.__name__ = name
    return validate


def _setting(name, limit, control):
    def validate(value, field, ref, _max_text):
        value = _string(value, field, ref)
        if len(value) > limit or control.search(value):
            raise errors.BadRequest(
                f"'{field}' must be at most {limit} characters, no control characters", ref
            )
        return value

    validate.__name__ = name
    return validate


def _avatar(value, field, ref, _max_text):
    value = _string(value, field, ref)
    if value and (
        len(value) > AVATAR_MAX or not _AVATAR.fullmatch(value) or _AVATAR_BAD.search(value)
    ):
        raise errors.BadRequest(
            f"'avatar' must be an https:// URL or a /media/ path of at most {AVATAR_MAX} "
            "characters",
            ref,
        )
    return value


def _users(value, field, ref, _max_text):
    """Up to CREATE_MEMBERS_MAX user ids, deduplicated in order."""
    if type(value) is not list or len(value) > CREATE_MEMBERS_MAX:
        raise errors.BadRequest(
            f"'{field}' must be a list of at most {CREATE_MEMBERS_MAX} user ids", ref
        )
    return list(dict.fromkeys(_user(v, field, ref, _max_text) for v in value))


def _templates(value, field, ref, _max_text):
    """``[{id, count?}, ...]`` -> ``{id: count}`` (count 1 when not given; repeats add
    up): at most TEMPLATES_MAX entries, each id 1-64 printable ASCII, each count an
    integer from 1 to COUNT_MAX (chatd.pushrules)."""
    most, top = pushrules.TEMPLATES_MAX, pushrules.COUNT_MAX
    if type(value) is not list or len(value) > most:
        raise errors.BadRequest(f"'{field}' must be a list of at most {most} templates", ref)
    out: dict = {}
    for entry in value:
        template = entry.get("id") if type(entry) is dict else None
        if type(template) is not str or not ID_RULE.fullmatch(template):
            raise errors.BadRequest(
                f"each of '{field}' must be {{id, count?}}, id 1-64 printable ASCII", ref
            )
        count = entry.get("count", 1)
        if type(count) is not int or not 1 <= count <= top:
            raise errors.BadRequest(f"'count' must be an integer from 1 to {top}", ref)
        out[template] = min(top, out.get(template, 0) + count)
    return out


def _rooms(value, field, ref, _max_text):
    """Up to ROOMS_MAX room names (chatd.pushrules), deduplicated in order."""
    if type(value) is not list or len(value) > pushrules.ROOMS_MAX:
        raise errors.BadRequest(
            f"'{field}' must be a list of at most {pushrules.ROOMS_MAX} rooms", ref
        )
    return list(dict.fromkeys(_room(v, field, ref, _max_text) for v in value))


def _seconds(value, field, ref, _max_text):
    """A mute's or ban's duration: whole seconds, 1 to chatd.modrules.SECONDS_MAX."""
    problem = modrules.check_seconds(value)
    if problem is not None:
        raise errors.BadRequest(problem, ref)
    return value


def _reason(value, field, ref, _max_text):
    """A report's reason: a string of at most chatd.modrules.REASON_MAX characters
    (``too_large`` beyond), no lone surrogates."""
    value = _string(value, field, ref)
    if len(value) > modrules.REASON_MAX:
        raise errors.TooLarge(f"'{field}' is at most {modrules.REASON_MAX} characters", ref)
    return value


_ROLE = _one_of("_role", "owner", "admin", "member")
_KIND = _one_of("_kind", "public", "private")
_TITLE = _setting("_title", TITLE_MAX, _CONTROL)
_TOPIC = _setting("_topic", TOPIC_MAX, _TOPIC_CONTROL)
_ROOM_SETTINGS = {
    "title": (_TITLE, False),
    "topic": (_TOPIC, False),
    "avatar": (_avatar, False),
}
_ROOM_USER = {"room": (_room, True), "user": (_user, True)}

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
    # conversations (token users; docs/protocol.md, *Conversations*)
    "conversations": {"cursor": (_cursor, False), "limit": (_limit, False)},
    "sync": {"since": (_cursor, False)},
    "read": {"room": (_room, False), "with": (_user, False), "seq": (_seq, True)},
    "receipts": {"room": (_room, False), "with": (_user, False), "seq": (_seq, True)},
    "mute": {"room": (_room, False), "with": (_user, False), "muted": (_bool, True)},
    "recall": {"room": (_room, False), "with": (_user, False), "seq": (_seq, True)},
    "edit": {
        "room": (_room, False),
        "with": (_user, False),
        "seq": (_seq, True),
        "text": (_text, True),
    },
    "react": {
        "room": (_room, False),
        "with": (_user, False),
        "seq": (_seq, True),
        "emoji": (_emoji, True),
    },
    # rooms as memberships (token users; docs/protocol.md, *Room kinds and roles*)
    "create": {
        "room": (_room, True),
        "kind": (_KIND, True),
        **_ROOM_SETTINGS,
        "members": (_users, False),
    },
    "room_info": {"room": (_room, True)},
    "update_room": {"room": (_room, True), **_ROOM_SETTINGS, "kind": (_KIND, False)},
    "invite": _ROOM_USER,
    "kick": _ROOM_USER,
    "ban": _ROOM_USER,
    "unban": _ROOM_USER,
    "set_role": {**_ROOM_USER, "role": (_ROLE, True)},
    "members": {"room": (_room, True), "cursor": (_user, False), "limit": (_limit, False)},
    # moderation (token users; docs/protocol.md, *Moderation*)
    "mute_user": {"room": (_room, False), "user": (_user, True), "seconds": (_seconds, True)},
    "unmute_user": {"room": (_room, False), "user": (_user, True)},
    "ban_user": {"user": (_user, True), "seconds": (_seconds, False)},
    "unban_user": {"user": (_user, True)},
    "report": {
        "room": (_room, False),
        "with": (_user, False),
        "seq": (_seq, True),
        "reason": (_reason, True),
    },
    # offline push (token users; docs/protocol.md, *Offline push*)
    "push_subscribe": {
        "templates": (_templates, False),
        "rooms": (_rooms, False),
        "notify": (_bool, False),
    },
}

#: optional fields of a type that only token users' requests use (``send``/``dm``'s
#: ``mentions`` and ``reply_to``): kept aside as sent, validated by :func:`extras` when
#: the request is a token user's, so anonymous requests parse exactly as in chatd 0.1
#: (unknown members are ignored): field -> validator
EXTRAS: dict[str, dict[str, Validator]] = {
    "send": {"mentions": _mentions, "reply_to": _seq, "attachments": _attachments},
    "dm": {"mentions": _mentions, "reply_to": _seq, "attachments": _attachments},
}
#: the EXTRAS field that makes ``text`` optional (``""`` when absent or empty)
ATTACHMENTS = "attachments"

#: request types naming one conversation: exactly one of ``room`` and ``with``
CONVERSATION_TYPES = frozenset(("read", "receipts", "mute", "recall", "edit", "react", "report"))


def _loads(payload: bytes):
    """The JSON value of *payload*: orjson's (a few times faster), or -- for what
    orjson refuses (a lone surrogate escape, NaN, a BOM, nesting past 1024, a number
    beyond a double) -- the json module's, so each such frame gets the answer it
    always got; :class:`chatd.errors.BadJSON` when neither takes it. (JSON orjson
    takes has no NUL byte, so the json module's encoding detection could only have
    read it as UTF-8 too. An integer beyond 64 bits comes back as a float, which every
    integer field refuses with the same error as the huge int.)"""
    try:
        return _orjson_loads(payload)
    except _OrjsonError:
        pass
    try:
        return json.loads(payload)
    except (ValueError, RecursionError) as e:
        raise errors.BadJSON(f"invalid JSON: {type(e).__name__}") from None


def parse(payload: bytes, max_text_length: int) -> Request:
    """Parse and validate one chatd.v1 text frame.

    Raises :class:`chatd.errors.BadJSON` for anything that is not a JSON
    object (including JSON too deeply nested or with absurd numbers),
    :class:`~chatd.errors.UnknownType` for an unknown ``type`` and the
    matching error for a bad field; the error's ``ref`` is the request's
    ``id`` when one could be read.
    """
    obj = _loads(payload)
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
    # a send/dm with attachments may have no text (validated as an EXTRAS field)
    captioned = obj.get(ATTACHMENTS) is not None and kind in EXTRAS
    for field, (validate, required) in schema.items():
        value = obj.get(field)
        if captioned and field == "text" and value in (None, ""):
            fields[field] = ""
        elif value is None:
            if required:
                raise errors.BadRequest(f"'{field}' is required for {kind}", ref)
            fields[field] = None
        else:
            fields[field] = validate(value, field, ref, max_text_length)
    raw_extras = None
    for field in EXTRAS.get(kind, ()):
        value = obj.get(field)
        if value is not None:
            raw_extras = raw_extras or {}
            raw_extras[field] = value
    if kind in CONVERSATION_TYPES and (fields["room"] is None) == (fields["with"] is None):
        raise errors.BadRequest(f"{kind} names exactly one of 'room' and 'with'", ref)
    return Request(kind, ref, fields, raw_extras=raw_extras)


def extras(request: Request, max_text_length: int) -> dict[str, Any]:
    """The validated EXTRAS fields of *request* (``{}`` when it has none); raises the
    refusal of a bad one, as :func:`parse` does for the others."""
    raw = request.raw_extras
    if not raw:
        return {}
    schema = EXTRAS[request.type]
    return {
        field: schema[field](value, field, request.id, max_text_length)
        for field, value in raw.items()
    }


def valid_name(name: str) -> bool:
    """True when *name* is a display name a client may ask for."""
    return bool(NAME_RULE.fullmatch(name)) and not name.startswith(GUEST_PREFIX)


def encode(obj: dict) -> bytes:
    """The UTF-8 JSON bytes of one outgoing frame: compact, non-ASCII as UTF-8, keys
    in insertion order. ``orjson`` writes them; what it refuses (an int beyond 64 bits,
    a key that is not a string) the json module writes, as before."""
    try:
        return _orjson_dumps(obj)
    except TypeError:
        return _dumps(obj).encode("utf-8")


def encode_with_raw(obj: dict) -> bytes:
    """:func:`encode` of a frame that may hold :class:`RawJSON` (written verbatim; the
    json module's fallback re-encodes it). Not :func:`encode` itself: orjson's
    ``default`` doubles the cost of encoding a small frame."""
    try:
        return _orjson_dumps(obj, default=_fragment)
    except TypeError:
        return _dumps(obj).encode("utf-8")


#: message data fields a frame carries when the message has them (Message.data)
_MESSAGE_EXTRAS = ("mentions", "reply_to", "edited_ts", "recalled")


#: how frames show a message's attachments: ``sign(stored) -> shown``, the stored
#: attachments (chatd.media.attach) with freshly signed URLs; frames made without
#: one (webhooks) show them without URLs
Sign = Callable[[list], list]


def _extras(m: Message, d: dict, sign: Sign | None = None) -> dict:
    data = m.data
    if data:
        for key in _MESSAGE_EXTRAS:
            if key in data:
                d[key] = data[key]
        shown = data.get(ATTACHMENTS)
        if shown and "recalled" not in data:  # a recalled message shows no media
            d[ATTACHMENTS] = sign(shown) if sign is not None else [dict(a) for a in shown]
    return d


def message_dict(m: Message, sign: Sign | None = None) -> dict:
    """A stored room message as in the ``message`` frame (without ``type``); a plain
    message (no data) is exactly the frame of chatd 0.1. *sign*: see :data:`Sign`."""
    return _extras(
        m,
        {
            "room": m.channel,
            "seq": m.seq,
            "from": m.sender,
            "name": m.name,
            "text": m.text,
            "ts": m.ts,
            "id": m.client_id,
        },
        sign,
    )


def _dm_dict(m: Message, to: str, sign: Sign | None = None) -> dict:
    return _extras(
        m,
        {
            "from": m.sender,
            "name": m.name,
            "to": to,
            "text": m.text,
            "ts": m.ts,
            "id": m.client_id,
            "seq": m.seq,
        },
        sign,
    )


def _peer(users: tuple[str, str], user: str) -> str:
    """The other user of a DM channel's *users* (``user`` itself for a DM to oneself)."""
    first, second = users
    return second if first == user else first


def message_frame(m: Message, sign: Sign | None = None) -> bytes:
    """``message`` for a stored room message."""
    return encode({"type": "message", **message_dict(m, sign)})


def dm_frame(m: Message, to: str, sign: Sign | None = None) -> bytes:
    """``dm`` for a stored direct message to *to*."""
    return encode({"type": "dm", **_dm_dict(m, to, sign)})


def event_dict(m: Message) -> dict:
    """An ``event`` item as in the ``event`` frame (without ``type``)."""
    data = m.data or {}
    d = {
        "room": m.channel,
        "seq": m.seq,
        "kind": data.get("event"),
        "user": data.get("user"),
        "by": data.get("by"),
        "ts": m.ts,
    }
    for key in ("role", "changes", "until"):
        if key in data:
            d[key] = data[key]
    return d


def event_frame(m: Message) -> bytes:
    """``event`` for a stored timeline event (a membership or room change)."""
    return encode({"type": "event", **event_dict(m)})


def item_object(m: Message, sign: Sign | None = None) -> dict:
    """A stored timeline item of any kind as the frame it is delivered as live
    (``message``/``dm``, ``event``, ``recalled``, ``edited``, ``reaction``), with ``type``.
    In DMs the frame names ``from`` (the sender / who recalled, edited, reacted) and ``to``."""
    users = dm_users(m.channel)
    kind = m.kind
    if kind == "message":
        if users is None:
            return {"type": "message", **message_dict(m, sign)}
        return {"type": "dm", **_dm_dict(m, _peer(users, m.sender), sign)}
    if kind == "event":
        return {"type": "event", **event_dict(m)}
    data = m.data or {}
    if users is None:
        obj = {"type": kind, "room": m.channel}
    else:
        obj = {"type": kind, "from": m.sender, "to": _peer(users, m.sender)}
    obj["seq"] = m.seq
    obj["target"] = data.get("target")
    if kind == "recalled":
        obj["by"] = data.get("by", m.sender)
    elif kind == "edited":
        obj["text"] = m.text
        obj["edited_ts"] = m.ts
    elif kind == "reaction":
        obj["emoji"] = data.get("emoji")
        obj["user"] = m.sender
        obj["on"] = data.get("on")
    obj["ts"] = m.ts
    return obj


def sync_items(items: list, sign: Sign | None = None) -> RawJSON | list:
    """A ``sync`` conversation's ``items`` from a store's
    :class:`chatd.store.SyncReplay` items: a :class:`Message` as :func:`item_object`
    shows it, a ``str`` (plain messages the store encoded, see ``SyncReplay``) as it
    is; one :class:`RawJSON` of the whole array (no object per item) unless every
    item is a Message."""
    if all(type(m) is not str for m in items):
        return [item_object(m, sign) for m in items]
    return RawJSON(
        "["
        + ",".join(
            m if type(m) is str else encode(item_object(m, sign)).decode("utf-8") for m in items
        )
        + "]"
    )


def item_frame(m: Message, sign: Sign | None = None) -> bytes:
    """The live frame of a stored timeline item (see :func:`item_object`); a plain
    message's is :func:`message_frame`'s / :func:`dm_frame`'s, byte for byte."""
    if m.kind == "message" and dm_users(m.channel) is None:
        return message_frame(m, sign)
    return encode(item_object(m, sign))


def preview(text: str) -> str:
    """*text* cut to PREVIEW_CHARS characters (reply quotes, ``last.text``)."""
    return text[:PREVIEW_CHARS]


def _decorate(d: dict, m: Message, reactions, quotes, me) -> dict:
    """A history message dict with its ``reactions`` ``[{emoji, count, me}]`` (when it
    has any) and, for a reply, the ``quote {seq, from, name, text}`` of the original."""
    on = reactions.get(m.seq) if reactions else None
    if on:
        d["reactions"] = [
            {"emoji": emoji, "count": len(users), "me": me in users} for emoji, users in on.items()
        ]
    reply_to = (m.data or {}).get("reply_to")
    if reply_to is not None and quotes:
        original = quotes.get(reply_to)
        if original is not None:
            recalled = "recalled" in (original.data or {})
            d["quote"] = {
                "seq": original.seq,
                "from": original.sender,
                "name": original.name,
                "text": "" if recalled else preview(original.text),
            }
    return d


def history_frame(
    room: str,
    messages: list[Message],
    more: bool,
    *,
    events: list[Message] | None = None,
    reactions: dict | None = None,
    quotes: dict | None = None,
    me: str | None = None,
    sign: Sign | None = None,
) -> bytes:
    """``history`` reply: *messages* ascending by seq, with their *reactions*
    (``{seq: {emoji: [user, ...]}}``) and reply *quotes* (``{seq: Message}``);
    *events* (the events of the page's range) as ``events`` unless None."""
    frame = {
        "type": "history",
        "room": room,
        "messages": [_decorate(message_dict(m, sign), m, reactions, quotes, me) for m in messages],
        "more": more,
    }
    if events is not None:
        frame["events"] = [event_dict(m) for m in events]
    return encode(frame)


def dm_history_frame(
    me: str,
    other: str,
    messages: list[Message],
    more: bool,
    *,
    reactions: dict | None = None,
    quotes: dict | None = None,
    sign: Sign | None = None,
) -> bytes:
    """``dm_history`` reply for the conversation of *me* with *other*."""
    return encode(
        {
            "type": "dm_history",
            "with": other,
            "messages": [
                _decorate(
                    _dm_dict(m, other if m.sender == me else me, sign), m, reactions, quotes, me
                )
                for m in messages
            ],
            "more": more,
        }
    )


def last_dict(m: Message | None) -> dict | None:
    """``last`` of a conversation summary: the newest message, its text previewed
    (``""`` and ``recalled: true`` once recalled); None while there is none."""
    if m is None:
        return None
    recalled = "recalled" in (m.data or {})
    d = {
        "seq": m.seq,
        "from": m.sender,
        "name": m.name,
        "text": "" if recalled else preview(m.text),
        "ts": m.ts,
    }
    if recalled:
        d["recalled"] = True
    return d


def conversation_dict(c) -> dict:
    """One :class:`chatd.store.Conversation` as in the ``conversations`` list."""
    d = {"with": c.peer} if c.kind == "dm" else {"room": c.channel}
    d.update(
        kind=c.kind,
        title=c.title,
        role=c.role,
        seq=c.last_seq,
        ts=c.last_ts,
        last=last_dict(c.last),
        unread=c.unread,
        mentions=c.mentions,
        read=c.read_seq,
        muted=c.muted,
    )
    if c.kind == "dm":
        d["peer_read"] = c.peer_read
    return d


def ack_frame(m: Message, duplicate: bool, **where) -> bytes:
    """``ack`` for a committed ``send`` (``room=``) or ``dm`` (``to=``)."""
    frame = {"type": "ack", "id": m.client_id, "seq": m.seq, "ts": m.ts, **where}
    if duplicate:
        frame["duplicate"] = True
    return encode(frame)


def room_info_frame(info: dict) -> bytes:
    """``room_info {room, kind, title, topic, avatar, members, role, seq, created_by}``."""
    return encode({"type": "room_info", **info})


def frame(kind: str, **fields) -> bytes:
    """Any other server frame: ``{"type": kind, **fields}``."""
    return encode({"type": kind, **fields})


def error_frame(error: errors.ChatError) -> bytes:
    """``error {code, message, ref}`` for a refused request."""
    return frame("error", code=error.code, message=error.message, ref=error.ref, **error.fields)
