"""Webhooks: POST a JSON event to a configured URL, never holding up delivery.

Events (``Content-Type: application/json``, one object per request):

* ``{"event": "online", "user", "mode", "ts"}`` -- a user's first connection opened;
* ``{"event": "offline", "user", "mode", "ts"}`` -- a user's last connection closed;
* ``{"event": "message", "room", "seq", "from", "name", "text", "ts", "id"}`` -- a
  message was committed in one of the configured rooms (``--webhook-rooms``,
  comma-separated; ``*`` for every room; empty: no message events). A private
  room's message event carries no ``text`` (and ``"private": true``): its content
  never leaves chatd for a webhook receiver (docs/security.md);
* ``{"event": "push", "user", "reason", "room"|"with", "seq", "from", "name",
  "preview", "ts"}`` -- with ``--webhook-push on``: chatd decided to notify
  *user*, who has no live connection (chatd.push: a DM, an @mention or a room the
  user chose; ``reason`` says which; not muted; one per conversation per
  ``--push-interval``), so a bridge can send an APNs/FCM notification. ``with`` is
  the DM's other user; ``preview`` is the text or a placeholder (previews off,
  private rooms). Queued with the message events.

With ``--api-key`` set, every request carries ``Authorization: apikey KEY``
so the receiver can tell it comes from chatd.

:class:`Webhooks` is a :class:`chatd.chat.Chat` observer: it only queues the
event and returns. Requests go out through ``twisted.web.client.Agent``, at
most ``concurrency`` at a time; a failed request (connection error, timeout,
any status other than 2xx) is retried after 0.5 s, 1 s, 2 s, ... (capped at
30 s) up to ``retries`` times, then dropped with a log line.

Presence churn never starves message events (issue 18, item 8):

* Two queues. Message events go first: while a presence event is in flight,
  every other free slot takes a message event, so presence gets one slot
  when messages are waiting and all of them otherwise. A message event waits
  only for the message events queued before it and for one request in flight
  to finish (the bound docs/operations.md states).
* :class:`PresenceQueue` keeps one FIFO lane per user and sends a user's
  events one at a time (the next one after the previous one's answer, or
  after its last retry), so the receiver sees each user's events in order. An
  ``online`` followed by an ``offline`` of the same user and mode (or the
  reverse) that are both still queued collapse -- neither is sent -- but only
  when the receiver's last state of that user is then already the right one;
  every event is either sent or counted in ``coalesced``.
* The queues together hold at most ``queue_max`` events. When they are full
  the oldest *presence* event is dropped; a message event is dropped only when
  no presence event is queued. Drops are counted by event (``dropped_by``,
  exported as ``chatd_webhook_dropped_total``) and logged at most once per
  :data:`DROP_LOG_INTERVAL` seconds, with the counts since the last line.
"""

from __future__ import annotations

import json
from collections import Counter, deque
from io import BytesIO

from twisted.internet import defer
from twisted.logger import Logger
from twisted.web.client import Agent, FileBodyProducer, HTTPConnectionPool, readBody
from twisted.web.http_headers import Headers

from chatd import wire
from chatd.store import dm_users

PRESENCE = ("online", "offline")
#: every event a webhook can carry (the ``event`` label of the metrics)
EVENTS = (*PRESENCE, "message", "push")
#: seconds between two "webhook queue full" log lines
DROP_LOG_INTERVAL = 10.0


class Event:
    """One queued webhook: its encoded body, what it is about and when it was queued."""

    __slots__ = ("body", "kind", "user", "mode", "queued_at", "attempt", "queued", "waiting")

    def __init__(self, body: bytes, kind: str, queued_at: float, user=None, mode=None):
        self.body = body
        self.kind = kind
        self.user = user
        self.mode = mode
        self.queued_at = queued_at
        self.attempt = 0
        #: in a queue (not handed out, coalesced or dropped)
        self.queued = False
        #: failed and waiting on a retry timer
        self.waiting = False


class PresenceQueue:
    """Queued ``online``/``offline`` events: one lane per user, flaps coalesced.

    Pure bookkeeping, no I/O and no clock. :meth:`add` queues an event (or
    coalesces it away), :meth:`pop` hands out the next event of a user with
    nothing in flight, :meth:`done` says that user's event finished (sent or
    given up), :meth:`retry` puts a failed one back at the head of its lane,
    :meth:`drop_oldest` takes out the oldest queued event.

    ``_online`` maps each user whose last handed-out event was ``online`` to
    its mode: that is the state the receiver is left in, the reference for
    deciding whether a queued pair may collapse. It holds at most the users
    online plus those whose ``offline`` is queued.
    """

    def __init__(self):
        self._lanes: dict[str, deque] = {}
        self._order: deque = deque()
        self._ready: deque = deque()
        self._busy: set = set()
        self._online: dict = {}
        #: events queued now
        self.size = 0
        #: events never sent because an online/offline pair collapsed
        self.coalesced = 0

    def _state_before(self, lane: deque, user: str):
        if len(lane) >= 2:
            return (lane[-2].kind, lane[-2].mode)
        if user in self._online:
            return ("online", self._online[user])
        return ("offline", None)

    def add(self, event: Event) -> bool:
        """Queue *event*; False when it collapsed with the user's last queued one."""
        lane = self._lanes.get(event.user)
        if lane:
            last = lane[-1]
            if last.attempt == 0 and last.kind != event.kind and last.mode == event.mode:
                kind, mode = self._state_before(lane, event.user)
                # the receiver's state without the pair: "offline" never seen counts as offline
                if kind == event.kind and mode in (event.mode, None):
                    lane.pop()
                    last.queued = False
                    self.size -= 1
                    self.coalesced += 2
                    if not lane:
                        del self._lanes[event.user]
                    self._compact()
                    return False
        if lane is None:
            lane = self._lanes[event.user] = deque()
        if not lane and event.user not in self._busy:
            self._ready.append(event.user)
        lane.append(event)
        self._order.append(event)
        event.queued = True
        self.size += 1
        return True

    def pop(self) -> Event | None:
        """The next event to send (its user then counts as busy), or None."""
        while self._ready:
            user = self._ready.popleft()
            lane = self._lanes.get(user)
            if not lane or user in self._busy:
                continue
            event = lane.popleft()
            if not lane:
                del self._lanes[user]
            event.queued = False
            self.size -= 1
            self._busy.add(user)
            if event.kind == "online":
                self._online[user] = event.mode
            else:
                self._online.pop(user, None)
            self._compact()
            return event
        return None

    def done(self, event: Event) -> None:
        """*event* (handed out by :meth:`pop`) was sent or given up on."""
        self._busy.discard(event.user)
        if self._lanes.get(event.user):
            self._ready.append(event.user)

    def retry(self, event: Event) -> None:
        """*event* failed and is due again: first in its lane and among the ready users."""
        lane = self._lanes.setdefault(event.user, deque())
        lane.appendleft(event)
        self._order.appendleft(event)
        event.queued = True
        self.size += 1
        self._busy.discard(event.user)
        self._ready.appendleft(event.user)

    def drop_oldest(self) -> Event | None:
        """Take the oldest queued event out (it is never sent), or None."""
        while self._order:
            event = self._order.popleft()
            if not event.queued:
                continue
            lane = self._lanes[event.user]
            lane.remove(event)
            if not lane:
                del self._lanes[event.user]
            event.queued = False
            self.size -= 1
            return event
        return None

    def _compact(self) -> None:
        # events handed out or coalesced stay in _order until skipped: keep it O(size)
        if len(self._order) > 2 * self.size + 64:
            self._order = deque(e for e in self._order if e.queued)


class Webhooks:
    """Queue and deliver webhook events for one chat."""

    log = Logger()

    #: message delay samples kept until a /metrics scrape drains them
    SAMPLE_MAX = 10000

    def __init__(
        self,
        reactor,
        url: str | None = None,
        rooms: str | None = None,
        api_key=None,
        retries: int = 5,
        timeout: float = 10.0,
        concurrency: int = 4,
        queue_max: int = 10000,
        backoff: float = 0.5,
        backoff_max: float = 30.0,
        push=None,
    ):
        self.reactor = reactor
        self.api_key = api_key
        self.retries = retries
        self.timeout = timeout
        self.concurrency = concurrency
        self.queue_max = queue_max
        self.backoff = backoff
        self.backoff_max = backoff_max
        self.configure(url, rooms, push)
        self._messages: deque = deque()
        self.presence = PresenceQueue()
        self._in_flight = 0
        self._presence_in_flight = 0
        self._timers = set()
        self._stopped = False
        self._unlogged_drops: Counter = Counter()
        self._drop_log_timer = None
        self.pool = HTTPConnectionPool(reactor, persistent=True)
        self.pool.maxPersistentPerHost = concurrency
        self.agent = Agent(reactor, connectTimeout=timeout, pool=self.pool)
        #: events delivered, retried, given up on, dropped from a full queue
        self.sent = 0
        self.retried = 0
        self.failed = 0
        self.dropped = 0
        #: the same, by event (online, offline, message)
        self.sent_by: Counter = Counter()
        self.failed_by: Counter = Counter()
        self.dropped_by: Counter = Counter()
        #: seconds from queueing a message event to its 2xx (drained by /metrics)
        self.message_delays: list[float] = []

    @property
    def pending(self) -> int:
        """Events queued or being sent (retries waiting on a timer not included)."""
        return len(self._messages) + self.presence.size + self._in_flight

    @property
    def in_flight(self) -> int:
        """Requests being sent now."""
        return self._in_flight

    @property
    def waiting(self) -> int:
        """Failed events waiting on their retry timer."""
        return len(self._timers)

    @property
    def coalesced(self) -> int:
        """Presence events never sent: an online/offline pair of one user collapsed."""
        return self.presence.coalesced

    def queued(self) -> dict:
        """Events waiting for a free request slot, by queue (message, presence)."""
        return {"message": len(self._messages), "presence": self.presence.size}

    def configure(self, url: str | None, rooms: str | None, push=None) -> None:
        """Set the target URL (None: off), the rooms whose messages are sent and
        whether push events are (``"on"``; None: unchanged, off at first)."""
        self.url = url or None
        if push is not None or not hasattr(self, "push"):
            self.push = str(push).lower() == "on"
        names = [r.strip() for r in (rooms or "").split(",") if r.strip()]
        self.all_rooms = "*" in names
        self.rooms = frozenset(n for n in names if n != "*")

    # the Chat observer

    def __call__(self, event: str, **fields) -> None:
        """Queue the webhook for a chat event, if one is configured for it."""
        if self.url is None or self._stopped:
            return
        now = self.reactor.seconds()
        ts = int(now * 1000)
        if event in PRESENCE:
            body = {"event": event, "user": fields["user"], "mode": fields["mode"], "ts": ts}
            item = Event(_encode(body), event, now, fields["user"], fields["mode"])
            self.presence.add(item)
        elif event == "message":
            m = fields["message"]
            if not (self.all_rooms or m.channel in self.rooms):
                return
            body = {"event": "message", **wire.message_dict(m)}
            if fields.get("private"):
                del body["text"]
                body.pop("attachments", None)
                body["private"] = True
            self._queue_message(Event(_encode(body), event, now))
        elif event == "push" and self.push:
            m = fields["message"]
            users = dm_users(m.channel)
            where = {"room": m.channel} if users is None else {"with": m.sender}
            body = {
                "event": "push",
                "user": fields["user"],
                "reason": fields["reason"],
                **where,
                "seq": m.seq,
                "from": m.sender,
                "name": m.name,
                "preview": fields["preview"],
                "ts": m.ts,
            }
            self._queue_message(Event(_encode(body), event, now))
        else:
            return
        while len(self._messages) + self.presence.size > self.queue_max:
            self._drop()
        self._pump()

    def _queue_message(self, item: Event) -> None:
        """Queue a message or push event (they go before presence)."""
        item.queued = True
        self._messages.append(item)

    def _drop(self) -> None:
        item = self.presence.drop_oldest()
        if item is None:
            item = self._messages.popleft()
            item.queued = False
        self.dropped += 1
        self.dropped_by[item.kind] += 1
        self._unlogged_drops[item.kind] += 1
        if self._drop_log_timer is None:
            self._log_drops()

    def _log_drops(self) -> None:
        """One warning for the drops since the last one; the next one in 10 s at the earliest."""
        self._drop_log_timer = None
        counts, self._unlogged_drops = self._unlogged_drops, Counter()
        if not counts or self._stopped:
            return
        self.log.warn(
            "webhook queue full ({queue_max} events): dropped {n} events ({detail}) for {url}",
            queue_max=self.queue_max,
            n=sum(counts.values()),
            detail=", ".join(f"{counts[k]} {k}" for k in EVENTS if counts[k]),
            url=self.url,
        )
        self._drop_log_timer = self.reactor.callLater(DROP_LOG_INTERVAL, self._log_drops)

    # delivery

    def _next(self) -> Event | None:
        # messages first; presence keeps one slot while messages wait
        if self._messages and self._presence_in_flight > 0:
            item = self._messages.popleft()
        else:
            item = self.presence.pop()
            if item is None and self._messages:
                item = self._messages.popleft()
        if item is not None:
            item.queued = False
        return item

    def _pump(self) -> None:
        # with the URL unset by a reload, queued events wait for one to be set again
        while self._in_flight < self.concurrency and not self._stopped and self.url:
            item = self._next()
            if item is None:
                return
            self._in_flight += 1
            if item.kind in PRESENCE:
                self._presence_in_flight += 1
            d = self._post(item.body)
            d.addCallbacks(self._sent, self._retry, callbackArgs=(item,), errbackArgs=(item,))
            d.addBoth(self._done, item)

    def _post(self, body: bytes):
        headers = {b"content-type": [b"application/json"], b"user-agent": [b"chatd-webhooks"]}
        key = getattr(self.api_key, "key", None)
        if key:
            headers[b"authorization"] = [b"apikey " + key.encode("utf-8")]
        d = self.agent.request(
            b"POST", self.url.encode("utf-8"), Headers(headers), FileBodyProducer(BytesIO(body))
        )
        d.addTimeout(self.timeout, self.reactor)

        def check(response):
            finished = readBody(response)
            if not 200 <= response.code < 300:
                finished.addCallback(
                    lambda _: defer.fail(RuntimeError(f"webhook answered HTTP {response.code}"))
                )
            return finished

        return d.addCallback(check)

    def _sent(self, _, item: Event):
        self.sent += 1
        self.sent_by[item.kind] += 1
        if item.kind == "message" and len(self.message_delays) < self.SAMPLE_MAX:
            self.message_delays.append(self.reactor.seconds() - item.queued_at)

    def _retry(self, failure, item: Event):
        if self._stopped:
            return None
        if item.attempt >= self.retries:
            self.failed += 1
            self.failed_by[item.kind] += 1
            self.log.warn(
                "webhook to {url} failed {n} times, giving up: {error}",
                url=self.url,
                n=item.attempt + 1,
                error=failure.getErrorMessage(),
            )
            return None
        self.retried += 1
        delay = min(self.backoff * (2**item.attempt), self.backoff_max)
        self.log.info(
            "webhook to {url} failed ({error}); retry in {delay}s",
            url=self.url,
            error=failure.getErrorMessage(),
            delay=delay,
        )
        item.waiting = True

        def again():
            self._timers.discard(timer)
            item.waiting = False
            item.attempt += 1
            if item.kind in PRESENCE:
                self.presence.retry(item)
            else:
                item.queued = True
                self._messages.appendleft(item)
            self._pump()

        timer = self.reactor.callLater(delay, again)
        self._timers.add(timer)
        return None

    def _done(self, _, item: Event):
        self._in_flight -= 1
        if item.kind in PRESENCE:
            self._presence_in_flight -= 1
            if not item.waiting:
                self.presence.done(item)
        self._pump()

    def stop(self):
        """Stop retrying and close idle connections (the shutdown path)."""
        self._stopped = True
        for timer in [*self._timers, self._drop_log_timer]:
            if timer is not None and timer.active():
                timer.cancel()
        self._timers.clear()
        self._drop_log_timer = None
        return self.pool.closeCachedConnections()


def _encode(body: dict) -> bytes:
    return json.dumps(body, ensure_ascii=False).encode("utf-8")
