"""Fan-out between chatd nodes: who hears about an event.

The chat logic never delivers a room message, DM, presence change, typing
notice or relayed frame straight to its own connections. It *publishes* the
event on a broker, and the broker calls ``chat.deliver_<kind>(*args)`` on every
node that should see it — with :class:`~chatd.broker.local.LocalBroker` that
is just this process, synchronously; a cluster broker carries the event to
every node, in the order the events were published.

Event kinds and their arguments (``origin`` is the session id of the
connection that caused the event, so that connection can be skipped):

``message``  (message: chatd.store.Message, origin, from_relay: bool)
``dm``       (message: chatd.store.Message, to: str, origin)
``presence`` (room: str, user: str, event: "join" | "leave", origin)
``typing``   (room: str, user: str, origin)
``relay``    (payload: bytes, is_binary: bool, origin)
"""

from __future__ import annotations

from zope.interface import Attribute, Interface

KINDS = ("message", "dm", "presence", "typing", "relay")

#: answers of a cluster-wide name claim (:meth:`IDirectory.connected`): the name is
#: this node's now; it is held on another node; it is this node's, but another
#: session held it since the claiming anonymous session last did
TAKEN, CLAIMED, SUPERSEDED = 0, 1, 2


class IBroker(Interface):
    """Carries chat events to the nodes that deliver them."""

    healthy = Attribute("False while the broker cannot carry events (e.g. Redis is down).")

    def attach(chat):
        """Deliver events to *chat* (this node's :class:`chatd.chat.Chat`)."""

    def append(store, kind, fields, args):
        """Commit a ``message`` or ``dm`` to *store*; fires with :class:`chatd.store.Appended`.

        *fields* are ``store.append``'s arguments, *args* the event's arguments
        after the message. A broker whose store publishes on commit (Redis)
        does both in one atomic step; otherwise the chat publishes the event
        once the commit fires.
        """

    def publish(kind, *args):
        """Carry one event of *kind* (see the module docstring) to every node.

        ``message`` and ``dm`` events already carried by :meth:`append` are
        not carried again.
        """


class IDirectory(Interface):
    """Who is where: presence and online users, on this node or across a cluster.

    :class:`chatd.chat.Chat` keeps its connections in :class:`chatd.hub.Hub`
    and tells the directory about user-level changes on this node; the
    directory decides what the cluster (or the single process) sees. The
    local implementation (:class:`chatd.broker.local.LocalDirectory`) answers
    from the hub; the Redis one (:class:`chatd.broker.redis.RedisDirectory`)
    counts users across nodes. ``members`` and ``is_online`` return either a
    value or a Deferred firing with it.
    """

    def attach(chat):
        """Serve *chat* (this node's :class:`chatd.chat.Chat`)."""

    def connected(conn, epoch):
        """A chatd.v1 connection of ``conn.user`` opened on this node.

        *epoch* is the id of the connection's anonymous session
        (:class:`chatd.anonymous.AnonymousSession`), None for a token user.
        Returns None when this node alone decides names (the chat has checked
        it), else a Deferred firing with :data:`CLAIMED`, :data:`TAKEN` (an
        anonymous name held on another node) or :data:`SUPERSEDED` (claimed, but
        another session had the name since *epoch* last held it). The chat
        executes none of the connection's frames before it fires.
        """

    def disconnected(conn, user):
        """A connection of *user* closed on this node (it has left its rooms already)."""

    def joined(room, user, origin):
        """*user* has its first connection in *room* on this node: announce the join
        (once per user across the cluster)."""

    def left(room, user, origin):
        """*user*'s last connection in *room* on this node left: announce the leave
        when it was the user's last anywhere."""

    def members(room):
        """The sorted distinct user ids in *room* (a list, or a Deferred of one)."""

    def is_online(user):
        """True when *user* has a chatd.v1 connection (a bool, or a Deferred of one)."""
