"""Rooms, membership and presence: pure logic, no sockets.

The hub knows connections only as hashable objects with a ``user`` attribute
(the protocol instances in a server, anything in a unit test). It answers
questions ("who gets this?", "was that the user's last connection in the
room?") and never sends anything itself, which keeps presence rules and
routing testable without a reactor.

Presence counts users, not connections: a user with two connections in a room
is one member, who joins with the first connection and leaves with the last.

A chatd.v1 connection that has just joined a room is *pending* there until its
``joined`` reply (and any replay of missed messages) has been sent: frames for
the room are buffered for it (:meth:`Hub.buffer`) rather than sent, and
:meth:`Hub.go_live` hands the buffer back, so replay and live stream join
without a gap or a duplicate. A pending connection whose buffer grows past
the limit given to :meth:`Hub.buffer` (a slow reader joining a busy room) loses
its buffer and is returned to the caller, which drops it as a slow consumer.

Relay connections (the tutorial's protocol) are members of :data:`LOBBY` for
presence, but receive only bare relayed frames, so they are kept apart from the
room's chatd.v1 receivers.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence

LOBBY = "lobby"
#: the rooms of every relay connection (shared, never changed)
_LOBBY_ONLY = (LOBBY,)
#: the rooms of a chatd.v1 connection before its first join (shared; a list replaces it)
_NO_ROOMS = ()


class Room:
    """One room: its live receivers, its pending joiners and its users."""

    __slots__ = ("name", "live", "pending", "pending_bytes", "users")

    def __init__(self, name: str):
        self.name = name
        #: chatd.v1 connections receiving the room's frames (an ordered set)
        self.live: dict[Hashable, None] = {}
        #: chatd.v1 connections still being sent their joined/replay -> buffer
        self.pending: dict[Hashable, list[tuple[int | None, bytes]]] = {}
        #: bytes buffered in ``pending`` per connection (only those with any)
        self.pending_bytes: dict[Hashable, int] = {}
        #: user id -> number of that user's connections in the room
        self.users: dict[str, int] = {}

    def __bool__(self):
        return bool(self.users)


class Hub:
    """All rooms and connections of one chatd process."""

    def __init__(self):
        self.rooms: dict[str, Room] = {}
        #: user id -> that user's chatd.v1 connections
        #: (a list: most users have one connection, and a list is a quarter of a dict)
        self.connections: dict[str, list] = {}
        #: relay-mode connections, in connection order
        self.relays: dict[Hashable, None] = {}
        self._rooms_of: dict[Hashable, set[str]] = {}

    # connections

    def connect(self, conn) -> None:
        """Register a chatd.v1 connection of ``conn.user``."""
        self.connections.setdefault(conn.user, []).append(conn)
        # a list once it joins, not a set: a connection is in a handful of rooms
        # (--max-rooms); until then the shared empty tuple costs nothing per connection
        self._rooms_of[conn] = _NO_ROOMS

    def connect_relay(self, conn) -> bool:
        """Register a relay connection; it joins :data:`LOBBY`.

        Returns True when this made ``conn.user`` a new member of the lobby.
        """
        self.relays[conn] = None
        self._rooms_of[conn] = _LOBBY_ONLY
        return self._add_user(self._room(LOBBY), conn.user)

    def disconnect(self, conn) -> list[str]:
        """Forget *conn*; returns the rooms its user has now left entirely."""
        self.relays.pop(conn, None)
        conns = self.connections.get(conn.user)
        if conns is not None and conn in conns:
            conns.remove(conn)
            if not conns:
                del self.connections[conn.user]
        left = []
        for name in self._rooms_of.pop(conn, ()):
            if self._remove(conn, name):
                left.append(name)
        return sorted(left)

    def is_online(self, user: str) -> bool:
        """True when *user* has at least one chatd.v1 connection."""
        return user in self.connections

    def connections_of(self, user: str) -> list:
        """The chatd.v1 connections of *user*."""
        return list(self.connections.get(user, ()))

    # rooms

    def _room(self, name: str) -> Room:
        room = self.rooms.get(name)
        if room is None:
            room = self.rooms[name] = Room(name)
        return room

    @staticmethod
    def _add_user(room: Room, user: str) -> bool:
        count = room.users.get(user, 0)
        room.users[user] = count + 1
        return count == 0

    def join(self, conn, name: str) -> tuple[bool, bool]:
        """Make *conn* a pending member of room *name*.

        Returns ``(already, new_user)``: whether the connection was a member
        already (then nothing changes, but a live member becomes pending again
        so a resume replay can be sent in order), and whether the user is new
        to the room (then the others get a presence join).
        """
        room = self._room(name)
        rooms = self._rooms_of[conn]
        if name in rooms:
            if conn in room.live:
                del room.live[conn]
                room.pending[conn] = []
            return True, False
        if rooms is _NO_ROOMS:
            rooms = self._rooms_of[conn] = []
        rooms.append(name)
        room.pending[conn] = []
        return False, self._add_user(room, conn.user)

    def go_live(self, conn, name: str) -> list[tuple[int | None, bytes]] | None:
        """End *conn*'s pending state in room *name*; returns its buffered frames.

        Returns None when the connection is no longer pending there (it left
        or disconnected meanwhile).
        """
        room = self.rooms.get(name)
        if room is None:
            return None
        buffered = room.pending.pop(conn, None)
        room.pending_bytes.pop(conn, None)
        if buffered is not None:
            room.live[conn] = None
        return buffered

    def leave(self, conn, name: str) -> bool:
        """Remove *conn* from room *name*; True when its user left the room entirely.

        Raises ValueError when the connection is not in the room.
        """
        rooms = self._rooms_of[conn]
        if name not in rooms:
            raise ValueError(f"not in room {name!r}")
        rooms.remove(name)
        return self._remove(conn, name)

    def _remove(self, conn, name: str) -> bool:
        room = self.rooms[name]
        room.live.pop(conn, None)
        room.pending.pop(conn, None)
        room.pending_bytes.pop(conn, None)
        count = room.users[conn.user] - 1
        if count:
            room.users[conn.user] = count
            return False
        del room.users[conn.user]
        if not room:
            del self.rooms[name]
        return True

    def in_room(self, conn, name: str) -> bool:
        """True when *conn* has joined room *name* (pending or live)."""
        rooms = self._rooms_of.get(conn)
        return rooms is not None and name in rooms

    def is_pending(self, conn, name: str) -> bool:
        """True when *conn* joined room *name* and has not gone live there yet."""
        room = self.rooms.get(name)
        return room is not None and conn in room.pending

    def room_count(self, conn) -> int:
        """How many rooms *conn* is in."""
        return len(self._rooms_of.get(conn, ()))

    def rooms_of(self, conn) -> set[str]:
        """The rooms *conn* is in."""
        return set(self._rooms_of.get(conn, ()))

    def members(self, name: str) -> list[str]:
        """The sorted distinct user ids in room *name* (relay guests included)."""
        room = self.rooms.get(name)
        return sorted(room.users) if room else []

    def receivers(self, name: str) -> Iterable:
        """The live chatd.v1 connections of room *name*."""
        room = self.rooms.get(name)
        return room.live if room else ()

    def buffer(
        self, name: str, seq: int | None, payload: bytes, exclude=None, limit: int | None = None
    ) -> Sequence:
        """Queue a frame of room *name* for its pending connections.

        Returns the connections whose buffer would pass *limit* bytes: they
        are pending no more (their buffer is dropped; :meth:`go_live` answers
        None) and the caller must drop them.
        """
        room = self.rooms.get(name)
        if room is None or not room.pending:
            return ()  # the fan-out's usual case: nobody is joining
        over = []
        sizes = room.pending_bytes
        size = len(payload)
        for conn, queued in room.pending.items():
            if conn is not exclude:
                total = sizes[conn] = sizes.get(conn, 0) + size
                if limit is not None and total > limit:
                    over.append(conn)
                else:
                    queued.append((seq, payload))
        for conn in over:
            del room.pending[conn], sizes[conn]
        return over
