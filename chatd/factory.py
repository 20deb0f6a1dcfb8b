"""The WebSocket factory: tracks protocol instances and fans frames out.

Fan-out frames a payload once (``prepareMessage``) and hands the same frame to
every recipient; one recipient that is closing or failing never stops the
send to the others.
"""

from __future__ import annotations

import os
from types import FunctionType

from autobahn.twisted.websocket import WebSocketServerFactory
from autobahn.websocket.protocol import TrafficStats
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

#: environment variable that turns the C fan-out loop off (the pure-Python loop
#: does the same, more slowly)
NO_C_FANOUT = "CHATD_NO_C_FANOUT"


def _c_send_all():
    """``chatd._fanout.send_all`` when the accelerator is built and not turned off."""
    if os.environ.get(NO_C_FANOUT):
        return None
    try:
        from chatd._fanout import send_all
    except ImportError:
        return None
    return send_all


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
        #: connections with queued frames, written by flush() at the end of the turn
        self._dirty: list = []
        self._flush_call = None
        #: armable connections whose transport still had bytes buffered (see
        #: ChatProtocol.arm): re-armed at the next fan-out once it has drained
        self._rearm: dict = {}
        c_send_all = _c_send_all()
        #: "c" when the fan-out's per-recipient loop runs in chatd._fanout, else "python"
        self.fanout_impl = "c" if c_send_all is not None else "python"
        #: send_all(targets, exclude, frame) -> None | [(conn, code), ...]
        self.send_all = c_send_all or self.send_all_py

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
        self._rearm.pop(proto, None)

    def rearm_later(self, conn) -> None:
        """*conn* has bytes in its transport's buffer: :meth:`rearm` checks it again."""
        self._rearm[conn] = None

    def forget_rearm(self, conn) -> None:
        """*conn* no longer wants direct sends (closing, or its peer stopped reading)."""
        self._rearm.pop(conn, None)

    def rearm(self) -> None:
        """Arm every waiting connection whose transport has written everything."""
        waiting = self._rearm
        self._rearm = {}
        for conn in waiting:
            if conn.state == _OPEN:
                conn.arm()  # puts it back in _rearm if still buffered

    def deliver(self, conns, payload: bytes, exclude=None) -> None:
        """Send text frame *payload* to every open connection in *conns* but *exclude*."""
        self.relay(conns, payload, False, exclude)

    def relay(self, conns, payload: bytes, is_binary: bool, exclude=None) -> None:
        """Send *payload* verbatim to every open connection in *conns* but *exclude*.

        The fast path: the frame is built once (``prepareMessage``; chatd never
        negotiates permessage-deflate, so the frame is the same for everyone)
        and the same bytes object goes to every recipient. The first fan-out of
        a reactor turn writes straight to the transports; later ones in the
        same turn append to per-connection queues that :meth:`flush` writes at
        the end of the turn as one joined write per connection, so a busy turn
        costs one write per connection, not one per message. A connection with
        a queue gets every further frame (acks and replies too) through it, so
        each connection still receives its frames in order.
        """
        if not conns:
            return
        frame = self.prepareMessage(payload, is_binary).payloadHybi
        targets = tuple(conns)
        count = len(targets) - (exclude is not None and exclude in conns)
        if self._flush_call is None:
            # first fan-out this turn: nobody has a queue yet
            self._flush_call = self.reactor.callLater(0, self.flush)
            if self._rearm:
                self.rearm()
            left = self.send_all(targets, exclude, frame)
            if left:
                self.finish_sends(left, frame)
        else:
            for conn in targets:
                if conn is not exclude:
                    conn.queue(frame)
        stats = self.chat.stats
        stats.deliveries += count
        stats.delivery_bytes += count * len(payload)

    @staticmethod
    def send_all_py(targets, exclude, frame: bytes) -> None:
        """Hand *frame* to every connection in *targets* but *exclude* (the
        pure-Python twin of ``chatd._fanout.send_all``, which leaves nothing over)."""
        for conn in targets:
            if conn is not exclude:
                # a direct socket send while the peer is open and reading,
                # else ChatProtocol.write_slowly
                conn.deliver_frame(frame)

    @staticmethod
    def finish_sends(left, frame: bytes) -> None:
        """Finish what ``chatd._fanout.send_all`` left over, as
        :meth:`ChatProtocol.send_direct` would have: connections it could not
        send to directly get ``deliver_frame``; a failed send goes to Twisted's
        ``transport.write`` (which reports the error on its own path), a partial
        one writes the rest there (and keeps the order)."""
        for conn, code in left:
            if code == -1:
                conn.deliver_frame(frame)
            else:
                conn.write_rest(frame, max(code, 0))

    def mark_dirty(self, conn) -> None:
        """*conn* started a queue this turn: :meth:`flush` will write it."""
        self._dirty.append(conn)

    def flush(self) -> None:
        """End of the turn: write every connection's queued frames, one write each.

        Members of a room usually have the very same frames queued: their
        joined bytes are built once and shared (list equality compares the
        frame objects by identity first, in C).
        """
        self._flush_call = None
        dirty, self._dirty = self._dirty, []
        last = blob = None
        for conn in dirty:
            queued = conn.take_queue()
            if queued is None:
                continue
            if queued != last:
                last = queued
                blob = queued[0] if len(queued) == 1 else b"".join(queued)
            conn.deliver_frame(blob)
