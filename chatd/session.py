"""One connection's chat state: the avatar :meth:`chatd.chat.Chat.open` returns.

The realm (:class:`chatd.chat.Chat`) builds a :class:`Session` for every connection
that finishes its handshake and keeps everything it knows about that connection in
it: who it is, its anonymous session, its rate-limit bucket, the frames held while
the cluster confirms its name, and where it stands (:class:`State`). The connection
itself (:class:`chatd.interfaces.IChatClient`, the protocol in a server) is only the
session's writer, :attr:`Session.client`: the fan-out gets those, never sessions.

A session is kept small (``__slots__``): an idle server holds one per connection.
"""

from __future__ import annotations

import enum

from zope.interface import implementer

from chatd.interfaces import ISession


class State(enum.Enum):
    """Where a session stands."""

    #: a chatd.v1 session whose name the cluster has not confirmed yet: it got its
    #: ``welcome``, its frames are held, nothing addressed to its user reaches it
    OPENING = "opening"
    #: admitted: registered with the hub, its frames take effect
    LIVE = "live"
    #: refused at open (bad or taken name): nothing it sends counts, closing it changes nothing
    REFUSED = "refused"
    #: the connection went away
    CLOSED = "closed"


OPENING, LIVE, REFUSED, CLOSED = State.OPENING, State.LIVE, State.REFUSED, State.CLOSED


@implementer(ISession)
class Session:
    """A connection's domain state, and the calls the realm makes on its connection."""

    __slots__ = (
        "id",
        "mode",
        "client",
        "state",
        "user",
        "name",
        "identity",
        "anonymous",
        "bucket",
        "strikes",
        "held",
        "last_seen",
    )

    def __init__(self, id: str, mode: str, client, identity=None, now: float = 0.0):
        self.id = id
        self.mode = mode
        self.client = client
        self.state = OPENING
        self.user = None
        self.name = None
        self.identity = identity
        self.anonymous = None
        self.bucket = None
        self.strikes = None
        #: frames held while the cluster confirms the name (None: none are held)
        self.held = None
        self.last_seen = now

    def __repr__(self):
        return f"<Session {self.id} {self.mode} {self.user!r} {self.state.value}>"

    @property
    def active(self) -> bool:
        """True until the connection starts closing (nothing it sent after counts)."""
        return self.client.active

    def send(self, payload: bytes) -> None:
        """Send one text frame holding *payload* to the connection."""
        self.client.send(payload)

    def close(self, code: int, reason: str) -> None:
        """Close the connection with *code*."""
        self.client.close(code, reason)

    def when_drained(self):
        """The connection's :meth:`chatd.interfaces.IChatClient.when_drained` (None: a
        connection without it counts as always drained)."""
        when_drained = getattr(self.client, "when_drained", None)
        return None if when_drained is None else when_drained()
