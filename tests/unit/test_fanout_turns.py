"""The fan-out's per-turn coalescing (chatd/fanout.py) on a task.Clock: the real
:class:`chatd.fanout.Fanout` and :class:`chatd.fanout.Writer`, over a transport
that records each write (a stand-in for Twisted's, which is not ours to test)."""

from __future__ import annotations

from chatd.fanout import Fanout, Writer, server_frame
from chatd.settings import Settings
from chatd.stats import Stats


class Transport:
    """Records every ``write`` (one entry per call) and buffers nothing."""

    def __init__(self):
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def registerProducer(self, producer, streaming):
        pass

    def unregisterProducer(self):
        pass


class Conn(Writer):
    STATE_OPEN = 3
    state = 3

    def __init__(self, fanout):
        self.fanout = fanout
        self.transport = Transport()
        self.start_writing()  # not a tcp.Connection: every write goes to transport.write


def frames(conn) -> list[bytes]:
    return [f for w in conn.transport.writes for f in split(w)]


def split(blob: bytes) -> list[bytes]:
    out = []
    while blob:
        n = blob[1] & 0x7F  # (the test's frames are short)
        out.append(blob[2 : 2 + n])
        blob = blob[2 + n :]
    return out


def make(clock, n=3):
    fanout = Fanout(clock, Settings(), Stats(), direct_problem="test transport")
    return fanout, [Conn(fanout) for _ in range(n)]


def test_a_quiet_turn_writes_at_once(clock):
    """No fan-out this turn: a reply is written at once, one write."""
    _fanout, (a, _b, _c) = make(clock)
    a.write_frame(server_frame(b"pong", False))
    assert a.transport.writes == [server_frame(b"pong", False)]


def test_a_busy_turns_replies_join_the_fan_out_writes_in_order(clock):
    """After the turn's first fan-out (written at once), later fan-outs and replies
    (acks) to a connection wait for the end of the turn and go out as one write per
    connection, in the order they were made."""
    fanout, (a, b, c) = make(clock)
    room = [a, b, c]
    fanout.deliver(room, b"m1", exclude=a)  # the turn's first: written at once
    a.write_frame(server_frame(b"ack1", False))
    fanout.deliver(room, b"m2", exclude=b)
    a.write_frame(server_frame(b"ack2", False))
    b.write_frame(server_frame(b"ack3", False))
    assert [len(x.transport.writes) for x in room] == [0, 1, 1]
    clock.advance(0)  # the end of the turn
    assert a.transport.writes[0] == b"".join(
        server_frame(p, False) for p in (b"ack1", b"m2", b"ack2")
    )
    assert [frames(x) for x in room] == [
        [b"ack1", b"m2", b"ack2"],
        [b"m1", b"ack3"],
        [b"m1", b"m2"],
    ]
    assert [len(x.transport.writes) for x in room] == [1, 2, 2]
    a.write_frame(server_frame(b"pong", False))  # the next turn is quiet again
    assert frames(a)[-1] == b"pong" and len(a.transport.writes) == 2
