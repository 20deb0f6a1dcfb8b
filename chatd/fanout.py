"""Every write to a connection: per-turn coalescing, direct socket sends, the C loop.

This module is the only code that hands bytes to a connection's transport or socket.
Two classes share the job:

* :class:`Writer` is the writing half of a connection (``ChatProtocol`` inherits it):
  it owns the connection's write state and every path to its transport, autobahn's
  own frames (pings, pongs, close) included, through :meth:`Writer.sendData`.
* :class:`Fanout` (:class:`chatd.interfaces.IFanout`) sends one frame to many
  connections, framing it once, and coalesces a busy turn's frames into one write per
  connection.

**The invariant.** Bytes go straight to a connection's socket — by
:meth:`Writer.send_direct` or by the C loop (``chatd._fanout.send_all``) — only while
Twisted's write buffer for it is empty, so nothing Twisted buffered can be overtaken.
A connection is *armed* (``_fd`` holds its socket's descriptor, the only thing the C
loop reads) exactly while that holds. It is kept by structure, not by convention:

1. every write that may leave bytes in Twisted's buffer goes through
   :meth:`Writer.write_through`, which writes and disarms, in one place;
2. only :meth:`Writer.arm` sets ``_fd``, and only after seeing the buffer empty;
   a disarmed connection waits in :attr:`Fanout.rearm` until the next fan-out arms it
   again once Twisted has written everything;
3. a connection that closes, or whose peer stops reading, leaves the direct path for
   good (:meth:`Writer.go_slow`), and ``_fd`` is cleared before Twisted closes the
   socket (its number may be reused by the next accept).

The direct path reads a few of Twisted's private names (:data:`TWISTED_NAMES`).
:func:`direct_support` checks them once at start-up; where a Twisted release lacks
any, the direct path and the C loop are off (one log line says why) and every byte
goes through ``transport.write`` — slower, never wrong.

**Compression.** A connection that negotiated permessage-deflate (chatd/deflate.py,
always without server context takeover) has ``deflate_bits`` set to the window its
client allowed (0: uncompressed). A fan-out message of at least
:data:`chatd.deflate.MIN_SIZE` bytes is then compressed once per window size among
the open connections (:attr:`Fanout.windows`), and every recipient with that window
gets the same compressed frame (RSV1 set), through the same direct path, C loop and
coalescing as any frame: the C loop picks ``frames[conn.deflate_bits]`` per recipient
in the same single pass, so a room with a mix gets one frame per parameter set,
never one per recipient, and no per-recipient Python work. While no open connection
compresses, or for shorter messages, the fan-out is exactly the uncompressed one.
"""

from __future__ import annotations

import os
import socket

from twisted.internet import tcp
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from zope.interface import implementer

from chatd import deflate
from chatd.interfaces import IFanout

#: environment variable that turns the C fan-out loop off (the pure-Python loop
#: does the same, more slowly)
NO_C_FANOUT = "CHATD_NO_C_FANOUT"

#: close code recorded when a peer that stopped reading is dropped
SLOW_CONSUMER = 4008

#: what the direct path reads of ``twisted.internet.tcp.Connection``: its socket, and
#: the two halves of FileDescriptor's write buffer (empty buffer: ``not dataBuffer and
#: not _tempDataLen``), plus ``TLS`` (False on a plain connection)
TWISTED_NAMES = ("socket", "dataBuffer", "_tempDataLen", "TLS")

log = Logger()

#: up to this many recipients the fan-out compresses only for their own windows
_FEW = 16


_TEXT, _BINARY = 0x81, 0x82


def server_frame(payload: bytes, is_binary: bool) -> bytes:
    """The single unmasked frame a server sends carrying *payload* (RFC 6455 5.2:
    FIN, the opcode, the minimal length encoding; byte for byte what autobahn's
    ``PreparedMessage`` builds, without its object per frame)."""
    n = len(payload)
    first = _BINARY if is_binary else _TEXT
    if n < 126:
        return bytes((first, n)) + payload
    if n < 65536:
        return bytes((first, 126)) + n.to_bytes(2, "big") + payload
    return bytes((first, 127)) + n.to_bytes(8, "big") + payload


def direct_support(reactor, connection_class=tcp.Connection, names=None) -> str | None:
    """None when *connection_class* has every name the direct path reads (*names*,
    default :data:`TWISTED_NAMES`), else why not.

    ``socket`` and ``_tempDataLen`` are set in ``__init__``, so an instance is made (on
    a socketpair, never started) and looked at.
    """
    a, b = socket.socketpair()
    try:
        conn = connection_class(a, None, reactor)
        missing = [name for name in names or TWISTED_NAMES if not hasattr(conn, name)]
    except Exception as e:  # a constructor that changed shape is as good as missing
        return f"{connection_class.__qualname__}() failed: {e!r}"
    finally:
        a.close()
        b.close()
    if missing:
        return f"twisted.internet.tcp.Connection has no {', '.join(missing)}"
    return None


def c_send_all():
    """``chatd._fanout.send_all`` when the accelerator is built and not turned off."""
    if os.environ.get(NO_C_FANOUT):
        return None
    try:
        from chatd._fanout import send_all
    except ImportError:
        return None
    return send_all


def send_all_py(targets, exclude, frame: bytes, frames=None) -> None:
    """Hand *frame* (or, given *frames*, ``frames[conn.deflate_bits]``) to every
    connection in *targets* but *exclude* (the pure-Python twin of
    ``chatd._fanout.send_all``, which leaves nothing over)."""
    if frames is None:
        for conn in targets:
            if conn is not exclude:
                # a direct socket send while the peer is open and reading, else
                # Writer.write_slowly (or transport.write with the direct path off)
                conn.deliver_frame(frame)
    else:
        for conn in targets:
            if conn is not exclude:
                conn.deliver_frame(frames[conn.deflate_bits])


def finish_sends(left, frame: bytes, frames=None) -> None:
    """Finish what ``chatd._fanout.send_all`` left over, as :meth:`Writer.send_direct`
    would have: connections it could not send to directly get ``deliver_frame``; a
    failed send goes to Twisted's ``transport.write`` (which reports the error on its
    own path), a partial one writes the rest there (and keeps the order). With
    *frames*, each connection's frame is ``frames[conn.deflate_bits]``."""
    for conn, code in left:
        own = frame if frames is None else frames[conn.deflate_bits]
        if code == -1:
            conn.deliver_frame(own)
        else:
            conn.write_rest(own, max(code, 0))


def c_takes_frames(send_all) -> bool:
    """Whether this build of ``chatd._fanout.send_all`` takes the *frames* argument
    (an older build does not: compressed fan-outs then use the Python loop)."""
    try:
        send_all((), None, b"", ())
    except TypeError:
        return False
    return True


class _WriteWatch:
    """A streaming producer on the transport: it tells the connection when the
    transport's write buffer is full (the peer stopped reading) and when it drained
    again, so the fan-out can bound what it queues for that peer."""

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
        if conn.state == conn.STATE_OPEN:
            conn.deliver_frame = conn._writer()
        waiters = conn._drain_waiters
        if waiters:
            conn._drain_waiters = None
            for d in waiters:
                if not d.called:  # (cancelled ones are)
                    d.callback(None)

    def stopProducing(self):
        pass


class Writer:
    """The writing half of a WebSocket connection (a mixin for autobahn's protocol).

    Its state lives in class defaults until a connection needs its own value, so an
    idle connection pays nothing for it. ``fanout`` is set on the factory's protocol
    class (:meth:`Fanout.serve`).
    """

    #: the :class:`Fanout` this connection's frames go through
    fanout = None
    #: the socket's descriptor while armed (see the module docstring), else -1
    _fd = -1
    #: True while the transport's write buffer is full (the peer is not reading)
    paused = False
    #: bytes written while paused
    backlog = 0
    #: Deferreds of when_drained callers, fired when the write buffer drained
    _drain_waiters = None
    #: the permessage-deflate window its frames are compressed for (0: uncompressed)
    deflate_bits = 0

    def start_writing(self) -> None:
        """The connection is open: watch the transport's buffer, pick the writer."""
        transport = self.transport
        # twisted.web's HTTPChannel is still the transport's producer after the
        # WebSocket takeover; watch the write buffer ourselves instead
        try:
            transport.unregisterProducer()
        except Exception:
            pass
        transport.registerProducer(_WriteWatch(self), True)
        if self.deflate_bits:
            self.fanout.count_window(self.deflate_bits, 1)
        #: what the fan-out calls with ready frame bytes: a direct socket send (or the
        #: transport's write) while the peer is open and reading, write_slowly otherwise
        self.deliver_frame = self._writer()

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

    def write_frame(self, frame: bytes) -> None:
        """Write one ready frame, behind any frames the fan-out queued for this
        connection this turn (so each connection gets its frames in order). In a
        busy turn (a fan-out has queued frames to flush at its end) the frame joins
        this connection's queue, so a turn's acks and replies to one connection go
        out in one write with its fan-out frames."""
        fanout = self.fanout
        queued = fanout.queues.get(self)
        if queued is not None:
            queued.append(frame)
        elif fanout._flush_call is not None:
            fanout.queues[self] = [frame]
        else:
            self.deliver_frame(frame)

    def _writer(self):
        """The fastest correct way to hand bytes to this connection's socket: for
        exactly Twisted's plain TCP/UNIX connection, :meth:`send_direct`; for anything
        else (TLS, another transport, the direct path off), the transport's write."""
        t = self.transport
        # exactly Twisted's own TCP/UNIX connection, not TLS: a TLS transport (e.g.
        # BufferingTLSTransport) forwards unknown attributes, ``socket`` included, to
        # the raw connection beneath it, and bytes sent there would skip the encryption
        if self.fanout.direct and isinstance(t, tcp.Connection) and t.TLS is False:
            self._sock_send = t.socket.send
            self.arm()
            return self.send_direct
        return self.write_through  # (_fd stays -1: the C loop leaves it to Python)

    def arm(self) -> bool:
        """Let the C loop send to this connection if Twisted has nothing buffered for
        it; else have the fan-out try again at its next send. True if armed."""
        t = self.transport
        if t.dataBuffer or t._tempDataLen:
            self._fd = -1
            self.fanout.rearm[self] = None
            return False
        self._fd = t.socket.fileno()
        return True

    def write_through(self, data: bytes) -> None:
        """Hand *data* to ``transport.write``, which buffers it behind anything already
        buffered: the connection is disarmed until :meth:`arm` sees the buffer empty."""
        self.transport.write(data)
        self.disarm()

    def sendData(self, data, sync=False, chopsize=None):
        """autobahn's own writes (pings, pongs, the close frame) go to the transport too."""
        super().sendData(data, sync, chopsize)
        self.disarm()

    def disarm(self) -> None:
        """Bytes may now be buffered in the transport: the C loop leaves this connection
        to Python until :meth:`arm` sees the buffer empty."""
        if self._fd >= 0:
            self._fd = -1
            self.fanout.rearm[self] = None

    def go_slow(self) -> None:
        """From now on frames go through :meth:`write_slowly` (closing, or the peer
        stopped reading), never straight to the socket."""
        self.deliver_frame = self.write_slowly
        self._fd = -1
        self.fanout.forget(self)

    def stop_writing(self) -> None:
        """Twisted is closing the socket: its descriptor number may be reused by the next
        accept, so the C loop must never see it again."""
        self._fd = -1

    def send_direct(self, data: bytes) -> None:
        """Send *data* on the socket now if nothing is buffered ahead of it.

        Twisted's ``transport.write`` buffers and waits for the reactor to report the
        socket writable (two ``epoll_ctl`` calls and a poll round per write); with an
        empty buffer the bytes can go at once. Whatever the kernel does not take goes
        to ``transport.write``, which keeps the order and watches the socket as usual
        (and tells the slow-consumer watch when the peer stops reading).
        """
        t = self.transport
        # (closing or closed connections never get here: their deliver_frame is
        # write_slowly from sendCloseFrame / dropConnection / onClose on)
        if t.dataBuffer or t._tempDataLen:
            t.write(data)  # (not armed: something is buffered)
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
        """Hand what a direct send left of *data* (all but its first *sent* bytes) to
        the transport, which keeps the order."""
        self.write_through(data[sent:] if sent else data)

    def write_slowly(self, frame: bytes) -> None:
        """Write *frame* for a peer that is not plainly writable: nothing once closing,
        and with backlog accounting while the peer is not reading."""
        if self.state == self.STATE_OPEN and not (self.paused and self.backlogged(len(frame))):
            self.write_through(frame)

    def sendCloseFrame(self, *args, **kwargs):
        # frames queued before the close go first; no data frame may follow it
        self.fanout.flush_one(self)
        self.go_slow()
        return super().sendCloseFrame(*args, **kwargs)

    def dropConnection(self, *args, **kwargs):
        self.go_slow()
        return super().dropConnection(*args, **kwargs)

    def backlogged(self, size: int) -> bool:
        """Account *size* more bytes queued for a peer that stopped reading.

        Once the backlog passes ``max_queue_bytes`` the connection is dropped (recorded
        as close code 4008, slow consumer) and True is returned: the caller must not
        write. The peer cannot read a close frame, so none is sent: its socket is
        aborted and its memory freed at once.
        """
        self.backlog += size
        fanout = self.fanout
        if self.backlog <= fanout.settings.max_queue_bytes:
            return False
        if self.state == self.STATE_OPEN:
            self.state = self.STATE_CLOSING
            fanout.stats.closes[SLOW_CONSUMER] += 1
            log.warn(
                "dropping slow consumer {peer} ({user}): {backlog} bytes queued",
                peer=self.peer,
                user=getattr(self.session, "user", None),
                backlog=self.backlog,
            )
            self.transport.abortConnection()
        return True


@implementer(IFanout)
class Fanout:
    """Sends one frame to many connections, framing it once.

    The first fan-out of a reactor turn writes straight to the sockets (the C loop, or
    its Python twin); later ones in the same turn append to per-connection queues
    (:attr:`queues`) that :meth:`flush` writes at the end of the turn as one joined
    write per connection, so a busy turn costs one write per connection, not one per
    message. A connection with a queue gets every further frame of the turn (acks and
    replies too) through it, so each connection receives its frames in order.
    """

    def __init__(self, reactor, settings, stats, direct_problem=None, prepare=server_frame):
        self.reactor = reactor
        #: the live settings (``max_queue_bytes`` is reloadable)
        self.settings = settings
        #: counters: deliveries, delivery_bytes, closes
        self.stats = stats
        #: ``prepare(payload, is_binary) -> frame bytes``: the frame is built once
        self.prepare = prepare
        #: permessage-deflate window -> how many open connections use it
        self.windows: dict[int, int] = {}
        #: why the direct path is off (None: it is on)
        self.direct_problem = direct_problem
        self.direct = direct_problem is None
        send_all = c_send_all() if self.direct else None
        #: "c" when the per-recipient loop runs in chatd._fanout, else "python"
        self.impl = "c" if send_all is not None else "python"
        #: send_all(targets, exclude, frame[, frames]) -> None | [(conn, code), ...]
        self.send_all = send_all or send_all_py
        #: the same with per-window frames (send_all_py for an older C build)
        self.send_all_frames = (
            send_all if send_all is not None and c_takes_frames(send_all) else send_all_py
        )
        #: connection -> frames queued this turn, written by flush()
        self.queues: dict = {}
        #: armable connections whose transport still had bytes buffered: re-armed at
        #: the next fan-out once it has drained
        self.rearm: dict = {}
        self._flush_call = None

    def serve(self, protocol_class) -> None:
        """Make *protocol_class*'s connections write through this fan-out (the factory
        calls it on its own protocol class)."""
        protocol_class.fanout = self

    def describe(self) -> str:
        """One line for the start-up log: which loop runs, or why direct sends are off."""
        if not self.direct:
            return f"transport.write only (direct sends off: {self.direct_problem})"
        if self.impl == "c":
            return "C (chatd._fanout)"
        return "pure Python (chatd._fanout not built, or CHATD_NO_C_FANOUT set)"

    def forget(self, conn) -> None:
        """*conn* no longer takes direct sends (closing, or its peer stopped reading)."""
        self.rearm.pop(conn, None)

    def rearm_all(self) -> None:
        """Arm every waiting connection whose transport has written everything."""
        waiting = self.rearm
        self.rearm = {}
        for conn in waiting:
            if conn.state == conn.STATE_OPEN:
                conn.arm()  # puts it back in rearm if still buffered

    def deliver(self, conns, payload: bytes, exclude=None) -> None:
        """Send text frame *payload* to every open connection in *conns* but *exclude*."""
        self.broadcast(conns, payload, False, exclude)

    @property
    def compressing(self) -> int:
        """How many open connections negotiated permessage-deflate."""
        return sum(self.windows.values())

    def count_window(self, bits: int, delta: int) -> None:
        """A connection compressing for window *bits* opened (+1) or closed (-1)."""
        left = self.windows.get(bits, 0) + delta
        if left > 0:
            self.windows[bits] = left
        else:
            self.windows.pop(bits, None)

    def broadcast(self, conns, payload: bytes, is_binary: bool, exclude=None) -> None:
        """Send *payload* verbatim to every open connection in *conns* but *exclude*;
        the same frame bytes go to every recipient with the same compression
        parameters."""
        if not conns:
            return
        frame = self.prepare(payload, is_binary)
        targets = tuple(conns)
        count = len(targets) - (exclude is not None and exclude in conns)
        frames = None
        if self.windows and len(payload) >= deflate.MIN_SIZE:
            frames = self._frames(targets, payload, is_binary, frame)
        if self._flush_call is None:
            # first fan-out this turn: nobody has a queue yet
            self._flush_call = self.reactor.callLater(0, self.flush)
            if self.rearm:
                self.rearm_all()
            if frames is None:
                left = self.send_all(targets, exclude, frame)
            else:
                left = self.send_all_frames(targets, exclude, frame, frames)
            if left:
                finish_sends(left, frame, frames)
        else:
            queues = self.queues
            for conn in targets:
                if conn is not exclude:
                    own = frame if frames is None else frames[conn.deflate_bits]
                    queued = queues.get(conn)
                    if queued is None:
                        queues[conn] = [own]
                    else:
                        queued.append(own)
        stats = self.stats
        stats.deliveries += count
        stats.delivery_bytes += count * len(payload)

    def _frames(self, targets, payload: bytes, is_binary: bool, frame: bytes):
        """The frame for each window (index: ``deflate_bits``): *frame* at 0 and for
        unused windows, the message compressed once for each window in use (among a
        few *targets*: theirs; in a big room: every window in use on this server,
        rather than a look at each recipient); None when no target compresses."""
        if len(targets) <= _FEW:
            windows = {conn.deflate_bits for conn in targets}
            windows.discard(0)
            if not windows:
                return None
        else:
            windows = self.windows
        frames = [frame] * 16
        for bits in windows:
            frames[bits] = self.frame(payload, is_binary, bits, frame)
        return tuple(frames)

    def frame(self, payload: bytes, is_binary: bool, bits: int = 0, plain=None) -> bytes:
        """The frame carrying *payload* for a connection whose ``deflate_bits`` is
        *bits*: compressed once with a fresh compressor (RSV1 set) when that is worth
        it, else the plain frame (*plain* when the caller has it already)."""
        body = deflate.compress(payload, bits) if bits else None
        if body is None:
            return plain if plain is not None else self.prepare(payload, is_binary)
        framed = bytearray(self.prepare(body, is_binary))
        framed[0] |= 0x40  # RSV1: a compressed message (a single frame: FIN is set too)
        return bytes(framed)

    def flush(self) -> None:
        """End of the turn: write every connection's queued frames, one write each.

        Members of a room usually have the very same frames queued: their joined bytes
        are built once and shared (list equality compares the frame objects by identity
        first, in C).
        """
        self._flush_call = None
        queues, self.queues = self.queues, {}
        last = blob = None
        for conn, queued in queues.items():
            if queued != last:
                last = queued
                blob = queued[0] if len(queued) == 1 else b"".join(queued)
            conn.deliver_frame(blob)

    def flush_one(self, conn) -> None:
        """Write *conn*'s queued frames now, as one write (it is about to close)."""
        queued = self.queues.pop(conn, None)
        if queued is not None:
            conn.deliver_frame(queued[0] if len(queued) == 1 else b"".join(queued))

    def untrack(self, conn) -> None:
        """*conn* closed: nothing is kept for it."""
        self.rearm.pop(conn, None)
        self.queues.pop(conn, None)
        if conn.deflate_bits:
            self.count_window(conn.deflate_bits, -1)
