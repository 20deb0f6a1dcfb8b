"""What a timeline item does to the rows it changes: pure functions, no I/O, no clock.

Every store (memory, SQLite, Redis) applies the side effects of
``append(..., kind, data)`` (see :class:`chatd.store.IConversationStore` and
``ITEM_KINDS``/``EVENTS``) through these functions, so the rules are written
once:

* :func:`apply_event`: the member row an ``event`` item leaves behind;
* :func:`apply_room`: the room row a ``created``/``room_updated`` event leaves;
* :func:`recalled_data`, :func:`edited_data`: the target message's new ``data``;
* :func:`mentions_of`: what a message's mentions are stored as;
* :func:`dm_member`: a DM's member row, created by the DM's first message;
* :func:`read_ord_bound`: the message ordinal of a read marker that points
  before the channel's oldest stored item.

Message ordinals
    Every stored item carries ``ord``: how many ``message`` items the channel has
    had up to and including it (a message's own ordinal; for other kinds the count
    before them). The channel keeps its message count; a member row keeps the
    ordinal of its read marker (``read_ord``, set when the marker moves), so
    ``unread = message count - read_ord`` costs nothing per recipient on the send
    path. A user's own messages are never unread: sending moves the sender's
    marker to the message.
"""

from __future__ import annotations

from dataclasses import replace

from chatd.store import Member, Message, Room

#: event -> the state of the member row it leaves (None: the state is unchanged)
EVENT_STATES = {
    "created": "member",
    "joined": "member",
    "invited": "member",
    "left": "left",
    "kicked": "kicked",
    "banned": "banned",
    "unbanned": "left",
    "role": None,
    "room_updated": None,
}

#: the room settings ``changes`` may set
ROOM_FIELDS = ("kind", "title", "topic", "avatar")


def event_of(item: Message) -> str | None:
    """The event name of an ``event`` item (None for other kinds or a malformed one)."""
    if item.kind != "event" or not isinstance(item.data, dict):
        return None
    event = item.data.get("event")
    return event if event in EVENT_STATES else None


def event_user(item: Message) -> str | None:
    """The user whose member row an ``event`` item changes (None: none)."""
    event = event_of(item)
    if event is None or event == "room_updated":
        return None
    user = item.data.get("user")
    return user if isinstance(user, str) else None


def apply_event(row: Member | None, item: Message) -> Member | None:
    """The member row of ``item.data["user"]`` after the ``event`` *item*.

    *row* is the row before (None: none). Returns None when the event leaves no
    row to write (not a member event, or ``role`` for a user without a row).
    ``joined``/``invited``/``created`` start the read marker at the event's seq
    (never moving it back); the caller sets the marker's ordinal to the event's.
    """
    event = event_of(item)
    user = event_user(item)
    if user is None:
        return None
    state = EVENT_STATES[event]
    if row is None:
        if event == "role":
            return None
        row = Member(item.channel, user, "member", "left", None, 0, False, item.seq)
    changes = {"since_seq": item.seq}
    if state is not None:
        changes["state"] = state
    if event == "created":
        changes["role"] = "owner"
    elif event in ("joined", "invited", "role"):
        role = item.data.get("role") or ("member" if event != "role" else row.role)
        changes["role"] = role
    if event in ("created", "joined", "invited"):
        changes["read_seq"] = max(row.read_seq, item.seq)
    return replace(row, **changes)


def apply_room(room: Room | None, item: Message) -> Room | None:
    """The room row after the ``created``/``room_updated`` *item* (None: unchanged).

    ``room_updated`` on a room never created (a chatd 0.1 room) creates its row
    with the 0.1 defaults (public, no owner) and the changes.
    """
    event = event_of(item)
    if event not in ("created", "room_updated"):
        return None
    changes = item.data.get("changes") or {}
    if not isinstance(changes, dict):
        changes = {}
    if event == "created":
        room = Room(item.channel, "public", "", "", "", item.data.get("user"), item.ts)
    elif room is None:
        room = Room(item.channel, "public", "", "", "", None, 0)
    fields = {k: str(changes[k]) for k in ROOM_FIELDS if changes.get(k) is not None}
    return replace(room, **fields)


def target_of(item: Message) -> int | None:
    """The target seq of a ``recalled``/``edited``/``reaction`` item (None: none)."""
    if item.kind in ("message", "event") or not isinstance(item.data, dict):
        return None
    target = item.data.get("target")
    return target if isinstance(target, int) and not isinstance(target, bool) else None


def is_recalled(message: Message) -> bool:
    """Whether *message* was recalled (its text is gone)."""
    return bool(message.data and message.data.get("recalled"))


def recalled_data(data: dict | None, by: str, ts: int) -> dict:
    """The recalled target message's data: ``recalled {by, ts}`` added (``edited_ts`` kept)."""
    out = dict(data or {})
    out["recalled"] = {"by": by, "ts": ts}
    return out


def edited_data(data: dict | None, ts: int) -> dict:
    """The edited target message's data: ``edited_ts`` set to the edit's ts."""
    out = dict(data or {})
    out["edited_ts"] = ts
    return out


def reaction_data(data: dict | None, on: bool) -> dict:
    """The reaction item's data with the store's resulting ``on``."""
    out = dict(data or {})
    out["on"] = on
    return out


def mentions_of(item: Message) -> list[str]:
    """The user ids (and ``"@all"``) a message mentions, each once, in order."""
    if item.kind != "message" or not isinstance(item.data, dict):
        return []
    mentions = item.data.get("mentions")
    if not isinstance(mentions, list):
        return []
    return list(dict.fromkeys(m for m in mentions if isinstance(m, str)))


def dm_member(channel: str, user: str, peer: str, read_seq: int = 0) -> Member:
    """The member row a DM's message creates for *user* when the user has none: the
    marker just before that message (0 on a new DM; on a DM of chatd 0.1, whose
    messages had no member rows, its earlier history counts as read)."""
    return Member(channel, user, "member", "member", peer, read_seq, False, 0)


def read_ord_bound(seq: int, oldest_seq: int, oldest_ord: int) -> int:
    """The ordinal of marker *seq* below the oldest stored item ``(oldest_seq,
    oldest_ord)``: the lowest it can be (pruning removed what would say exactly),
    so unread is never under-counted."""
    return max(0, oldest_ord - (oldest_seq - seq))
