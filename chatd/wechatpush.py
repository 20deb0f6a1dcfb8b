"""WeChat's message push URL: ``/api/wechat/events`` (docs/operations.md, *Content
security*).

WeChat calls the server URL configured in the mini-program console (*开发管理 →
消息推送*) with the token configured there (``--wechat-push-token`` or
``CHATD_WECHAT_PUSH_TOKEN``):

* ``GET ?signature&timestamp&nonce&echostr`` once, to verify the URL: chatd answers
  ``echostr`` when the signature is right;
* ``POST ?signature&timestamp&nonce`` with an event (JSON, the console's *plaintext*
  mode; encrypted mode is not supported): chatd answers ``success``.

``signature = sha1("".join(sorted([token, timestamp, nonce])))`` (hex), compared in
constant time. A request with a wrong or missing signature, or a ``timestamp`` more
than :data:`MAX_SKEW` seconds from chatd's clock (a replayed request), is answered
HTTP 403 and ignored. Events handled: ``wxa_media_check`` (the verdict of
``mediaCheckAsync``: ``trace_id``, ``result {suggest, label}``), handed to
:meth:`chatd.contentcheck.ContentChecker.media_verdict`; others are answered
``success`` and ignored.
"""

from __future__ import annotations

import hashlib
import hmac
import json

from twisted.logger import Logger
from twisted.web.resource import Resource

#: seconds a push's timestamp may be off chatd's clock
MAX_SKEW = 300
#: the largest event body read
MAX_EVENT_BODY = 65536


def signature(token: str, timestamp: str, nonce: str) -> str:
    """WeChat's signature of a message push request."""
    return hashlib.sha1("".join(sorted([token, timestamp, nonce])).encode()).hexdigest()


class WeChatEvents(Resource):
    """``/api/wechat/events`` (see the module docstring)."""

    isLeaf = True
    log = Logger()

    def __init__(self, token: str, content, clock):
        super().__init__()
        self._token = token
        #: chatd.contentcheck.ContentChecker: takes the media verdicts
        self.content = content
        self.clock = clock
        #: requests refused for their signature or timestamp
        self.refused = 0

    def __repr__(self):  # never show the token
        return "<WeChatEvents>"

    def _verified(self, request) -> bool:
        args = {k.decode(): v[0].decode("utf-8", "replace") for k, v in request.args.items()}
        given, timestamp, nonce = args.get("signature"), args.get("timestamp"), args.get("nonce")
        if not (given and timestamp and nonce) or not timestamp.isdigit():
            return False
        if abs(self.clock.seconds() - int(timestamp)) > MAX_SKEW:
            return False
        expected = signature(self._token, timestamp, nonce)
        return hmac.compare_digest(expected.encode(), given.lower().encode())

    def _refuse(self, request) -> bytes:
        self.refused += 1
        self.log.warn("WeChat message push with a bad signature or timestamp refused")
        request.setResponseCode(403)
        request.setHeader(b"content-type", b"text/plain")
        return b"forbidden"

    def render_GET(self, request):
        if not self._verified(request):
            return self._refuse(request)
        request.setHeader(b"content-type", b"text/plain")
        return request.args.get(b"echostr", [b""])[0]

    def render_POST(self, request):
        if not self._verified(request):
            return self._refuse(request)
        request.setHeader(b"content-type", b"text/plain")
        try:
            event = json.loads(request.content.read(MAX_EVENT_BODY + 1))
        except (ValueError, RecursionError):
            event = None
        if isinstance(event, dict) and event.get("Event") == "wxa_media_check":
            result = event.get("result") if isinstance(event.get("result"), dict) else {}
            self.content.media_verdict(
                str(event.get("trace_id", "")), result.get("suggest"), result.get("label")
            )
        return b"success"


def wechat_events_children(token, content, clock, root: Resource, rules) -> None:
    """Put ``/api/wechat/events`` into *root* (and its body limit into *rules*)."""
    api = root.children.get(b"api")
    if api is None:
        api = Resource()
        root.putChild(b"api", api)
    wechat = Resource()
    wechat.putChild(b"events", WeChatEvents(token, content, clock))
    api.putChild(b"wechat", wechat)
    rules.add(b"/api/wechat/", MAX_EVENT_BODY)
