"""The pure parts of the inbox: sync snapshots and their diff, paging the conversation
list, and who may recall, edit, react to or reply to a message.

Nothing here does I/O or reads a clock: the callers (:mod:`chatd.inbox`) pass the
store's results and ``now``. Everything is unit-tested in ``tests/unit/test_inbox_pure.py``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from chatd import errors
from chatd.permissions import may
from chatd.store import Conversation, Message, dm_users
from chatd.wire import MENTION_ALL

#: most conversations in one ``sync`` reply (more: ``more: true``)
SYNC_PAGE = 200
#: snapshot format version (a snapshot of another version is treated as unknown)
SNAPSHOT_VERSION = 1


@dataclass(frozen=True, slots=True)
class Entry:
    """What a sync cursor remembers of one conversation."""

    last_seq: int
    read_seq: int
    peer_read: int | None
    role: str
    muted: bool
    title: str


def entry(c: Conversation, last_seq: int | None = None) -> Entry:
    """The snapshot entry of *c* (with *last_seq* instead of its own, when given)."""
    return Entry(
        c.last_seq if last_seq is None else last_seq,
        c.read_seq,
        c.peer_read,
        c.role,
        c.muted,
        c.title,
    )


def encode_snapshot(snapshot: dict[str, Entry]) -> bytes:
    """The bytes a cursor keeps (compact JSON)."""
    rows = {
        ch: [e.last_seq, e.read_seq, e.peer_read, e.role, e.muted, e.title]
        for ch, e in snapshot.items()
    }
    return json.dumps({"v": SNAPSHOT_VERSION, "c": rows}, separators=(",", ":")).encode()


def decode_snapshot(raw: bytes | None) -> dict[str, Entry] | None:
    """The snapshot of :func:`encode_snapshot`'s bytes; None for anything else (an
    unknown cursor, another version, damaged bytes): the sync is then a reset."""
    if raw is None:
        return None
    try:
        obj = json.loads(raw)
        if obj.get("v") != SNAPSHOT_VERSION:
            return None
        return {ch: Entry(*row) for ch, row in obj["c"].items()}
    except (ValueError, TypeError, AttributeError, KeyError):
        return None


def _cheap(e: Entry) -> tuple:
    return e.last_seq, e.read_seq, e.role, e.muted


def needs_summary(snapshot: dict[str, Entry] | None, cheap: list[Conversation]) -> list[str]:
    """The channels of *cheap* (``store.conversations``: no title, no peer read) whose
    full summary the diff needs: new ones, those whose seq, marker, role or mute
    changed, and every DM (the peer's marker moves without a new item). A room's
    title changes only by a ``room_updated`` event, which moves its seq."""
    if snapshot is None:
        return [c.channel for c in cheap]
    out = []
    for c in cheap:
        old = snapshot.get(c.channel)
        if old is None or c.kind == "dm" or _cheap(old) != _cheap(entry(c)):
            out.append(c.channel)
    return out


@dataclass(slots=True)
class Plan:
    """What one ``sync`` reply sends (see :func:`plan`)."""

    #: (summary, since) of each conversation to send, most recent first; *since* is the
    #: snapshot's seq (items above it are sent), None for a conversation new to it
    changed: list[tuple[Conversation, int | None]] = field(default_factory=list)
    #: rooms of the snapshot the user is no longer a member of
    removed: list[str] = field(default_factory=list)
    #: more changed conversations than one reply holds
    more: bool = False
    #: the entries of the new snapshot for what is not sent (unchanged ones, and the
    #: old entries of changed ones left for the next reply)
    keep: dict[str, Entry] = field(default_factory=dict)


def plan(
    snapshot: dict[str, Entry] | None,
    cheap: list[Conversation],
    full: dict[str, Conversation],
    page: int = SYNC_PAGE,
) -> Plan:
    """Diff *snapshot* (None: no cursor) against the user's conversations now.

    *cheap* is ``store.conversations(user)`` (most recent first), *full* the
    summaries of :func:`needs_summary`'s channels. A conversation is sent when it is
    new or its seq, read marker, peer's marker, role, mute or title changed; at most
    *page* of them (``more`` says there are others)."""
    out = Plan()
    old = snapshot or {}
    current = set()
    for c in cheap:
        current.add(c.channel)
        summary = full.get(c.channel)
        before = old.get(c.channel)
        if summary is None:  # not summarised: unchanged (or gone meanwhile)
            if before is not None:
                out.keep[c.channel] = before
            continue
        if before is not None and entry(summary) == before:
            out.keep[c.channel] = before
            continue
        if len(out.changed) >= page:
            out.more = True
            if before is not None:
                out.keep[c.channel] = before
            continue
        out.changed.append((summary, None if before is None else before.last_seq))
    out.removed = [ch for ch in old if ch not in current and dm_users(ch) is None]
    return out


def page_start(cursor: str | None) -> int:
    """Where the page of conversation-list *cursor* starts (None: the first page);
    ValueError for anything that is not such a cursor."""
    if cursor is None:
        return 0
    if not cursor.isdigit() or len(cursor) > 9:
        raise ValueError("not a conversations cursor")
    return int(cursor)


def next_page(start: int, limit: int, more: bool) -> str | None:
    """The cursor of the page after the one at *start* (None: it was the last)."""
    return str(start + limit) if more else None


def page_of(items: list, cursor: str | None, limit: int) -> tuple[list, str | None]:
    """One page of the conversation list: *cursor* is the offset from the previous
    page (None: the first). Returns the page and the next cursor (None: the last)."""
    start = page_start(cursor)
    end = start + limit
    return items[start:end], next_page(start, limit, end < len(items))


# who may do what to a message (the role rules are chatd.permissions)


def is_message(item: Message | None) -> bool:
    return item is not None and item.kind == "message"


def is_recalled(item: Message) -> bool:
    return "recalled" in (item.data or {})


def check_recall(
    target: Message | None,
    actor: str,
    kind: str,
    role: str | None,
    now_ms: int,
    window_s: float,
    ref: str | None,
) -> bool:
    """May *actor* (with *role* in a conversation of *kind*: public/private/dm) recall
    *target*? Raises the refusal; returns True for a message *actor* recalled before
    (a resend: the store's exactly-once answers it), False otherwise."""
    if not is_message(target):
        raise errors.NoSuchMessage("no such message in this conversation", ref)
    if is_recalled(target):
        if target.data["recalled"].get("by") == actor and ref is not None:
            return True
        raise errors.NoSuchMessage("that message was recalled already", ref)
    if kind != "dm" and may("recall_any", kind, role):
        return False
    if target.sender != actor:
        raise errors.Forbidden("only the sender, admins and owners may recall a message", ref)
    if now_ms - target.ts > window_s * 1000:
        raise errors.TooLate(f"messages can be recalled within {window_s:g} seconds", ref)
    return False


def check_edit(target: Message | None, actor: str, ref: str | None) -> None:
    """May *actor* edit *target*? (The sender only; never a recalled message.)"""
    if not is_message(target) or is_recalled(target):
        raise errors.NoSuchMessage("no such message in this conversation", ref)
    if target.sender != actor:
        raise errors.Forbidden("only the sender may edit a message", ref)


def check_react(target: Message | None, ref: str | None) -> None:
    """May a member react to *target*? (Any message not recalled.)"""
    if not is_message(target) or is_recalled(target):
        raise errors.NoSuchMessage("no such message in this conversation", ref)


def check_reply(target: Message | None, ref: str | None) -> None:
    """May a message reply to *target*? (Any message of the conversation.)"""
    if not is_message(target):
        raise errors.NoSuchMessage("reply_to names no message of this conversation", ref)


def check_mentions(mentions: list[str] | None, kind: str, role: str | None, ref) -> None:
    """``@all`` is for the admins and owners of a room."""
    if mentions and MENTION_ALL in mentions:
        if kind == "dm" or not may("mention_all", kind, role):
            raise errors.Forbidden("only admins and owners may mention @all", ref)


def message_data(
    mentions: list[str] | None, reply_to: int | None, attachments: list[dict] | None = None
) -> dict | None:
    """The stored data of a new message (None for a plain one); *attachments* as
    :func:`chatd.media.attach.entry` makes them."""
    data = {}
    if mentions:
        data["mentions"] = mentions
    if reply_to is not None:
        data["reply_to"] = reply_to
    if attachments:
        data["attachments"] = attachments
    return data or None
