"""A local stand-in for WeChat's server API (jscode2session, the access token,
subscribeMessage.send, msg_sec_check, media_check_async) with recorded requests and
error injection, the message push callback WeChat makes to chatd (signed, JSON or
XML: :func:`push_event`), and the secrets the login and push tests use."""

from __future__ import annotations

import json
import time
from urllib.parse import urlencode

import pytest_twisted
from twisted.internet import defer, reactor
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site

APP_SECRET = "app-secret-never-logged-1234"


JWT_SECRET = "jwt-secret-for-tests-32-bytes-long!!"


class FakeJscode2session(Resource):
    """Mimics WeChat's /sns/jscode2session: its success and error answers by code."""

    isLeaf = True

    def __init__(self):
        super().__init__()
        self.seen = []

    def render_GET(self, request):
        args = {k.decode(): v[0].decode() for k, v in request.args.items()}
        self.seen.append(args)
        if request.path != b"/sns/jscode2session" or args.get("secret") != APP_SECRET:
            return json.dumps({"errcode": 40125, "errmsg": "invalid appsecret"}).encode()
        code = args["js_code"]
        if code == "slow":
            return NOT_DONE_YET
        if code == "garbage":
            return b"<html>oops</html>"
        replies = {
            "bad": {"errcode": 40029, "errmsg": "invalid code"},
            "used": {"errcode": 40163, "errmsg": "code been used"},
            "limited": {"errcode": 45011, "errmsg": "api minute-quota reach limit"},
            "busy": {"errcode": -1, "errmsg": "system error"},
            "risky": {"errcode": 40226, "errmsg": "high risk user"},
        }
        reply = replies.get(code, {"openid": "o-" + code, "session_key": "SECRET-KEY"})
        return json.dumps(reply).encode()


class FakeWeChat(Resource):
    """Mimics WeChat's server API on loopback: ``/sns/jscode2session`` (as
    :class:`FakeJscode2session`), ``GET /cgi-bin/token``, ``POST /cgi-bin/stable_token``,
    ``POST /cgi-bin/message/subscribe/send`` and ``POST /wxa/msg_sec_check`` (v2: text
    holding ``RISKY`` is ``risky``, label 20001; ``REVIEW`` is ``review``, label
    10001; anything else ``pass``; recorded in ``checks``) and ``POST
    /wxa/media_check_async`` (v2: answers ``trace_id`` ``media-trace-N``; recorded in
    ``media_checks``; the verdict is the test's to push, :func:`push_event`).

    Tokens are ``tok-1``, ``tok-2``, ...: ``cgi-bin/token`` always makes a new one
    (the older ones stop working), ``stable_token`` gives the current one unless
    ``force_refresh`` or there is none. A send with any other token gets 40001.
    Recorded: ``token_requests`` (path, body) and ``sends`` (the JSON bodies, with the
    ``access_token`` used under ``"_token"``, its arrival under ``"_at"``). :meth:`inject` queues answers for the
    next calls of a path: an errcode (int), ``"500"``, ``"garbage"`` or ``"timeout"``
    (never answered).
    """

    isLeaf = True

    def __init__(self, expires_in=7200):
        super().__init__()
        self.login = FakeJscode2session()
        self.expires_in = expires_in
        self.issued = 0
        self.current = None
        self.token_requests: list = []
        self.sends: list = []
        self.checks: list = []
        self.media_checks: list = []
        self.injected: dict = {}
        self.hanging: list = []

    @property
    def seen(self):
        return self.login.seen

    def inject(self, path: str, *answers) -> None:
        """Answer the next calls of *path* with *answers*, in order."""
        self.injected.setdefault(path, []).extend(answers)

    def revoke(self) -> None:
        """The current token stops working (as when another caller got a new one)."""
        self.current = None

    def _new_token(self) -> str:
        self.issued += 1
        self.current = f"tok-{self.issued}"
        return self.current

    def render(self, request):
        path = request.path.decode()
        if path == "/sns/jscode2session":
            return self.login.render_GET(request)
        raw = request.content.read()
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            body = None
        args = {k.decode(): v[0].decode() for k, v in request.args.items()}
        if path == "/cgi-bin/message/subscribe/send" and isinstance(body, dict):
            self.sends.append(
                {**body, "_token": args.get("access_token"), "_at": reactor.seconds()}
            )
        elif path == "/wxa/msg_sec_check" and isinstance(body, dict):
            self.checks.append({**body, "_token": args.get("access_token")})
        elif path == "/wxa/media_check_async" and isinstance(body, dict):
            self.media_checks.append({**body, "_token": args.get("access_token")})
        elif path.startswith("/cgi-bin/") and "token" in path:
            self.token_requests.append((path, body if isinstance(body, dict) else args))
        queued = self.injected.get(path)
        if queued:
            answer = queued.pop(0)
            if answer == "timeout":
                self.hanging.append(request)
                return NOT_DONE_YET
            if answer == "500":
                request.setResponseCode(500)
                return b"internal error"
            if answer == "garbage":
                return b"<html>busy</html>"
            return json.dumps({"errcode": answer, "errmsg": f"injected {answer}"}).encode()
        if path == "/cgi-bin/token":
            if args.get("secret") != APP_SECRET:
                return json.dumps({"errcode": 40125, "errmsg": "invalid appsecret"}).encode()
            return self._token_reply(self._new_token())
        if path == "/cgi-bin/stable_token":
            if not isinstance(body, dict) or body.get("secret") != APP_SECRET:
                return json.dumps({"errcode": 40125, "errmsg": "invalid appsecret"}).encode()
            if body.get("force_refresh") or self.current is None:
                self._new_token()
            return self._token_reply(self.current)
        if path == "/cgi-bin/message/subscribe/send":
            if args.get("access_token") != self.current or self.current is None:
                return json.dumps({"errcode": 40001, "errmsg": "invalid credential"}).encode()
            if not isinstance(body, dict) or not body.get("touser"):
                return json.dumps({"errcode": 40003, "errmsg": "invalid openid"}).encode()
            return json.dumps({"errcode": 0, "errmsg": "ok", "msgid": len(self.sends)}).encode()
        if path == "/wxa/msg_sec_check":
            if args.get("access_token") != self.current or self.current is None:
                return json.dumps({"errcode": 40001, "errmsg": "invalid credential"}).encode()
            content = body.get("content", "") if isinstance(body, dict) else ""
            suggest, label = "pass", 100
            if "RISKY" in content:
                suggest, label = "risky", 20001
            elif "REVIEW" in content:
                suggest, label = "review", 10001
            reply = {
                "errcode": 0,
                "errmsg": "ok",
                "trace_id": f"trace-{len(self.checks)}",
                "result": {"suggest": suggest, "label": label},
                "detail": [{"strategy": "content_model", "errcode": 0, "suggest": suggest}],
            }
            return json.dumps(reply).encode()
        if path == "/wxa/media_check_async":
            if args.get("access_token") != self.current or self.current is None:
                return json.dumps({"errcode": 40001, "errmsg": "invalid credential"}).encode()
            if not isinstance(body, dict) or body.get("media_type") not in (1, 2):
                return json.dumps({"errcode": 40004, "errmsg": "invalid media type"}).encode()
            reply = {
                "errcode": 0,
                "errmsg": "ok",
                "trace_id": f"media-trace-{len(self.media_checks)}",
            }
            return json.dumps(reply).encode()
        request.setResponseCode(404)
        return b"{}"

    def _token_reply(self, token) -> bytes:
        return json.dumps({"access_token": token, "expires_in": self.expires_in}).encode()


class QuietSite(Site):
    """The stand-in's own access log would show the secret it receives: keep it quiet."""

    def log(self, request):
        pass


def listening(fake):
    """Serve *fake* (a :class:`FakeJscode2session` or :class:`FakeWeChat`) on loopback
    for a fixture: yields it with its ``url`` set, stops listening afterwards (and
    drops the requests it left hanging)."""
    port = reactor.listenTCP(0, QuietSite(fake), interface="127.0.0.1")
    fake.url = f"http://127.0.0.1:{port.getHost().port}"
    yield fake
    for request in getattr(fake, "hanging", ()):
        if request.channel is not None:
            request.channel.transport.abortConnection()
    pytest_twisted.blockon(defer.maybeDeferred(port.stopListening))


def login_server(server_factory, wechat_api, *extra):
    """A chatd with WeChat login against *wechat_api* (fires with the server)."""
    return server_factory(
        "--jwt-secret",
        JWT_SECRET,
        "--wechat-appid",
        "wx123",
        "--wechat-secret",
        APP_SECRET,
        "--wechat-api",
        wechat_api,
        *extra,
    )


def media_verdict(trace_id: str, suggest: str, label: int = 20002) -> dict:
    """The ``wxa_media_check`` event WeChat pushes with the verdict of *trace_id*."""
    return {
        "ToUserName": "gh_chatd",
        "FromUserName": "o-system",
        "CreateTime": int(time.time()),
        "MsgType": "event",
        "Event": "wxa_media_check",
        "appid": "wx123",
        "trace_id": trace_id,
        "version": 2,
        "detail": [{"strategy": "content_model", "errcode": 0, "suggest": suggest}],
        "errcode": 0,
        "errmsg": "ok",
        "result": {"suggest": suggest, "label": label},
    }


def event_xml(event: dict) -> bytes:
    """*event* as WeChat's XML push format (nested dicts as nested elements)."""

    def element(name, value):
        if isinstance(value, dict):
            inner = "".join(element(k, v) for k, v in value.items())
        elif isinstance(value, list):
            inner = ""
        else:
            inner = f"<![CDATA[{value}]]>" if isinstance(value, str) else str(value)
        return f"<{name}>{inner}</{name}>"

    return element("xml", event).encode()


def push_event(srv, token: str, event, xml=False, timestamp=None, nonce="n1", sig=None):
    """WeChat's message push to *srv*'s ``/api/wechat/events``: POST *event* signed
    with *token* (or with *sig*); fires with ``(status, headers, body)``."""
    from chatd.wechatpush import signature
    from tests.support.http import http

    timestamp = str(int(time.time())) if timestamp is None else timestamp
    sig = sig or signature(token, timestamp, nonce)
    query = urlencode({"signature": sig, "timestamp": timestamp, "nonce": nonce})
    body = event_xml(event) if xml else json.dumps(event).encode()
    headers = {b"content-type": [b"text/xml" if xml else b"application/json"]}
    return http("POST", f"{srv.http_url}/api/wechat/events?{query}", body, None, headers)
