"""The seams between chatd's parts, as zope interfaces."""

from __future__ import annotations

from zope.interface import Attribute, Interface


class IChatClient(Interface):
    """One connection as its session and the realm call it (the protocol in a server).

    It holds no chat state: that is its :class:`ISession`'s.
    """

    active = Attribute("True until the connection starts closing (nothing it sent after counts).")

    def send(payload):
        """Send one text frame holding *payload* (bytes), if the connection is open."""

    def close(code, reason):
        """Close the connection with a WebSocket close code."""

    def when_drained():
        """None while the connection takes more bytes now, else a Deferred fired once
        its write buffer has drained (join replays wait for it; a connection without
        this method counts as always drained)."""


class ISession(Interface):
    """One connection's chat state, built by :meth:`chatd.chat.Chat.open` (the avatar).

    The hub keys rooms and users on sessions; the fan-out gets their ``client``.
    """

    id = Attribute("A unique id of this connection (the ``session`` of ``welcome``).")
    mode = Attribute("'relay' or 'chatd.v1'.")
    client = Attribute("The connection (IChatClient): what the fan-out writes to.")
    state = Attribute("A chatd.session.State: OPENING, LIVE, REFUSED or CLOSED.")
    user = Attribute("The user id (None when refused).")
    name = Attribute("The display name.")
    identity = Attribute("The verified token's chatd.auth.Identity, None for anonymous.")
    anonymous = Attribute("The chatd.anonymous.AnonymousSession of an anonymous user, or None.")
    bucket = Attribute("The connection's rate-limit bucket (chatd.limits).")
    strikes = Attribute("The connection's flood strikes (chatd.limits).")
    held = Attribute("Frames held while the cluster confirms the name (None: none held).")
    last_seen = Attribute("Reactor time of the last frame from the client.")
    active = Attribute("The connection's ``active``.")

    def send(payload):
        """Send one text frame holding *payload* to the connection."""

    def close(code, reason):
        """Close the connection with a WebSocket close code."""

    def when_drained():
        """The connection's ``when_drained()`` (None: always drained)."""


class IFanout(Interface):
    """Sends one frame to many connections, encoding and framing it once."""

    def deliver(conns, payload, exclude):
        """Send text frame *payload* to every open connection in *conns* but *exclude*."""

    def broadcast(conns, payload, is_binary, exclude):
        """Send *payload* verbatim (text or binary) to every open one of *conns* but *exclude*."""


class IMessageLog(Interface):
    """Where the chat commits room messages and DMs: the history store and the bus in one.

    A commit is published to every node (``chat.deliver_<kind>``) once it is
    stored, and never when it is a duplicate. The single-process log
    (:class:`chatd.cluster.local.LocalMessageLog`) appends to the store, then
    publishes through the local broker; the cluster one
    (:class:`chatd.cluster.redis.RedisMessageLog`) commits and publishes in one
    Redis script, so every node sees each channel's messages in seq order.
    """

    def append(kind, fields, args):
        """Commit a ``message`` or ``dm`` and publish it; fires with :class:`chatd.store.Appended`.

        *fields* are :meth:`chatd.store.IHistoryStore.append`'s arguments
        ``(channel, sender, name, client_id, text, ts)``, *args* the event's
        arguments after the message (see :mod:`chatd.cluster`). Fails with
        :class:`chatd.store.StoreUnavailable` when nothing was committed.
        """
