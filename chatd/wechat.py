"""WeChat's server API for offline push: the access token and ``subscribeMessage.send``.

:class:`WeChatApi` calls WeChat (``--wechat-api``, default
``https://api.weixin.qq.com``; the tests point it at a local stand-in) through
``twisted.web.client.Agent``, one deadline of ``timeout`` seconds per call:

* The access token comes from ``POST /cgi-bin/stable_token`` and is cached until
  ``margin`` seconds before it expires. One fetch at a time: callers that need a
  token while one is being fetched wait for that fetch. ``stable_token`` hands
  every caller the same token while it is valid (unlike ``cgi-bin/token``, whose
  every call invalidates the last token), so the nodes of a cluster each fetching
  their own get the same one and never knock each other's out.
* An answer 40001 / 42001 / 40014 (invalid or expired token) drops the cached
  token and the call is made once more with a fresh one; when ``stable_token``
  hands back the very token WeChat just refused, chatd asks again with
  ``force_refresh``.

:class:`PushSender` sends the subscribe messages :mod:`chatd.push` decided on. It
never holds up delivery (a message is delivered before its notification is even
considered) and never piles up: at most ``queue_max`` notifications wait (queued
or for a retry); past that the oldest queued one is dropped. WeChat's answers:

=======================  ============================================================
0                        sent
43101                    the user refused / has no subscription left: that
                         template's quota of the user is dropped (``refused``)
45009                    WeChat's rate limit: every send pauses for ``rate_pause``
                         seconds, doubling while it goes on (at most
                         ``rate_pause_max``); the notification is sent after
-1, HTTP 5xx, timeout,   retried after ``backoff`` s, doubling (at most
unreachable, not JSON,   ``backoff_max``), ``retries`` times; then given up
no access token
40001 / 42001 / 40014    token refreshed and the call made once more (above)
anything else            given up at once and logged (a wrong template id, page or
(40003, 40037, 47003,    data mapping is the operator's to fix)
41030, ...)
=======================  ============================================================

A notification given up on (or dropped) gives its message of the quota back
(``failed`` callback): WeChat did not use it.
"""

from __future__ import annotations

import json
from collections import deque
from io import BytesIO
from urllib.parse import urlencode

from twisted.application.service import Service
from twisted.internet import defer
from twisted.logger import Logger
from twisted.web.client import Agent, FileBodyProducer, HTTPConnectionPool, readBody
from twisted.web.http_headers import Headers

from chatd.login import DEFAULT_API

#: WeChat's answers about the access token: fetch a new one
TOKEN_ERRORS = frozenset((40001, 42001, 40014))
#: the user refused (or has no subscription left)
REFUSED = 43101
#: WeChat's API rate limit
RATE_LIMITED = 45009
#: WeChat is busy: retry
BUSY = -1
TOKEN_PATH = "/cgi-bin/stable_token"
SEND_PATH = "/cgi-bin/message/subscribe/send"


class WeChatError(Exception):
    """WeChat answered with a nonzero ``errcode``."""

    def __init__(self, errcode: int, errmsg: str = ""):
        super().__init__(f"WeChat error {errcode}: {errmsg}")
        self.errcode = errcode
        self.errmsg = errmsg


class TokenError(WeChatError):
    """``stable_token`` gave no token (40125 wrong secret, 40164 IP not whitelisted, ...)."""


class Unreachable(Exception):
    """WeChat could not be asked: no connection, a timeout, HTTP 5xx, not JSON."""


class WeChatApi(Service):
    """Calls to WeChat's server API with a cached access token (module docstring). A
    child service of chatd: stopping it closes its idle connections."""

    log = Logger()

    def __init__(
        self, reactor, appid, secret, api=DEFAULT_API, timeout=10.0, margin=300.0, agent=None
    ):
        self.reactor = reactor
        self.appid = appid
        self._secret = secret
        self.api = (api or DEFAULT_API).rstrip("/")
        self.timeout = timeout
        self.margin = margin
        self.pool = HTTPConnectionPool(reactor, persistent=True)
        self.agent = agent or Agent(reactor, connectTimeout=timeout, pool=self.pool)
        self._token = None
        self._expires = 0.0
        #: the token WeChat refused last (a fetch that gets it back forces a new one)
        self._refused = None
        self._waiters: list = []
        #: tokens fetched (stable_token calls that gave one)
        self.token_fetches = 0

    def __repr__(self):  # never show the secret
        return f"<WeChatApi appid={self.appid} api={self.api}>"

    def stopService(self):
        super().stopService()
        return self.pool.closeCachedConnections()

    def request(self, path: str, query: dict | None = None, body: dict | None = None):
        """POST *body* (JSON) to *path*; fires with WeChat's JSON object, or fails with
        :class:`Unreachable` (the URL may hold the token: only the kind of failure is
        said)."""
        url = self.api + path + ("?" + urlencode(query) if query else "")
        data = json.dumps(body or {}, ensure_ascii=False).encode("utf-8")
        headers = Headers({b"content-type": [b"application/json"]})
        d = self.agent.request(b"POST", url.encode(), headers, FileBodyProducer(BytesIO(data)))

        def answered(response):
            def parse(raw):
                if not 200 <= response.code < 300:
                    raise Unreachable(f"HTTP {response.code}")
                try:
                    reply = json.loads(raw)
                except ValueError:
                    reply = None
                if not isinstance(reply, dict):
                    raise Unreachable("the answer was not a JSON object")
                return reply

            return readBody(response).addCallback(parse)

        def failed(failure):
            if failure.check(Unreachable):
                return failure
            raise Unreachable(type(failure.value).__name__)

        d.addCallback(answered)
        d.addTimeout(self.timeout, self.reactor)
        return d.addErrback(failed)

    # the access token

    def token(self):
        """Fires with a valid access token: the cached one, or one fetched now (one
        fetch at a time, shared by every caller waiting)."""
        if self._token is not None and self.reactor.seconds() < self._expires:
            return defer.succeed(self._token)
        d = defer.Deferred()
        self._waiters.append(d)
        if len(self._waiters) == 1:
            self._fetch().addBoth(self._fetched)
        return d

    def _fetched(self, result):
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            if not d.called:  # a waiter cancelled meanwhile (a caller's deadline) is skipped
                d.callback(result)  # a Failure goes to the waiters' errbacks

    @defer.inlineCallbacks
    def _fetch(self):
        reply = yield self._stable_token(False)
        if self._refused is not None and reply.get("access_token") == self._refused:
            reply = yield self._stable_token(True)
        token, expires_in = reply.get("access_token"), reply.get("expires_in")
        if type(token) is not str or not token:
            error = TokenError(reply.get("errcode", 0) or -2, str(reply.get("errmsg", "no token")))
            self.log.error(
                "WeChat gave no access token ({error}): check --wechat-appid, the secret "
                "and the IP whitelist of the mini-program",
                error=str(error),
            )
            raise error
        if type(expires_in) is not int or expires_in <= 0:
            expires_in = 7200
        self._token, self._refused = token, None
        self._expires = self.reactor.seconds() + max(expires_in - self.margin, expires_in / 2)
        self.token_fetches += 1
        return token

    def _stable_token(self, force: bool):
        body = {
            "grant_type": "client_credential",
            "appid": self.appid,
            "secret": self._secret,
            "force_refresh": force,
        }
        return self.request(TOKEN_PATH, None, body)

    def refused_token(self, token: str) -> None:
        """WeChat called *token* invalid or expired: the next call fetches another."""
        if self._token == token:
            self._token = None
        self._refused = token

    @defer.inlineCallbacks
    def call(self, path: str, body: dict):
        """POST *body* to *path* with the access token; fires with WeChat's answer, or
        fails with :class:`WeChatError` / :class:`Unreachable`. A token answer
        (40001/42001/40014) is retried once with a fresh token."""
        for attempt in (0, 1):
            token = yield self.token()
            reply = yield self.request(path, {"access_token": token}, body)
            errcode = reply.get("errcode") or 0
            if errcode in TOKEN_ERRORS and attempt == 0:
                self.log.info("WeChat refused the access token ({code}): fetching a new one",
                              code=errcode)  # fmt: skip
                self.refused_token(token)
                continue
            if errcode:
                raise WeChatError(errcode, str(reply.get("errmsg", "")))
            return reply


class PushJob:
    """One subscribe message to send: for *user* (whose quota of *template* it took)."""

    __slots__ = ("user", "template", "body", "attempt")

    def __init__(self, user: str, template: str, body: dict):
        self.user = user
        self.template = template
        self.body = body
        self.attempt = 0


def _ignore(job) -> None:
    return None


class PushSender(Service):
    """Sends :class:`PushJob`s through :class:`WeChatApi` (module docstring): bounded,
    retried, paused on WeChat's rate limit. A child service of chatd: stopping it
    stops the retries."""

    log = Logger()

    def __init__(
        self,
        api: WeChatApi,
        reactor,
        *,
        refused=_ignore,
        failed=_ignore,
        queue_max: int = 1000,
        concurrency: int = 4,
        retries: int = 3,
        backoff: float = 1.0,
        backoff_max: float = 60.0,
        rate_pause: float = 60.0,
        rate_pause_max: float = 900.0,
    ):
        self.api = api
        self.reactor = reactor
        #: called with a job WeChat said 43101 for, and with one given up on or dropped
        self.on_refused = refused
        self.on_failed = failed
        self.queue_max = queue_max
        self.concurrency = concurrency
        self.retries = retries
        self.backoff = backoff
        self.backoff_max = backoff_max
        self.rate_pause = rate_pause
        self.rate_pause_max = rate_pause_max
        self.queue: deque = deque()
        self.in_flight = 0
        #: retry timer -> its job
        self._retrying: dict = {}
        self._paused_until = 0.0
        self._wake = None
        self._rate_strikes = 0
        self._stopped = False
        #: notifications sent, retried, given up on, dropped from a full queue,
        #: refused by the user (43101), and 45009 answers
        self.sent = 0
        self.retried = 0
        self.failed = 0
        self.dropped = 0
        self.refused = 0
        self.rate_limited = 0

    @property
    def waiting(self) -> int:
        """Notifications queued or waiting for a retry."""
        return len(self.queue) + len(self._retrying)

    def send(self, job: PushJob) -> None:
        """Queue *job*; a full queue drops its oldest one (or *job*, if none is queued)."""
        if self._stopped:
            return self._give_up(job, "chatd is stopping")
        while self.waiting >= self.queue_max:
            if not self.queue:
                self.dropped += 1
                return self._give_up(job, "the push queue is full", count=False)
            self.dropped += 1
            self._give_up(self.queue.popleft(), "the push queue is full", count=False)
        self.queue.append(job)
        self._pump()

    def _give_up(self, job, why, count=True) -> None:
        if count:
            self.failed += 1
        self.log.warn("push to {user} given up: {why}", user=job.user, why=why)
        try:
            self.on_failed(job)
        except Exception:
            self.log.failure("push failure callback failed")

    def _pump(self) -> None:
        while self.queue and self.in_flight < self.concurrency and not self._stopped:
            now = self.reactor.seconds()
            if now < self._paused_until:
                if self._wake is None or not self._wake.active():
                    self._wake = self.reactor.callLater(self._paused_until - now, self._pump)
                return
            job = self.queue.popleft()
            self.in_flight += 1
            d = self.api.call(SEND_PATH, job.body)
            d.addCallbacks(self._sent, self._error, (job,), None, (job,))
            d.addErrback(lambda f: self.log.failure("push bookkeeping failed", f))
            d.addBoth(self._done)

    def _done(self, _):
        self.in_flight -= 1
        self._pump()

    def _sent(self, _reply, job) -> None:
        self.sent += 1
        self._rate_strikes = 0

    def _error(self, failure, job) -> None:
        if self._stopped:
            return
        # (no token at all is retried like WeChat being busy: the fetch logged why)
        code = None if failure.check(TokenError) else getattr(failure.value, "errcode", None)
        if code == REFUSED:
            self.refused += 1
            self.on_refused(job)
            return
        if code == RATE_LIMITED:
            self.rate_limited += 1
            pause = min(self.rate_pause * 2**self._rate_strikes, self.rate_pause_max)
            self._rate_strikes += 1
            self._paused_until = max(self._paused_until, self.reactor.seconds() + pause)
            self.log.warn("WeChat rate limit (45009): pushes pause for {pause} s", pause=pause)
            self.queue.appendleft(job)
            return
        if code is not None and code != BUSY and code not in TOKEN_ERRORS:
            self.log.error(
                "WeChat refused a push to {user} ({error}): check --push-template, "
                "--push-page and --push-fields",
                user=job.user,
                error=failure.getErrorMessage(),
            )
            return self._give_up(job, failure.getErrorMessage())
        if job.attempt >= self.retries:
            return self._give_up(job, f"failed {job.attempt + 1} times: {failure.value}")
        self.retried += 1
        delay = min(self.backoff * 2**job.attempt, self.backoff_max)
        job.attempt += 1

        def again():
            self._retrying.pop(timer, None)
            self.queue.appendleft(job)
            self._pump()

        timer = self.reactor.callLater(delay, again)
        self._retrying[timer] = job

    def stopService(self):
        """Stop sending and retrying (the api's own service closes its connections)."""
        super().stopService()
        self._stopped = True
        for timer in [*self._retrying, self._wake]:
            if timer is not None and timer.active():
                timer.cancel()
        self._retrying.clear()
