"""The user's inbox: conversation list, sync, read markers and receipts, mute,
recall, edit, reactions (docs/protocol.md, *Conversations*).

:class:`Inbox` holds the request handlers ``_on_<type>`` that
:class:`chatd.chat.Chat` dispatches to; the pure parts (unread arithmetic,
sync snapshots and diffs) take their inputs and ``now`` and do no I/O.
"""

from __future__ import annotations


class Inbox:
    """Conversations of token users (one per :class:`chatd.chat.Chat`)."""

    def __init__(self, chat):
        self.chat = chat
