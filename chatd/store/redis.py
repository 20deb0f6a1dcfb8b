"""The cluster history store: every node of a cluster shares history in Redis.

Keys (``P`` is the key prefix, e.g. ``chatd:``; ``{ch}`` is a hash tag so a
channel's keys live in one Redis Cluster slot):

``P s:{ch}``
    the channel's newest seq ever handed out (``INCR``): seqs continue after
    trimming and are never reused.
``P m:{ch}``
    a stream with one entry per message, entry id ``0-<seq>``, fields ``s``
    (sender), ``n`` (name), ``t`` (text), ``ts`` and ``c`` (client id, absent
    when none). ``XADD … MAXLEN history_max`` keeps at most ``history_max``
    entries; ``history_days`` is enforced by :meth:`RedisStore.prune`
    (``XTRIM MINID``), like the SQLite store's pruner.
``P d:["sender","client id"]``
    the exactly-once record ``"<seq> <ts> <channel>"`` with a TTL of
    ``dedupe_days``; it outlives the message (a resend after trimming gets the
    original channel, seq and ts back, with empty name and text, exactly like
    :class:`chatd.store.sqlite.SQLiteStore`).
``P channels``
    every channel ever written (for pruning by age).

One Lua script (``chatd/cluster/lua/append.lua``) does dedupe check + ``INCR``
+ ``XADD`` + dedupe record + ``PUBLISH`` of the committed message on the node bus. Redis
runs a script atomically and delivers published messages to each subscriber
in publish order, so every node receives each channel's messages in ``seq``
order, whichever node committed them. The payload published is begun by
:class:`chatd.cluster.redis.RedisMessageLog` (:func:`chatd.cluster.codec.committed_head`)
and finished by the script with the message fields (``lua/bus.lua``).

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

from twisted.internet.defer import fail, succeed
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from zope.interface import implementer

from chatd.cluster.scripts import SOURCES
from chatd.store import Appended, IHistoryStore, Message, Page, Replay, StoreUnavailable

_DAY_MS = 86_400_000

#: the Lua scripts (chatd.cluster.scripts, ``chatd/cluster/lua/``) the store runs
STORE_SCRIPTS = ("append", "replay", "history", "prune")


def _seq_of(entry_id: str) -> int:
    return int(entry_id.rsplit("-", 1)[1])


def _message(channel: str, row) -> Message:
    entry_id, fields = row
    f = dict(zip(fields[::2], fields[1::2], strict=True))
    return Message(channel, _seq_of(entry_id), f["s"], f["n"], f["t"], int(f["ts"]), f.get("c"))


@implementer(IHistoryStore)
class RedisStore:
    """An :class:`IHistoryStore` shared by every node of a cluster (see the module docstring).

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
        for name in STORE_SCRIPTS:
            node.register_script(name, SOURCES[name])
        #: Messages committed by this node (duplicates are not counted).
        self.appended = 0
        #: Appends refused or failed because Redis was unreachable.
        self.failed = 0
        self.pruned_messages = 0

    # keys

    def _key(self, kind: str, channel: str) -> str:
        return f"{self.node.prefix}{kind}:{{{channel}}}"

    def _dedupe_key(self, sender: str, client_id: str) -> str:
        return self.node.prefix + "d:" + json.dumps([sender, client_id], ensure_ascii=False)

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

    def append(self, channel, sender, name, client_id, text, ts):
        """Store a message (see :meth:`IHistoryStore.append`); nothing is published."""
        return self.append_published(channel, sender, name, client_id, text, ts, "", "")

    def append_published(self, channel, sender, name, client_id, text, ts, bus, head):
        """Store a message and, in the same script, PUBLISH it on *bus*.

        The payload is *head* (:func:`chatd.cluster.codec.committed_head`)
        followed by the JSON array ``[channel, seq, sender, name, text, ts,
        client_id]`` and ``}``. Nothing is published for a duplicate.
        """
        maxlen = self.history_max or 0
        stream = self._key("m", channel)
        dedupe = self._dedupe_key(sender, client_id) if client_id is not None else stream
        dedupe_ms = max(1, int(self.dedupe_days * _DAY_MS))
        d = self.node.script(
            "append",
            [self._key("s", channel), stream, dedupe, self.node.prefix + "channels"],
            [
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
            ],
        )

        def done(result):
            if result[0] == 1:
                _, ch, seq, ots, oname, otext = result
                original = Message(ch, int(seq), sender, oname, otext, int(ots), client_id)
                return Appended(original, True)
            self.appended += 1
            message = Message(channel, int(result[1]), sender, name, text, ts, client_id)
            return Appended(message, False)

        return d.addCallbacks(done, self._unavailable, errbackArgs=("append",))

    def replay(self, channel, since, limit):
        """See :meth:`IHistoryStore.replay`.

        The result fires only after this node's bus subscription has received
        every message committed before the read (:meth:`RedisNode.barrier`),
        so a joiner never gets a replayed message again from the live stream.
        """
        arg = "" if since is None else int(since)
        d = self.node.script(
            "replay", [self._key("s", channel), self._key("m", channel)], [arg, max(limit, 0)]
        )

        def done(result):
            last, rows = int(result[0]), result[1]
            if since is None:
                return Replay([], last, False)
            if len(rows) > limit:
                messages = [_message(channel, r) for r in reversed(rows[:limit])]
                return Replay(messages, last, True)
            missed = [_message(channel, r) for r in reversed(rows)]
            gap = last > since and (not missed or missed[0].seq > since + 1)
            return Replay(missed, last, gap)

        def settled(replay):
            return self.node.barrier().addCallback(lambda _: replay)

        d.addCallbacks(done, self._unavailable, errbackArgs=("replay",))
        return d.addCallback(settled)

    def history(self, channel, before, limit):
        """See :meth:`IHistoryStore.history`."""
        arg = "" if before is None else int(before)
        d = self.node.script("history", [self._key("m", channel)], [arg, max(limit, 0)])

        def done(rows):
            more = len(rows) > limit
            return Page([_message(channel, r) for r in reversed(rows[:limit])], more)

        return d.addCallbacks(done, self._unavailable, errbackArgs=("history",))

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
            stream = self._key("m", todo[-1])
            d = self.node.script("prune", [stream], [cutoff, self.prune_chunk])

            def chunk(result):
                total[0] += int(result[0])
                if not int(result[1]):
                    todo.pop()
                return _next(todo)

            return d.addCallback(chunk)

        return self.node.execute("SMEMBERS", self.node.prefix + "channels").addCallback(channels)
