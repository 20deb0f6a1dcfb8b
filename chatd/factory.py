"""The WebSocket factory: builds the connections of one :class:`chatd.chat.Chat`.

It is handed its parts, the way twisted.words' ``IRCFactory(realm, portal)`` is given
its realm: the chat, the fan-out that writes every frame (:class:`chatd.fanout.Fanout`)
and the handshake gate. :func:`chatd.service.build` makes them;
``makeService`` (chatd/tap.py) calls it.
"""

from __future__ import annotations

from types import FunctionType

from autobahn.twisted.websocket import WebSocketServerFactory
from autobahn.websocket.protocol import TrafficStats
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from chatd import frames
from chatd.protocol import IDLE, ChatProtocol
from chatd.wire import PROTOCOL

__all__ = ["ChatFactory"]


class ChatFactory(WebSocketServerFactory):
    """Builds :class:`ChatProtocol` instances sharing one :class:`Chat`."""

    protocol = ChatProtocol
    log = Logger()

    def __init__(self, chat, fanout, gate, reactor=None):
        #: handshake admission (origins, tokens, connection caps)
        self.gate = gate
        super().__init__(server=chat.server, protocols=[PROTOCOL], reactor=reactor)
        self.chat = chat
        #: every write to a connection goes through it (chatd/fanout.py)
        self.fanout = fanout
        #: the live settings, shared with the chat and the fan-out
        self.settings = chat.settings
        self.setProtocolOptions(
            # protocol errors and oversize frames get a close frame with their
            # code (1002, 1007, 1009), not a bare TCP drop
            failByDrop=False,
            # UTF-8 is checked once per message in ChatProtocol.onMessage (chatd/frames.py)
            utf8validateIncoming=not frames.installed(),
        )
        self.apply_settings()
        # (setProtocolOptions made this factory's own protocol class)
        fanout.serve(self.protocol)
        #: every open connection, in the order they opened
        self.connections: dict[ChatProtocol, None] = {}
        self._sweeper = None

    def apply_settings(self) -> None:
        """Set the autobahn protocol options that come from :attr:`settings` (at start,
        and again when a reload changed them: open connections use them too)."""
        settings = self.settings
        self.setProtocolOptions(
            maxFramePayloadSize=settings.max_message_size,
            maxMessagePayloadSize=settings.max_message_size,
            autoPingInterval=settings.ping_interval,
            autoPingTimeout=settings.ping_timeout,
            openHandshakeTimeout=settings.open_handshake_timeout,
            # every setProtocolOptions call resets allowNullOrigin to False unless it is
            # passed: Origin: null is the gate's decision (--allowed-origin null)
            allowNullOrigin=True,
        )

    def setProtocolOptions(self, **options) -> None:
        """Set autobahn protocol options, and keep them on this factory's protocol class.

        autobahn copies every option onto each new protocol instance unless the
        class already has it: a per-factory subclass that holds them spares
        every connection ~45 instance attributes.
        """
        super().setProtocolOptions(**options)
        values = {
            # a function stored on a class would become a method: keep it plain
            name: staticmethod(value) if isinstance(value, FunctionType) else value
            for name, value in ((n, getattr(self, n)) for n in ChatProtocol.CONFIG_ATTRS)
        }
        if self.protocol is ChatProtocol:
            # one set of autobahn traffic counters for all this factory's connections
            values["trafficStats"] = TrafficStats()
            self.protocol = type("ChatProtocol", (ChatProtocol,), values)
        else:
            for name, value in values.items():
                setattr(self.protocol, name, value)

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
            if conn.last_seen < cutoff:
                conn.close(IDLE, "idle timeout")

    def track(self, proto: ChatProtocol) -> None:
        """Remember an open connection."""
        self.connections[proto] = None

    def untrack(self, proto: ChatProtocol) -> None:
        """Forget a closed connection."""
        self.connections.pop(proto, None)
        self.fanout.untrack(proto)
