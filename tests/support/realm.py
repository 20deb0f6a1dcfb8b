"""The Chat realm with fakes for its connections and fan-out: no sockets, time from a Clock."""

from __future__ import annotations

import json

from twisted.python.failure import Failure
from zope.interface import implementer

from chatd.auth import Identity
from chatd.chat import V1, Chat
from chatd.interfaces import IChatClient, IFanout
from chatd.service import build_chat
from chatd.settings import Settings
from chatd.store.memory import MemoryStore


@implementer(IChatClient)
class Conn:
    """A connection that records the frames and the close the realm gives it
    (``session`` is what ``Chat.open`` returned for it: the test hands it back)."""

    def __init__(self):
        self.session = None
        self.frames: list = []
        self.closed = None

    @property
    def active(self) -> bool:
        return self.closed is None

    def when_drained(self):
        return None  # always writable: nothing to wait for

    def send(self, payload: bytes) -> None:
        if self.closed is None:
            self.frames.append(payload)

    def close(self, code, reason) -> None:
        if self.closed is None:
            self.closed = (code, reason)

    def json(self) -> list[dict]:
        """Every text frame received, parsed (relay frames are left out)."""
        return [json.loads(f) for f in self.frames if f.startswith(b"{")]

    def of(self, kind: str) -> list[dict]:
        return [f for f in self.json() if f["type"] == kind]


@implementer(IFanout)
class Fanout:
    """Sends each frame to every connection but the excluded one, as the factory does."""

    def deliver(self, conns, payload, exclude):
        for conn in list(conns):
            if conn is not exclude:
                conn.send(payload)

    def broadcast(self, conns, payload, is_binary, exclude):
        self.deliver(conns, payload, exclude)


def make_chat(clock, **settings) -> Chat:
    return build_chat(MemoryStore(), Fanout(), Settings(**settings), clock)


def opened(chat: Chat, name: str | None = None, mode=V1, resume=None) -> Conn:
    conn = Conn()
    conn.session = chat.open(conn, mode, name, resume=resume)
    return conn


def say(chat: Chat, conn: Conn, **frame) -> None:
    chat.receive(conn.session, json.dumps(frame).encode(), False)


def token_user(
    chat: Chat, user: str, name: str | None = None, rooms=None, moderator=False, features=None
) -> Conn:
    """A chatd.v1 connection of token user *user* (an Identity, as a verified token
    gives; *moderator*: its token has the ``mod`` claim; *features*: the parsed
    ``?features=`` of its URL)."""
    conn = Conn()
    identity = Identity(user, name or user, rooms, moderator=moderator)
    conn.session = chat.open(conn, V1, None, identity=identity, features=features)
    return conn


def fired(d):
    """The result of a Deferred that has fired (the MemoryStore answers at once)."""
    results = []
    d.addBoth(results.append)
    assert results, "the Deferred has not fired"
    if isinstance(results[0], Failure):
        results[0].raiseException()
    return results[0]


def member_join(chat: Chat, conn: Conn, room: str) -> None:
    """*conn* joins *room*, and its token user is a stored member of it (the
    ``joined`` event chatd.membership appends on a first join, when it has not)."""
    say(chat, conn, type="join", room=room)
    user = conn.session.user
    row = fired(chat.store.member(room, user))
    if row is None or row.state != "member":
        timeline_event(chat, room, "joined", user)


def team(chat: Chat, *users, room="team") -> list[Conn]:
    """Token connections of *users*, each a member of *room* (joined in that order)."""
    conns = [token_user(chat, user) for user in users]
    for conn in conns:
        member_join(chat, conn, room)
    return conns


def last(conn: Conn, kind: str) -> dict:
    """The last *kind* frame *conn* received (there must be one)."""
    frames = conn.of(kind)
    assert frames, f"no {kind} frame in {conn.json()}"
    return frames[-1]


def timeline_event(chat: Chat, room: str, event: str, user: str, by=None, **data):
    """Append an ``event`` item to *room*'s timeline through the message log (as
    chatd.membership does: stored, applied, delivered); returns the stored item."""
    data = {"event": event, "user": user, "by": by or user, **data}
    fields = (room, by or user, by or user, None, "", chat.now_ms(), "event", data)
    return fired(chat.messages.append("message", fields, (None, False))).message
