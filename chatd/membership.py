"""Rooms as memberships: create, invite, kick, ban, roles, room info, member lists.

The realm's part for durable membership (docs/protocol.md, *Conversations*:
*Membership*, *Room kinds and roles*, *Timeline events*, *Offline DMs*).
:class:`Membership` holds the request handlers ``_on_<type>`` that
:class:`chatd.chat.Chat` dispatches to; who may do what is
:func:`chatd.permissions.may`.
"""

from __future__ import annotations


class Membership:
    """Durable room membership for token users (one per :class:`chatd.chat.Chat`)."""

    def __init__(self, chat):
        self.chat = chat
