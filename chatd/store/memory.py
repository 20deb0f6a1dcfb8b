"""An in-memory history and conversation store: nothing survives a restart.

The reference implementation of :class:`chatd.store.IHistoryStore` and
:class:`chatd.store.IConversationStore`: the property test checks the SQLite
store against it, and the unit tests run the ``Chat`` realm on it. (``--db
:memory:`` is SQLite in memory, not this store.) What an item does to the rows it
changes is :mod:`chatd.store.items`, shared with the other stores.

Every answer is computed at once and returned as a fired Deferred; appends and
``mark_read`` take effect in call order.
"""

from __future__ import annotations

import itertools
from bisect import bisect_left, bisect_right
from collections import OrderedDict, deque
from dataclasses import replace

from twisted.internet.defer import succeed
from zope.interface import implementer

from chatd import modrules, pushrules
from chatd.store import (
    Appended,
    Conversation,
    IConversationStore,
    IHistoryStore,
    IMediaCheckStore,
    IModerationStore,
    IPushStore,
    Member,
    Message,
    Page,
    Replay,
    compose_conversation_page,
    compose_read_marker,
    compose_sync_replay,
    dm_users,
    items,
)
from chatd.store.retention import Retention


class _Channel:
    """One channel's stored items and counters."""

    __slots__ = ("log", "ords", "last_seq", "last_ts", "count", "last_msg", "mentions", "reacts")

    def __init__(self):
        #: the stored items, ascending and contiguous by seq, and each one's ordinal
        self.log: deque[Message] = deque()
        self.ords: deque[int] = deque()
        self.last_seq = 0
        self.last_ts = 0
        #: messages (kind "message") ever appended, and the newest one's seq
        self.count = 0
        self.last_msg = 0
        #: ``(seq, sender, mentioned)`` of stored messages with mentions, ascending
        self.mentions: list[tuple[int, str, frozenset[str]]] = []
        #: target seq -> emoji -> users reacting
        self.reacts: dict[int, dict[str, set[str]]] = {}

    def index(self, seq: int) -> int | None:
        """The position of *seq* in ``log`` (None: not stored)."""
        if not self.log:
            return None
        i = seq - self.log[0].seq
        return i if 0 <= i < len(self.log) else None

    def get(self, seq: int) -> Message | None:
        i = self.index(seq)
        return None if i is None else self.log[i]

    def put(self, message: Message) -> None:
        """Replace the stored item of ``message.seq`` (its current state)."""
        i = self.index(message.seq)
        if i is not None:
            self.log[i] = message

    def ord_at(self, seq: int) -> int:
        """The message ordinal of the read marker *seq*."""
        if seq <= 0:
            return 0
        if seq >= self.last_seq:
            return self.count
        i = self.index(seq)
        if i is not None:
            return self.ords[i]
        if not self.log:
            return 0
        return items.read_ord_bound(seq, self.log[0].seq, self.ords[0])


@implementer(IHistoryStore, IConversationStore, IPushStore, IModerationStore, IMediaCheckStore)
class MemoryStore:
    """Keeps at most ``history_max`` items per channel in memory."""

    durable = False

    def __init__(self, history_max: int = 10000, retention: Retention | None = None):
        self.history_max = history_max
        self.retention = retention or Retention()
        self._channels: dict[str, _Channel] = {}
        self._by_client_id: dict[tuple[str, str], Message] = {}
        #: channel -> user -> [Member, read_ord]
        self._members: dict[str, dict[str, list]] = {}
        #: user -> channels with a row of the user
        self._rows_of: dict[str, set[str]] = {}
        self._rooms: dict = {}
        self._users: dict[str, tuple[str, int]] = {}
        #: user -> cursor -> (snapshot, ts), oldest first
        self._cursors: dict[str, OrderedDict[str, tuple[bytes, int]]] = {}
        #: offline push (IPushStore): user -> template -> messages left; user -> rooms
        #: chosen; (user, channel) -> ms of the last notification
        self._quotas: dict[str, dict[str, int]] = {}
        self._push_rooms: dict[str, set[str]] = {}
        self._pushed: dict[tuple[str, str], int] = {}
        #: moderation (IModerationStore): user -> (kind, scope) -> until; the queue
        #: (id -> entry) and its keys (key -> id); the audit log, oldest first
        self._sanctions: dict[str, dict[tuple[str, str], int]] = {}
        self._reports: dict[int, dict] = {}
        self._report_keys: dict[str, int] = {}
        self._audit: list[dict] = []
        #: the last ids given (ids are never reused, after retention deleted some)
        self._next_report = self._next_audit = 0
        #: trace_id -> record of WeChat's asynchronous media checks
        self._media_checks: dict[str, dict] = {}

    def start(self):
        return succeed(None)

    def stop(self):
        return succeed(None)

    # -- appends --------------------------------------------------------------

    def append(self, channel, sender, name, client_id, text, ts, kind="message", data=None):
        if client_id is not None:
            original = self._by_client_id.get((sender, client_id))
            if original is not None:
                # in its current state (edited, recalled) while it is stored
                ch = self._channels.get(original.channel)
                current = None if ch is None else ch.get(original.seq)
                return succeed(Appended(current or original, True))
        ch = self._channels.get(channel)
        if ch is None:
            ch = self._channels[channel] = _Channel()
        seq = ch.last_seq + 1
        data = None if data is None else dict(data)
        message = Message(channel, seq, sender, name, text, ts, client_id, kind, data)
        if kind == "reaction":
            message = self._react(ch, message)
        elif kind == "edited":
            target = ch.get(items.target_of(message) or 0)
            if target is not None and items.is_recalled(target):
                message = replace(message, text="")  # a recalled message's edits keep no text
        ch.last_seq, ch.last_ts = seq, ts
        if kind == "message":
            ch.count += 1
            ch.last_msg = seq
        ch.log.append(message)
        ch.ords.append(ch.count)
        self._apply(ch, message)
        while len(ch.log) > self.history_max:
            ch.log.popleft()
            ch.ords.popleft()
        if ch.mentions and ch.log and ch.mentions[0][0] < ch.log[0].seq:
            del ch.mentions[: bisect_left(ch.mentions, ch.log[0].seq, key=_seq)]
        if client_id is not None:
            self._by_client_id[(sender, client_id)] = message
        return succeed(Appended(message, False))

    def _apply(self, ch: _Channel, item: Message) -> None:
        """The side effects of the just appended *item* (see IConversationStore)."""
        if item.kind == "message":
            mentioned = items.mentions_of(item)
            if mentioned:
                ch.mentions.append((item.seq, item.sender, frozenset(mentioned)))
            users = dm_users(item.channel)
            if users is not None:
                a, b = users
                for user, peer in ((a, b), (b, a)):
                    if self._row(item.channel, user) is None:
                        row = items.dm_member(item.channel, user, peer, item.seq - 1)
                        self._write_row(row, ch.count - 1)
            self._move_marker(item.sender, item.channel, item.seq)
        elif item.kind == "event":
            user = items.event_user(item)
            if user is not None:
                entry = self._row(item.channel, user)
                before = None if entry is None else entry[0]
                after = items.apply_event(before, item)
                if after is not None:
                    moved = before is None or after.read_seq != before.read_seq
                    self._write_row(after, ch.ord_at(after.read_seq) if moved else entry[1])
            room = items.apply_room(self._rooms.get(item.channel), item)
            if room is not None:
                self._rooms[item.channel] = room
        elif item.kind == "recalled":
            self._recall(ch, item)
        elif item.kind == "edited":
            target = ch.get(items.target_of(item) or 0)
            if target is not None and target.kind == "message" and not items.is_recalled(target):
                ch.put(
                    replace(target, text=item.text, data=items.edited_data(target.data, item.ts))
                )

    def _recall(self, ch: _Channel, item: Message) -> None:
        target_seq = items.target_of(item)
        target = ch.get(target_seq or 0)
        if target is None or target.kind != "message" or items.is_recalled(target):
            return  # a second recall keeps the first one's by and ts
        by = item.data.get("by", item.sender)
        ch.put(replace(target, text="", data=items.recalled_data(target.data, by, item.ts)))
        for m in list(ch.log)[ch.index(target_seq) :]:
            if m.kind == "edited" and items.target_of(m) == target_seq:
                ch.put(replace(m, text=""))
        ch.mentions = [e for e in ch.mentions if e[0] != target_seq]

    def _react(self, ch: _Channel, item: Message) -> Message:
        """Toggle the sender's reaction; the item with the resulting ``on``."""
        target = items.target_of(item)
        emoji = (item.data or {}).get("emoji")
        if target is None or not isinstance(emoji, str):
            return item
        users = ch.reacts.setdefault(target, {}).setdefault(emoji, set())
        on = item.sender not in users
        if on:
            users.add(item.sender)
        else:
            users.discard(item.sender)
            if not users:
                del ch.reacts[target][emoji]
                if not ch.reacts[target]:
                    del ch.reacts[target]
        return replace(item, data=items.reaction_data(item.data, on))

    # -- member rows ----------------------------------------------------------

    def _row(self, channel, user):
        return self._members.get(channel, {}).get(user)

    def _write_row(self, row: Member, read_ord: int) -> None:
        self._members.setdefault(row.channel, {})[row.user] = [row, read_ord]
        self._rows_of.setdefault(row.user, set()).add(row.channel)

    def _move_marker(self, user, channel, seq):
        """Move the marker forward (clamped to the newest seq); the marker after."""
        entry = self._row(channel, user)
        if entry is None:
            return None
        ch = self._channels.get(channel)
        seq = min(seq, ch.last_seq if ch is not None else 0)
        row = entry[0]
        if seq > row.read_seq:
            entry[0] = replace(row, read_seq=seq)
            entry[1] = ch.ord_at(seq)
        return entry[0].read_seq

    # -- history reads --------------------------------------------------------

    def _log(self, channel) -> list[Message]:
        ch = self._channels.get(channel)
        return [] if ch is None else list(ch.log)

    def replay(self, channel, since, limit):
        ch = self._channels.get(channel)
        last = 0 if ch is None else ch.last_seq
        if since is None:
            return succeed(Replay([], last, False))
        log = self._log(channel)
        start = bisect_left([m.seq for m in log], since + 1)
        missed = log[start:]
        truncated = len(missed) > limit or (
            last > since and (not missed or missed[0].seq > since + 1)
        )
        return succeed(Replay(missed[-limit:] if limit else [], last, truncated))

    def history(self, channel, before, limit):
        log = self._log(channel)
        end = len(log) if before is None else bisect_left([m.seq for m in log], before)
        start = max(0, end - limit)
        return succeed(Page(log[start:end], start > 0))

    # -- IConversationStore ---------------------------------------------------

    def add_user(self, user, name, ts):
        self._users.setdefault(user, (name, ts))
        return succeed(None)

    def has_user(self, user):
        return succeed(user in self._users or bool(self._rows_of.get(user)))

    def room(self, room):
        return succeed(self._rooms.get(room))

    def member(self, channel, user):
        entry = self._row(channel, user)
        return succeed(None if entry is None else entry[0])

    def _in(self, channel) -> list[Member]:
        """The rows of *channel* in state ``member``, ascending by user."""
        rows = self._members.get(channel, {})
        return [rows[u][0] for u in sorted(rows) if rows[u][0].state == "member"]

    def members(self, channel, after, limit):
        rows = self._in(channel)
        start = 0 if after is None else bisect_right([r.user for r in rows], after)
        page = rows[start : start + limit]
        return succeed((page, start + limit < len(rows)))

    def member_count(self, channel):
        rows = self._members.get(channel, {})
        return succeed(sum(1 for entry in rows.values() if entry[0].state == "member"))

    def _kind(self, channel) -> str:
        if dm_users(channel) is not None:
            return "dm"
        room = self._rooms.get(channel)
        return "public" if room is None else room.kind

    def _brief(self, row: Member) -> Conversation:
        ch = self._channels.get(row.channel)
        last_seq, last_ts = (0, 0) if ch is None else (ch.last_seq, ch.last_ts)
        return Conversation(
            row.channel,
            self._kind(row.channel),
            row.peer,
            row.role,
            row.read_seq,
            row.muted,
            last_seq,
            last_ts,
        )

    def conversations(self, user):
        rows = [self._row(c, user)[0] for c in self._rows_of.get(user, ())]
        out = [self._brief(r) for r in rows if r.state == "member"]
        out.sort(key=lambda c: (-c.last_ts, c.channel))
        return succeed(out)

    def summaries(self, user, channels):
        out = []
        for channel in channels:
            entry = self._row(channel, user)
            if entry is None or entry[0].state != "member":
                continue
            row, read_ord = entry
            brief = self._brief(row)
            ch = self._channels.get(channel)
            unread = mentions = 0
            last = None
            if ch is not None:
                unread = max(0, ch.count - read_ord)
                start = bisect_right(ch.mentions, row.read_seq, key=_seq)
                mentions = sum(
                    1
                    for _seq, sender, who in ch.mentions[start:]
                    if sender != user and (user in who or "@all" in who)
                )
                last = ch.get(ch.last_msg) if ch.last_msg else None
            peer_read = None
            if row.peer is not None:
                peer = self._row(channel, row.peer)
                peer_read = 0 if peer is None else peer[0].read_seq
            room = self._rooms.get(channel)
            out.append(
                replace(
                    brief,
                    unread=unread,
                    mentions=mentions,
                    last=last,
                    peer_read=peer_read,
                    title="" if room is None else room.title,
                )
            )
        return succeed(out)

    def mark_read(self, user, channel, seq):
        return succeed(self._move_marker(user, channel, seq))

    def read_marker(self, user, channel, seq, count_up_to):
        return compose_read_marker(self, user, channel, seq, count_up_to)

    def conversation_page(self, user, start, limit):
        return compose_conversation_page(self, user, start, limit)

    def sync_replay(self, reads, limit):
        return compose_sync_replay(self, reads, limit)

    def set_muted(self, user, channel, muted):
        entry = self._row(channel, user)
        if entry is None:
            return succeed(False)
        entry[0] = replace(entry[0], muted=bool(muted))
        return succeed(True)

    def readers(self, channel, seq, limit):
        users = [r.user for r in self._in(channel) if r.read_seq >= seq]
        return succeed((len(users), users[:limit]))

    def items(self, channel, seqs):
        ch = self._channels.get(channel)
        if ch is None:
            return succeed({})
        found = {seq: ch.get(seq) for seq in seqs}
        return succeed({seq: m for seq, m in found.items() if m is not None})

    def reactions(self, channel, seqs):
        ch = self._channels.get(channel)
        out = {}
        if ch is not None:
            for seq in seqs:
                emojis = ch.reacts.get(seq)
                if emojis:
                    out[seq] = {e: sorted(users) for e, users in emojis.items()}
        return succeed(out)

    def save_cursor(self, user, cursor, snapshot, ts):
        kept = self._cursors.setdefault(user, OrderedDict())
        kept.pop(cursor, None)
        kept[cursor] = (bytes(snapshot), ts)
        for old in self.retention.cursors_to_drop(
            ts / 1000, [(c, t) for c, (_, t) in kept.items()]
        ):
            del kept[old]
        return succeed(None)

    def load_cursor(self, user, cursor):
        found = self._cursors.get(user, {}).get(cursor)
        return succeed(None if found is None else found[0])

    # -- IPushStore (see chatd.store) -------------------------------------------

    def _push_state(self, user):
        templates = {t: n for t, n in self._quotas.get(user, {}).items() if n > 0}
        return pushrules.PushState(templates, tuple(sorted(self._push_rooms.get(user, ()))))

    def push_subscribe(self, user, add, choose, ts):
        templates, rooms = pushrules.subscribe(
            self._quotas.get(user, {}), self._push_rooms.get(user, ()), add, choose
        )
        self._quotas[user] = templates
        self._push_rooms[user] = rooms
        return succeed(self._push_state(user))

    def push_state(self, user):
        return succeed(self._push_state(user))

    def claim_push(self, user, channel, template, now_ms, interval_ms):
        quotas = self._quotas.get(user, {})
        count = None if template is None else quotas.get(template, 0)
        claim = pushrules.claim(self._pushed.get((user, channel)), count, now_ms, interval_ms)
        if claim.notify:
            self._pushed[(user, channel)] = now_ms
        if claim.quota:
            quotas[template] -= 1
        return succeed(claim)

    def drop_push_quota(self, user, template):
        self._quotas.get(user, {}).pop(template, None)
        return succeed(None)

    def push_watchers(self, channel, limit):
        users = sorted(u for u, rooms in self._push_rooms.items() if channel in rooms)
        return succeed(users[: max(limit, 0)])

    # -- IModerationStore (see chatd.store) -------------------------------------

    def set_sanction(self, user, kind, scope, until_ms):
        mine = self._sanctions.setdefault(user, {})
        if until_ms:
            mine[(kind, scope)] = int(until_ms)
        else:
            mine.pop((kind, scope), None)
        if not mine:
            del self._sanctions[user]
        return succeed(None)

    def sanctions(self, user):
        return succeed(dict(self._sanctions.get(user, {})))

    def add_report(self, key, entry):
        found = self._report_keys.get(key)
        if found is not None:
            return succeed((dict(self._reports[found]), True))
        id_ = self._next_report = self._next_report + 1
        self._report_keys[key] = id_
        self._reports[id_] = {**entry, "id": id_, "state": "open"}
        return succeed((dict(self._reports[id_]), False))

    def reports(self, state, before, limit):
        ids = sorted(self._reports, reverse=True)
        entries = [
            self._reports[i] for i in ids if state is None or self._reports[i]["state"] == state
        ]
        return succeed([dict(e) for e in _page(entries, before, limit)])

    def report(self, id):
        found = self._reports.get(id)
        return succeed(None if found is None else dict(found))

    def close_report(self, id, resolution):
        found = self._reports.get(id)
        if found is None or found["state"] != "open":
            return succeed(None)
        found.update(state="closed", resolution=resolution)
        return succeed(dict(found))

    def add_audit(self, entry):
        id_ = self._next_audit = self._next_audit + 1
        self._audit.append({**entry, "id": id_})
        return succeed(id_)

    def audit_log(self, before, limit):
        return succeed([dict(e) for e in _page(self._audit[::-1], before, limit)])

    def add_media_check(self, trace_id, record, ttl_ms):
        self._media_checks[trace_id] = dict(record)
        return succeed(None)

    def take_media_check(self, trace_id):
        return succeed(self._media_checks.pop(trace_id, None))

    def prune_media_checks(self, before_ms):
        old = [t for t, r in self._media_checks.items() if r["ts"] < before_ms]
        for trace_id in old:
            del self._media_checks[trace_id]
        return succeed(len(old))

    def moderation_oldest(self, log, after, limit):
        entries = self._reports.values() if log == modrules.QUEUE else self._audit
        found = sorted((e for e in entries if e["id"] > after), key=lambda e: e["id"])
        return succeed([dict(e) for e in found[: max(int(limit), 0)]])

    def delete_moderation(self, log, ids):
        gone = set(ids)
        if log == modrules.QUEUE:
            before = len(self._reports)
            for key, id_ in list(self._report_keys.items()):
                if id_ in gone:
                    del self._report_keys[key]
            for id_ in gone:
                self._reports.pop(id_, None)
            return succeed(before - len(self._reports))
        before = len(self._audit)
        self._audit = [e for e in self._audit if e["id"] not in gone]
        return succeed(before - len(self._audit))


def _page(newest_first, before, limit):
    """The entries (newest first) with id below *before* (None: all), at most *limit*."""
    kept = (e for e in newest_first if before is None or e["id"] < before)
    return list(itertools.islice(kept, max(int(limit), 0)))


def _seq(entry):
    return entry[0]
