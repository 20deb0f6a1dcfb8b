"""The WebSocket factory: tracks protocol instances; its fan-out broadcasts frames.

The fan-out (:class:`chatd.fanout.Fanout`) frames a payload once (``prepareMessage``)
and hands the same frame to every recipient; one recipient that is closing or failing
never stops the send to the others.
"""

from __future__ import annotations

from types import FunctionType

from autobahn.twisted.websocket import WebSocketServerFactory
from autobahn.websocket.protocol import TrafficStats
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from chatd import __version__
from chatd.auth import ANONYMOUS_PREFIX
from chatd.chat import Chat
from chatd.fanout import NO_C_FANOUT, Fanout, direct_support
from chatd.gate import Gate
from chatd.protocol import IDLE, ChatProtocol
from chatd.settings import Settings
from chatd.stats import Stats
from chatd.wire import PROTOCOL

__all__ = ["NO_C_FANOUT", "ChatFactory"]


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
        messages=None,
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
        stats = Stats()
        #: every write to a connection goes through it (chatd/fanout.py)
        self.fanout = Fanout(
            self.reactor,
            settings,
            stats,
            lambda payload, is_binary: self.prepareMessage(payload, is_binary).payloadHybi,
            direct_support(self.reactor),
        )
        self.fanout.serve(self.protocol)
        self.chat = Chat(
            store,
            self.fanout,
            settings,
            stats=stats,
            clock=self.reactor,
            server=server,
            broker=broker,
            directory=directory,
            messages=messages,
            # anonymous ids get "~" while tokens are accepted, so no anonymous
            # name can pass for a token's user
            anonymous_prefix="" if self.gate.auth == "off" else ANONYMOUS_PREFIX,
        )
        #: every open connection, in the order they opened
        self.connections: dict[ChatProtocol, None] = {}
        self._sweeper = None

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
