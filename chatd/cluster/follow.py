"""Which rooms a node follows on a Redis Cluster: pure bookkeeping, a clock, no I/O.

A node on a Redis Cluster ``SSUBSCRIBE``s a room's own shard channel while it has
a local connection in the room (docs/cluster.md, *Per-room shard subscriptions*).
:class:`Follows` counts the holders of each room (the hub holds a room while it has
a connection there) and says when to subscribe and when to unsubscribe:

* the first :meth:`~Follows.hold` of a room not followed calls ``subscribe(room)``;
* the last :meth:`~Follows.release` starts a *linger* of ``linger`` seconds (a
  user who reconnects, a connection that leaves and joins again, finds the room
  still followed: no round trip, no catch-up); a hold during the linger keeps it;
  when the linger ends ``unsubscribe(room)`` is called;
* at most ``most_lingering`` rooms linger at once: past that the one that has
  lingered longest is unsubscribed at once. So a node follows its held rooms
  (bounded by its connections times ``--max-rooms``) plus at most
  ``most_lingering`` others.
"""

from __future__ import annotations

from collections import OrderedDict

#: seconds a room stays followed after its last local connection left it
LINGER = 30.0
#: rooms lingering at once (past it the oldest is dropped at once)
MOST_LINGERING = 10_000


class Follows:
    """Refcounts and lingers of followed rooms (see the module docstring).

    *clock* has ``callLater`` (the reactor, or a ``task.Clock`` in tests);
    *subscribe(room)* and *unsubscribe(room)* are called on the transitions.
    """

    def __init__(self, clock, subscribe, unsubscribe, linger=LINGER, most_lingering=MOST_LINGERING):
        self.clock = clock
        self.subscribe = subscribe
        self.unsubscribe = unsubscribe
        self.linger = linger
        self.most_lingering = most_lingering
        #: room -> holders (rooms held now)
        self._held: dict[str, int] = {}
        #: room -> its linger's DelayedCall, oldest first
        self._lingering: OrderedDict[str, object] = OrderedDict()
        #: subscribes and unsubscribes asked for (for metrics and tests)
        self.subscribes = 0
        self.unsubscribes = 0

    def __contains__(self, room: str) -> bool:
        """True while *room* is followed (held or lingering)."""
        return room in self._held or room in self._lingering

    def __len__(self) -> int:
        return len(self._held) + len(self._lingering)

    def rooms(self) -> list[str]:
        """Every followed room (held or lingering)."""
        return [*self._held, *self._lingering]

    def held(self, room: str) -> int:
        """How many holders *room* has."""
        return self._held.get(room, 0)

    def hold(self, room: str) -> None:
        """One more holder of *room*; the first one of a room not followed subscribes."""
        count = self._held.get(room, 0)
        self._held[room] = count + 1
        if count:
            return
        call = self._lingering.pop(room, None)
        if call is not None:
            call.cancel()  # followed still: nothing to do
            return
        self.subscribes += 1
        self.subscribe(room)

    def release(self, room: str) -> None:
        """One holder fewer; after the last one *room* lingers, then is unsubscribed."""
        count = self._held.get(room, 0)
        if count <= 0:
            raise ValueError(f"room {room!r} is not held")
        if count > 1:
            self._held[room] = count - 1
            return
        del self._held[room]
        self._lingering[room] = self.clock.callLater(self.linger, self._expire, room)
        while len(self._lingering) > self.most_lingering:
            oldest, call = self._lingering.popitem(last=False)
            call.cancel()
            self._drop(oldest)

    def _expire(self, room: str) -> None:
        if self._lingering.pop(room, None) is not None:
            self._drop(room)

    def _drop(self, room: str) -> None:
        self.unsubscribes += 1
        self.unsubscribe(room)

    def clear(self) -> None:
        """Forget every room without unsubscribing (the connections are closing)."""
        for call in self._lingering.values():
            call.cancel()
        self._lingering.clear()
        self._held.clear()
