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

One Lua script (:data:`APPEND`) does dedupe check + ``INCR`` + ``XADD`` +
dedupe record + ``PUBLISH`` of the committed message on the node bus. Redis
runs a script atomically and delivers published messages to each subscriber
in publish order, so every node receives each channel's messages in ``seq``
order, whichever node committed them. The payload published is built by the
broker (:meth:`chatd.broker.redis.RedisBroker.commit_options`) and finished by
the script with the message fields.

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

from chatd.store import Appended, IHistoryStore, Message, Page, Replay, StoreUnavailable

_DAY_MS = 86_400_000

#: KEYS: seq key, stream key, dedupe key (or the stream key again when no client id), channels
#: ARGV: sender, name, text, ts, client_id ("" = none), maxlen (0 = none), dedupe_ms,
#:       bus channel ("" = do not publish), payload head, channel, key prefix
APPEND = r"""
local cid = ARGV[5]
if cid ~= '' then
  local orig = redis.call('GET', KEYS[3])
  if orig then
    local seq, ts, ch = string.match(orig, '^(%d+) (%d+) (.*)$')
    local found = redis.call('XRANGE', ARGV[11] .. 'm:{' .. ch .. '}', '0-' .. seq, '0-' .. seq)
    local name, text = '', ''
    if found[1] then
      local f = found[1][2]
      for i = 1, #f, 2 do
        if f[i] == 'n' then name = f[i + 1] elseif f[i] == 't' then text = f[i + 1] end
      end
    end
    return {1, ch, tonumber(seq), tonumber(ts), name, text}
  end
end
local seq = redis.call('INCR', KEYS[1])
local id = '0-' .. seq
local maxlen = tonumber(ARGV[6])
local cmd = {'XADD', KEYS[2]}
if maxlen > 0 then
  cmd[#cmd + 1] = 'MAXLEN'
  cmd[#cmd + 1] = maxlen
end
cmd[#cmd + 1] = id
for _, v in ipairs({'s', ARGV[1], 'n', ARGV[2], 't', ARGV[3], 'ts', ARGV[4]}) do
  cmd[#cmd + 1] = v
end
if cid ~= '' then
  cmd[#cmd + 1] = 'c'
  cmd[#cmd + 1] = cid
  redis.call('SET', KEYS[3], seq .. ' ' .. ARGV[4] .. ' ' .. ARGV[10], 'PX', ARGV[7])
end
redis.call(unpack(cmd))
if seq == 1 then redis.call('SADD', KEYS[4], ARGV[10]) end
if ARGV[8] ~= '' then
  local c = cjson.null
  if cid ~= '' then c = cid end
  redis.call('PUBLISH', ARGV[8], ARGV[9] .. cjson.encode(
    {ARGV[10], seq, ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), c}) .. '}')
end
return {0, seq}
"""

#: KEYS: seq key, stream key. ARGV: since ("" = none), limit
REPLAY = r"""
local last = tonumber(redis.call('GET', KEYS[1]) or '0')
if ARGV[1] == '' then return {last, {}} end
local n = tonumber(ARGV[2]) + 1
local rows = redis.call('XREVRANGE', KEYS[2], '+', '(0-' .. ARGV[1], 'COUNT', n)
return {last, rows}
"""

#: KEYS: stream key. ARGV: before ("" = newest), limit
HISTORY = r"""
local top = '+'
if ARGV[1] ~= '' then
  if tonumber(ARGV[1]) <= 1 then return {} end
  top = '(0-' .. ARGV[1]
end
return redis.call('XREVRANGE', KEYS[1], top, '-', 'COUNT', tonumber(ARGV[2]) + 1)
"""

#: KEYS: stream key. ARGV: cutoff ts (ms), chunk. Deletes the prefix of entries older
#: than cutoff (at most `chunk` per call); returns {deleted, more}
PRUNE = r"""
local rows = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', tonumber(ARGV[2]))
local keep = nil
local old = 0
for _, row in ipairs(rows) do
  local f = row[2]
  local ts = 0
  for i = 1, #f, 2 do if f[i] == 'ts' then ts = tonumber(f[i + 1]) end end
  if ts >= tonumber(ARGV[1]) then keep = row[1] break end
  old = old + 1
end
if old == 0 then return {0, 0} end
if keep == nil then
  local lastid = rows[#rows][1]
  local seq = tonumber(string.match(lastid, '%-(%d+)$'))
  keep = '0-' .. (seq + 1)
end
redis.call('XTRIM', KEYS[1], 'MINID', keep)
if old == #rows then return {old, 1} end
return {old, 0}
"""

SCRIPTS = {"append": APPEND, "replay": REPLAY, "history": HISTORY, "prune": PRUNE}


def _seq_of(entry_id: str) -> int:
    return int(entry_id.rsplit("-", 1)[1])


def _message(channel: str, row) -> Message:
    entry_id, fields = row
    f = dict(zip(fields[::2], fields[1::2], strict=True))
    return Message(channel, _seq_of(entry_id), f["s"], f["n"], f["t"], int(f["ts"]), f.get("c"))


@implementer(IHistoryStore)
class RedisStore:
    """An :class:`IHistoryStore` shared by every node of a cluster (see the module docstring).

    *node* is a :class:`chatd.broker.redis.RedisNode` (the Redis connections of
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
        for name, source in SCRIPTS.items():
            node.register_script(name, source)
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

        The payload is *head* (built by :class:`chatd.broker.redis.RedisBroker`)
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
