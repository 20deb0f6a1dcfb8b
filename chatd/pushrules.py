"""The rules of offline push, as pure functions (no I/O, no clock: ``now`` is given).

Used by :mod:`chatd.push` (who is notified, what a notification says) and by
every store (:class:`chatd.store.IPushStore`: what a subscription and a claim do
to the stored counts), as :mod:`chatd.store.items` is for timeline items.

Subscriptions
    A one-time WeChat subscribe-message template grants one message per accepted
    ``wx.requestSubscribeMessage``. chatd keeps, per user and template, how many
    messages it may still send (:func:`subscribe`), at most :data:`QUOTA_MAX`.
    A user also chooses rooms whose every message notifies them (at most
    :data:`ROOMS_MAX`); DMs and @mentions always do.

Claims
    :func:`claim` decides, for one user and one conversation at ``now``, whether a
    notification goes out (the *digest*: at most one per conversation per
    ``--push-interval``) and whether it takes one message of the template's quota.
    The store applies it atomically with the stored counts, so two nodes never both
    send for one claim, and a claim is recorded before anything is sent (a crash
    between claim and send loses that notification; it never sends it twice).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from urllib.parse import quote

from chatd.store import dm_users

#: most one-time messages kept per user and template (more accepted ones are dropped)
QUOTA_MAX = 100
#: most templates in one subscription request, and the largest ``count`` of one
TEMPLATES_MAX = 10
COUNT_MAX = QUOTA_MAX
#: most rooms one user may be notified for (``push_subscribe``'s ``rooms``)
ROOMS_MAX = 100
#: most users who chose a room that one of its messages is checked for
WATCHERS_MAX = 1000
#: why a user is notified
DM, MENTION, ROOM = "dm", "mention", "room"
#: most characters of a notification's preview (as chatd.wire.PREVIEW_CHARS)
PREVIEW_CHARS = 100
#: what the ``preview`` source says with previews off (and for private rooms)
NO_PREVIEW = "新消息"
#: the data sources of ``--push-fields``
SOURCES = ("name", "preview", "time", "room")
#: most characters WeChat takes in a data field, by the key's type (its letters)
FIELD_CHARS = {"thing": 20, "name": 10, "phrase": 5, "character_string": 32, "short_thing": 5}
_FIELD_KEY = re.compile(r"([a-z_]+?)(\d+)")


@dataclass(frozen=True, slots=True)
class PushState:
    """A user's subscriptions: template -> messages left, and the rooms chosen."""

    templates: dict
    rooms: tuple


@dataclass(frozen=True, slots=True)
class Claim:
    """The outcome of :func:`claim`: ``notify`` (the digest lets a notification go
    out, and it is recorded) and ``quota`` (one message of the template was taken)."""

    notify: bool
    quota: bool


NO_CLAIM = Claim(False, False)


def subscribe(templates: dict, rooms, add: dict, choose: dict):
    """The subscriptions after a request: ``(templates, rooms)``.

    *templates* (template -> count) and *rooms* (a set) are the stored ones; *add*
    maps template -> accepted messages (added, capped at :data:`QUOTA_MAX`);
    *choose* maps room -> True (notify me) / False (stop). Rooms past
    :data:`ROOMS_MAX` are not added. Nothing is changed in place.
    """
    templates = dict(templates)
    for template, count in add.items():
        templates[template] = min(QUOTA_MAX, templates.get(template, 0) + max(0, count))
    rooms = set(rooms)
    for room, on in choose.items():
        if not on:
            rooms.discard(room)
        elif room in rooms or len(rooms) < ROOMS_MAX:
            rooms.add(room)
    return templates, rooms


def claim(last_ms: int | None, count: int | None, now_ms: int, interval_ms: int) -> Claim:
    """May a notification for one conversation go out at *now_ms*?

    *last_ms*: when the last one went out (None: never); *count*: messages left of
    the template (None: no template asked for). Not within *interval_ms* of the
    last one; it takes one message of the quota when there is one.
    """
    if last_ms is not None and now_ms - last_ms < interval_ms:
        return NO_CLAIM
    return Claim(True, bool(count))


def recipients(message, to, watchers=()) -> dict:
    """Who a committed *message* might notify, and why: ``{user: reason}``.

    A DM its recipient *to*; a room message the users it mentions (not ``@all``:
    a room-wide mention would be a push storm) and the *watchers* who chose the
    room. Never the sender. Whether each is offline, a member and not muted is
    asked afterwards (:func:`eligible`).
    """
    sender = message.sender
    if dm_users(message.channel) is not None:
        return {to: DM} if to and to != sender else {}
    out = {}
    for user in (message.data or {}).get("mentions") or ():
        if user != sender and user != "@all":
            out.setdefault(user, MENTION)
    for user in watchers:
        if user != sender:
            out.setdefault(user, ROOM)
    return out


def eligible(online: bool, member) -> bool:
    """A user with no live connection anywhere, a member of the conversation that did
    not mute it."""
    return not online and member is not None and member.state == "member" and not member.muted


def parse_fields(raw: str) -> tuple:
    """``--push-fields``: ``"thing1=name,thing2=preview,time3=time"`` -> pairs.

    Each key is a template data key (letters then digits, e.g. ``thing1``), each
    value one of :data:`SOURCES`. Raises :class:`ValueError` saying what is accepted.
    """
    pairs = []
    for part in str(raw).split(","):
        key, sep, source = (s.strip() for s in part.partition("="))
        if not sep or not _FIELD_KEY.fullmatch(key) or source not in SOURCES:
            raise ValueError(
                "must be KEY=SOURCE pairs, comma-separated (KEY like thing1, SOURCE one of "
                f"{', '.join(SOURCES)}), not {str(raw)!r}"
            )
        pairs.append((key, source))
    if len({k for k, _ in pairs}) != len(pairs):
        raise ValueError(f"names a key twice: {str(raw)!r}")
    return tuple(pairs)


def fit(key: str, value: str) -> str:
    """*value* cut to what WeChat takes in a field of *key*'s type (``…`` marks a cut)."""
    match = _FIELD_KEY.fullmatch(key)
    limit = FIELD_CHARS.get(match.group(1)) if match else None
    if limit is None or len(value) <= limit:
        return value
    return value[: limit - 1] + "…"


def format_time(ts_ms: int, utc_offset_hours: float) -> str:
    """``YYYY-MM-DD HH:MM`` of *ts_ms* at *utc_offset_hours* (WeChat's ``time`` format)."""
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(ts_ms / 1000 + utc_offset_hours * 3600))


def template_data(fields, *, name, preview, ts_ms, room, utc_offset_hours=8.0) -> dict:
    """The ``data`` of ``subscribeMessage.send``: ``{key: {"value": ...}}`` from the
    ``--push-fields`` pairs and the notification's parts."""
    values = {
        "name": name,
        "preview": preview,
        "time": format_time(ts_ms, utc_offset_hours),
        "room": room,
    }
    return {key: {"value": fit(key, values[source])} for key, source in fields}


def preview_of(text: str, previews: bool, private: bool) -> str:
    """The message text shown in a notification: :data:`NO_PREVIEW` with previews off
    or for a private room's message (its text never leaves chatd), else the text
    with line breaks as spaces, at most :data:`PREVIEW_CHARS` characters (a data
    field is cut further to its type's length, :func:`fit`)."""
    if not previews or private or not text:
        return NO_PREVIEW
    return " ".join(text.split())[:PREVIEW_CHARS]


def page_of(base: str, message) -> str:
    """The mini-program page a notification opens: *base* with ``?room=ROOM``, or
    ``?with=SENDER`` for a DM (the conversation as its recipient names it)."""
    sep = "&" if "?" in base else "?"
    if dm_users(message.channel) is not None:
        return f"{base}{sep}with={quote(message.sender, safe='')}"
    return f"{base}{sep}room={quote(message.channel, safe='')}"
