"""Token users over real sockets: connect, become a stored member of a room, send
and wait for the ack (the inbox and media integration tests)."""

from __future__ import annotations

from twisted.internet import defer

from tests.support.auth import token
from tests.support.frames import OTHER, next_of
from tests.wsclient import Client


@defer.inlineCallbacks
def user(srv, sub):
    """A chatd.v1 connection of the token user *sub*."""
    client = yield Client.v1(srv.port, token=token(sub))
    return client


@defer.inlineCallbacks
def member(srv, client, room):
    """*client* joins *room*; its user is a stored member (the ``joined`` event a
    first join appends, written here when the server has not)."""
    client.send(type="join", room=room)
    yield next_of(client, "joined", skip=OTHER - {"joined"}, room=room)
    sub = client.welcome["user"]
    row = yield srv.store.member(room, sub)
    if row is None or row.state != "member":
        data = {"event": "joined", "user": sub, "by": sub}
        fields = (room, sub, sub, None, "", srv.chat.now_ms(), "event", data)
        yield srv.chat.messages.append("message", fields, (None, False))


@defer.inlineCallbacks
def sent(client, room=None, to=None, **frame):
    """Send a message (or any acked request) and fire with its ack."""
    where = {"room": room} if room is not None else {"to": to}
    kind = frame.pop("type", "send" if room is not None else "dm")
    if kind in ("recall", "edit", "react"):
        where = {"room": room} if room is not None else {"with": to}
    client.send(type=kind, **where, **frame)
    ack = yield next_of(client, "ack", id=frame["id"])
    return ack
