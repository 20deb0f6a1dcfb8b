"""A local stand-in for WeChat's jscode2session, and the secrets the login tests use."""

from __future__ import annotations

import json

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


class QuietSite(Site):
    """The stand-in's own access log would show the secret it receives: keep it quiet."""

    def log(self, request):
        pass


def listening(fake):
    """Serve *fake* (a :class:`FakeJscode2session`) on loopback for a fixture: yields it
    with its ``url`` set, stops listening afterwards."""
    port = reactor.listenTCP(0, QuietSite(fake), interface="127.0.0.1")
    fake.url = f"http://127.0.0.1:{port.getHost().port}"
    yield fake
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
