"""``/api/push/subscriptions``: a user's push subscriptions over HTTP (docs/api.md).

For clients that learn what the user accepted outside a chatd.v1 connection (the
mini-program's ``wx.requestSubscribeMessage`` callback may run while no socket is
open). The caller is the user of the ``Authorization: Bearer <token>`` header (a
chatd token, as for ``/api/media``), checked from the headers before any body byte
is read; the body is the ``push_subscribe`` request's fields, checked by the same
rules (:mod:`chatd.wire`), and the answer the ``push_subscriptions`` frame's fields.

====== ===========================  =============================================
GET    /api/push/subscriptions      ``{templates: [{id, count}], rooms, refused: []}``
POST   /api/push/subscriptions      ``{templates?: [{id, count?}], rooms?, notify?}``
                                    -> the same answer after the change
====== ===========================  =============================================

Errors are ``{"error": code, "message": text}``: 401 ``unauthorized`` (no or bad
token), 400 with the wire code (``bad_json``, ``bad_request``, ``bad_room``), 403
``forbidden`` (a room the token does not allow), 503 ``unavailable``.
"""

from __future__ import annotations

import json

from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from chatd import errors, wire
from chatd.auth import AuthError, bearer_identity
from chatd.httpserver import Refusal, flat_error

#: the largest body of a subscription request (10 templates and 100 rooms fit easily)
MAX_PUSH_BODY = 16384
_UNAUTHORIZED = [(b"WWW-Authenticate", b"Bearer")]


class PushSubscriptions(Resource):
    """``GET``/``POST /api/push/subscriptions`` (module docstring)."""

    isLeaf = True
    log = Logger()

    def __init__(self, chat, verifier):
        super().__init__()
        self.chat = chat
        self.verifier = verifier

    def precheck(self, method: bytes, headers) -> None:
        """Refuse a request without a good token before its body is read."""
        values = headers.getRawHeaders(b"authorization")
        try:
            bearer_identity(self.verifier, values[-1] if values else None)
        except AuthError as e:
            raise Refusal(401, "unauthorized", e.reason, _UNAUTHORIZED) from None

    def render_GET(self, request):
        return self._answer(request, None)

    def render_POST(self, request):
        return self._answer(request, request.content.read(MAX_PUSH_BODY + 1))

    def _answer(self, request, body):
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"cache-control", b"no-store")
        try:
            identity = bearer_identity(self.verifier, request.getHeader(b"authorization"))
        except AuthError as e:
            request.setHeader(b"www-authenticate", b"Bearer")
            return _error(request, 401, "unauthorized", e.reason)
        try:
            f = self._fields(body)
            for room in f["rooms"] or ():
                if not identity.may_join(room):
                    raise errors.Forbidden(f"your token does not allow room {room!r}")
        except errors.ChatError as e:
            return _error(request, 403 if e.code == "forbidden" else 400, e.code, e.message)
        templates, rooms = f["templates"] or {}, f["rooms"] or ()
        d = self.chat.push.subscribe(identity.user, templates, rooms, f["notify"])
        d.addCallbacks(lambda answer: _finish(request, 200, answer), self._failed, None, None,
                       (request,))  # fmt: skip
        return NOT_DONE_YET

    def _fields(self, body) -> dict:
        """The request's fields, checked as a ``push_subscribe`` frame is."""
        if body is None:
            return {"templates": None, "rooms": None, "notify": None}
        if len(body) > MAX_PUSH_BODY:
            raise errors.TooLarge(f"the body is over {MAX_PUSH_BODY} bytes")
        try:
            data = json.loads(body or b"{}")
        except (ValueError, RecursionError):
            raise errors.BadJSON("the body is not valid JSON") from None
        if not isinstance(data, dict):
            raise errors.BadJSON("the body must be a JSON object")
        payload = json.dumps({**data, "type": "push_subscribe"}).encode("utf-8")
        return wire.parse(payload, self.chat.settings.max_text_length).fields

    def _failed(self, failure, request):
        self.log.failure("push subscription failed", failure)
        _finish(request, 503, flat_error("unavailable", "the store failed; try again"))


def _error(request, status, code, message) -> bytes:
    request.setResponseCode(status)
    return json.dumps(flat_error(code, message)).encode()


def _finish(request, status, body) -> None:
    if request._disconnected:
        return
    request.setResponseCode(status)
    request.write(json.dumps(body, ensure_ascii=False).encode("utf-8"))
    request.finish()


def push_children(chat, verifier, root: Resource, rules) -> None:
    """Put ``/api/push/subscriptions`` into *root* (and its row into *rules*)."""
    api = root.children.get(b"api")
    if api is None:
        api = Resource()
        root.putChild(b"api", api)
    push = Resource()
    subscriptions = PushSubscriptions(chat, verifier)
    push.putChild(b"subscriptions", subscriptions)
    api.putChild(b"push", push)
    rules.add(b"/api/push/", MAX_PUSH_BODY, subscriptions.precheck)
