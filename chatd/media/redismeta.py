"""The media metadata in Redis (``--redis``): :class:`RedisMeta`, an
:class:`chatd.media.meta.IMediaMeta` every node of a cluster shares.

With it any node answers ``GET /api/media/ID`` and serves ``/media/ID`` for an
upload another node took, a message sent on one node may attach an upload made
on another, a recall on any node removes the upload for all, and the per-user
daily quota counts the user's uploads on every node.

Keys (``P`` the ``--redis`` prefix; ``{…}`` a hash tag, so one upload's keys and
one user's live in one Redis Cluster slot):

``P media:{ID}``
    hash: the upload's row (the SQLite ``media`` columns; a missing optional
    value is absent), ``attached`` and ``ready``.
``P media:{ID}:posts``
    set of ``"<seq> <channel>"``: the messages it was committed in.
``P media:{ID}:pending``
    hash claim token -> ``"<time> <channel>"``: attached to a message being
    committed (see :mod:`chatd.media.meta`).
``P media-in:{CHANNEL}:<seq>``
    set of the upload ids posted in that message (a recall finds them).
``P media-quota:{USER}``
    zset ``"<id>:<size>"`` scored by upload time: the quota window's uploads.
``P media-blob:{SHA256}``
    set of the upload ids whose file or thumbnail is that store key: the bytes
    go with the last of them.
``P media-unposted``, ``P media-pending``, ``P media-posted``
    the sweep's indexes: never-posted ids scored by their last upload/attach
    time; ``"<token> <id>"`` scored by the pending post's time; ids with posts.

Every operation is one call of ``lua/media.lua`` (atomic), which builds the keys
itself from ``P``; it declares ``P media-posted`` as its one key (for routing).

On a **Redis Cluster** ``P`` is ``<prefix>{media}:`` (``RedisNode.slot_prefix``):
every media key shares the hash tag ``{media}`` -- the first one in the key, so the
per-upload tags above do not count -- and lives in one slot, so every operation
stays one atomic script on one master (Redis enforces it: the cluster node loads
scripts with ``#!lua``). The trade-off: the media metadata of the whole cluster is
on one shard (uploads are rare next to messages and a row is a few hundred bytes;
see docs/cluster.md). On one Redis ``P`` is the prefix itself, the layout of earlier
releases, so their data is read as it is.
"""

from __future__ import annotations

from twisted.internet import defer
from zope.interface import implementer

from chatd.cluster.scripts import SOURCES
from chatd.media.meta import COLUMNS, QUOTA_WINDOW, RECORDED, IMediaMeta, QuotaExceeded

_INTS = ("size", "width", "height", "duration_ms", "thumb_size", "ready")
_FLOATS = ("created", "attached")
#: ids per script call of the operations that take many
_BATCH = 500


def _text(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _num(value: float) -> str:
    return repr(float(value))


def _row(flat) -> dict | None:
    if not flat:
        return None
    raw = {_text(flat[i]): _text(flat[i + 1]) for i in range(0, len(flat), 2)}
    row = {c: raw.get(c) for c in COLUMNS}
    for c in _INTS:
        if row[c] is not None:
            row[c] = int(row[c])
    for c in _FLOATS:
        row[c] = float(row[c] or 0)
    return row


@implementer(IMediaMeta)
class RedisMeta:
    """The metadata on *node* (a :class:`chatd.cluster.redis.RedisNode`, started by
    the history store that shares it)."""

    def __init__(self, node):
        self.node = node
        self.prefix = node.slot_prefix("media")
        self._route = [f"{self.prefix}media-posted"]
        node.register_script("media", SOURCES["media"])

    def _run(self, op, *args):
        return self.node.script("media", self._route, [self.prefix, op, *map(str, args)])

    def close(self):
        return defer.succeed(None)

    def used(self, owner, now):
        return self._run("used", owner, _num(now), _num(QUOTA_WINDOW)).addCallback(int)

    def record(self, row, quota):
        args = []
        for c in RECORDED:
            value = row.get(c)
            if value is not None:
                args += [c, _num(value) if c == "created" else value]
        args += ["attached", "0", "ready", "0"]

        def done(answer):
            if _text(answer) == "quota":
                raise QuotaExceeded(row["owner"])

        return self._run("record", int(quota or 0), _num(QUOTA_WINDOW), *args).addCallback(done)

    def ready(self, media_id):
        return self._run("ready", media_id).addCallback(lambda _: None)

    def get(self, media_id):
        return self._run("rows", media_id).addCallback(lambda rows: _row(rows[0]))

    @defer.inlineCallbacks
    def _rows(self, op, ids, *head):
        ids = list(dict.fromkeys(ids))
        out = {}
        for start in range(0, len(ids), _BATCH):
            chunk = ids[start : start + _BATCH]
            rows = yield self._run(op, *head, *chunk)
            out.update((i, r) for i, r in zip(chunk, map(_row, rows), strict=True) if r is not None)
        return out

    def get_many(self, ids):
        return self._rows("rows", ids)

    def claim(self, ids, owner, token, channel, now):
        return self._rows("claim", ids, owner, token, channel, _num(now))

    def posted(self, token, claimed, ids, channel, seq):
        claimed = list(claimed)
        d = self._run("posted", token, channel, int(seq), len(claimed), *claimed, *ids)
        return d.addCallback(lambda _: None)

    def release(self, token, claimed):
        return self._run("release", token, *claimed).addCallback(lambda _: None)

    def pending_before(self, cutoff):
        d = self._run("pending_before", _num(cutoff))
        return d.addCallback(
            lambda rows: [(_text(t), _text(i), _text(c), float(a)) for t, i, c, a in rows]
        )

    def resolve(self, token, media_id, channel, seq):
        d = self._run("resolve", token, media_id, channel, "" if seq is None else int(seq))
        return d.addCallback(lambda _: None)

    def channels(self, media_id):
        return self._run("channels", media_id).addCallback(
            lambda names: sorted({_text(n) for n in names})
        )

    def posted_in(self, channel, seq):
        key = f"{self.prefix}media-in:{{{channel}}}:{int(seq)}"
        d = self.node.execute("SMEMBERS", key)
        return d.addCallback(lambda ids: sorted(_text(i) for i in ids))

    @defer.inlineCallbacks
    def posts(self, ids=None):
        if ids is None:
            ids = yield self._members(f"{self.prefix}media-posted")
        ids = list(dict.fromkeys(ids))
        out = []
        for start in range(0, len(ids), _BATCH):
            rows = yield self._run("posts", *ids[start : start + _BATCH])
            out.extend((_text(i), _text(c), int(s)) for i, c, s in rows)
        return out

    @defer.inlineCallbacks
    def _members(self, key):
        """Every member of the set *key*, by SSCAN (never one huge reply)."""
        out, cursor = [], "0"
        while True:
            cursor, chunk = yield self.node.execute("SSCAN", key, cursor, "COUNT", _BATCH)
            out.extend(_text(m) for m in chunk)
            cursor = _text(cursor)
            if cursor == "0":
                return out

    @defer.inlineCallbacks
    def drop_posts(self, posts):
        posts = list(posts)
        for start in range(0, len(posts), _BATCH):
            args = [x for p in posts[start : start + _BATCH] for x in (p[0], p[1], int(p[2]))]
            yield self._run("drop", *args)

    def unposted_before(self, cutoff):
        d = self._run("unposted", _num(cutoff))
        return d.addCallback(
            lambda rows: [
                {"id": _text(i), "created": float(c), "attached": float(a)} for i, c, a in rows
            ]
        )

    def referenced(self, key):
        # the set media.lua keeps per stored object (SADD on record, SREM on remove)
        d = self.node.execute("SCARD", f"{self.prefix}media-blob:{{{key}}}")
        return d.addCallback(lambda count: int(count) > 0)

    def remove(self, media_id, seen=None, cutoff=None):
        if seen is None:
            args = [media_id, "0", ""]
        else:
            members = [f"{int(p[2])} {p[1]}" for p in seen]
            args = [media_id, "1", "" if cutoff is None else _num(cutoff), *members]

        def done(answer):
            status, *keys = (_text(a) for a in answer)
            return None if status == "kept" else sorted(keys)

        return self._run("remove", *args).addCallback(done)
