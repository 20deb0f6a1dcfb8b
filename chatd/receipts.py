"""Room receipt batching (``--receipt-window``): pure, the time from an injected clock.

A ``read`` in a small room (at most ``--receipt-members`` members) sends each member
connection a ``receipt {room, user, seq}``; when all of a 100-member room reads, that
is ~99 frames per read. A connection that asked for ``receipts_batch`` (the
``features`` parameter of the upgrade URL, docs/protocol.md, *Features*) instead gets
at most one ``receipts_batch {room, receipts: [{user, seq}, ...]}`` per room per
window: the first receipt of a room opens the room's window, the receipts of the
window are coalesced (each user once, with the newest seq, in the order their markers
first moved) and the window's end hands them to the flush in one list.

:class:`ReceiptBatcher` only remembers and times; who gets the batch is decided by
the caller at the window's end (:meth:`chatd.chat.Chat.deliver_receipt`), so a
connection that stopped receiving the room meanwhile (left, kicked) gets nothing.
"""

from __future__ import annotations

from collections.abc import Callable

#: the name of the feature a client asks for (``?features=receipts_batch``)
RECEIPTS_BATCH = "receipts_batch"
#: the features this server knows; other names are ignored
KNOWN_FEATURES = frozenset((RECEIPTS_BATCH,))
#: characters of the ``features`` parameter read, and names taken from it (the rest
#: is ignored: the parameter cannot make the server do more work than this)
FEATURES_CHARS = 256
FEATURES_MAX = 8


def parse_features(raw: str | None) -> frozenset[str] | None:
    """The known features named by a ``features`` query parameter *raw*
    (comma-separated), None when the client gave none. Unknown names, repeats and
    everything past :data:`FEATURES_CHARS` characters or :data:`FEATURES_MAX` names
    are ignored."""
    if raw is None:
        return None
    names = raw[:FEATURES_CHARS].split(",")[:FEATURES_MAX]
    return frozenset(n.strip() for n in names) & KNOWN_FEATURES


class ReceiptBatcher:
    """Per room, the read markers that moved since the room's window opened.

    *clock* is an ``IReactorTime`` (``task.Clock`` in tests); *flush* is called as
    ``flush(room, [(user, seq), ...])`` when a room's window ends.
    """

    __slots__ = ("_clock", "_flush", "_rooms")

    def __init__(self, clock, flush: Callable[[str, list[tuple[str, int]]], None]):
        self._clock = clock
        self._flush = flush
        #: room -> {user: newest seq} of its open window
        self._rooms: dict[str, dict[str, int]] = {}

    def __len__(self) -> int:
        """Rooms with an open window."""
        return len(self._rooms)

    def add(self, room: str, user: str, seq: int, window: float) -> bool:
        """*user*'s marker in *room* moved to *seq*: remember it for the room's open
        window, or open one that ends *window* seconds from now. True when this
        receipt opened the window."""
        pending = self._rooms.get(room)
        if pending is None:
            self._rooms[room] = {user: seq}
            self._clock.callLater(window, self._end, room)
            return True
        if seq > pending.get(user, -1):  # (markers only move forward; keep the newest)
            pending[user] = seq
        return False

    def _end(self, room: str) -> None:
        self._flush(room, list(self._rooms.pop(room).items()))
