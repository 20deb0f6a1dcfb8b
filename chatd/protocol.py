"""The autobahn protocol: one instance per WebSocket connection.

It is the thin adapter between autobahn's callbacks and :class:`chatd.chat.Chat`
(the WsServer -> Chat step of the tutorial's Ratchet stack): it chooses the
mode from the offered subprotocol during the handshake, then hands every
frame to the chat logic.
"""

from __future__ import annotations

import secrets
import time

from autobahn.twisted.websocket import WebSocketServerProtocol
from autobahn.websocket.types import ConnectionDeny
from twisted.internet import tcp
from twisted.internet.defer import Deferred
from zope.interface import implementer

from chatd.auth import bearer_token
from chatd.chat import RELAY, SLOW_CONSUMER, V1
from chatd.gate import Refused
from chatd.interfaces import IChatClient

_OPEN = WebSocketServerProtocol.STATE_OPEN

#: close code when the connection's token expires
TOKEN_EXPIRED = 4401
#: close code for a client that sent nothing for --idle-timeout seconds
IDLE = 4408


#: autobahn attributes used only while the opening handshake is processed
_HANDSHAKE_ONLY = (
    "http_request_data",
    "http_response_data",
    "http_headers",
    "http_status_line",
    "http_request_uri",
    "http_request_path",
    "http_request_params",
    "http_request_host",
    "_wskey",
    "websocket_extensions",
)


#: autobahn per-connection state that is None/False/0 for an open, idle connection.
#: They become class attributes of ChatProtocol; an instance keeps its own value
#: only once autobahn sets another one (reads fall back to the class).
_AUTOBAHN_DEFAULTS = {
    **dict.fromkeys(
        (
            "_perMessageCompress",
            "autoPingPending",
            "autoPingPendingSent",
            "autoPingTimeoutCall",
            "closeHandshakeTimeoutCall",
            "current_frame",
            "localCloseCode",
            "localCloseReason",
            "openHandshakeTimeoutCall",
            "remoteCloseCode",
            "remoteCloseReason",
            "trackedTimings",
            "wasNotCleanReason",
            "websocket_protocol_in_use",
        ),
        None,
    ),
    **dict.fromkeys(
        (
            "closedByMe",
            "droppedByMe",
            "failedByMe",
            "inside_message",
            "triggered",
            "wasClean",
            "wasCloseHandshakeTimeout",
            "wasMaxFramePayloadSizeExceeded",
            "wasMaxMessagePayloadSizeExceeded",
            "wasOpenHandshakeTimeout",
            "wasServerConnectionDropTimeout",
            "wasServingFlashSocketPolicyFile",
        ),
        False,
    ),
    "autoPingPendingSeq": 0,
    "send_state": 0,
}


def _peer_host(peer: str) -> str:
    """The host part of an autobahn peer string (``tcp:1.2.3.4:5678`` -> ``1.2.3.4``)."""
    kind, _, rest = peer.partition(":")
    if kind in ("tcp", "tcp4", "tcp6"):
        return rest.rpartition(":")[0] or rest
    return kind


class _WriteWatch:
    """A streaming producer on the transport: it tells the connection when the
    transport's write buffer is full (the peer stopped reading) and when it
    drained again, so the fan-out can bound what it queues for that peer."""

    __slots__ = ("conn",)

    def __init__(self, conn):
        self.conn = conn

    def pauseProducing(self):
        conn = self.conn
        conn.paused = True
        conn.go_slow()

    def resumeProducing(self):
        conn = self.conn
        conn.paused = False
        conn.backlog = 0
        if conn.state == _OPEN:
            conn.deliver_frame = conn._writer()
        waiters = conn._drain_waiters
        if waiters:
            conn._drain_waiters = None
            for d in waiters:
                if not d.called:  # (cancelled ones are)
                    d.callback(None)

    def stopProducing(self):
        pass


@implementer(IChatClient)
class ChatProtocol(WebSocketServerProtocol):
    """A relay or chatd.v1 connection."""

    mode = None
    user = None
    name = None
    session = None
    _requested_name = None
    _resume = None
    _opened = False
    _admitted = False
    _ip = None
    _expiry = None
    #: the verified token's :class:`chatd.auth.Identity`, None for anonymous
    identity = None
    #: True while the transport's write buffer is full (the peer is not reading)
    paused = False
    #: bytes written while paused
    backlog = 0
    #: reactor time of the last frame from the client
    last_seen = 0.0
    #: frames queued this reactor turn (see queue)
    _queued = None
    #: the socket's descriptor while deliver_frame is send_direct and Twisted has
    #: nothing buffered for it ("armed", see arm), else -1: the C fan-out loop
    #: (chatd._fanout) sends only to connections with one
    _fd = -1
    #: Deferreds of when_drained callers, fired when the write buffer drained
    _drain_waiters = None

    def onConnect(self, request):
        """Admit or refuse the handshake, and pick the mode.

        The gate checks the Origin, the token (``?token=`` or ``Authorization:
        Bearer``) and the connection caps, refusing with HTTP 401/403/429. No
        subprotocol is relay mode, ``chatd.v1`` is JSON; others are refused.
        """
        gate = self.factory.gate
        headers = request.headers
        tokens = request.params.get("token")
        token = tokens[0] if tokens else bearer_token(headers.get("authorization"))
        self._ip = gate.client_ip(_peer_host(request.peer), headers.get("x-forwarded-for"))
        try:
            self.identity = gate.admit(self._ip, headers.get("origin"), token)
        except Refused as e:
            raise ConnectionDeny(e.status, e.reason) from None
        self._admitted = True
        try:
            return self._choose_mode(request)
        except ConnectionDeny:
            self._release()
            raise

    def _release(self):
        if self._admitted:
            self._admitted = False
            self.factory.gate.release(self._ip, self.identity)

    def _choose_mode(self, request):
        if not request.protocols:
            self.mode = RELAY
            chosen = None
        elif V1 in request.protocols:
            self.mode = V1
            chosen = V1
        else:
            raise ConnectionDeny(
                ConnectionDeny.BAD_REQUEST, "unsupported subprotocol: offer chatd.v1 or none"
            )
        names = request.params.get("name")
        self._requested_name = names[0] if names else None
        resumes = request.params.get("resume")
        self._resume = resumes[0] if resumes else None
        self.session = secrets.token_hex(8)
        return chosen

    def _compact(self) -> None:
        """Forget what only the opening handshake needed, leave default-valued state to
        the class (``_AUTOBAHN_DEFAULTS``) and repack the instance dict: that was most
        of an idle connection's memory."""
        d = self.__dict__
        for name in _HANDSHAKE_ONLY:
            d.pop(name, None)
        if hasattr(type(self), "trafficStats"):
            del d["trafficStats"]  # count into the factory's shared counters
        for name, default in _AUTOBAHN_DEFAULTS.items():
            if name in d and d[name] is default:
                del d[name]
        # autobahn's send queue serves chopped or synchronous sends, which chatd
        # never asks for; an empty tuple answers its len() checks
        d["send_queue"] = ()
        self.__dict__ = dict(d)

    def onOpen(self):
        self._compact()
        self._opened = True
        self.last_seen = self.factory.reactor.seconds()
        transport = self.transport
        # twisted.web's HTTPChannel is still the transport's producer after the
        # WebSocket takeover; watch the write buffer ourselves instead
        try:
            transport.unregisterProducer()
        except Exception:
            pass
        transport.registerProducer(_WriteWatch(self), True)
        #: what the fan-out calls with ready frame bytes: a direct socket send (or
        #: the transport's write) while the peer is open and reading,
        #: write_slowly otherwise
        self.deliver_frame = self._writer()
        self.factory.track(self)
        self.factory.chat.open(self, self._requested_name, self.identity, self._resume)
        exp = self.identity.exp if self.identity is not None else None
        if exp is not None and self.state == _OPEN:
            delay = max(0.0, exp - time.time())
            self._expiry = self.factory.reactor.callLater(delay, self._token_expired)

    def _token_expired(self):
        self._expiry = None
        self.close(TOKEN_EXPIRED, "token expired")

    def onMessage(self, payload, isBinary):
        if self.state != _OPEN:
            return  # closing (e.g. closed for flooding): ignore what was still buffered
        self.last_seen = self.factory.reactor.seconds()
        if self.mode == RELAY:
            self.factory.chat.relay(self, payload, isBinary)
        else:
            self.factory.chat.receive(self, payload, isBinary)

    def connectionLost(self, reason):
        # Twisted has closed the socket: its descriptor number may be reused by the
        # next accept, so the C loop must never see it again (onClose, which
        # autobahn calls from here, also does this; this does not depend on it)
        self._fd = -1
        super().connectionLost(reason)

    def onClose(self, wasClean, code, reason):
        self.go_slow()
        self._release()
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        if self._opened:
            self._opened = False
            self.factory.untrack(self)
            self.factory.chat.close(self)

    # IChatClient

    def send(self, payload: bytes) -> None:
        """Send one text frame holding *payload* (dropped once the connection is closing).

        It goes behind frames the fan-out queued for this connection this turn.
        """
        if self.state == _OPEN:
            frame = self.factory.prepareMessage(payload, False).payloadHybi
            if self._queued is None:
                self.deliver_frame(frame)
            else:
                self.queue(frame)

    def when_drained(self) -> Deferred | None:
        """None while the transport takes more (its write buffer is below Twisted's
        high-water mark: the peer reads); else a Deferred fired once it has drained.

        The join replay reads its next page only then (chatd.replay)."""
        if not self.paused:
            return None
        d = Deferred()
        if self._drain_waiters is None:
            self._drain_waiters = []
        self._drain_waiters.append(d)
        return d

    def queue(self, frame: bytes) -> None:
        """Queue a ready frame; it is written with the rest at the end of the reactor turn.

        The first frame of a turn creates the queue and tells the factory; after
        that ``queue`` is the queue's own ``append`` (the fan-out's hot path).
        """
        self._queued = [frame]
        self.queue = self._queued.append
        self.factory.mark_dirty(self)

    def take_queue(self) -> list | None:
        """The queued frames (None if none); the next frame starts a new queue."""
        queued = self._queued
        if queued is not None:
            self._queued = None
            del self.queue  # back to the method (see queue)
        return queued

    def flush_queue(self) -> None:
        """Write this connection's queued frames now, as one write."""
        queued = self.take_queue()
        if queued is not None:
            self.deliver_frame(queued[0] if len(queued) == 1 else b"".join(queued))

    def _writer(self):
        """The fastest correct way to hand bytes to this connection's socket.

        For a plain TCP or UNIX transport, :meth:`send_direct` (one ``send``
        syscall, no reactor round trip while the socket keeps up); for anything
        else (TLS, a transport without the attributes it relies on), the
        transport's own ``write``.
        """
        t = self.transport
        # exactly Twisted's own TCP/UNIX connection, not TLS: a TLS transport
        # (e.g. BufferingTLSTransport) forwards unknown attributes, ``socket``
        # included, to the raw connection beneath it, and bytes sent there
        # would skip the encryption
        if (
            isinstance(t, tcp.Connection)
            and t.TLS is False
            and all(hasattr(t, a) for a in ("socket", "dataBuffer", "_tempDataLen"))
        ):
            self._sock_send = t.socket.send
            self.arm()
            return self.send_direct
        return t.write  # (_fd stays -1: the C loop leaves this connection to Python)

    # The C fan-out loop (chatd._fanout) sends straight to ``_fd`` without looking
    # at Twisted's write buffer, so ``_fd`` is a descriptor only while that buffer
    # is empty: every path that hands bytes to transport.write on an armed
    # connection disarms it (sendData, send_direct's and the factory's leftovers),
    # and the factory re-arms it once Twisted has written everything.

    def arm(self) -> bool:
        """Let the C loop send to this connection if Twisted has nothing buffered
        for it; else have the factory try again at the next fan-out. True if armed."""
        t = self.transport
        if t.dataBuffer or t._tempDataLen:
            self._fd = -1
            self.factory.rearm_later(self)
            return False
        self._fd = t.socket.fileno()
        return True

    def disarm(self) -> None:
        """Bytes may now be buffered in the transport: the C loop must leave this
        connection to Python until :meth:`arm` sees the buffer empty."""
        if self._fd >= 0:
            self._fd = -1
            self.factory.rearm_later(self)

    def sendData(self, data, sync=False, chopsize=None):
        # autobahn's own frames (pongs, pings, close) go through the transport
        super().sendData(data, sync, chopsize)
        self.disarm()

    def go_slow(self) -> None:
        """From now on frames go through :meth:`write_slowly` (closing, or the peer
        stopped reading), never straight to the socket."""
        self.deliver_frame = self.write_slowly
        self._fd = -1
        self.factory.forget_rearm(self)

    def send_direct(self, data: bytes) -> None:
        """Send *data* on the socket now if nothing is buffered ahead of it.

        Twisted's ``transport.write`` buffers and waits for the reactor to report
        the socket writable (two ``epoll_ctl`` calls and a poll round per write);
        with an empty buffer the bytes can go at once. Whatever the kernel does
        not take goes to ``transport.write``, which then keeps the order and
        watches the socket as usual (and tells the slow-consumer watch when the
        peer stops reading).
        """
        t = self.transport
        # (closing or closed connections never get here: their deliver_frame is
        # write_slowly from sendCloseFrame / dropConnection / onClose on)
        if t.dataBuffer or t._tempDataLen:
            t.write(data)
            return
        try:
            sent = self._sock_send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            self.write_rest(data, 0)  # let Twisted see the error on its own path
            return
        if sent < len(data):
            self.write_rest(data, sent)

    def write_rest(self, data: bytes, sent: int) -> None:
        """Hand what a direct send left of *data* (all but its first *sent* bytes)
        to ``transport.write``, which keeps the order; the C loop leaves this
        connection alone until that has been written."""
        self.transport.write(data[sent:] if sent else data)
        self.disarm()

    def write_slowly(self, frame: bytes) -> None:
        """Write *frame* for a peer that is not plainly writable: nothing once closing,
        and with backlog accounting while the peer is not reading."""
        if self.state == _OPEN and not (self.paused and self.backlogged(len(frame))):
            self.transport.write(frame)

    def sendCloseFrame(self, *args, **kwargs):
        # frames queued before the close go first; no data frame may follow it
        self.flush_queue()
        self.go_slow()
        return super().sendCloseFrame(*args, **kwargs)

    def dropConnection(self, *args, **kwargs):
        self.go_slow()
        return super().dropConnection(*args, **kwargs)

    def backlogged(self, size: int) -> bool:
        """Account *size* more bytes queued for a peer that stopped reading.

        Once the backlog passes ``max_queue_bytes`` the connection is dropped
        (recorded as close code 4008, slow consumer) and True is returned: the
        caller must not write. The peer cannot read a close frame, so none is
        sent: its socket is aborted and its memory freed at once.
        """
        self.backlog += size
        if self.backlog <= self.factory.settings.max_queue_bytes:
            return False
        if self.state == _OPEN:
            self.state = self.STATE_CLOSING
            self.factory.chat.stats.closes[SLOW_CONSUMER] += 1
            self.log.warn(
                "dropping slow consumer {peer} ({user}): {backlog} bytes queued",
                peer=self.peer,
                user=self.user,
                backlog=self.backlog,
            )
            self.transport.abortConnection()
        return True

    def close(self, code, reason):
        """Start the closing handshake with *code* (any valid code, 1001 included);
        every close the server starts is counted here, by code."""
        if self.state == _OPEN:
            self.factory.chat.stats.closes[code] += 1
            # sendClose() only takes 1000 and 3000-4999; the server may also
            # close with protocol codes such as 1001 (going away) or 1008
            self.sendCloseFrame(code=code, reasonUtf8=reason.encode("utf-8")[:123], isReply=False)


for _name, _default in _AUTOBAHN_DEFAULTS.items():
    setattr(ChatProtocol, _name, _default)
