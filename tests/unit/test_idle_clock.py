"""The idle-connection sweep on its own: ``ChatFactory`` (``chatd.service.build``) on a ``task.Clock``, no sockets.

``tests/integration/test_auth.py::test_idle_timeout`` checks the same over real connections with a
short real timeout; here time is advanced by the clock, so the boundaries are exact.
"""

from __future__ import annotations

from twisted.internet.task import Clock

from chatd.protocol import IDLE
from chatd.service import build
from chatd.settings import Settings
from chatd.store.memory import MemoryStore


class Conn:
    """What the sweep reads of a connection (``last_seen``) and the close it gets."""

    def __init__(self, last_seen):
        self.last_seen = last_seen
        self.closed = None

    def close(self, code, reason):
        self.closed = (code, reason)


def test_a_connection_silent_past_idle_timeout_is_closed_4408_an_active_one_stays():
    clock = Clock()
    factory = build(MemoryStore(), Settings(idle_timeout=2.0), reactor=clock)
    factory.start_housekeeping()
    idle, busy = Conn(clock.seconds()), Conn(clock.seconds())
    factory.track(idle)
    factory.track(busy)
    for _ in range(4):  # 2.0 s in sweep-sized steps (idle_timeout / 4)
        clock.advance(0.5)
        busy.last_seen = clock.seconds()  # busy sent a frame
    assert idle.closed is None  # silent for exactly the timeout: not yet
    clock.advance(0.5)
    busy.last_seen = clock.seconds()
    assert idle.closed == (IDLE, "idle timeout")
    assert busy.closed is None
    factory.stop_housekeeping()
    assert clock.getDelayedCalls() == []


def test_no_idle_timeout_no_sweep():
    clock = Clock()
    factory = build(MemoryStore(), Settings(idle_timeout=0), reactor=clock)
    factory.start_housekeeping()
    assert clock.getDelayedCalls() == []
