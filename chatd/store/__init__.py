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


@dataclass(slots=True)
class Message:
    """One stored message.

    Treat it as immutable (``dataclasses.replace`` makes a changed copy). It is not
    ``frozen`` for the same reason as :class:`Conversation`: a replay of 50 items
    in each of 200 conversations builds 10,000 of them (~4 us each frozen, ~0.6 us
    plain)."""

    channel: str
    seq: int
    sender: str
    name: str
    text: str
    ts: int
    client_id: str | None
    #: what this timeline item is (see ITEM_KINDS): ``message`` for what was sent
    #: with ``send``/``dm``; the others are conversation events with their own seq
    kind: str = "message"
    #: the item's details (a JSON object; None: none). For ``message``: optional
    #: ``mentions`` (list of user ids, ``"@all"``), ``reply_to`` (seq), and the state
    #: later items gave it: ``edited_ts`` (ms), ``recalled`` (``{"by", "ts"}``).
    #: For the other kinds see ITEM_KINDS.
    data: dict | None = None


#: The kinds of timeline items, each a frame type of docs/protocol.md, and their data:
#:
#: ``message``   a message (room or DM); data as in :attr:`Message.data`
#: ``event``     a membership or room change, ``{"event", "user", "by", ...}`` with
#:               ``event`` one of EVENTS; ``role`` for ``joined``/``invited``/``role``,
#:               ``changes`` (title/topic/avatar/kind) for ``created``/``room_updated``.
#:               Appending it APPLIES it: the store changes the member row / room row
#:               in the same transaction (see :class:`IConversationStore`).
#: ``recalled``  ``{"target": seq, "by": user}``; text ``""``. Appending it removes the
#:               stored text of the target message and of the ``edited`` items of it,
#:               and sets the target's ``data["recalled"] = {"by", "ts"}``.
#: ``edited``    ``{"target": seq}``; text = the new text. Appending it sets the
#:               target's text and ``data["edited_ts"]``.
#: ``reaction``  ``{"target": seq, "emoji": str, "on": bool}``. The store toggles the
#:               sender's reaction and writes the resulting ``on`` itself (the
#:               caller's ``on`` is ignored).
ITEM_KINDS = ("message", "event", "recalled", "edited", "reaction")

#: ``event`` items: what they do to the member row of ``data["user"]``
EVENTS = (
    "created",  # room row created from data["changes"]; user = creator, role owner
    "joined",  # member (role data["role"], default "member"), read marker = this seq
    "invited",  # same as joined: an invite adds the member at once (WeChat groups)
    "left",  # state "left"
    "kicked",  # state "kicked"
    "banned",  # state "banned" (join refused until unbanned)
    "unbanned",  # state "left"
    "role",  # role = data["role"]
    "room_updated",  # room row updated from data["changes"]
)

#: member row states; only ``member`` rows are conversations of the user
MEMBER_STATES = ("member", "left", "kicked", "banned")


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
class SyncReplay:
    """The result of :meth:`IConversationStore.sync_replay`: :class:`Replay`'s, where a
    plain message may come as its JSON already, and the characters of text."""

    #: ascending by seq: :class:`Message` objects, and (from a store that encodes
    #: them, SQLite) ``str`` for runs of plain messages: the JSON objects
    #: :func:`chatd.wire.item_frame` writes for them, byte for byte, comma-separated
    items: list
    last_seq: int
    truncated: bool
    #: characters of the items' ``text`` (the reply's size budget, chatd.inbox)
    text: int


def sync_replay_of(r: Replay) -> SyncReplay:
    """The :class:`SyncReplay` of a :class:`Replay` (every item a :class:`Message`)."""
    return SyncReplay(r.messages, r.last_seq, r.truncated, sum(len(m.text) for m in r.messages))


def compose_conversation_page(store, user, start, limit):
    """:meth:`IConversationStore.conversation_page` from ``conversations`` and
    ``summaries`` (stores whose calls are cheap one by one: memory, Redis)."""
    from twisted.internet.defer import inlineCallbacks

    @inlineCallbacks
    def run():
        everything = yield store.conversations(user)
        page = everything[start : start + limit]
        full = (yield store.summaries(user, [c.channel for c in page])) if page else []
        return full, start + limit < len(everything)

    return run()


def compose_sync_replay(store, reads, limit):
    """:meth:`IConversationStore.sync_replay` from ``replay`` (stores that encode
    nothing: memory, Redis): the replays at once, failing with the first failure."""
    from twisted.internet.defer import gatherResults

    replays = [store.replay(channel, since, limit) for channel, since in reads]
    return gatherResults(replays, consumeErrors=True).addCallbacks(
        lambda found: [sync_replay_of(r) for r in found], lambda f: f.value.subFailure
    )


@dataclass(frozen=True, slots=True)
class Page:
    """The result of :meth:`IHistoryStore.history`: ``messages`` ascending by seq."""

    messages: list[Message]
    more: bool


#: what every :func:`dm_channel` starts with (no room name can: rooms have no ``@``)
DM_PREFIX = "@dm:"


def is_dm(channel: str) -> bool:
    """True when *channel* is a :func:`dm_channel` (a prefix test: nothing parsed)."""
    return channel.startswith(DM_PREFIX)


def dm_channel(a: str, b: str) -> str:
    """The channel of the direct-message conversation between users *a* and *b*.

    It is the same whichever user is named first, and it can never collide with
    a room name (room names cannot contain ``@``).
    """
    first, second = sorted((a, b))
    return DM_PREFIX + json.dumps([first, second], ensure_ascii=False, separators=(",", ":"))


def dm_users(channel: str) -> tuple[str, str] | None:
    """The two users of a :func:`dm_channel` (None: *channel* is a room)."""
    if not is_dm(channel):
        return None
    first, second = json.loads(channel[len(DM_PREFIX) :])
    return first, second


@dataclass(frozen=True, slots=True)
class Room:
    """A room's stored settings. A room that was never ``created`` has no row and is
    public with no owner (the rooms of chatd 0.1: created by the first join)."""

    room: str
    kind: str  # "public" | "private"
    title: str
    topic: str
    avatar: str
    created_by: str | None
    created_ts: int


@dataclass(frozen=True, slots=True)
class Member:
    """One user's row in one conversation (a room, or a DM channel)."""

    channel: str
    user: str
    #: "owner" | "admin" | "member" for rooms; "member" for DMs
    role: str
    #: one of MEMBER_STATES
    state: str
    #: the other user of a DM (None for rooms)
    peer: str | None
    #: the user's read marker: every item with seq <= read_seq is read (never moves back)
    read_seq: int
    muted: bool
    #: the seq of the item that made the row what it is (its last event; 0 for DMs)
    since_seq: int


@dataclass(slots=True)
class Conversation:
    """One of a user's conversations, as the conversation list shows it.

    Treat it as immutable. It is not ``frozen``: a frozen dataclass's ``__init__``
    sets each field through ``object.__setattr__``, ~5 us per object against
    ~0.8 us, and a user in 1,000 rooms gets 1,000 of them per list request
    (bench/conversation_store_bench.py, issue 14)."""

    channel: str
    #: "public" | "private" | "dm"
    kind: str
    #: the other user of a DM (None for rooms)
    peer: str | None
    role: str
    read_seq: int
    muted: bool
    #: the channel's newest seq (any item kind) and that item's ts (0, 0: none)
    last_seq: int
    last_ts: int
    #: messages (kind "message") with seq > read_seq not sent by the user; derived
    #: from the channel's message count and the marker, never stored per message
    unread: int = 0
    #: unread messages that mention the user (or "@all", when not sent by the user)
    mentions: int = 0
    #: the newest message (kind "message"), its text "" when recalled (None: none)
    last: Message | None = None
    #: DMs: the peer's read_seq (None for rooms)
    peer_read: int | None = None
    #: rooms: the stored title ("" for DMs and rooms never created)
    title: str = ""


@dataclass(frozen=True)
class ReadMarker:
    """What :meth:`IConversationStore.read_marker` did: the marker *before* and
    after (*marker*), the conversation's *unread* and *mentions* after it, and its
    member count up to the asked bound (*members*; 2 for a DM)."""

    before: int
    marker: int
    unread: int
    mentions: int
    members: int


def compose_read_marker(store, user, channel, seq, count_up_to):
    """:meth:`IConversationStore.read_marker` from the store's single operations (for
    stores whose calls are cheap one by one: memory, Redis); SQLite does it in one job."""
    from twisted.internet.defer import inlineCallbacks

    @inlineCallbacks
    def run():
        member = yield store.member(channel, user)
        if member is None or member.state != "member":
            return None
        last = (yield store.replay(channel, None, 0)).last_seq
        marker = yield store.mark_read(user, channel, min(seq, last))
        if marker is None:
            return None
        summaries = yield store.summaries(user, [channel])
        unread = summaries[0].unread if summaries else 0
        mentions = summaries[0].mentions if summaries else 0
        members = 2 if member.peer is not None else (yield store.member_count(channel))
        return ReadMarker(member.read_seq, marker, unread, mentions, min(members, count_up_to + 1))

    return run()


class StoreUnavailable(Exception):
    """The store could not commit; the message was not stored."""


class SchemaTooNew(Exception):
    """The store's data was written by a newer chatd than this one."""


class IHistoryStore(Interface):
    """A durable (or not) log of messages per channel.

    All methods return Deferreds that fire in the reactor thread. ``append``
    results fire in the order the appends were made, so callers that fan out
    on the result deliver each channel's messages in ``seq`` order. (Under Redis
    Cluster, :class:`chatd.store.redis.RedisStore` keeps the part that matters:
    each channel's results fire in ``seq`` order, one sender's in the order made.)
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


class IConversationStore(Interface):
    """Conversations: rooms, members, read markers, known users, sync cursors.

    Implemented by the same objects as :class:`IHistoryStore` (SQLite, memory,
    Redis); all methods return Deferreds. Timeline items of every kind go through
    ``IHistoryStore.append`` extended with two trailing arguments:

    ``append(channel, sender, name, client_id, text, ts, kind="message", data=None)``

    which, in the same transaction as the item (so also exactly-once by
    ``(sender, client_id)``, and group-committed):

    * ``message``: stores ``data["mentions"]`` for :meth:`conversations`' mention
      counts; moves the sender's read marker to the new seq (sending marks the
      conversation read); for a DM channel creates both users' member rows on the
      first message (role "member", read marker 0 for the recipient; on a DM
      channel of chatd 0.1 that already had messages but no rows, both markers
      start just before that message: its older history counts as read);
    * ``event``: applies it to the member row / room row (see ``EVENTS``);
    * ``recalled``, ``edited``, ``reaction``: change the target message (see
      ``ITEM_KINDS``); the ``reaction`` item's ``data["on"]`` is the store's.

    Reads of history (``replay``, ``history``) return items of every kind, with
    the target messages in their current state (latest text, ``edited_ts``,
    ``recalled``).

    The rules of what each item does to the rows are pure functions in
    :mod:`chatd.store.items`, shared by the stores.
    """

    def add_user(user, name, ts):
        """Record that *user* exists (a token user connected, a token was issued).
        Returns a Deferred firing None; idempotent."""

    def has_user(user):
        """True when *user* was ever recorded by :meth:`add_user` or has a member row."""

    def room(room):
        """The :class:`Room` row, or None for a room never created."""

    def member(channel, user):
        """The :class:`Member` row of *user* in *channel* (any state), or None."""

    def members(channel, after, limit):
        """Rows in state ``member`` with user id > *after* (None: from the first),
        ascending by user id, at most *limit*: fires with ``(list[Member], more)``.
        Reads only that page (a 10,000-member room is never loaded whole)."""

    def member_count(channel):
        """How many rows of *channel* are in state ``member``."""

    def conversations(user):
        """Every :class:`Conversation` of *user* (rows in state ``member``), most
        recent activity (``last_ts``) first, ties by channel; with only ``channel,
        kind, peer, role, read_seq, muted, last_seq, last_ts`` filled (cheap: one
        query). :meth:`summaries` fills in the rest for the ones shown."""

    def summaries(user, channels):
        """Complete :class:`Conversation` objects of *user* for *channels* (in
        that order; a channel where the user is not a member is left out)."""

    def mark_read(user, channel, seq):
        """Move *user*'s read marker in *channel* to *seq* if that is forward and
        the user has a member row; group-committed with appends. Fires with the
        marker after the call (unchanged when *seq* was not forward; None: no row)."""

    def read_marker(user, channel, seq, count_up_to):
        """``read``: for a *user* in state member, move the marker as :meth:`mark_read`
        does (clamped to the newest seq) and fire with a :class:`ReadMarker` (the
        member count counted up to ``count_up_to + 1`` only); None when the user is
        not a member. One store round trip where the store can (SQLite: one batched
        write job)."""

    def set_muted(user, channel, muted):
        """Set the member row's ``muted``; fires with True when the row exists."""

    def readers(channel, seq, limit):
        """Members (state ``member``) with ``read_seq >= seq``: fires with
        ``(count, users)``, *users* the first *limit* of them by user id."""

    def items(channel, seqs):
        """``{seq: Message}`` for the stored items of *channel* among *seqs*
        (current state; missing ones left out)."""

    def reactions(channel, seqs):
        """``{seq: {emoji: [user, ...]}}`` of the reactions now on those messages
        (users ascending; messages and emoji without reactions left out)."""

    def conversation_page(user, start, limit):
        """One page of the conversation list: the complete :class:`Conversation`
        objects (as :meth:`summaries` gives them) of ``conversations(user)[start :
        start + limit]``, and whether more follow: fires with ``(list, more)``. SQLite
        sorts and pages in its query and summarises only the page;
        :func:`compose_conversation_page` is the composition."""

    def sync_replay(reads, limit):
        """``replay(channel, since, limit)`` of each ``(channel, since)`` of *reads* as a
        ``sync`` reply shows it: fires with a list of :class:`SyncReplay`, one per read,
        in order (SQLite: one job for all of them). A store may give plain messages (kind ``message``, no
        data) as a ``str`` of their JSON objects in the reply, comma-separated, byte
        for byte what :func:`chatd.wire.item_frame` writes (SQLite builds it in the
        query); every other item is a :class:`Message`. :func:`compose_sync_replay` is the
        composition from ``replay``."""

    def save_cursor(user, cursor, snapshot, ts):
        """Keep the sync snapshot (bytes) under the opaque *cursor* id for *user*;
        a store keeps at least the newest 16 per user and for 30 days."""

    def load_cursor(user, cursor):
        """The snapshot bytes saved under *cursor* for *user*, or None (unknown,
        expired, or another user's)."""


class IPushStore(Interface):
    """Offline-push subscriptions (:mod:`chatd.push`): one-time template quotas per
    user, the rooms a user chose, and when each conversation last notified each user.

    Implemented by the same objects as :class:`IHistoryStore` (SQLite, memory,
    Redis); all methods return Deferreds. What a subscription or a claim does to the
    stored counts is :mod:`chatd.pushrules` (``subscribe``, ``claim``), shared by the
    stores; each call is atomic (one transaction, one script).
    """

    def push_subscribe(user, add, choose, ts):
        """Add accepted one-time messages (*add*: template -> count, capped) and set
        the user's rooms (*choose*: room -> on/off); fires with the user's
        :class:`chatd.pushrules.PushState` after the change."""

    def push_state(user):
        """The user's :class:`chatd.pushrules.PushState` (no templates, no rooms: empty)."""

    def claim_push(user, channel, template, now_ms, interval_ms):
        """Apply :func:`chatd.pushrules.claim` to the user's last notification in
        *channel* and the quota of *template* (None: no template): when it notifies,
        record *now_ms* as the last one and take one message of the quota. Fires with
        the :class:`chatd.pushrules.Claim`."""

    def drop_push_quota(user, template):
        """Forget what is left of *user*'s *template* (WeChat said the user refused)."""

    def push_watchers(channel, limit):
        """Up to *limit* users who chose to be notified of every message in *channel*
        (ascending by user id)."""


class IModerationStore(Interface):
    """Moderation (:mod:`chatd.moderation`, rules in :mod:`chatd.modrules`): users'
    sanctions (mutes and global bans), the moderation queue (reports and content-check
    flags) and the audit log.

    Implemented by the same objects as :class:`IHistoryStore` (SQLite, memory,
    Redis); all methods return Deferreds. Queue entries and audit entries are JSON
    objects (dicts) the store keeps as given, adding ``id`` (increasing integers)
    and, for queue entries, ``state`` (``open``/``closed``).
    """

    def set_sanction(user, kind, scope, until_ms):
        """Set *user*'s sanction *kind* (``mute``/``ban``) in *scope* (a room, or
        ``*``) to last until *until_ms*; 0 removes it. Fires None."""

    def sanctions(user):
        """``{(kind, scope): until_ms}`` of *user* (expired ones may be included:
        :func:`chatd.modrules.active_until` tells what is in force)."""

    def add_report(key, entry):
        """Put *entry* into the queue (state ``open``), exactly once per *key*: fires
        with ``(entry with id and state, duplicate)``; a duplicate stores nothing and
        fires with the entry first stored under *key*."""

    def reports(state, before, limit):
        """Up to *limit* queue entries in *state* (None: any), newest first, with id
        below *before* (None: from the newest)."""

    def report(id):
        """The queue entry *id*, or None."""

    def close_report(id, resolution):
        """Close the open entry *id*: its ``state`` becomes ``closed`` and its
        ``resolution`` *resolution*; fires with the entry, or None when there is no
        such open entry (unknown, or closed already: only one close wins)."""

    def add_audit(entry):
        """Append *entry* to the audit log; fires with its id."""

    def audit_log(before, limit):
        """Up to *limit* audit entries with id below *before* (None: from the newest),
        newest first."""

    def moderation_oldest(log, after, limit):
        """Up to *limit* entries of *log* (``queue`` or ``audit``,
        :data:`chatd.modrules.QUEUE`/``AUDIT``) with id above *after*, oldest first
        (what the retention sweep looks at)."""

    def delete_moderation(log, ids):
        """Delete the entries *ids* of *log* (a queue entry with its exactly-once key);
        fires with how many were deleted."""


class ISharedCounters(Interface):
    """Counters every node of a cluster shares (the Redis store): the report rate
    limit of :mod:`chatd.moderation` is cluster-wide with them."""

    def count_in_window(user, what, window, window_ms):
        """Count one *what* (e.g. ``report``) of *user* in fixed window number
        *window* (``now // window_ms``); fires with the count of that window, this
        one included. The counter expires with its window."""


class IMediaCheckStore(Interface):
    """WeChat's asynchronous media checks (:mod:`chatd.contentcheck`): what each
    ``mediaCheckAsync`` ``trace_id`` was about, until its verdict comes. Records are
    JSON objects with at least ``ts`` (ms, when the check was asked)."""

    def add_media_check(trace_id, record, ttl_ms):
        """Keep *record* under *trace_id* (for at least *ttl_ms*); fires None."""

    def take_media_check(trace_id):
        """The record of *trace_id*, removed (only the first caller gets it: a replayed
        verdict finds nothing), or None."""

    def prune_media_checks(before_ms):
        """Delete the records asked before *before_ms*; fires with how many."""
