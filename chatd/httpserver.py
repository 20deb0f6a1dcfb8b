"""chatd's HTTP/1.1 server: twisted.web's channel, request and Site with chatd's limits.

twisted.web reads a whole request (headers and body) before any resource sees
it, and its only timeout is an idle timeout that every byte resets. This
module enforces chatd's limits while the request arrives (docs/api.md,
"Limits"; docs/security.md):

* **One deadline per request.** From accept (or the end of the previous
  response on a keep-alive connection) a complete request -- request line,
  headers and body -- must arrive within ``--handshake-timeout`` seconds, however
  slowly it trickles in; otherwise the connection is dropped (reset) without an
  answer, or closed cleanly if not one byte of the request came.
  For a WebSocket the request is its upgrade request, answered with 101 at once.
* **Unfinished requests count against ``--max-connections-per-ip``**, like
  WebSocket connections: a connection is counted from accept until its request
  is complete (an upgraded WebSocket is then counted by the gate,
  :mod:`chatd.gate`). Beyond the cap the connection is answered 429 at once.
  Connections from a ``--trusted-proxy`` are not counted (the proxy's clients
  are counted once their requests name them in ``X-Forwarded-For``).
* **Head limits.** A request line over :data:`MAX_REQUEST_LINE` bytes is
  answered 414, a request head (line plus headers) over :data:`MAX_HEAD` bytes
  431.
* **Body limits before and while reading.** :class:`BodyRules` is a table of
  path prefixes, each with a largest body and an optional *precheck* that sees
  the method and headers before any body byte is read (the API key of
  ``/api/``). A refused precheck (401, 403) or a ``Content-Length`` over the
  limit (413) is answered as soon as the headers are in; a chunked body is
  counted as it arrives and answered 413 the moment it passes the limit. The
  body is never read further: after the answer chatd reads and discards at
  most :data:`LINGER_BYTES` for :data:`LINGER_SECONDS` (so that the client
  sees the answer rather than a reset) and then drops the connection.

Answers given here are ``Connection: close`` JSON bodies in the format of the
rule's resource (see :class:`BodyRule`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.web import http
from twisted.web.server import Request, Site

#: the largest request line (method, URL, version) in bytes; longer: 414
MAX_REQUEST_LINE = 16384
#: the largest request head (request line plus every header line) in bytes; more: 431
MAX_HEAD = 16384
#: the largest request body on paths without a rule of their own (docs/api.md): 1 MiB
MAX_BODY = 1 << 20
#: after a refusal: bytes read and discarded before the connection is dropped
LINGER_BYTES = 1 << 16
#: after a refusal: seconds the client has to read the answer before the connection is dropped
LINGER_SECONDS = 2.0
#: "no saved idle timeout" (None is a valid timeout: none)
_NOT_SET = object()
#: reason phrases twisted.web does not know
_PHRASES = {429: b"Too Many Requests", 431: b"Request Header Fields Too Large"}


class Refusal(Exception):
    """Answer the request with HTTP *status*, error *code* and *message* and close."""

    def __init__(self, status: int, code: str, message: str, headers=()):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        #: extra response headers: ``(name, value)`` bytes pairs
        self.headers = tuple(headers)


def phrase(status: int) -> bytes:
    """The reason phrase of HTTP *status* (twisted.web lacks 429 and 431)."""
    return _PHRASES.get(status) or http.RESPONSES.get(status, b"Error")


def flat_error(code: str, message: str) -> dict:
    """The HTTP API's error body: ``{"error": code, "message": message}`` (docs/api.md)."""
    return {"error": code, "message": message}


@dataclass(frozen=True)
class BodyRule:
    """The limits of the requests whose path starts with *segments*.

    *max_body* is the largest body in bytes. *precheck*, if given, is called
    with ``(method, headers)`` (bytes, :class:`twisted.web.http_headers.Headers`)
    once the headers are in and before any body byte is read; it raises
    :class:`Refusal` to answer at once. *error_body* formats the JSON error
    body (``code, message -> dict``) the way the path's resource does.
    *parse_form* False keeps twisted.web from parsing a ``multipart/form-data``
    body into ``request.args`` in memory (the resource streams it from
    ``request.content``, a temporary file). *body_timeout*, if given, replaces
    the request deadline once the headers are in and the precheck passed: the
    seconds the body may take (large uploads). *content*, if given, is called
    with ``(request, method, length)`` once the headers passed and returns the file-like
    object the body is written to as it arrives (``request.content``; twisted.web
    calls its ``write``, ``tell``, ``seek`` and ``close``): the resource's own
    incremental parser instead of a spooled temporary file.
    """

    segments: tuple[bytes, ...]
    max_body: int
    precheck: Callable | None = None
    error_body: Callable[[str, str], dict] = flat_error
    parse_form: bool = True
    body_timeout: float | None = None
    content: Callable | None = None


class BodyRules:
    """A table of :class:`BodyRule` by path prefix; the longest matching prefix wins.

    Paths are matched segment by segment after percent-decoding, exactly as
    twisted.web routes them to resources (``/%61pi/x`` is ``/api/x``).
    """

    def __init__(self, default_max_body: int = MAX_BODY):
        self.default = BodyRule((), default_max_body)
        self._rules: dict[tuple[bytes, ...], BodyRule] = {}

    def add(
        self,
        path: bytes,
        max_body: int,
        precheck=None,
        error_body=flat_error,
        parse_form=True,
        body_timeout=None,
        content=None,
    ) -> None:
        """Give requests under *path* (``b"/api/"``) their own limit and precheck."""
        segments = tuple(s for s in path.split(b"/") if s)
        self._rules[segments] = BodyRule(
            segments, max_body, precheck, error_body, parse_form, body_timeout, content
        )

    def rule_for(self, target: bytes) -> BodyRule:
        """The rule for a request target (``/path?query``)."""
        path = target.split(b"?", 1)[0]
        segments = tuple(unquote_to_bytes(s) for s in path.split(b"/")[1:])
        for n in range(len(segments), 0, -1):
            rule = self._rules.get(segments[:n])
            if rule is not None:
                return rule
        return self.default


def _ip(address) -> str | None:
    if isinstance(address, IPv4Address | IPv6Address):
        return address.host
    return None


class ChatChannel(http.HTTPChannel):
    """An HTTP/1.1 connection with chatd's deadline, per-IP count and limits."""

    MAX_LENGTH = MAX_REQUEST_LINE
    totalHeadersSize = MAX_HEAD

    #: the client address counted in the gate's per-IP counter while a request is unfinished
    _counted = None
    _deadline = None
    _linger = None
    #: set once the connection was answered by a refusal: nothing more is processed
    _refused = False
    _head_bytes = 0
    _head_lines = 0
    #: bytes of the awaited request have arrived
    _begun = False
    _method = b""
    _target = b""
    _discarded = 0
    #: the idle timeout before a rule's ``body_timeout`` replaced it
    _idle_before_body = _NOT_SET

    # the deadline and the per-IP count of unfinished requests

    def connectionMade(self):
        super().connectionMade()
        self._await_request()

    def _await_request(self):
        """A request may begin: count it against the address and start its deadline."""
        self._head_bytes = self._head_lines = 0
        self._begun = False
        gate = self.site.gate
        ip = _ip(self.transport.getPeer())
        if gate is not None and ip is not None and ip not in gate.trusted_proxies:
            if not gate.per_ip.acquire(ip):
                refusal = Refusal(
                    429, "too_many_connections", "too many connections from this address"
                )
                self._refuse(refusal, flat_error, linger=False)
                return
            self._counted = ip
        timeout = self.site.request_deadline()
        if timeout:
            self._deadline = self.callLater(timeout, self._deadline_passed)

    def _request_complete(self):
        """The request is in (or the connection is gone): uncount it, stop its deadline."""
        self._stop_deadline()
        if self._counted is not None:
            ip, self._counted = self._counted, None
            self.site.gate.per_ip.release(ip)

    def _stop_deadline(self):
        if self._deadline is not None:
            if self._deadline.active():
                self._deadline.cancel()
            self._deadline = None

    def _deadline_passed(self):
        self._deadline = None
        self._request_complete()
        if self._begun:
            self.transport.abortConnection()
        else:  # an idle keep-alive connection (or one that never sent a byte): a clean close
            self.transport.loseConnection()
            self._linger = self.callLater(LINGER_SECONDS, self.transport.abortConnection)

    def allContentReceived(self):
        if self._refused:
            return
        self._request_complete()
        if self._idle_before_body is not _NOT_SET:
            idle, self._idle_before_body = self._idle_before_body, _NOT_SET
            self.setTimeout(idle)  # twisted.web saves and restores this one
        super().allContentReceived()

    def requestDone(self, request):
        # before super(): it replays pipelined data, the next request's lines
        if self.persistent and not self._refused:
            self._await_request()
        super().requestDone(request)

    def connectionLost(self, reason):
        self._request_complete()
        if self._linger is not None and self._linger.active():
            self._linger.cancel()
        super().connectionLost(reason)

    # the request head

    def dataReceived(self, data):
        if self._refused:
            self._discard(data)
            return
        self._begun = True
        super().dataReceived(data)

    def rawDataReceived(self, data):
        if self._refused:
            return
        super().rawDataReceived(data)

    def lineReceived(self, line):
        if self._refused:
            return
        if self._head_lines == 0:
            if not line:  # a stray empty line before a request (twisted.web skips one)
                return super().lineReceived(line)
            parts = line.split(b" ")
            self._method, self._target = (parts[0], parts[1]) if len(parts) == 3 else (b"", b"")
        self._head_lines += 1
        self._head_bytes += len(line) + 2
        if self._head_bytes > self.totalHeadersSize:
            return self._refuse_head(request_line=False)
        return super().lineReceived(line)

    def lineLengthExceeded(self, line):
        if self._refused:
            return
        self._refuse_head(request_line=self._head_lines == 0)

    def _refuse_head(self, request_line: bool):
        if request_line:
            refusal = Refusal(
                414, "uri_too_long", f"the request line is over {MAX_REQUEST_LINE} bytes"
            )
        else:
            refusal = Refusal(
                431, "headers_too_large", f"the request line and headers are over {MAX_HEAD} bytes"
            )
        self._refuse(refusal, flat_error)

    def allHeadersReceived(self):
        request = self.requests[-1]
        rule = self.site.body_rules.rule_for(self._target)
        request.body_rule = rule
        try:
            if rule.precheck is not None:
                rule.precheck(self._method, request.requestHeaders)
            if self.length is not None and self.length > rule.max_body:
                raise Refusal(413, "too_large", _too_large(rule.max_body))
        except Refusal as refusal:
            self._refuse(refusal, rule.error_body)
            return
        if not rule.parse_form:
            request._parsePOSTFormSubmission = False  # twisted.web's own switch
        if rule.body_timeout:
            # the body gets its own deadline, and the idle timeout (twisted.web's,
            # reset by every byte) the same period until the body is in
            if self._deadline is not None:
                self._stop_deadline()
                self._deadline = self.callLater(rule.body_timeout, self._deadline_passed)
            self._idle_before_body = self.setTimeout(rule.body_timeout)
        super().allHeadersReceived()

    # refusing

    def _refuse(self, refusal: Refusal, error_body, linger=True) -> None:
        """Answer *refusal* now, read nothing more of the request, then close.

        With *linger* the client gets :data:`LINGER_SECONDS` to read the answer
        (the connection stays counted against its address until it is gone);
        without, the connection is closed as soon as the answer is written.
        """
        if self._refused:
            return
        self._refused = True
        self._stop_deadline()
        body = json.dumps(error_body(refusal.code, refusal.message)).encode()
        head = [
            b"HTTP/1.1 %d %s" % (refusal.status, phrase(refusal.status)),
            b"Content-Type: application/json",
            b"Cache-Control: no-store",
            b"Content-Length: %d" % len(body),
            b"Connection: close",
            *(name + b": " + value for name, value in refusal.headers),
        ]
        self.transport.write(b"\r\n".join(head) + b"\r\n\r\n" + body)
        if not linger:
            self.transport.loseConnection()
            return
        # stop reading the body but let the client read the answer: close our
        # side, discard a little of what still comes, then drop the connection
        lose_write = getattr(self.transport, "loseWriteConnection", None)
        if lose_write is not None:
            lose_write()
        else:
            self.transport.loseConnection()
        self._linger = self.callLater(LINGER_SECONDS, self.transport.abortConnection)

    def _discard(self, data):
        self._discarded += len(data)
        if self._discarded > LINGER_BYTES:
            self.transport.abortConnection()


def _too_large(limit: int) -> str:
    if limit % (1 << 20) == 0:
        size = f"{limit >> 20} MiB"
    elif limit % 1024 == 0:
        size = f"{limit >> 10} KiB"
    else:
        size = f"{limit} bytes"
    return f"the request body is over {size}"


class ChatRequest(Request):
    """A request whose body is counted against its :class:`BodyRule` as it arrives."""

    body_rule: BodyRule | None = None
    _body_bytes = 0

    def gotLength(self, length):
        rule = self.body_rule
        if rule is not None and rule.content is not None:
            self.content = rule.content(self, self.channel._method, length)
        else:
            super().gotLength(length)

    def handleContentChunk(self, data):
        rule = self.body_rule
        if self.channel is None or self.channel._refused:
            return
        self._body_bytes += len(data)
        if rule is not None and self._body_bytes > rule.max_body:
            self.channel._refuse(
                Refusal(413, "too_large", _too_large(rule.max_body)), rule.error_body
            )
            return
        super().handleContentChunk(data)


class ChatSite(Site):
    """The Site of :class:`ChatChannel` and :class:`ChatRequest`.

    *gate* (a :class:`chatd.gate.Gate`, or None) counts unfinished requests per
    IP; *deadline* is a callable giving the seconds a request may take to
    arrive (read per request, so a reload applies at once); *body_rules* is
    the :class:`BodyRules` table.
    """

    requestFactory = ChatRequest

    def __init__(self, resource, gate=None, deadline=None, body_rules=None, **kwargs):
        super().__init__(resource, **kwargs)
        self.gate = gate
        self.request_deadline = deadline or (lambda: self.timeOut)
        self.body_rules = body_rules if body_rules is not None else BodyRules()

    def protocol(self):
        # HTTP/1.1 only: twisted.web's default wrapper would switch to h2 after
        # an ALPN negotiation, and h2 requests would bypass these limits
        return ChatChannel()

    def acceptableProtocols(self):
        """Offer only HTTP/1.1 in a TLS ALPN negotiation (even when ``h2`` is installed)."""
        return [b"http/1.1"]
