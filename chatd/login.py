"""``POST /api/login/wechat``: exchange a ``wx.login`` code for a chatd token.

The mini-program calls ``wx.login()``, sends the one-time ``code`` here, and
chatd asks WeChat's ``jscode2session`` for the user's ``openid``. The
``session_key`` WeChat returns never leaves this module; the client gets a
chatd token (``sub`` = ``wx:<openid>``) to connect with. The app secret is
never logged, and neither are codes or tokens.

Answers (JSON): 200 ``{token, user, name, expires_in}``, or an error
``{error: {code, message}}``:

====  ====================  ============================================
400   bad_request           body is not JSON with a string ``code`` (also: nested too deep)
400   bad_name              ``name`` breaks the display-name rule of ``?name=``
                            (:func:`chatd.wire.valid_name`)
401   invalid_code          WeChat said 40029 / 40163 (invalid or used code)
403   user_blocked          WeChat said 40226 (high-risk user)
403   banned                a moderator banned the user everywhere (chatd.moderation);
                            the message says for how long
413   too_large             the body is over :data:`MAX_LOGIN_BODY` bytes (answered
                            from the headers, or as soon as a chunked body passes it)
429   rate_limited          WeChat said 45011 (too many logins), or this address
                            passed :data:`RATE` / :data:`BURST` logins or has
                            :data:`MAX_PENDING_PER_IP` logins in progress
                            (with ``Retry-After``)
503   wechat_busy           WeChat said -1 (system busy; retry)
503   overloaded            :data:`MAX_IN_FLIGHT` jscode2session calls are in flight
                            already (with ``Retry-After``)
502   wechat_error          any other WeChat error, or a reply that is not JSON
504   wechat_unreachable    WeChat could not be reached or did not answer within
                            :data:`UPSTREAM_TIMEOUT` seconds
====  ====================  ============================================

The limits are checked before WeChat is asked: a flood of junk codes from
one address costs at most ``BURST`` jscode2session calls and then ``RATE``
per second (WeChat's own quota is per app, so one abuser would otherwise lock
every user out with 45011), and a silent WeChat holds at most
``MAX_IN_FLIGHT`` outgoing connections. A client that goes away cancels its
jscode2session call.
"""

from __future__ import annotations

import json
import os
import re
from urllib.parse import urlencode

from twisted.internet import defer
from twisted.logger import Logger
from twisted.web.client import Agent, readBody
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from chatd import modrules, wire
from chatd.httpserver import phrase
from chatd.limits import ConnectionCounter, KeyedBuckets
from chatd.store import IModerationStore

DEFAULT_API = "https://api.weixin.qq.com"
#: the largest login request body in bytes (``{"code": ..., "name": ...}`` is far smaller)
MAX_LOGIN_BODY = 4096
#: logins per second per client address, and the burst allowed
RATE = 1.0
BURST = 10
#: logins from one address waiting for WeChat at once
MAX_PENDING_PER_IP = 4
#: jscode2session calls in flight at once, over all clients
MAX_IN_FLIGHT = 32
#: seconds a jscode2session call may take in all (connect, answer, body)
UPSTREAM_TIMEOUT = 10.0
_WECHAT_ERRORS = {
    40029: (401, "invalid_code", "the login code is invalid or expired"),
    40163: (401, "invalid_code", "the login code was already used"),
    40226: (403, "user_blocked", "WeChat refused this user (high risk)"),
    45011: (429, "rate_limited", "too many logins; try again in a minute"),
    -1: (503, "wechat_busy", "WeChat is busy; try again"),
}
#: what a wx.login code can be: printable ASCII, no spaces
_CODE = re.compile(r"[\x21-\x7e]{1,256}")


_TOO_FAST = "too many logins from this address; try again later"
_TOO_MANY = "too many logins in progress from this address; try again"


def error_body(code: str, message: str) -> dict:
    """The login endpoint's error body: ``{"error": {"code": ..., "message": ...}}``."""
    return {"error": {"code": code, "message": message}}


class LoginError(Exception):
    """A login failed; rendered as ``{error: {code, message}}`` with HTTP ``status``."""

    def __init__(self, status: int, code: str, message: str, retry_after: int | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.retry_after = retry_after


def _peer_ip(request) -> str:
    return getattr(request.getClientAddress(), "host", "unix")


class WeChatLogin(Resource):
    """The ``/api/login/wechat`` endpoint."""

    isLeaf = True
    log = Logger()

    def __init__(
        self,
        verifier,
        appid,
        secret,
        reactor,
        api=DEFAULT_API,
        ttl=86400.0,
        timeout=UPSTREAM_TIMEOUT,
        client_ip=_peer_ip,
        users=None,
    ):
        super().__init__()
        #: where the users tokens are issued to are recorded as known users (a
        #: chatd.store.IConversationStore; None: nowhere), so DMs reach them offline
        self.users = users
        self.verifier = verifier
        self.appid = appid
        self._secret = secret
        self.api = api.rstrip("/")
        self.ttl = ttl
        self.reactor = reactor
        self.timeout = timeout
        self.agent = Agent(reactor, connectTimeout=timeout)
        #: the client's address of a request (behind a trusted proxy: from X-Forwarded-For)
        self.client_ip = client_ip
        self.rates = KeyedBuckets(RATE, BURST)
        self.pending = ConnectionCounter(MAX_PENDING_PER_IP)
        #: jscode2session calls waiting for WeChat
        self.in_flight = 0

    def __repr__(self):  # never show the secret
        return f"<WeChatLogin appid={self.appid} api={self.api}>"

    def render_POST(self, request):
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"cache-control", b"no-store")
        ip = self.client_ip(request)
        now = self.reactor.seconds()
        if not self.rates.take(ip, now):
            wait = max(1, round(self.rates.retry_after(ip, now)))
            return self._refuse(request, LoginError(429, "rate_limited", _TOO_FAST, wait))
        if not self.pending.acquire(ip):
            return self._refuse(request, LoginError(429, "rate_limited", _TOO_MANY, 1))
        d = defer.maybeDeferred(self._login, request)
        # a client that goes away cancels its jscode2session call
        request.notifyFinish().addErrback(lambda _: d.cancel())
        d.addBoth(self._done, ip)
        d.addCallback(lambda body: self._write(request, 200, body))
        d.addErrback(self._failed, request)
        return NOT_DONE_YET

    def _done(self, result, ip):
        self.pending.release(ip)
        return result

    def _refuse(self, request, e: LoginError) -> bytes:
        request.setResponseCode(e.status, phrase(e.status))
        if e.retry_after is not None:
            request.setHeader(b"retry-after", str(e.retry_after).encode())
        return json.dumps(error_body(e.code, e.message)).encode()

    def _write(self, request, status, body):
        if request._disconnected:
            return
        request.setResponseCode(status, phrase(status))
        request.write(json.dumps(body).encode())
        request.finish()

    def _failed(self, failure, request):
        if failure.check(LoginError):
            e = failure.value
        elif failure.check(defer.CancelledError):
            return  # the client went away
        else:
            self.log.failure("wechat login failed", failure)
            e = LoginError(500, "internal", "internal error")
        if e.retry_after is not None and not request._disconnected:
            request.setHeader(b"retry-after", str(e.retry_after).encode())
        self._write(request, e.status, error_body(e.code, e.message))

    @defer.inlineCallbacks
    def _login(self, request):
        try:
            body = json.loads(request.content.read(MAX_LOGIN_BODY + 1) or b"null")
        except (ValueError, RecursionError):  # RecursionError: nested too deep
            body = None
        code = body.get("code") if isinstance(body, dict) else None
        if type(code) is not str or not _CODE.fullmatch(code):
            raise LoginError(400, "bad_request", 'send JSON {"code": "<wx.login code>"}')
        name = body.get("name")
        if name is not None and name != "" and (type(name) is not str or not wire.valid_name(name)):
            raise LoginError(400, "bad_name", "names are 1-32 letters, digits or _ - .")
        if self.in_flight >= MAX_IN_FLIGHT:
            raise LoginError(503, "overloaded", "too many logins in progress; try again", 1)
        self.in_flight += 1
        try:
            session = yield self._jscode2session(code)
        finally:
            self.in_flight -= 1
        openid = session.get("openid")
        if type(openid) is not str or not openid:
            raise LoginError(502, "wechat_error", "WeChat answered without an openid")
        user = "wx:" + openid
        yield self._not_banned(user)
        token = self.verifier.issue(user, name or None, ttl=self.ttl)
        if self.users is not None:
            try:
                yield self.users.add_user(user, name or user, int(self.reactor.seconds() * 1000))
            except Exception:  # the token is good all the same; the user is recorded at connect
                self.log.failure("recording {user} failed", user=user)
        self.log.info("wechat login for {user}", user=user)
        return {"token": token, "user": user, "name": name or user, "expires_in": int(self.ttl)}

    @defer.inlineCallbacks
    def _not_banned(self, user):
        """Refuse (403 ``banned``) a user a moderator banned everywhere."""
        if not IModerationStore.providedBy(self.users):
            return
        found = yield self.users.sanctions(user)
        now = int(self.reactor.seconds() * 1000)
        until = modrules.active_until(found, modrules.BAN, (modrules.GLOBAL,), now)
        if until:
            left = modrules.seconds_left(until, now)
            raise LoginError(403, "banned", f"this user is banned for {left} more seconds")

    def _jscode2session(self, code):
        """WeChat's answer for *code*; one deadline of ``timeout`` seconds for all of it."""
        d = self._ask_wechat(code)
        d.addTimeout(self.timeout, self.reactor)
        d.addErrback(self._timed_out)
        return d

    def _timed_out(self, failure):
        failure.trap(defer.TimeoutError)
        self.log.warn("jscode2session unreachable: {kind}", kind="TimeoutError")
        raise LoginError(504, "wechat_unreachable", "WeChat could not be reached") from None

    @defer.inlineCallbacks
    def _ask_wechat(self, code):
        query = urlencode(
            {
                "appid": self.appid,
                "secret": self._secret,
                "js_code": code,
                "grant_type": "authorization_code",
            }
        )
        url = f"{self.api}/sns/jscode2session?{query}".encode()
        try:
            response = yield self.agent.request(b"GET", url)
            raw = yield readBody(response)
        except defer.CancelledError:
            raise
        except Exception as e:
            # the URL holds the secret: log only the kind of failure
            self.log.warn("jscode2session unreachable: {kind}", kind=type(e).__name__)
            raise LoginError(504, "wechat_unreachable", "WeChat could not be reached") from None
        try:
            reply = json.loads(raw)
        except ValueError:
            reply = None
        if not isinstance(reply, dict):
            raise LoginError(502, "wechat_error", "WeChat's answer was not JSON")
        errcode = reply.get("errcode", 0)
        if errcode:
            status, kind, message = _WECHAT_ERRORS.get(
                errcode, (502, "wechat_error", f"WeChat error {errcode}")
            )
            raise LoginError(status, kind, message)
        return reply


def login_resources(options, verifier, reactor, users=None) -> Resource | None:
    """``/api/login`` with its ``wechat`` child, or None when WeChat login is not configured;
    *users* (the conversation store) records each user a token is issued to."""
    appid = options.get("wechat-appid")
    secret = options.get("wechat-secret") or os.environ.get("CHATD_WECHAT_SECRET")
    if not appid:
        return None
    gate = options.get("gate")

    def client_ip(request) -> str:
        ip = _peer_ip(request)
        return gate.client_ip(ip, request.getHeader("x-forwarded-for")) if gate else ip

    login = Resource()
    login.putChild(
        b"wechat",
        WeChatLogin(
            verifier,
            appid,
            secret,
            reactor,
            options.get("wechat-api") or DEFAULT_API,
            options.get("token-ttl") or 86400.0,
            client_ip=client_ip,
            users=users,
        ),
    )
    return login
