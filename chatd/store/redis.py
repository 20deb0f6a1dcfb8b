"""The cluster history and conversation store: every node of a cluster shares it in Redis.

Keys (``P`` is the key prefix, e.g. ``chatd:``; ``{ch}`` is a hash tag so a
channel's keys live in one Redis Cluster slot, ``{u}`` one so a user's keys live in
one):

``P s:{ch}``
    the channel's newest seq ever handed out (``INCR``): seqs continue after
    trimming and are never reused.
``P m:{ch}``
    a stream with one entry per timeline item, entry id ``0-<seq>``, fields ``s``
    (sender), ``n`` (name), ``t`` (text), ``ts`` and ``c`` (client id, absent
    when none); since conversations also ``k`` (the item's kind, absent for a
    message: the entries of an older chatd are messages), ``j`` (its data as JSON,
    absent when None), and on a message that was edited or recalled ``et`` (the
    edit's ts) and ``er`` (``{"by", "ts"}`` of the recall) -- read back into
    ``Message.data["edited_ts"]`` / ``["recalled"]``. ``XADD … MAXLEN
    history_max`` keeps at most ``history_max`` entries; ``history_days`` is
    enforced by :meth:`RedisStore.prune` (``XTRIM MINID``), like the SQLite
    store's pruner.
``P w:{ch}``
    the *rewritten* items: a recall or an edit deletes the target's stream entry
    (``XDEL``: a recalled text is removed, not hidden) and keeps its new state here,
    a zset scored by seq, member ``"<seq> <JSON array of the entry's fields>"``.
    Reads merge it with the stream.
``P ed:{ch}``
    hash target seq -> the seqs of its ``edited`` items (space-separated), so a
    recall blanks them too.
``P o:{ch}``
    the message ordinals: a zset of the seqs of the items of kind ``message``
    (score = member = seq), trimmed with the stream. ``unread`` is ``ZCOUNT o
    (read_seq +inf`` -- derived from the marker, nothing is written per recipient.
    (Sending moves the sender's marker to the message, so a user's own messages
    are never above their marker.) Filled from the stream once for a channel of
    an older chatd (``c:{ch}`` has no ``v`` yet).
``P c:{ch}``
    hash of channel counters: ``seq`` and ``ts`` (the newest item's), ``lm`` (the
    newest message's seq), ``kind`` (the room's, copied from ``r:{ch}``), ``tn`` /
    ``tb`` (message ordinals trimmed with the history: how many, up to which seq),
    ``v`` (1: ``o:{ch}`` covers the stream).
``P mn:{ch}:<user>``, ``P ma:{ch}``
    zsets of the seqs of messages mentioning ``<user>`` / ``@all``; ``mentions``
    is their ``ZCOUNT`` above the read marker.
``P rx:{ch}``
    hash target seq -> ``{emoji: {user: 1}}`` (JSON), the reactions now on it.
    ``w``, ``ed``, ``rx`` and ``o`` lose a seq's entries when the seq leaves the
    history (``history_max`` on append, ``history_days`` in :meth:`RedisStore.prune`).
``P r:{ch}``
    hash: the room row (``kind``, ``title``, ``topic``, ``avatar``,
    ``created_by``, ``created_ts``); absent for a room never ``created``.
``P mb:{ch}``
    hash user -> the member row, JSON ``[role, state, peer ("" in rooms), read_seq,
    muted (0/1), since_seq]``; DM channels have one per user.
``P ms:{ch}``
    zset (score 0) of the users in state ``member``, for paging by user id
    (``ZRANGEBYLEX``: a 10,000-member room is never loaded whole) and ``ZCARD``.
``P rd:{ch}``
    zset user -> read_seq of the users in state ``member`` (read receipts).
``P u:{u}``
    hash ``name``, ``ts``: a known user (:meth:`RedisStore.add_user`, or a member
    row was made for them).
``P uc:{u}``
    hash channel -> a copy of the member row, for the user's conversations
    (the channels where their row is in state ``member``): the conversation
    list reads it and each channel's ``c:{ch}``, one script.
``P cz:{u}``, ``P cs:{u}:<cursor>``
    the user's sync cursors: a zset cursor -> save order, and one string key per
    snapshot; both expire 30 days after the last save; only the newest 16 are kept.
``P d:["sender","client id"]``
    the exactly-once record ``"<seq> <ts> <channel>"`` with a TTL of
    ``dedupe_days``; it outlives the message (a resend after trimming gets the
    original channel, seq and ts back, with empty name and text, exactly like
    :class:`chatd.store.sqlite.SQLiteStore`).
``P channels``
    every channel ever written (for pruning by age).

One Lua script (``chatd/cluster/lua/append.lua``) does dedupe check + ``INCR``
+ ``XADD`` + the item's effect (an event's member/room row change; a message's
ordinal, mentions, the sender's read marker and a DM's member rows; a recall's,
edit's or reaction's change of the target) + dedupe record + ``PUBLISH`` of the
committed item on the node bus. Redis runs a script atomically and delivers
published messages to each subscriber in publish order, so every node receives
each channel's items in ``seq`` order, whichever node committed them. The
payload published is begun by :class:`chatd.cluster.redis.RedisMessageLog`
(:func:`chatd.cluster.codec.committed_head`) and finished by the script with the
item's fields (``lua/bus.lua``).

Offline push (:class:`chatd.store.IPushStore`): ``P pq:{u}`` (hash template ->
one-time messages left), ``P pr:{u}`` (set of the rooms the user is notified for),
``P pd:{u}`` (hash channel -> ms of the last notification: the digest), and the
reverse index ``P pw:{ch}`` (set of the users notified for every message of the
room), updated by separate commands after the user's script (a room's index is
in the room's slot).

Moderation (:class:`chatd.store.IModerationStore`): ``P sn:{u}`` (hash
``"<kind> <scope>"`` -> until ms: the user's sanctions); the queue ``P mq:n`` (id
counter), ``P mq:e`` (hash id -> entry JSON with its state), ``P mq:all`` and
``P mq:open`` (zsets of ids), ``P mq:k`` (hash key -> id: exactly-once; and
``#id`` -> key, so retention deletes an entry's key with it); the audit
log ``P ma:n``, ``P ma:e``, ``P ma:all``; the cluster-wide report rate limit
(:class:`chatd.store.ISharedCounters`) ``P rl:{u}:report:<window>`` (a counter
that expires with its window, ``lua/mod_rate.lua``). WeChat's media checks
(:class:`chatd.store.IMediaCheckStore`): ``P mc:{trace_id}`` (the record's JSON,
expiring). ``lua/mod_entry.lua`` appends an entry,
``lua/mod_close.lua`` closes one (the ZREM from ``mq:open`` decides who wins).
Under Redis Cluster the queue's and the log's keys are ``P {mod}:mq:n`` … (one
slot, :meth:`chatd.cluster.redis.RedisNode.slot_prefix`); on one Redis they keep the
names above, those of earlier releases.

Redis Cluster (a :class:`chatd.cluster.rediscluster.RedisClusterNode`,
:attr:`RedisStore.cluster`): every script touches one slot (Redis enforces it: the
node loads them with a ``#!lua`` shebang). What one Redis does in one script is
split: a client id is claimed for a channel in the sender's slot (``lua/claim.lua``,
``P d:{sender}:["sender","client id"]`` -> channel) and deduplicated in the
channel's (``P d:{ch}:["sender","client id"]``); the member rows' copies in
``uc:{u}``/``u:{u}`` are returned by the channel's script (``rows.lua``,
``row_split``) and written here; ``conversations`` reads ``uc:{u}`` then each
channel's row (``lua/conversation.lua``), ``summaries`` runs once per channel;
``channels`` gets the channel after its first item; the bus is the channel's
slot's shard channel (``SPUBLISH``); the push scripts touch one user's keys, the
moderation scripts the ``{mod}`` slot's. See docs/cluster.md, *Redis Cluster*.

Every method fails with :class:`StoreUnavailable` while Redis is unreachable
(fail fast, nothing is queued), so chat answers ``unavailable`` and clients
resend with the same id once Redis is back; the dedupe record makes that
resend exactly-once even if the first attempt had committed.

Durability is Redis's: run Redis with ``appendonly yes`` and
``appendfsync always`` for "an ack survives a crash of Redis and of the
machine", ``everysec`` for "loses at most a second on a power cut" (see
docs/cluster.md).
"""

from __future__ import annotations

import json

from twisted.internet import defer
from twisted.internet.defer import fail, gatherResults, succeed
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from zope.interface import implementer

from chatd import modrules, pushrules
from chatd.cluster.codec import data_json
from chatd.cluster.scripts import SOURCES
from chatd.store import (
    ITEM_KINDS,
    Appended,
    Conversation,
    IConversationStore,
    IHistoryStore,
    IMediaCheckStore,
    IModerationStore,
    IPushStore,
    ISharedCounters,
    Member,
    Message,
    Page,
    Replay,
    Room,
    StoreUnavailable,
    compose_conversation_page,
    compose_read_marker,
    compose_sync_replay,
    dm_users,
)

_DAY_MS = 86_400_000
#: sync cursors: kept this long after they were saved, at most this many per user
CURSOR_TTL_MS = 30 * _DAY_MS
CURSORS_KEPT = 16
#: the room row's fields an event's ``changes`` may set
ROOM_FIELDS = ("kind", "title", "topic", "avatar")

#: the Lua scripts (chatd.cluster.scripts, ``chatd/cluster/lua/``) the store runs
STORE_SCRIPTS = (
    "append",
    "replay",
    "history",
    "fetch",
    "prune",
    "conversations",
    "conversation",
    "claim",
    "summaries",
    "mark_read",
    "set_muted",
    "readers",
    "members",
    "cursor",
    "user",
    "push_subscribe",
    "push_claim",
    "mod_entry",
    "mod_close",
    "mod_rate",
)


def _message(channel: str, row) -> Message:
    """The item of a script's row (``item_row`` of ``lua/items.lua``) in its current state."""
    seq, sender, name, text, ts, client_id, kind, data, edited_ts, recall = row
    data = json.loads(data) if data else None
    if edited_ts or recall:
        data = dict(data or {})
        if edited_ts:
            data["edited_ts"] = int(edited_ts)
        if recall:
            data["recalled"] = json.loads(recall)
    return Message(channel, seq, sender, name, text, ts, client_id or None, kind or "message", data)


def _json_list(reply) -> list:
    """A script's JSON reply as a list (cjson writes an empty Lua table as ``{}``)."""
    value = json.loads(reply)
    return value if isinstance(value, list) else []


def _member(channel: str, user: str, raw: str) -> Member:
    role, state, peer, read, muted, since = json.loads(raw)
    return Member(channel, user, role, state, peer or None, int(read), bool(muted), int(since))


def _effect(channel: str, sender: str, kind: str, data: dict | None) -> dict:
    """What append.lua needs to apply an item (see its ARGV 15)."""
    data = data or {}
    if kind == "message":
        mentions = data.get("mentions") or []
        effect = {"mentions": [m for m in mentions if isinstance(m, str)]}
        users = dm_users(channel)
        if users is not None:
            effect["dm"] = list(users)
        return effect
    if kind == "event":
        changes = data.get("changes") or {}
        return {
            "event": data.get("event"),
            "user": data.get("user") or sender,
            "role": data.get("role"),
            "changes": {k: str(changes[k]) for k in ROOM_FIELDS if changes.get(k) is not None},
        }
    return {
        "target": int(data["target"]),
        "by": data.get("by") or sender,
        "emoji": data.get("emoji", ""),
    }


def _as_bytes(value) -> bytes | None:
    if value is None or isinstance(value, bytes):
        return value
    return value.encode("utf-8")


@implementer(
    IHistoryStore,
    IConversationStore,
    IPushStore,
    IModerationStore,
    ISharedCounters,
    IMediaCheckStore,
)
class RedisStore:
    """An :class:`IHistoryStore` and :class:`IConversationStore` shared by every
    node of a cluster (see the module docstring).

    *node* is a :class:`chatd.cluster.redis.RedisNode` (the Redis connections of
    this chatd process); ``start()``/``stop()`` start and stop it.
    ``history_max`` / ``history_days`` / ``dedupe_days`` mean what they mean
    for :class:`~chatd.store.sqlite.SQLiteStore`.
    """

    durable = True
    log = Logger()

    def __init__(
        self,
        node,
        history_max: int | None = 10000,
        history_days: float | None = None,
        dedupe_days: float = 30,
        prune_interval: float | None = 60.0,
        prune_chunk: int = 500,
        reactor=None,
    ):
        if reactor is None:
            from twisted.internet import reactor
        self.node = node
        self.history_max = history_max
        self.history_days = history_days
        self.dedupe_days = dedupe_days
        self.prune_interval = prune_interval
        self.prune_chunk = prune_chunk
        self._reactor = reactor
        self._pruner: LoopingCall | None = None
        #: Redis Cluster: every script touches one slot (see the module docstring)
        self.cluster = bool(getattr(node.url, "cluster", False))
        #: the prefix of the moderation queue's and audit log's keys (one slot)
        self._mod = node.slot_prefix("mod")
        for name in STORE_SCRIPTS:
            node.register_script(name, SOURCES[name])
        #: Messages committed by this node (duplicates are not counted).
        self.appended = 0
        #: Appends refused or failed because Redis was unreachable.
        self.failed = 0
        self.pruned_messages = 0

    # keys

    def _key(self, kind: str, name: str) -> str:
        """``P kind:{name}``: *name* a channel or a user, its hash tag."""
        return f"{self.node.prefix}{kind}:{{{name}}}"

    def _dedupe_key(self, sender: str, client_id: str, channel: str) -> str:
        """The dedupe record: one per sender and id; under Redis Cluster one per channel
        (its slot), the id being claimed for a channel in the sender's slot first."""
        ident = json.dumps([sender, client_id], ensure_ascii=False)
        if self.cluster:
            return f"{self._key('d', channel)}:{ident}"
        return self.node.prefix + "d:" + ident

    def _claim_key(self, sender: str, client_id: str) -> str:
        ident = json.dumps([sender, client_id], ensure_ascii=False)
        return f"{self._key('d', sender)}:{ident}"

    # lifecycle

    def start(self):
        """Connect to Redis (fires once the node's connections are up)."""
        d = self.node.start()

        def started(_):
            if self.prune_interval and self.history_days:
                self._pruner = LoopingCall(self._scheduled_prune)
                self._pruner.clock = self._reactor
                self._pruner.start(self.prune_interval, now=False)

        return d.addCallback(started)

    def stop(self):
        """Stop pruning and close the node's connections."""
        if self._pruner is not None and self._pruner.running:
            self._pruner.stop()
        self._pruner = None
        return self.node.stop()

    # IHistoryStore

    def _unavailable(self, failure, what):
        self.failed += 1
        if failure.check(StoreUnavailable):
            return failure
        return fail(StoreUnavailable(f"Redis {what} failed: {failure.getErrorMessage()}"))

    def _run(self, script, keys, args, what, done=None, rows=False):
        """Run one of STORE_SCRIPTS; Redis failures become StoreUnavailable. *rows*: the
        script changes member rows (rows.lua; *args* carry :attr:`_split`), whose
        user-slot half is made here under Redis Cluster."""
        d = self.node.script(script, keys, args)
        if rows and self.cluster:
            d.addCallback(self._user_rows)
        return d.addCallbacks(done or (lambda r: r), self._unavailable, errbackArgs=(what,))

    @property
    def _split(self) -> str:
        """The ARGV flag of rows.lua's row_split: "1" under Redis Cluster."""
        return "1" if self.cluster else ""

    def _user_rows(self, reply):
        """Redis Cluster: copy the member rows a script changed to the users' own slots
        (``uc:{user}``, ``u:{user}``); fires with the script's own reply."""
        result, changes, users = json.loads(reply)
        ds = []
        for channel, user, raw in changes if isinstance(changes, list) else ():
            if raw:
                ds.append(self.node.execute("HSET", self._key("uc", user), channel, raw))
            else:
                ds.append(self.node.execute("HDEL", self._key("uc", user), channel))
        for user, ts in users if isinstance(users, list) else ():
            ds.append(self.node.execute("HSETNX", self._key("u", user), "ts", ts))
        d = defer.gatherResults(ds, consumeErrors=True)
        d.addErrback(lambda f: f.value.subFailure)
        return d.addCallback(lambda _: None if result is False else result)

    def _command(self, *args):
        d = self.node.execute(*args)
        return d.addErrback(self._unavailable, args[0])

    def append(self, channel, sender, name, client_id, text, ts, kind="message", data=None):
        """Store a timeline item (see :meth:`IHistoryStore.append`,
        :class:`IConversationStore`); nothing is published."""
        return self.append_published(channel, sender, name, client_id, text, ts, kind, data)

    def append_published(
        self,
        channel,
        sender,
        name,
        client_id,
        text,
        ts,
        kind="message",
        data=None,
        bus="",
        head="",
        room=False,
    ):
        """Store a timeline item and, in the same script, PUBLISH it on *bus* (*room*:
        an item only the room's connections consume, on a Redis Cluster published on
        the room's own shard channel, :meth:`chatd.cluster.redis.RedisNode.bus_route`).

        The payload is *head* (:func:`chatd.cluster.codec.committed_head`)
        followed by the JSON array ``[channel, seq, sender, name, text, ts,
        client_id]`` (with ``kind, data`` after it unless the item is a plain
        message, :func:`chatd.cluster.codec.message_array`) and ``}``. Nothing is
        published for a duplicate.
        """
        if kind not in ITEM_KINDS:
            raise ValueError(f"unknown timeline item kind {kind!r}")
        item = (channel, sender, name, client_id, text, ts, kind, data, bus, head, room)
        if self.cluster and client_id is not None:
            return self._append_claimed(item)
        return self._append(item)

    @defer.inlineCallbacks
    def _append_claimed(self, item):
        """Redis Cluster: claim the client id for the channel in the sender's slot, then
        commit in the channel's. An id held by another channel is a duplicate there --
        unless its send never committed, and then this channel takes the claim over."""
        channel, sender, client_id = item[0], item[1], item[3]
        key = self._claim_key(sender, client_id)
        ttl = max(1, int(self.dedupe_days * _DAY_MS))
        held = yield self._run("claim", [key], [channel, ttl, ""], "append")
        if held != channel:
            original = yield self._append((held, *item[1:]), check_only=True)
            if original is not None:
                return original
            held = yield self._run("claim", [key], [channel, ttl, held], "append")
            if held != channel:
                raise StoreUnavailable("the client id is being sent to two channels at once")
        return (yield self._append(item))

    def _append(self, item, check_only=False):
        """Run append.lua for *item*; fires with its Appended (None: *check_only* and no
        dedupe record)."""
        channel, sender, name, client_id, text, ts, kind, data, bus, head, room = item
        maxlen = self.history_max or 0
        stream = self._key("m", channel)
        dedupe = self._dedupe_key(sender, client_id, channel) if client_id is not None else stream
        dedupe_ms = max(1, int(self.dedupe_days * _DAY_MS))
        payload, off = "", ""
        if data is not None:
            payload = data_json(data)
            if kind == "reaction":
                payload, off = data_json({**data, "on": True}), data_json({**data, "on": False})
        effect = json.dumps(_effect(channel, sender, kind, data), ensure_ascii=False)
        keys = [self._key("s", channel), stream, dedupe]
        if not self.cluster:
            keys.append(self.node.prefix + "channels")
        args = [
            sender,
            name,
            text,
            ts,
            client_id or "",
            maxlen,
            dedupe_ms,
            bus,
            head,
            channel,
            self.node.prefix,
            kind,
            payload,
            off,
            effect,
            "1" if check_only else "",
            self._split,
            "",
        ]
        if bus:
            args[17], args[7] = self.node.bus_route(keys[0], bus, channel if room else None)

        def done(reply):
            if not reply:
                return None  # check_only: no record
            if reply.startswith("["):
                ch, seq, ots, row = json.loads(reply)
                if row:
                    return Appended(_message(ch, row), True)
                return Appended(Message(ch, int(seq), sender, "", "", int(ots), client_id), True)
            self.appended += 1
            seq, _, stored = reply.partition(" ")
            if seq.endswith("~"):  # an edit of a recalled message: stored without text
                seq, text_kept = seq[:-1], ""
            else:
                text_kept = text
            message = Message(
                channel,
                int(seq),
                sender,
                name,
                text_kept,
                ts,
                client_id,
                kind,
                json.loads(stored) if stored else None,
            )
            if self.cluster and message.seq == 1:
                # the channels index (for pruning by age) is another slot; not waited
                # for, so results keep firing in seq order
                d = self.node.execute("SADD", self.node.prefix + "channels", channel)
                d.addErrback(lambda f: self.log.warn("Redis SADD channels failed: {e}", e=f.value))
            return Appended(message, False)

        return self._run("append", keys, args, "append", done, rows=True)

    def replay(self, channel, since, limit):
        """See :meth:`IHistoryStore.replay`.

        The result fires only after this node's bus subscription has received
        every message committed before the read (:meth:`RedisNode.barrier`),
        so a joiner never gets a replayed message again from the live stream.
        """
        arg = "" if since is None else int(since)
        keys = [self._key("s", channel), self._key("m", channel), self._key("w", channel)]

        def done(reply):
            result = _json_list(reply)
            last = int(result[0])
            rows = result[1] if len(result) > 1 and isinstance(result[1], list) else []
            if since is None:
                return Replay([], last, False)
            if len(rows) > limit:
                messages = [_message(channel, r) for r in reversed(rows[:limit])]
                return Replay(messages, last, True)
            missed = [_message(channel, r) for r in reversed(rows)]
            gap = last > since and (not missed or missed[0].seq > since + 1)
            return Replay(missed, last, gap)

        def settled(replay):
            return self.node.barrier(keys[0]).addCallback(lambda _: replay)

        d = self._run("replay", keys, [arg, max(limit, 0)], "replay", done)
        return d.addCallback(settled)

    def history(self, channel, before, limit):
        """See :meth:`IHistoryStore.history`."""
        arg = "" if before is None else int(before)
        keys = [self._key("m", channel), self._key("w", channel)]

        def done(reply):
            rows = _json_list(reply)
            more = len(rows) > limit
            return Page([_message(channel, r) for r in reversed(rows[:limit])], more)

        return self._run("history", keys, [arg, max(limit, 0)], "history", done)

    # IConversationStore

    def add_user(self, user, name, ts):
        """See :meth:`IConversationStore.add_user`."""
        d = self._run("user", [self._key("u", user)], [name, int(ts)], "add_user")
        return d.addCallback(lambda _: None)

    def has_user(self, user):
        """See :meth:`IConversationStore.has_user`."""
        return self._command("EXISTS", self._key("u", user)).addCallback(lambda n: bool(int(n)))

    def room(self, room):
        """See :meth:`IConversationStore.room`."""

        def done(flat):
            if not flat:
                return None
            f = dict(zip(flat[::2], flat[1::2], strict=True))
            return Room(
                room,
                f.get("kind") or "public",
                f.get("title", ""),
                f.get("topic", ""),
                f.get("avatar", ""),
                f.get("created_by") or None,
                int(f.get("created_ts") or 0),
            )

        return self._command("HGETALL", self._key("r", room)).addCallback(done)

    def member(self, channel, user):
        """See :meth:`IConversationStore.member`."""
        d = self._command("HGET", self._key("mb", channel), user)
        return d.addCallback(lambda raw: None if raw is None else _member(channel, user, raw))

    def members(self, channel, after, limit):
        """See :meth:`IConversationStore.members` (``ZRANGEBYLEX`` of ``ms:{ch}``)."""
        keys = [self._key("ms", channel), self._key("mb", channel)]

        def done(reply):
            flat = _json_list(reply)
            rows = [
                _member(channel, user, raw)
                for user, raw in zip(flat[::2], flat[1::2], strict=True)
                if raw
            ]
            return rows[:limit], len(rows) > limit

        args = ["" if after is None else after, max(limit, 0)]
        return self._run("members", keys, args, "members", done)

    def member_count(self, channel):
        """See :meth:`IConversationStore.member_count`."""
        return self._command("ZCARD", self._key("ms", channel)).addCallback(int)

    def conversations(self, user):
        """See :meth:`IConversationStore.conversations` (one script; under Redis
        Cluster the user's index, then one script per channel, pipelined)."""

        def done(rows):
            out = [
                Conversation(
                    channel,
                    "dm" if peer else (kind or "public"),
                    peer or None,
                    role,
                    read,
                    bool(muted),
                    last,
                    ts,
                )
                for channel, role, peer, read, muted, last, ts, kind in rows
            ]
            out.sort(key=lambda c: (-c.last_ts, c.channel))
            return out

        if self.cluster:
            return self._conversation_rows(user).addCallback(done)
        d = self._run("conversations", [], [self.node.prefix, user], "conversations")
        return d.addCallback(lambda reply: done(_json_list(reply)))

    @defer.inlineCallbacks
    def _conversation_rows(self, user):
        """Redis Cluster: the rows conversations.lua returns, one slot at a time. The
        channel's member row is the truth: an index entry it contradicts is dropped."""
        index = self._key("uc", user)
        channels = yield self._command("HKEYS", index)
        replies = yield defer.gatherResults(
            [
                self._run(
                    "conversation",
                    [self._key("c", ch), self._key("mb", ch)],
                    [user],
                    "conversations",
                )
                for ch in channels
            ],
            consumeErrors=True,
        ).addErrback(lambda f: f.value.subFailure)
        rows = []
        for channel, reply in zip(channels, replies, strict=True):
            raw, last, ts, kind = json.loads(reply)
            role, state, peer, read, muted, _ = json.loads(raw) if raw else [None] * 6
            if state != "member":
                self.node.execute("HDEL", index, channel).addErrback(lambda _: None)
                continue
            rows.append([channel, role, peer, read, muted, last, ts, kind])
        return rows

    def summaries(self, user, channels):
        """See :meth:`IConversationStore.summaries` (one script; under Redis Cluster one
        per channel, pipelined)."""
        channels = list(channels)
        if not channels:
            return succeed([])

        def done(rows):
            out = []
            for channel, raw, last, ts, kind, title, unread, mentions, newest, peer in rows:
                m = _member(channel, user, raw)
                if m.state != "member":
                    continue
                out.append(
                    Conversation(
                        channel,
                        "dm" if m.peer is not None else (kind or "public"),
                        m.peer,
                        m.role,
                        m.read_seq,
                        m.muted,
                        int(last),
                        int(ts),
                        int(unread),
                        int(mentions),
                        _message(channel, newest) if newest else None,
                        _member(channel, m.peer, peer).read_seq if peer else None,
                        "" if m.peer is not None else (title or ""),
                    )
                )
            return out

        prefix = self.node.prefix
        if not self.cluster:
            d = self._run("summaries", [], [prefix, user, *channels], "summaries")
            return d.addCallback(lambda reply: done(_json_list(reply)))
        d = defer.gatherResults(
            [
                self._run("summaries", [self._key("mb", ch)], [prefix, user, ch], "summaries")
                for ch in channels
            ],
            consumeErrors=True,
        ).addErrback(lambda f: f.value.subFailure)
        return d.addCallback(lambda replies: done([r for x in replies for r in _json_list(x)]))

    def mark_read(self, user, channel, seq):
        """See :meth:`IConversationStore.mark_read`; clamped to the channel's newest seq."""
        args = [self.node.prefix, channel, user, int(seq), self._split]
        d = self._run("mark_read", [self._key("s", channel)], args, "mark_read", rows=True)
        return d.addCallback(lambda r: None if r is None else int(r))

    def read_marker(self, user, channel, seq, count_up_to):
        """See :meth:`IConversationStore.read_marker`."""
        return compose_read_marker(self, user, channel, seq, count_up_to)

    def conversation_page(self, user, start, limit):
        """See :meth:`IConversationStore.conversation_page`."""
        return compose_conversation_page(self, user, start, limit)

    def sync_replay(self, reads, limit):
        """See :meth:`IConversationStore.sync_replay` (replay's messages)."""
        return compose_sync_replay(self, reads, limit)

    def set_muted(self, user, channel, muted):
        """See :meth:`IConversationStore.set_muted`."""
        args = [self.node.prefix, channel, user, 1 if muted else 0, self._split]
        d = self._run("set_muted", [self._key("mb", channel)], args, "set_muted", rows=True)
        return d.addCallback(lambda r: bool(int(r)))

    def readers(self, channel, seq, limit):
        """See :meth:`IConversationStore.readers`."""
        keys = [self._key("rd", channel), self._key("ms", channel)]
        d = self._run("readers", keys, [int(seq), max(limit, 0)], "readers")

        def done(reply):
            count, users = _json_list(reply)
            return int(count), users if isinstance(users, list) else []

        return d.addCallback(done)

    def items(self, channel, seqs):
        """See :meth:`IConversationStore.items`."""
        seqs = sorted({int(s) for s in seqs})
        if not seqs:
            return succeed({})
        keys = [self._key("m", channel), self._key("w", channel)]

        def done(reply):
            return {m.seq: m for m in (_message(channel, r) for r in _json_list(reply))}

        return self._run("fetch", keys, seqs, "items", done)

    def reactions(self, channel, seqs):
        """See :meth:`IConversationStore.reactions`."""
        seqs = sorted({int(s) for s in seqs})
        if not seqs:
            return succeed({})

        def done(values):
            out = {}
            for seq, raw in zip(seqs, values, strict=True):
                if raw is None:
                    continue
                emoji = {e: sorted(users) for e, users in json.loads(raw).items() if users}
                if emoji:
                    out[seq] = emoji
            return out

        return self._command("HMGET", self._key("rx", channel), *seqs).addCallback(done)

    def _cursor_key(self, user, cursor):
        return f"{self._key('cs', user)}:{cursor}"

    def save_cursor(self, user, cursor, snapshot, ts):
        """See :meth:`IConversationStore.save_cursor` (the newest 16, 30 days)."""
        keys = [self._key("cz", user), self._cursor_key(user, cursor)]
        args = [self.node.prefix, user, cursor, snapshot, int(ts), CURSOR_TTL_MS, CURSORS_KEPT]
        return self._run("cursor", keys, args, "save_cursor").addCallback(lambda _: None)

    def load_cursor(self, user, cursor):
        """See :meth:`IConversationStore.load_cursor`."""
        d = self._command("GET", self._cursor_key(user, cursor))
        return d.addCallback(_as_bytes)

    # IPushStore (see chatd.store)

    def push_subscribe(self, user, add, choose, ts):
        """See :meth:`IPushStore.push_subscribe` (``lua/push_subscribe.lua``); the
        rooms' watcher sets follow in commands of their own."""
        args = [pushrules.QUOTA_MAX, pushrules.ROOMS_MAX, len(add)]
        for template, count in add.items():
            args += [template, int(count)]
        for room, on in choose.items():
            args += [room, 1 if on else 0]
        keys = [self._key("pq", user), self._key("pr", user)]
        d = self._run("push_subscribe", keys, args, "push_subscribe", _push_state)

        def watchers(state):
            commands = [
                self._command(
                    "SADD" if room in state.rooms else "SREM", self._key("pw", room), user
                )
                for room in choose
            ]
            return gatherResults(commands, consumeErrors=True).addCallback(lambda _: state)

        return d.addCallback(watchers) if choose else d

    def push_state(self, user):
        """See :meth:`IPushStore.push_state`."""
        return self.push_subscribe(user, {}, {}, 0)

    def claim_push(self, user, channel, template, now_ms, interval_ms):
        """See :meth:`IPushStore.claim_push` (``lua/push_claim.lua``)."""
        keys = [self._key("pd", user), self._key("pq", user)]
        args = [channel, template or "", int(now_ms), int(interval_ms)]
        d = self._run("push_claim", keys, args, "claim_push")
        return d.addCallback(lambda r: pushrules.Claim(int(r) > 0, int(r) == 2))

    def drop_push_quota(self, user, template):
        """See :meth:`IPushStore.drop_push_quota`."""
        d = self._command("HDEL", self._key("pq", user), template)
        return d.addCallback(lambda _: None)

    def push_watchers(self, channel, limit):
        """See :meth:`IPushStore.push_watchers`."""
        key = self._key("pw", channel)
        d = self._command("SORT", key, "ALPHA", "LIMIT", 0, max(int(limit), 0))
        return d.addCallback(lambda users: [_text(u) for u in users or ()])

    # IModerationStore (see chatd.store)

    def set_sanction(self, user, kind, scope, until_ms):
        """See :meth:`IModerationStore.set_sanction`."""
        key, field = self._key("sn", user), f"{kind} {scope}"
        if until_ms:
            d = self._command("HSET", key, field, int(until_ms))
        else:
            d = self._command("HDEL", key, field)
        return d.addCallback(lambda _: None)

    def sanctions(self, user):
        """See :meth:`IModerationStore.sanctions`."""

        def done(flat):
            flat = [_text(v) for v in flat or ()]
            pairs = zip(flat[::2], flat[1::2], strict=True)
            return {tuple(f.split(" ", 1)): int(until) for f, until in pairs}

        return self._command("HGETALL", self._key("sn", user)).addCallback(done)

    def _mod_keys(self, log: str) -> list:
        p = self._mod
        keys = [f"{p}{log}:n", f"{p}{log}:e", f"{p}{log}:all"]
        return keys + ([f"{p}mq:open", f"{p}mq:k"] if log == "mq" else [])

    def add_report(self, key, entry):
        """See :meth:`IModerationStore.add_report` (``lua/mod_entry.lua``)."""
        args = [data_json({**entry, "state": "open"}), key]
        d = self._run("mod_entry", self._mod_keys("mq"), args, "add_report")
        return d.addCallback(lambda r: ({**json.loads(r[1]), "id": int(r[0])}, bool(r[2])))

    def _entries(self, log, index, before, limit):
        top = f"({before}" if before is not None else "+inf"
        d = self._command("ZREVRANGEBYSCORE", index, top, "-inf", "LIMIT", 0, max(int(limit), 0))
        return d.addCallback(lambda ids: self._read_entries(log, [int(i) for i in ids or ()]))

    def reports(self, state, before, limit):
        """See :meth:`IModerationStore.reports` (closed ones: read past the open)."""
        p = self._mod
        if state == "open":
            return self._entries("mq", f"{p}mq:open", before, limit)
        if state is None:
            return self._entries("mq", f"{p}mq:all", before, limit)
        # closed: the entries of mq:all that are not open, page by page
        found: list = []

        def more(page, before):
            found.extend(e for e in page if e.get("state") == state)
            if len(found) >= limit or len(page) < max(limit, 1):
                return found[:limit]
            d = self._entries("mq", f"{p}mq:all", page[-1]["id"], max(limit, 1))
            return d.addCallback(more, page[-1]["id"])

        d = self._entries("mq", f"{p}mq:all", before, max(limit, 1))
        return d.addCallback(more, before)

    def report(self, id):
        """See :meth:`IModerationStore.report`."""
        d = self._command("HGET", self._mod + "mq:e", int(id))
        return d.addCallback(lambda r: None if r is None else {**json.loads(r), "id": int(id)})

    def close_report(self, id, resolution):
        """See :meth:`IModerationStore.close_report` (``lua/mod_close.lua``)."""
        p = self._mod

        def close(entry):
            if entry is None or entry.get("state") != "open":
                return None
            closed = {**entry, "state": "closed", "resolution": resolution}
            stored = {k: v for k, v in closed.items() if k != "id"}
            keys = [f"{p}mq:e", f"{p}mq:open"]
            d = self._run("mod_close", keys, [int(id), data_json(stored)], "close_report")
            return d.addCallback(lambda won: closed if int(won) else None)

        return self.report(id).addCallback(close)

    def add_audit(self, entry):
        """See :meth:`IModerationStore.add_audit` (``lua/mod_entry.lua``)."""
        d = self._run("mod_entry", self._mod_keys("ma"), [data_json(entry), ""], "add_audit")
        return d.addCallback(lambda r: int(r[0]))

    def audit_log(self, before, limit):
        """See :meth:`IModerationStore.audit_log`."""
        return self._entries("ma", self._mod + "ma:all", before, limit)

    def add_media_check(self, trace_id, record, ttl_ms):
        """See :meth:`IMediaCheckStore.add_media_check`: ``P mc:{trace}``, expiring."""
        key = self._key("mc", trace_id)
        d = self._command("SET", key, data_json(record), "PX", max(int(ttl_ms), 1))
        return d.addCallback(lambda _: None)

    def take_media_check(self, trace_id):
        """See :meth:`IMediaCheckStore.take_media_check` (``GETDEL``: one taker)."""
        d = self._command("GETDEL", self._key("mc", trace_id))
        return d.addCallback(lambda raw: None if raw is None else json.loads(raw))

    def prune_media_checks(self, before_ms):
        """Nothing to do: each record expires by itself (``PX``)."""
        return succeed(0)

    def count_in_window(self, user, what, window, window_ms):
        """See :meth:`ISharedCounters.count_in_window` (``lua/mod_rate.lua``)."""
        key = f"{self._key('rl', user)}:{what}:{int(window)}"
        d = self._run("mod_rate", [key], [int(window_ms)], "count_in_window")
        return d.addCallback(int)

    def _read_entries(self, log, ids):
        if not ids:
            return succeed([])
        d = self._command("HMGET", f"{self._mod}{log}:e", *ids)
        return d.addCallback(
            lambda rows: [{**json.loads(r), "id": i} for i, r in zip(ids, rows, strict=True) if r]
        )

    def moderation_oldest(self, log, after, limit):
        """See :meth:`IModerationStore.moderation_oldest`."""
        name = "mq" if log == modrules.QUEUE else "ma"
        index = f"{self._mod}{name}:all"
        d = self._command(
            "ZRANGEBYSCORE", index, f"({int(after)}", "+inf", "LIMIT", 0, max(int(limit), 0)
        )
        return d.addCallback(lambda ids: self._read_entries(name, [int(i) for i in ids or ()]))

    @defer.inlineCallbacks
    def delete_moderation(self, log, ids):
        """See :meth:`IModerationStore.delete_moderation`: a queue entry's exactly-once
        key first (its ``#id`` twin in ``mq:k`` names it), then the entry."""
        ids = [int(i) for i in ids]
        if not ids:
            return 0
        p = self._mod
        name = "mq" if log == modrules.QUEUE else "ma"
        if name == "mq":
            twins = [f"#{i}" for i in ids]
            keys = yield self._command("HMGET", f"{p}mq:k", *twins)
            yield self._command("HDEL", f"{p}mq:k", *twins, *[k for k in keys or () if k])
            yield self._command("ZREM", f"{p}mq:open", *ids)
        yield self._command("ZREM", f"{p}{name}:all", *ids)
        deleted = yield self._command("HDEL", f"{p}{name}:e", *ids)
        return int(deleted)

    # retention by age

    def _scheduled_prune(self):
        d = self.prune(self._reactor.seconds())
        d.addErrback(lambda f: self.log.warn("Pruning Redis history failed: {e}", e=f.value))
        return d

    def prune(self, now: float):
        """Delete messages older than ``history_days`` at time *now* (seconds).

        Fires with the number of messages deleted. Count retention needs no
        pruning (``XADD MAXLEN``).
        """
        if not self.history_days:
            return succeed(0)
        cutoff = int(now * 1000 - self.history_days * _DAY_MS)
        total = [0]

        def channels(members):
            return _next(list(members))

        def _next(todo):
            if not todo:
                self.pruned_messages += total[0]
                return total[0]
            keys = [self._key(kind, todo[-1]) for kind in ("m", "w", "o", "c", "rx", "ed")]
            d = self.node.script("prune", keys, [cutoff, self.prune_chunk])

            def chunk(result):
                total[0] += int(result[0])
                if not int(result[1]):
                    todo.pop()
                return _next(todo)

            return d.addCallback(chunk)

        return self.node.execute("SMEMBERS", self.node.prefix + "channels").addCallback(channels)


def _push_state(reply) -> pushrules.PushState:
    templates, rooms = json.loads(reply)
    templates = {t: int(n) for t, n in (templates or {}).items()}
    return pushrules.PushState(templates, tuple(rooms if isinstance(rooms, list) else ()))


def _text(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else value
