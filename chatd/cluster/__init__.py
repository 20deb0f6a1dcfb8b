"""Between chatd nodes: the event bus, the message log and presence.

The chat logic never delivers a room message, DM, presence change, typing
notice or relayed frame straight to its own connections. It *publishes* the
event on a broker, and the broker calls ``chat.deliver_<kind>(*args)`` on every
node that should see it — with :class:`~chatd.cluster.local.LocalBroker` that
is just this process, synchronously; a cluster broker carries the event to
every node, in the order the events were published (on a Redis Cluster a room's
items, presence and typing only to the nodes with connections in the room:
:mod:`chatd.cluster.follow`, :meth:`IBroker.ready`).

Event kinds and their arguments (``origin`` is the session id of the
connection that caused the event, so that connection can be skipped):

``message``  (message: chatd.store.Message, origin, from_relay: bool)
``dm``       (message: chatd.store.Message, to: str, origin)
``presence`` (room: str, user: str, event: "join" | "leave", origin)
``typing``   (room: str, user: str, origin)
``relay``    (payload: bytes, is_binary: bool, origin)
``user``     (user: str, payload: bytes (a chatd.v1 frame), origin): to every
             connection of *user* (read markers, mute, receipts in DMs)
``room``     (room: str, payload: bytes, origin): to every connection subscribed
             to *room* (receipts in small rooms)
``sanction`` (user: str, origin): *user*'s mutes or bans changed (chatd.moderation):
             every node with a connection of the user reads them again
``receipt``  (room: str, user: str, seq: int, origin): *user*'s read marker in the
             small room *room* moved to *seq*, published instead of a ``room``
             receipt frame while ``--receipt-window`` is on: each node sends it
             now, or batches it for its connections that asked for batches

The modules:

:mod:`chatd.cluster.local`
    one process: :class:`~chatd.cluster.local.LocalBroker` and
    :class:`~chatd.cluster.local.LocalMessageLog` (the history store, then
    the broker).
:mod:`chatd.cluster.redis`
    many nodes on one Redis: the connections (``RedisNode``), the bus
    (``RedisBroker``) and ``RedisMessageLog`` (commit and publish in one script).
:mod:`chatd.cluster.presence`
    :class:`~chatd.cluster.presence.IDirectory`, who is where: the local
    directory and the Redis one.
:mod:`chatd.cluster.codec`
    the bus event format, built and parsed in one place.
:mod:`chatd.cluster.scripts`
    the Lua scripts (``lua/*.lua``).

Room messages and DMs are committed and published by one
:class:`chatd.interfaces.IMessageLog`; the broker's ``publish`` carries the
other kinds.
"""

from __future__ import annotations

from zope.interface import Attribute, Interface

KINDS = ("message", "dm", "presence", "typing", "relay", "user", "room", "sanction", "receipt")


class IBroker(Interface):
    """Carries chat events to the nodes that deliver them."""

    healthy = Attribute("False while the broker cannot carry events (e.g. Redis is down).")

    def attach(chat):
        """Deliver events to *chat* (this node's :class:`chatd.chat.Chat`)."""

    def ready(room):
        """A Deferred that fires once this node receives *room*'s events: at once
        unless the broker subscribes per room (a Redis Cluster) and this node has only
        just started following *room*; a join's replay is read after it, so replay
        and live stream meet without a gap. Fails with
        :class:`chatd.store.StoreUnavailable` when the subscription cannot be made."""

    def publish(kind, *args):
        """Carry one event of *kind* (see the module docstring) to every node.

        ``message`` and ``dm`` events are published by the message log that
        committed them (:class:`chatd.interfaces.IMessageLog`); a cluster
        broker does not carry them again.
        """
