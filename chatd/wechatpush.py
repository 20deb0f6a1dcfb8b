"""WeChat's message push URL: ``/api/wechat/events`` (docs/operations.md, *Content
security*).

WeChat calls the server URL configured in the mini-program console (*开发管理 →
消息推送*) with the token configured there (``--wechat-push-token`` or
``CHATD_WECHAT_PUSH_TOKEN``):

* ``GET ?signature&timestamp&nonce&echostr`` once, to verify the URL: chatd answers
  ``echostr`` when the signature is right;
* ``POST ?signature&timestamp&nonce`` with an event (JSON or XML, the console's
  *plaintext* mode; encrypted mode is not supported): chatd answers ``success`` once
  the event is handled (HTTP 500 when the store failed: WeChat sends it again).

``signature = sha1("".join(sorted([token, timestamp, nonce])))`` (hex), compared in
constant time. A request with a wrong or missing signature, or a ``timestamp`` more
than :data:`MAX_SKEW` seconds from chatd's clock (a replayed request), is answered
HTTP 403 and ignored. Events handled: ``wxa_media_check`` (the verdict of
``mediaCheckAsync``: ``trace_id``, ``result {suggest, label}``), handed to
:meth:`chatd.contentcheck.ContentChecker.media_verdict` (which ignores, with a
warning, a trace id it does not know: unknown, expired, or a verdict handled
already); others are answered ``success`` and ignored. An XML body with a
``<!DOCTYPE`` (entities) is not parsed.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from xml.etree import ElementTree

from twisted.internet import defer
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

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
        event = parse_event(request.content.read(MAX_EVENT_BODY + 1))
        if event.get("Event") != "wxa_media_check":
            return b"success"
        result = event.get("result") if isinstance(event.get("result"), dict) else {}
        d = defer.maybeDeferred(
            self.content.media_verdict,
            str(event.get("trace_id", "")),
            result.get("suggest"),
            result.get("label"),
        )

        def done(_):
            if not request._disconnected:
                request.write(b"success")
                request.finish()

        def failed(failure):
            self.log.failure("handling a media check verdict failed", failure)
            if not request._disconnected:
                request.setResponseCode(500)
                request.write(b"error")
                request.finish()

        d.addCallbacks(done, failed)
        return NOT_DONE_YET


def _xml_value(element):
    children = list(element)
    if not children:
        return (element.text or "").strip()
    return {child.tag: _xml_value(child) for child in children}


def parse_event(raw: bytes) -> dict:
    """A message push body as a dict: JSON, or WeChat's XML (``<xml><Event>…``; nested
    elements become dicts, text stays a string); ``{}`` for anything else."""
    text = raw.lstrip()
    if text.startswith(b"<"):
        if b"<!DOCTYPE" in text.upper() or b"<!ENTITY" in text.upper():
            return {}
        try:
            root = ElementTree.fromstring(text)
        except ElementTree.ParseError:
            return {}
        event = _xml_value(root)
        return event if isinstance(event, dict) else {}
    try:
        event = json.loads(raw)
    except (ValueError, RecursionError):
        return {}
    return event if isinstance(event, dict) else {}


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
