"""One connection's chat state: the avatar :meth:`chatd.chat.Chat.open` returns.

The realm (:class:`chatd.chat.Chat`) builds a :class:`Session` for every connection
that finishes its handshake and keeps everything it knows about that connection in
it: who it is, its anonymous session, its rate-limit bucket, the frames held while
the cluster confirms its name (and its user is recorded), and where it stands (:class:`State`). The connection
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

    #: a chatd.v1 session whose name the cluster has not confirmed yet (or whose token
    #: user is being recorded as known): it has no ``welcome`` yet, its frames are
    #: held, nothing addressed to its user reaches it
    OPENING = "opening"
    #: admitted: registered with the hub, its frames take effect
    LIVE = "live"
    #: refused at open (bad or taken name): nothing it sends counts, closing it changes nothing
    REFUSED = "refused"
    #: the connection went away
    CLOSED = "closed"


OPENING, LIVE, REFUSED, CLOSED = State.OPENING, State.LIVE, State.REFUSED, State.CLOSED

#: seconds a conversation of a connection stays held back for a refused message that
#: is not sent again (the SDK resends within its rate backoff, at most about 10 s)
ORDER_HOLD = 15.0
#: refused ids remembered per conversation of a connection (beyond: the oldest go)
ORDER_MAX = 256
#: conversations held back per connection (beyond: the oldest hold ends)
ORDER_CONVERSATIONS = 64


class SendOrder:
    """One connection's conversations held back by a refused message (pure: the
    caller gives the time).

    A ``send``/``dm`` with an ``id`` refused with ``rate_limited`` holds back its
    conversation: the connection's later messages to it are refused too (and
    remembered) until the refused ones come back, first one first, so what is stored
    keeps the connection's send order. A hold whose first message does not come back
    within :data:`ORDER_HOLD` seconds (a client that dropped it) ends.
    """

    __slots__ = ("_held",)

    def __init__(self):
        #: conversation -> [time the first refused id became the first, refused ids]
        self._held: dict = {}

    def __bool__(self) -> bool:
        return bool(self._held)

    def refused(self, key, ref: str, now: float) -> None:
        """The message *ref* to conversation *key* was refused: it holds *key* back."""
        held = self._held
        entry = held.get(key)
        if entry is None:
            held[key] = [now, [ref]]
            if len(held) > ORDER_CONVERSATIONS:
                del held[next(iter(held))]
            return
        ids = entry[1]
        if ref not in ids:
            ids.append(ref)
            if len(ids) > ORDER_MAX:
                del ids[0]
                entry[0] = now

    def admits(self, key, ref: str, now: float) -> bool:
        """May the message *ref* to conversation *key* go ahead now? Only the first
        held-back one does (or any, once the hold has ended); another is refused and
        remembered behind them."""
        entry = self._held.get(key)
        if entry is None:
            return True
        since, ids = entry
        if now - since > ORDER_HOLD:
            del self._held[key]
            return True
        if ids[0] != ref:
            self.refused(key, ref, now)
            return False
        del ids[0]
        if ids:
            entry[0] = now  # the next one has its own time to come back
        else:
            del self._held[key]
        return True


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
        "order",
        "features",
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
        #: conversations held back by a refused message (:class:`SendOrder`; None: none)
        self.order = None
        #: the features the client asked for in ``?features=`` (chatd.receipts;
        #: None: it named none)
        self.features = None

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
