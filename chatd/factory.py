"""The WebSocket factory: tracks protocol instances and fans frames out.

Fan-out frames a payload once (``prepareMessage``) and hands the same frame to
every recipient; one recipient that is closing or failing never stops the
send to the others.
"""

from __future__ import annotations

from autobahn.twisted.websocket import WebSocketServerFactory
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from zope.interface import implementer

from chatd import __version__
from chatd.auth import ANONYMOUS_PREFIX
from chatd.chat import Chat
from chatd.gate import Gate
from chatd.interfaces import IFanout
from chatd.protocol import IDLE, ChatProtocol
from chatd.settings import Settings
from chatd.wire import PROTOCOL

_OPEN = ChatProtocol.STATE_OPEN


@implementer(IFanout)
class ChatFactory(WebSocketServerFactory):
    """Builds :class:`ChatProtocol` instances sharing one :class:`Chat`."""

    protocol = ChatProtocol
    log = Logger()

    def __init__(
        self,
        store,
        settings: Settings | None = None,
        reactor=None,
        broker=None,
        directory=None,
        gate=None,
    ):
        settings = settings or Settings()
        #: handshake admission (origins, tokens, connection caps)
        self.gate = gate if gate is not None else Gate()
        server = f"chatd/{__version__}"
        super().__init__(server=server, protocols=[PROTOCOL], reactor=reactor)
        self.settings = settings
        self.setProtocolOptions(
            maxFramePayloadSize=settings.max_message_size,
            maxMessagePayloadSize=settings.max_message_size,
            autoPingInterval=settings.ping_interval,
            autoPingTimeout=settings.ping_timeout,
            openHandshakeTimeout=settings.open_handshake_timeout,
            # protocol errors and oversize frames get a close frame with their
            # code (1002, 1007, 1009), not a bare TCP drop
            failByDrop=False,
            # Origin: null is the gate's decision (--allowed-origin null), not autobahn's
            allowNullOrigin=True,
        )
        self.chat = Chat(
            store,
            self,
            settings,
            clock=self.reactor,
            server=server,
            broker=broker,
            directory=directory,
            # anonymous ids get "~" while tokens are accepted, so no anonymous
            # name can pass for a token's user
            anonymous_prefix="" if self.gate.auth == "off" else ANONYMOUS_PREFIX,
        )
        #: every open connection, in the order they opened
        self.connections: dict[ChatProtocol, None] = {}
        self._sweeper = None

    def start_housekeeping(self) -> None:
        """Start the periodic idle-connection sweep (when ``idle_timeout`` is set)."""
        idle = self.settings.idle_timeout
        if idle and self._sweeper is None:
            self._sweeper = LoopingCall(self._close_idle)
            self._sweeper.clock = self.reactor
            self._sweeper.start(max(idle / 4, 0.05), now=False)

    def stop_housekeeping(self) -> None:
        """Stop what :meth:`start_housekeeping` started."""
        if self._sweeper is not None:
            self._sweeper.stop()
            self._sweeper = None

    def _close_idle(self) -> None:
        cutoff = self.reactor.seconds() - self.settings.idle_timeout
        for conn in tuple(self.connections):
            if conn.last_seen < cutoff and conn.state == _OPEN:
                self.chat.stats.closes[IDLE] += 1
                conn.close(IDLE, "idle timeout")

    def track(self, proto: ChatProtocol) -> None:
        """Remember an open connection."""
        self.connections[proto] = None

    def untrack(self, proto: ChatProtocol) -> None:
        """Forget a closed connection."""
        self.connections.pop(proto, None)

    def deliver(self, conns, payload: bytes, exclude=None) -> None:
        """Send text frame *payload* to every open connection in *conns* but *exclude*."""
        self.relay(conns, payload, False, exclude)

    def relay(self, conns, payload: bytes, is_binary: bool, exclude=None) -> None:
        """Send *payload* verbatim to every open connection in *conns* but *exclude*.

        The fast path: the frame is built once and the same bytes are written
        straight to each transport — what ``sendPreparedMessage`` does for an
        uncompressed connection, minus its per-call bookkeeping (chatd never
        negotiates permessage-deflate, so every frame is identical). Closing
        peers are skipped, and a peer that stopped reading is dropped once its
        backlog passes ``max_queue_bytes`` (see :meth:`ChatProtocol.backlogged`).
        """
        if not conns:
            return
        frame = self.prepareMessage(payload, is_binary).payloadHybi
        size = len(frame)
        sent = 0
        for conn in tuple(conns):
            if conn is exclude or conn.state != _OPEN:
                continue
            if conn.paused and conn.backlogged(size):
                continue
            conn.transport.write(frame)
            sent += 1
        stats = self.chat.stats
        stats.deliveries += sent
        stats.delivery_bytes += sent * len(payload)
