"""The seams between chatd's parts, as zope interfaces."""

from __future__ import annotations

from zope.interface import Attribute, Interface


class IChatClient(Interface):
    """One connection as the chat logic sees it."""

    mode = Attribute("'relay' or 'chatd.v1'.")
    user = Attribute("The user id (None until the connection is accepted).")
    name = Attribute("The display name.")
    session = Attribute("A unique id of this connection.")

    def send(payload):
        """Send one text frame holding *payload* (bytes), if the connection is open."""

    def close(code, reason):
        """Close the connection with a WebSocket close code."""

    def when_drained():
        """None while the connection takes more bytes now, else a Deferred fired once
        its write buffer has drained (join replays wait for it; a connection without
        this method counts as always drained)."""


class IFanout(Interface):
    """Sends one frame to many connections, encoding and framing it once."""

    def deliver(conns, payload, exclude):
        """Send text frame *payload* to every open connection in *conns* but *exclude*."""

    def relay(conns, payload, is_binary, exclude):
        """Send *payload* verbatim (text or binary) to every open one of *conns* but *exclude*."""
