"""The Chat realm with fakes for its connections and fan-out: no sockets, time from a Clock."""

from __future__ import annotations

import json

from zope.interface import implementer

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


def token_user(chat: Chat, user: str, name: str | None = None, rooms=None) -> Conn:
    """A chatd.v1 connection of token user *user* (an Identity, as a verified token gives)."""
    from chatd.auth import Identity

    conn = Conn()
    conn.session = chat.open(conn, V1, None, identity=Identity(user, name or user, rooms))
    return conn
