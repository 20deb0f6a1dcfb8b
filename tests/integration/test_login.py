"""WeChat login: POST /api/login/wechat against a local stand-in for jscode2session."""

import json

import pytest
import pytest_twisted
from twisted.internet import defer, reactor
from twisted.logger import formatEvent, globalLogPublisher
from twisted.web.client import Agent, FileBodyProducer, readBody
from twisted.web.http_headers import Headers
from twisted.web.resource import Resource
from twisted.web.server import Site

from tests.support.wechat import APP_SECRET, JWT_SECRET, FakeJscode2session, listening, login_server
from tests.wsclient import Client


@pytest.fixture
def wechat():
    yield from listening(FakeJscode2session())


@defer.inlineCallbacks
def post(port, body, raw=None):
    agent = Agent(reactor)
    data = raw if raw is not None else json.dumps(body).encode()
    response = yield agent.request(
        b"POST",
        f"http://127.0.0.1:{port}/api/login/wechat".encode(),
        Headers({b"content-type": [b"application/json"]}),
        FileBodyProducer(__import__("io").BytesIO(data)),
    )
    payload = yield readBody(response)
    return response.code, json.loads(payload)


@pytest_twisted.inlineCallbacks
def test_login_success_gives_a_token_that_connects(server_factory, wechat):
    """A good code yields a chatd token for wx:<openid>; the session_key never leaves."""
    logged = []
    globalLogPublisher.addObserver(logged.append)
    try:
        srv = yield login_server(server_factory, wechat.url)
        status, body = yield post(srv.port, {"code": "abc", "name": "小红"})
        assert status == 200, body
        assert body["user"] == "wx:o-abc" and body["name"] == "小红"
        assert body["expires_in"] == 86400 and "session_key" not in json.dumps(body)
        assert wechat.seen[-1]["appid"] == "wx123"
        assert wechat.seen[-1]["grant_type"] == "authorization_code"
        c = yield Client.v1(srv.port, token=body["token"])
        assert (c.welcome["user"], c.welcome["name"]) == ("wx:o-abc", "小红")
        yield c.close()
    finally:
        globalLogPublisher.removeObserver(logged.append)
    text = "\n".join(formatEvent(e) or "" for e in logged) + repr(logged)
    assert APP_SECRET not in text and body["token"] not in text


@pytest.mark.parametrize(
    "code, status, error",
    [
        ("bad", 401, "invalid_code"),
        ("used", 401, "invalid_code"),
        ("limited", 429, "rate_limited"),
        ("busy", 503, "wechat_busy"),
        ("risky", 403, "user_blocked"),
        ("garbage", 502, "wechat_error"),
    ],
)
@pytest_twisted.inlineCallbacks
def test_wechat_errors_are_clear(server_factory, wechat, code, status, error):
    """Each jscode2session error maps to a documented HTTP status and error code."""
    srv = yield login_server(server_factory, wechat.url)
    got_status, body = yield post(srv.port, {"code": code})
    assert (got_status, body["error"]["code"]) == (status, error)
    assert body["error"]["message"]


@pytest_twisted.inlineCallbacks
def test_bad_requests_and_unreachable_wechat(server_factory, wechat):
    """No code → 400; WeChat down → 504; the secret is never in an answer."""
    srv = yield login_server(server_factory, wechat.url)
    for raw in (b"not json", b"[]", b'{"code": 5}', b"{}"):
        status, body = yield post(srv.port, None, raw=raw)
        assert (status, body["error"]["code"]) == (400, "bad_request")
    closed = reactor.listenTCP(0, Site(Resource()), interface="127.0.0.1")
    dead = closed.getHost().port
    yield closed.stopListening()
    srv2 = yield login_server(server_factory, f"http://127.0.0.1:{dead}")
    status, body = yield post(srv2.port, {"code": "abc"})
    assert (status, body["error"]["code"]) == (504, "wechat_unreachable")
    assert APP_SECRET not in json.dumps(body)


def test_wechat_login_needs_a_signing_secret():
    """--wechat-appid without --jwt-secret (or without an app secret) is refused at start."""
    from twisted.python.usage import UsageError

    from chatd import tap

    with pytest.raises(UsageError, match="jwt-secret"):
        tap.Options().parseOptions(["--wechat-appid", "x", "--wechat-secret", "y"])
    with pytest.raises(UsageError, match="wechat-secret"):
        tap.Options().parseOptions(["--wechat-appid", "x", "--jwt-secret", JWT_SECRET])


@pytest_twisted.inlineCallbacks
def test_a_globally_banned_user_gets_no_token_until_unbanned(server_factory, wechat):
    """While a moderator's global ban is in force, a login of that user is 403
    ``banned`` (no token); once it is lifted the login works again."""
    srv = yield login_server(server_factory, wechat.url)
    yield srv.chat.moderation.sanction("mia", "ban", "wx:o-troll", 2**52)
    status, body = yield post(srv.port, {"code": "troll"})
    assert status == 403 and "token" not in json.dumps(body)
    assert "banned" in json.dumps(body)
    status, body = yield post(srv.port, {"code": "good"})
    assert status == 200
    yield srv.chat.moderation.sanction("mia", "ban", "wx:o-troll", 0)
    status, body = yield post(srv.port, {"code": "troll"})
    assert status == 200 and body["user"] == "wx:o-troll"
