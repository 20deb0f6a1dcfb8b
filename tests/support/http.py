"""Real HTTP against chatd's API, its /metrics text, and a webhook receiver."""

from __future__ import annotations

import json
from io import BytesIO

from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import defer, reactor
from twisted.web.client import Agent, FileBodyProducer, readBody
from twisted.web.http_headers import Headers
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

KEY = "s3cret-key"


@defer.inlineCallbacks
def http(method, url, body=None, key=KEY, headers=None):
    """One real HTTP request; fires with ``(status, headers, parsed JSON or raw bytes)``."""
    h = {b"content-type": [b"application/json"]}
    if key is not None:
        h[b"authorization"] = [b"apikey " + key.encode()]
    h.update(headers or {})
    producer = None
    if body is not None:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        producer = FileBodyProducer(BytesIO(raw))
    response = yield Agent(reactor).request(method.encode(), url.encode(), Headers(h), producer)
    data = yield readBody(response)
    ctype = response.headers.getRawHeaders(b"content-type", [b""])[0]
    if ctype.startswith(b"application/json"):
        data = json.loads(data)
    return response.code, response.headers, data


def samples(text: str) -> dict:
    """``{(name, frozenset(labels.items())): value}`` of every sample in *text*."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


class Receiver(Resource):
    """Records every POST; answers the first *fail* of them with HTTP 500.

    With *delay* each answer (200) is sent *delay* seconds after the request
    arrived; :meth:`hold` makes answers wait until :meth:`release`. ``times``
    holds each recorded event's arrival (``reactor.seconds()``).
    """

    isLeaf = True

    def __init__(self, fail=0, delay=0.0):
        super().__init__()
        self.fail = fail
        self.delay = delay
        self.attempts = 0
        self.events = []
        self.times = []
        self.headers = []
        self.arrived = defer.DeferredQueue()
        self._held = None

    def hold(self):
        """Answer nothing until :meth:`release`."""
        self._held = defer.Deferred()

    def release(self):
        """Answer every held request (each after its *delay*)."""
        held, self._held = self._held, None
        held.callback(None)

    def render_POST(self, request):
        self.attempts += 1
        if self.attempts <= self.fail:
            request.setResponseCode(500)
            return b"try later"
        event = json.loads(request.content.read())
        self.events.append(event)
        self.times.append(reactor.seconds())
        self.headers.append(request.getHeader(b"authorization"))
        self.arrived.put(event)
        if not self.delay and self._held is None:
            return b"ok"
        gone = []
        request.notifyFinish().addErrback(gone.append)

        def answer(_=None):
            if not gone:
                request.write(b"ok")
                request.finish()

        def later(_=None):
            reactor.callLater(self.delay, answer)

        if self._held is not None:
            self._held.addCallback(later)
        else:
            later()
        return NOT_DONE_YET
