"""The autobahn protocol: one instance per WebSocket connection.

It is the thin adapter between autobahn's callbacks and :class:`chatd.chat.Chat`
(the WsServer -> Chat step of the tutorial's Ratchet stack): it chooses the
mode from the offered subprotocol during the handshake, then hands every
frame to the chat logic.
"""

from __future__ import annotations

import secrets

from autobahn.twisted.websocket import WebSocketServerProtocol
from autobahn.websocket.types import ConnectionDeny
from zope.interface import implementer

from chatd.chat import RELAY, V1
from chatd.interfaces import IChatClient

_OPEN = WebSocketServerProtocol.STATE_OPEN

#: close code recorded when a peer that stopped reading is dropped
SLOW_CONSUMER = 4008


class _WriteWatch:
    """A streaming producer on the transport: it tells the connection when the
    transport's write buffer is full (the peer stopped reading) and when it
    drained again, so the fan-out can bound what it queues for that peer."""

    __slots__ = ("conn",)

    def __init__(self, conn):
        self.conn = conn

    def pauseProducing(self):
        self.conn.paused = True

    def resumeProducing(self):
        self.conn.paused = False
        self.conn.backlog = 0

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
    _opened = False
    #: True while the transport's write buffer is full (the peer is not reading)
    paused = False
    #: bytes written while paused
    backlog = 0

    def onConnect(self, request):
        """Pick the mode: no subprotocol is relay, ``chatd.v1`` is JSON; refuse others."""
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
        self.session = secrets.token_hex(8)
        return chosen

    def onOpen(self):
        self._opened = True
        transport = self.transport
        # twisted.web's HTTPChannel is still the transport's producer after the
        # WebSocket takeover; watch the write buffer ourselves instead
        try:
            transport.unregisterProducer()
        except Exception:
            pass
        transport.registerProducer(_WriteWatch(self), True)
        self.factory.track(self)
        self.factory.chat.open(self, self._requested_name)

    def onMessage(self, payload, isBinary):
        if self.mode == RELAY:
            self.factory.chat.relay(self, payload, isBinary)
        else:
            self.factory.chat.receive(self, payload, isBinary)

    def onClose(self, wasClean, code, reason):
        if self._opened:
            self._opened = False
            self.factory.untrack(self)
            self.factory.chat.close(self)

    # IChatClient

    def send(self, payload: bytes) -> None:
        """Send one text frame if the connection is open (never raises for closing peers)."""
        if self.state == _OPEN and not (self.paused and self.backlogged(len(payload))):
            self.sendMessage(payload, False)

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
        """Start the closing handshake with *code* (any valid code, 1001 included)."""
        if self.state == _OPEN:
            # sendClose() only takes 1000 and 3000-4999; the server may also
            # close with protocol codes such as 1001 (going away) or 1008
            self.sendCloseFrame(code=code, reasonUtf8=reason.encode("utf-8")[:123], isReply=False)
