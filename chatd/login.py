"""``POST /api/login/wechat``: exchange a ``wx.login`` code for a chatd token.

The mini-program calls ``wx.login()``, sends the one-time ``code`` here, and
chatd asks WeChat's ``jscode2session`` for the user's ``openid``. The
``session_key`` WeChat returns never leaves this module; the client gets a
chatd token (``sub`` = ``wx:<openid>``) to connect with. The app secret is
never logged, and neither are codes or tokens.

Answers (JSON): 200 ``{token, user, name, expires_in}``, or an error
``{error: {code, message}}``:

====  ====================  ============================================
400   bad_request           body is not JSON with a string ``code``
401   invalid_code          WeChat said 40029 / 40163 (invalid or used code)
403   user_blocked          WeChat said 40226 (high-risk user)
429   rate_limited          WeChat said 45011 (too many logins)
503   wechat_busy           WeChat said -1 (system busy; retry)
502   wechat_error          any other WeChat error, or a reply that is not JSON
504   wechat_unreachable    WeChat could not be reached or did not answer in time
====  ============================================
"""

from __future__ import annotations

import json
import re
from urllib.parse import urlencode

from twisted.internet import defer
from twisted.logger import Logger
from twisted.web.client import Agent, readBody
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

DEFAULT_API = "https://api.weixin.qq.com"
_WECHAT_ERRORS = {
    40029: (401, "invalid_code", "the login code is invalid or expired"),
    40163: (401, "invalid_code", "the login code was already used"),
    40226: (403, "user_blocked", "WeChat refused this user (high risk)"),
    45011: (429, "rate_limited", "too many logins; try again in a minute"),
    -1: (503, "wechat_busy", "WeChat is busy; try again"),
}
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class LoginError(Exception):
    """A login failed; rendered as ``{error: {code, message}}`` with HTTP ``status``."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


class WeChatLogin(Resource):
    """The ``/api/login/wechat`` endpoint."""

    isLeaf = True
    log = Logger()

    def __init__(
        self, verifier, appid, secret, api=DEFAULT_API, ttl=86400.0, reactor=None, timeout=10.0
    ):
        super().__init__()
        if reactor is None:
            from twisted.internet import reactor
        self.verifier = verifier
        self.appid = appid
        self._secret = secret
        self.api = api.rstrip("/")
        self.ttl = ttl
        self.reactor = reactor
        self.timeout = timeout
        self.agent = Agent(reactor, connectTimeout=timeout)

    def __repr__(self):  # never show the secret
        return f"<WeChatLogin appid={self.appid} api={self.api}>"

    def render_POST(self, request):
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"cache-control", b"no-store")
        d = defer.maybeDeferred(self._login, request)
        d.addCallback(lambda body: self._write(request, 200, body))
        d.addErrback(self._failed, request)
        return NOT_DONE_YET

    def _write(self, request, status, body):
        if request._disconnected:
            return
        request.setResponseCode(status)
        request.write(json.dumps(body).encode())
        request.finish()

    def _failed(self, failure, request):
        if failure.check(LoginError):
            e = failure.value
        else:
            self.log.failure("wechat login failed", failure)
            e = LoginError(500, "internal", "internal error")
        self._write(request, e.status, {"error": {"code": e.code, "message": e.message}})

    @defer.inlineCallbacks
    def _login(self, request):
        try:
            body = json.loads(request.content.read() or b"null")
        except ValueError:
            body = None
        code = body.get("code") if isinstance(body, dict) else None
        if type(code) is not str or not 0 < len(code) <= 256:
            raise LoginError(400, "bad_request", 'send JSON {"code": "<wx.login code>"}')
        name = body.get("name")
        name = _CONTROL.sub("", name).strip()[:64] if isinstance(name, str) else ""
        session = yield self._jscode2session(code)
        openid = session.get("openid")
        if type(openid) is not str or not openid:
            raise LoginError(502, "wechat_error", "WeChat answered without an openid")
        user = "wx:" + openid
        token = self.verifier.issue(user, name or None, ttl=self.ttl)
        self.log.info("wechat login for {user}", user=user)
        return {"token": token, "user": user, "name": name or user, "expires_in": int(self.ttl)}

    @defer.inlineCallbacks
    def _jscode2session(self, code):
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
            d = self.agent.request(b"GET", url)
            d.addTimeout(self.timeout, self.reactor)
            response = yield d
            d = readBody(response)
            d.addTimeout(self.timeout, self.reactor)
            raw = yield d
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


def login_resources(options, verifier, reactor=None) -> Resource | None:
    """``/api/login`` with its ``wechat`` child, or None when WeChat login is not configured."""
    import os

    appid = options.get("wechat-appid")
    secret = options.get("wechat-secret") or os.environ.get("CHATD_WECHAT_SECRET")
    if not appid:
        return None
    login = Resource()
    login.putChild(
        b"wechat",
        WeChatLogin(
            verifier,
            appid,
            secret,
            options.get("wechat-api") or DEFAULT_API,
            options.get("token-ttl") or 86400.0,
            reactor,
        ),
    )
    return login
