"""Join replays and history reads: bounded pages, paced by the client, cancelled with it.

A ``join {room, since}`` replays up to ``--replay-limit`` stored messages. Read
and written in one piece that is ~4 MB for 1,000 messages of 4 KB, and 40
joins in one frame burst from a connection that then resets were 160 MB of
store results and write buffers nobody would ever read. So:

* **Pages.** A replay is read in pages of at most :func:`page_size` messages
  (``PAGE_MESSAGES``, and at most ``PAGE_TEXT`` characters of text at
  ``max_text_length``), each read only once the previous page has been
  handed to the connection. The first read is the store's ``replay`` of up
  to one page after ``since`` (so a resume that missed little is one read, as
  before); when more were missed, the newest ``--replay-limit`` are read
  oldest page first with ``history``.
* **Backpressure.** The next page is read only once the connection's
  transport has room (``conn.when_drained()``: its write buffer is below
  Twisted's high-water mark, 64 KiB, i.e. the peer reads). A client that stops
  reading stops its replay; the ping timeout or ``--idle-timeout`` closes it.
* **One read at a time per connection**, for all its rooms and its
  ``history``/``dm_history`` requests, and at most ``READ_SLOTS`` reads in
  flight in the whole process. So the store and the reactor hold at most
  ``READ_SLOTS`` pages of rows, and one connection's transport buffer at most
  64 KiB plus one page.
* **Cancelled** when the connection closes (or leaves the room): the waiting
  read is cancelled, a store read not yet run is skipped.
* **No second replay.** A ``join`` of a room the connection is already in
  answers ``joined`` (``seq``: the room's newest seq, ``truncated: false``)
  and replays nothing: a live member has every message already; one whose
  replay is still being sent gets the extra ``joined`` right after it.

Replay and live stream stay gap-free as before: the joiner is *pending* in
the hub (live frames for the room are buffered) from the join until the last
page is sent; the buffer's frames newer than the replay then follow.
"""

from __future__ import annotations

from twisted.internet.defer import CancelledError, DeferredLock, DeferredSemaphore
from twisted.internet.defer import inlineCallbacks as _inline

from chatd import errors, wire

#: most messages in one replay page
PAGE_MESSAGES = 64
#: most characters of message text in one page (at max_text_length per message)
PAGE_TEXT = 256 * 1024
#: store reads (replay pages, history pages) in flight in the whole process
READ_SLOTS = 4
#: history/dm_history requests one connection may have waiting; more are refused
#: with rate_limited (join replays are bounded by --max-rooms already)
MAX_QUEUED_READS = 32


def page_size(max_text_length: int) -> int:
    """Messages per replay page for messages of up to *max_text_length* characters."""
    return max(1, min(PAGE_MESSAGES, PAGE_TEXT // max(1, max_text_length)))


class _Task:
    """One join replay (or rejoin answer, or history read) of one connection."""

    __slots__ = ("deferred", "owed")

    def __init__(self):
        self.deferred = None
        #: ``since`` of joins of the room that came while this replay was sent
        self.owed: list = []


class Replayer:
    """Runs the join replays and history reads of a :class:`chatd.chat.Chat`."""

    def __init__(self, chat, slots: int = READ_SLOTS):
        self.chat = chat
        self.slots = DeferredSemaphore(slots)
        #: conn -> {room (or a history read's own key): task}
        self._tasks: dict = {}
        #: conn -> the lock that makes its reads take turns
        self._locks: dict = {}
        #: conn -> its history reads not finished
        self._reads: dict = {}
        #: reads waiting for a connection's transport to drain
        self.waiting = 0

    @property
    def active(self) -> int:
        """Join replays and history reads started and not finished."""
        return sum(len(tasks) for tasks in self._tasks.values())

    # entry points (from Chat)

    def join(self, conn, room: str, since: int | None, ref) -> None:
        """Answer a first join: ``joined``, the replay after *since*, then live."""
        self._start(conn, room, self._join(conn, room, since, replay=True), ref)

    def catch_up(self, conn, room: str, since: int) -> None:
        """*conn* was made a receiver of *room* without a replay (``subscribed``) while
        this node had only just started following the room (a Redis Cluster's
        per-room subscription, :meth:`chatd.cluster.IBroker.ready`): it is pending
        there; once the room's events reach this node, send the items after *since*
        committed meanwhile (no ``joined``), then go live."""
        self._start(conn, room, self._join(conn, room, since, True, False), None, "catch-up")

    def rejoin(self, conn, room: str, since: int | None, ref) -> None:
        """Answer a join of a room *conn* is already in: ``joined``, no replay."""
        task = self._tasks.get(conn, {}).get(room)
        if task is not None:  # its joined goes out once the running replay is sent
            task.owed.append(since)
            return
        # still pending with no replay running: the first one failed (the store was
        # unavailable), so this join is answered as a first one
        replay = self.chat.hub.is_pending(conn, room)
        self._start(conn, room, self._join(conn, room, since, replay=replay), ref)

    def read(self, conn, read, deliver, what: str, ref) -> None:
        """Run ``read()`` (a store read) in *conn*'s turn and ``deliver`` its result.

        Raises :class:`chatd.errors.RateLimited` when *conn* has
        ``MAX_QUEUED_READS`` reads waiting already."""
        queued = self._reads.get(conn, 0)
        if queued >= MAX_QUEUED_READS:
            raise errors.RateLimited(
                f"{queued} history requests of this connection are still being answered: "
                "this one was dropped, resend it later",
                ref,
            )
        self._reads[conn] = queued + 1
        self._start(conn, object(), self._read(conn, read, deliver), ref, what)

    def cancel(self, conn, room=None) -> None:
        """Cancel *conn*'s replay of *room*, or all its replays and reads (it closed)."""
        tasks = self._tasks.get(conn) or {}
        if room is None:
            doomed = list(tasks.values())
        else:
            doomed = [tasks[room]] if room in tasks else []
        for task in doomed:
            if task.deferred is not None and not task.deferred.called:
                self.chat.stats.replays_cancelled += 1
                task.deferred.cancel()
        if room is None:
            self._tasks.pop(conn, None)
            self._locks.pop(conn, None)
            self._reads.pop(conn, None)

    # plumbing

    def _start(self, conn, key, start, ref, what="join replay") -> None:
        tasks = self._tasks.setdefault(conn, {})
        task = tasks[key] = _Task()
        d = task.deferred = start(task)

        def finished(result):
            mine = self._tasks.get(conn)
            if mine is not None and mine.get(key) is task:
                del mine[key]
                if not mine:
                    del self._tasks[conn]
                    self._locks.pop(conn, None)
            return result

        d.addBoth(finished)
        d.addErrback(lambda f: f.trap(CancelledError) and None)
        d.addErrback(self.chat._store_failed, what, conn, ref)

    @_inline
    def _turn(self, conn):
        """Wait for *conn*'s turn: its previous read handed over, its transport
        drained, a read slot free. Fires with the lock to give to :meth:`_end_turn`."""
        lock = self._locks.get(conn)
        if lock is None:
            lock = self._locks[conn] = DeferredLock()
        yield lock.acquire()
        try:
            when_drained = getattr(conn, "when_drained", None)
            while when_drained is not None:
                drained = when_drained()
                if drained is None:
                    break
                self.waiting += 1
                try:
                    yield drained
                finally:
                    self.waiting -= 1
            yield self.slots.acquire()
        except BaseException:
            lock.release()
            raise
        return lock

    def _end_turn(self, lock) -> None:
        self.slots.release()
        lock.release()

    def _join(self, conn, room, since, replay, announce=True):
        def start(task):
            return self._join_task(conn, room, since, replay, task, announce)

        return start

    def _read(self, conn, read, deliver):
        def start(task):
            return self._read_task(conn, read, deliver)

        return start

    @_inline
    def _read_task(self, conn, read, deliver):
        try:
            lock = yield self._turn(conn)
            try:
                result = yield read()
                deliver(result)
            finally:
                self._end_turn(lock)
        finally:
            left = self._reads.get(conn, 1) - 1
            if left > 0:
                self._reads[conn] = left
            else:
                self._reads.pop(conn, None)

    @_inline
    def _join_task(self, conn, room, since, replay, task, announce=True):
        chat = self.chat
        store = chat.store
        limit = chat.settings.replay_limit
        # the room's events reach this node from here on (a node that has just
        # started following the room): the replay read below is later, so every
        # item after it reaches the hub's buffer
        yield chat.broker.ready(room)
        lock = yield self._turn(conn)
        try:
            # Up to one page of what was missed, and the room's newest seq: every
            # message up to it is in the store, every later one reaches the hub's
            # buffer for this (pending) connection. A resume that missed little
            # (the usual case) is answered by this one read.
            if replay and since is not None:
                r = yield store.replay(
                    room, since, min(page_size(chat.settings.max_text_length), limit)
                )
            else:
                r = yield store.replay(room, None, 0)
            last = r.last_seq
            if r.truncated:  # more than a page (or pruned ones): page through the window
                after = max(since, last - limit)
                first, after = yield self._page(room, after, last)
                truncated = not first or first[0].seq > since + 1
            else:
                first, after, truncated = r.messages, last, False
            if announce:
                members = yield self.chat.directory.members(room)
                self._send_joined(conn, room, members, last, since, truncated)
            self._send(conn, first)
        finally:
            self._end_turn(lock)
        while after < last and chat.hub.in_room(conn, room):
            lock = yield self._turn(conn)
            try:
                page, after = yield self._page(room, after, last)
                self._send(conn, page)
            finally:
                self._end_turn(lock)
        if not chat.hub.in_room(conn, room):
            return
        if task.owed:
            members = yield self.chat.directory.members(room)
            for owed_since in task.owed:
                self._send_joined(conn, room, members, last, owed_since, False)
        if replay:
            for seq, payload in chat.hub.go_live(conn, room) or ():
                if seq is None or seq > last:
                    conn.send(payload)

    def _page(self, room, after, last):
        """The stored messages with ``after < seq <= min(after + page, last)``,
        and the new *after*. (History's newest *page* below ``bound`` are exactly
        those: the range holds at most *page* seqs.)"""
        n = page_size(self.chat.settings.max_text_length)
        upto = min(after + n, last)
        d = self.chat.store.history(room, upto + 1, n)
        return d.addCallback(lambda p: ([m for m in p.messages if m.seq > after], upto))

    @staticmethod
    def _send_joined(conn, room, members, last, since, truncated) -> None:
        joined = {"room": room, "members": members, "seq": last}
        if since is not None:
            joined["since"] = since
        joined["truncated"] = truncated
        conn.send(wire.frame("joined", **joined))

    def _send(self, conn, messages) -> None:
        sign = self.chat.urls() if messages else None  # attachments' URLs signed now
        for message in messages:
            conn.send(wire.item_frame(message, sign))  # every item kind as the frame it is live
