"""A real WebSocket test client on autobahn, driven from pytest-twisted tests.

Each :class:`Client` is one real TCP connection doing a real WebSocket
handshake with the server under test. Received frames are queued; the
``recv*``/``expect`` helpers return Deferreds with a timeout so a missing frame
fails the test instead of hanging it.

Tests wait for conditions under a deadline, never for a fixed time: :meth:`Client.expect`
waits for a frame, :func:`wait_for` for any condition (polled in the reactor), and
:meth:`Client.barrier` / :meth:`Client.quiet` prove that *nothing* was sent with an
ordering barrier (a ``ping`` and its ``pong``) instead of a sleep. :meth:`Client.silent`
is the one bounded negative wait, for the few cases no barrier covers (e.g. an event
another node may still publish through Redis).
"""

from __future__ import annotations

import itertools
import json
from urllib.parse import urlencode

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet import defer, reactor

TIMEOUT = 5.0
#: ids of the pings :meth:`Client.barrier` sends
_barrier_ids = itertools.count(1)


class _Protocol(WebSocketClientProtocol):
    def onConnect(self, response):
        self.client.protocol_chosen = response.protocol
        self.client.response_headers = response.headers

    def onOpen(self):
        self.client.proto = self
        self.client._opened.callback(self.client)

    def onMessage(self, payload, isBinary):
        self.client.frames.put((payload, isBinary))

    def onClose(self, wasClean, code, reason):
        self.client.close_code = code
        self.client.close_reason = reason
        if not self.client._opened.called:
            self.client._opened.errback(ConnectionError(f"handshake failed: {reason}"))
        self.client._closed.callback((code, reason))


class Client:
    """One WebSocket connection to the server under test."""

    def __init__(self):
        self.frames = defer.DeferredQueue()
        self._opened = defer.Deferred()
        self._closed = defer.Deferred()
        self.proto = None
        self.close_code = None
        self.close_reason = None
        self.protocol_chosen = None
        self.welcome = None

    @classmethod
    def connect(cls, port, path="/", protocols=None, headers=None, **params):
        """Open a connection to 127.0.0.1:*port*; fires with the open Client."""
        client = cls()
        query = ("?" + urlencode(params)) if params else ""
        url = f"ws://127.0.0.1:{port}{path}{query}"
        factory = WebSocketClientFactory(url, protocols=protocols or [], headers=headers or {})
        factory.setProtocolOptions(autoPingInterval=0)

        def build(*a):
            proto = _Protocol()
            proto.factory = factory
            proto.client = client
            return proto

        factory.buildProtocol = build
        reactor.connectTCP("127.0.0.1", port, factory)
        return client._opened.addTimeout(TIMEOUT, reactor)

    @classmethod
    @defer.inlineCallbacks
    def v1(cls, port, name=None, path="/ws", **params):
        """Open a chatd.v1 connection and read its ``welcome``."""
        if name is not None:
            params["name"] = name
        client = yield cls.connect(port, path, protocols=["chatd.v1"], **params)
        client.welcome = yield client.expect("welcome")
        return client

    # sending

    def send_raw(self, payload: bytes | str, binary=False):
        """Send one frame as it is."""
        if isinstance(payload, str):
            payload = payload.encode()
        self.proto.sendMessage(payload, binary)

    def send(self, **obj):
        """Send one chatd.v1 JSON frame."""
        self.proto.sendMessage(json.dumps(obj).encode(), False)

    # receiving

    def recv_raw(self, timeout=TIMEOUT):
        """Fires with the next ``(payload, is_binary)``."""
        return self.frames.get().addTimeout(timeout, reactor)

    @defer.inlineCallbacks
    def recv(self, timeout=TIMEOUT):
        """Fires with the next frame parsed as JSON."""
        payload, binary = yield self.recv_raw(timeout)
        assert not binary, f"expected a text frame, got binary {payload!r}"
        return json.loads(payload)

    @defer.inlineCallbacks
    def expect(self, kind, timeout=TIMEOUT, **fields):
        """The next frame must be of type *kind* (and have *fields*); fires with it."""
        frame = yield self.recv(timeout)
        assert frame.get("type") == kind, f"expected {kind}, got {frame}"
        for key, value in fields.items():
            assert frame.get(key) == value, f"{key}: expected {value!r} in {frame}"
        return frame

    @defer.inlineCallbacks
    def silent(self, wait=0.3):
        """Assert nothing arrives within *wait* seconds: a bounded negative wait.

        Prefer :meth:`quiet` (an ordering barrier, no sleep) or a positive marker (a
        later frame that must come next); this is for what no barrier covers.
        """
        yield deferLater(wait)
        assert self.frames.pending == [], f"unexpected frames: {self.frames.pending}"

    @defer.inlineCallbacks
    def barrier(self, timeout=TIMEOUT):
        """An ordering barrier (chatd.v1): send ``ping`` with a fresh id and read up to
        its ``pong``; fires with the frames read before it (parsed).

        chatd writes each connection's frames in order, its own replies and fan-out
        alike, so once the pong is here every frame chatd sent this connection before
        it read the ping has arrived.
        """
        ref = f"barrier-{next(_barrier_ids)}"
        self.send(type="ping", id=ref)
        before = []
        while True:
            frame = yield self.recv(timeout)
            if frame.get("type") == "pong" and frame.get("id") == ref:
                return before
            # (a rate-limited ping is answered with an error instead: say so, at once)
            assert frame.get("ref") != ref, f"the barrier ping was refused: {frame}"
            before.append(frame)

    @defer.inlineCallbacks
    def quiet(self, timeout=TIMEOUT):
        """Assert chatd has sent this connection nothing that was not read yet, proven
        by :meth:`barrier` (no sleep). Whatever must not reach this connection has to
        have been handled by chatd first: wait for another effect of it (an ``ack``, a
        frame at another client) before calling this."""
        before = yield self.barrier(timeout)
        assert before == [], f"unexpected frames: {before}"

    @defer.inlineCallbacks
    def join(self, room, **extra):
        """Join *room* and fire with the ``joined`` frame."""
        self.send(type="join", room=room, **extra)
        joined = yield self.expect("joined", room=room)
        return joined

    def close(self, code=1000):
        """Close normally; fires when closed."""
        if self.proto is not None and self.proto.state == self.proto.STATE_OPEN:
            self.proto.sendClose(code)
        return self.closed()

    def closed(self, timeout=TIMEOUT):
        """Fires with ``(code, reason)`` once the connection is closed."""
        return (
            self._closed.addTimeout(timeout, reactor)
            if not self._closed.called
            else (defer.succeed((self.close_code, self.close_reason)))
        )

    def abort(self):
        """Drop the TCP connection without a closing handshake."""
        self.proto.transport.abortConnection()


def deferLater(seconds):
    """A Deferred that fires after *seconds*."""
    from twisted.internet import task

    return task.deferLater(reactor, seconds, lambda: None)


@defer.inlineCallbacks
def wait_for(predicate, timeout=TIMEOUT, interval=0.01, what=None):
    """Fires with *predicate*'s first truthy value, polled in the reactor every
    *interval* seconds; fails with an AssertionError (naming *what*) once *timeout*
    seconds pass without it. The reactor keeps running meanwhile, so servers in the
    test's own reactor make progress. An exception from *predicate* fails at once."""
    deadline = reactor.seconds() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if reactor.seconds() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or predicate}")
        yield deferLater(interval)
