"""Rooms, membership and presence: pure logic, no sockets.

The hub keys on sessions (:class:`chatd.session.Session` in a server: hashable,
with a ``user`` and a ``client``, the connection the fan-out writes to). It answers
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

The fan-out iterates receivers on its hot path, reading each one's socket: so a
room's live receivers (and the relays) are a dict *client -> session*, whose keys are
the connection objects themselves, with no per-recipient indirection.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence

LOBBY = "lobby"
#: the rooms of every relay connection (shared, never changed)
_LOBBY_ONLY = (LOBBY,)
#: the rooms of a chatd.v1 connection before its first join (shared; a list replaces it)
_NO_ROOMS = ()


def _nothing(name: str) -> None:
    pass


class Room:
    """One room: its live receivers, its pending joiners and its users."""

    __slots__ = ("name", "live", "pending", "pending_bytes", "users")

    def __init__(self, name: str):
        self.name = name
        #: the live chatd.v1 sessions, as client -> session (ordered): its keys are
        #: what the fan-out sends the room's frames to
        self.live: dict[Hashable, Hashable] = {}
        #: chatd.v1 sessions still being sent their joined/replay -> buffer
        self.pending: dict[Hashable, list[tuple[int | None, bytes]]] = {}
        #: bytes buffered in ``pending`` per session (only those with any)
        self.pending_bytes: dict[Hashable, int] = {}
        #: user id -> number of that user's connections in the room
        self.users: dict[str, int] = {}

    def __bool__(self):
        return bool(self.users)


class Hub:
    """All rooms and connections of one chatd process."""

    def __init__(self):
        self.rooms: dict[str, Room] = {}
        #: user id -> that user's chatd.v1 sessions
        #: (a list: most users have one connection, and a list is a quarter of a dict)
        self.connections: dict[str, list] = {}
        #: relay-mode sessions as client -> session, in connection order (the keys
        #: are what the fan-out relays to)
        self.relays: dict[Hashable, Hashable] = {}
        self._rooms_of: dict[Hashable, set[str]] = {}
        self._opened = self._closed = _nothing

    def watch(self, opened, closed) -> None:
        """Call *opened(name)* when room *name* gets its first connection here (pending
        or live, relays in the lobby included) and *closed(name)* when its last one
        goes (a cluster broker follows the rooms this process has connections in)."""
        self._opened, self._closed = opened, closed

    # connections

    def connect(self, session) -> None:
        """Register a chatd.v1 connection of ``session.user``."""
        self.connections.setdefault(session.user, []).append(session)
        # a list once it joins, not a set: a connection is in a handful of rooms
        # (--max-rooms); until then the shared empty tuple costs nothing per connection
        self._rooms_of[session] = _NO_ROOMS

    def connect_relay(self, session) -> bool:
        """Register a relay connection; it joins :data:`LOBBY`.

        Returns True when this made ``session.user`` a new member of the lobby.
        """
        self.relays[session.client] = session
        self._rooms_of[session] = _LOBBY_ONLY
        return self._add_user(self._room(LOBBY), session.user)

    def disconnect(self, session) -> list[str]:
        """Forget *session*; returns the rooms its user has now left entirely."""
        self.relays.pop(session.client, None)
        conns = self.connections.get(session.user)
        if conns is not None and session in conns:
            conns.remove(session)
            if not conns:
                del self.connections[session.user]
        left = []
        for name in self._rooms_of.pop(session, ()):
            if self._remove(session, name):
                left.append(name)
        return sorted(left)

    def is_online(self, user: str) -> bool:
        """True when *user* has at least one chatd.v1 connection."""
        return user in self.connections

    def connections_of(self, user: str) -> list:
        """The chatd.v1 sessions of *user*."""
        return list(self.connections.get(user, ()))

    # rooms

    def _room(self, name: str) -> Room:
        room = self.rooms.get(name)
        if room is None:
            room = self.rooms[name] = Room(name)
            self._opened(name)
        return room

    @staticmethod
    def _add_user(room: Room, user: str) -> bool:
        count = room.users.get(user, 0)
        room.users[user] = count + 1
        return count == 0

    def join(self, session, name: str) -> tuple[bool, bool]:
        """Make *session* a pending member of room *name*.

        Returns ``(already, new_user)``: whether the connection was a member
        already (then nothing changes, but a live member becomes pending again
        so a resume replay can be sent in order), and whether the user is new
        to the room (then the others get a presence join).
        """
        room = self._room(name)
        rooms = self._rooms_of[session]
        if name in rooms:
            if session.client in room.live:
                del room.live[session.client]
                room.pending[session] = []
            return True, False
        if rooms is _NO_ROOMS:
            rooms = self._rooms_of[session] = []
        rooms.append(name)
        room.pending[session] = []
        return False, self._add_user(room, session.user)

    def go_live(self, session, name: str) -> list[tuple[int | None, bytes]] | None:
        """End *session*'s pending state in room *name*; returns its buffered frames.

        Returns None when the connection is no longer pending there (it left
        or disconnected meanwhile).
        """
        room = self.rooms.get(name)
        if room is None:
            return None
        buffered = room.pending.pop(session, None)
        room.pending_bytes.pop(session, None)
        if buffered is not None:
            room.live[session.client] = session
        return buffered

    def leave(self, session, name: str) -> bool:
        """Remove *session* from room *name*; True when its user left the room entirely.

        Raises ValueError when the connection is not in the room.
        """
        rooms = self._rooms_of[session]
        if name not in rooms:
            raise ValueError(f"not in room {name!r}")
        rooms.remove(name)
        return self._remove(session, name)

    def _remove(self, session, name: str) -> bool:
        room = self.rooms[name]
        room.live.pop(session.client, None)
        room.pending.pop(session, None)
        room.pending_bytes.pop(session, None)
        count = room.users[session.user] - 1
        if count:
            room.users[session.user] = count
            return False
        del room.users[session.user]
        if not room:
            del self.rooms[name]
            self._closed(name)
        return True

    def in_room(self, session, name: str) -> bool:
        """True when *session* has joined room *name* (pending or live)."""
        rooms = self._rooms_of.get(session)
        return rooms is not None and name in rooms

    def is_pending(self, session, name: str) -> bool:
        """True when *session* joined room *name* and has not gone live there yet."""
        room = self.rooms.get(name)
        return room is not None and session in room.pending

    def room_count(self, session) -> int:
        """How many rooms *session* is in."""
        return len(self._rooms_of.get(session, ()))

    def rooms_of(self, session) -> set[str]:
        """The rooms *session* is in."""
        return set(self._rooms_of.get(session, ()))

    def members(self, name: str) -> list[str]:
        """The sorted distinct user ids in room *name* (relay guests included)."""
        room = self.rooms.get(name)
        return sorted(room.users) if room else []

    def receivers(self, name: str) -> Iterable:
        """The connections (clients) of the live chatd.v1 sessions of room *name*."""
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
        for session, queued in room.pending.items():
            if session is not exclude:
                total = sizes[session] = sizes.get(session, 0) + size
                if limit is not None and total > limit:
                    over.append(session)
                else:
                    queued.append((seq, payload))
        for session in over:
            del room.pending[session], sizes[session]
        return over
