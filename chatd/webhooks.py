"""Webhooks: POST a JSON event to a configured URL, never holding up delivery.

Events (``Content-Type: application/json``, one object per request):

* ``{"event": "online", "user", "mode", "ts"}`` -- a user's first connection opened;
* ``{"event": "offline", "user", "mode", "ts"}`` -- a user's last connection closed;
* ``{"event": "message", "room", "seq", "from", "name", "text", "ts", "id"}`` -- a
  message was committed in one of the configured rooms (``--webhook-rooms``,
  comma-separated; ``*`` for every room; empty: no message events).

With ``--api-key`` set, every request carries ``Authorization: apikey KEY`` so
the receiver can tell it comes from chatd.

:class:`Webhooks` is a :class:`chatd.chat.Chat` observer: it only queues the
event and returns. Requests go out through ``twisted.web.client.Agent``, at
most ``concurrency`` at a time; a failed request (connection error, timeout,
any status other than 2xx) is retried after 0.5 s, 1 s, 2 s, ... (capped at
30 s) up to ``retries`` times, then dropped with a log line. The queue is
bounded (``queue_max``): when the receiver is down for long, the oldest
events are dropped first and counted in ``dropped``.
"""

from __future__ import annotations

import json
from collections import deque
from io import BytesIO

from twisted.internet import defer
from twisted.logger import Logger
from twisted.web.client import Agent, FileBodyProducer, HTTPConnectionPool, readBody
from twisted.web.http_headers import Headers

from chatd import wire


class Webhooks:
    """Queue and deliver webhook events for one chat."""

    log = Logger()

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
    ):
        self.reactor = reactor
        self.api_key = api_key
        self.retries = retries
        self.timeout = timeout
        self.concurrency = concurrency
        self.queue_max = queue_max
        self.backoff = backoff
        self.backoff_max = backoff_max
        self.configure(url, rooms)
        self._queue: deque = deque()
        self._in_flight = 0
        self._timers = set()
        self._stopped = False
        self.pool = HTTPConnectionPool(reactor, persistent=True)
        self.pool.maxPersistentPerHost = concurrency
        self.agent = Agent(reactor, connectTimeout=timeout, pool=self.pool)
        #: events delivered, retried, given up on, dropped from a full queue
        self.sent = 0
        self.retried = 0
        self.failed = 0
        self.dropped = 0

    @property
    def pending(self) -> int:
        """Events queued or being sent (retries waiting on a timer not included)."""
        return len(self._queue) + self._in_flight

    def configure(self, url: str | None, rooms: str | None) -> None:
        """Set the target URL (None: off) and the rooms whose messages are sent."""
        self.url = url or None
        names = [r.strip() for r in (rooms or "").split(",") if r.strip()]
        self.all_rooms = "*" in names
        self.rooms = frozenset(n for n in names if n != "*")

    # the Chat observer

    def __call__(self, event: str, **fields) -> None:
        """Queue the webhook for a chat event, if one is configured for it."""
        if self.url is None or self._stopped:
            return
        ts = int(self.reactor.seconds() * 1000)
        if event in ("online", "offline"):
            body = {"event": event, "user": fields["user"], "mode": fields["mode"], "ts": ts}
        elif event == "message":
            m = fields["message"]
            if not (self.all_rooms or m.channel in self.rooms):
                return
            body = {"event": "message", **wire.message_dict(m)}
        else:
            return
        if len(self._queue) >= self.queue_max:
            self._queue.popleft()
            self.dropped += 1
        self._queue.append((json.dumps(body, ensure_ascii=False).encode("utf-8"), 0))
        self._pump()

    # delivery

    def _pump(self) -> None:
        while self._queue and self._in_flight < self.concurrency and not self._stopped:
            body, attempt = self._queue.popleft()
            self._in_flight += 1
            d = self._post(body)
            d.addCallbacks(self._sent, self._retry, errbackArgs=(body, attempt))
            d.addBoth(self._done)

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

    def _sent(self, _):
        self.sent += 1

    def _retry(self, failure, body, attempt):
        if self._stopped:
            return None
        if attempt >= self.retries:
            self.failed += 1
            self.log.warn(
                "webhook to {url} failed {n} times, giving up: {error}",
                url=self.url,
                n=attempt + 1,
                error=failure.getErrorMessage(),
            )
            return None
        self.retried += 1
        delay = min(self.backoff * (2**attempt), self.backoff_max)
        self.log.info(
            "webhook to {url} failed ({error}); retry in {delay}s",
            url=self.url,
            error=failure.getErrorMessage(),
            delay=delay,
        )

        def again():
            self._timers.discard(timer)
            self._queue.appendleft((body, attempt + 1))
            self._pump()

        timer = self.reactor.callLater(delay, again)
        self._timers.add(timer)
        return None

    def _done(self, _):
        self._in_flight -= 1
        self._pump()

    def stop(self):
        """Stop retrying and close idle connections (the shutdown path)."""
        self._stopped = True
        for timer in list(self._timers):
            if timer.active():
                timer.cancel()
        self._timers.clear()
        return self.pool.closeCachedConnections()
