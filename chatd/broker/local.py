"""The single-process broker and directory: everything happens on this node only."""

from __future__ import annotations

from zope.interface import implementer

from chatd.broker import IBroker, IDirectory


@implementer(IBroker)
class LocalBroker:
    """Delivers each published event straight to the local chat, synchronously."""

    healthy = True

    def __init__(self):
        self._deliver = {}

    def attach(self, chat):
        from chatd.broker import KINDS

        self._deliver = {kind: getattr(chat, "deliver_" + kind) for kind in KINDS}

    def append(self, store, kind, fields, args):
        """Commit a message with ``store.append(*fields)``; the chat publishes it once committed."""
        return store.append(*fields)

    def publish(self, kind, *args):
        self._deliver[kind](*args)


@implementer(IDirectory)
class LocalDirectory:
    """Presence of one process: answers from the chat's hub, announces through its broker."""

    def __init__(self):
        self.chat = None

    def attach(self, chat):
        self.chat = chat

    def connected(self, conn, epoch):
        return None  # the chat's own name check is the whole truth

    def disconnected(self, conn, user):
        pass

    def joined(self, room, user, origin):
        self.chat.broker.publish("presence", room, user, "join", origin)

    def left(self, room, user, origin):
        self.chat.broker.publish("presence", room, user, "leave", origin)

    def members(self, room):
        return self.chat.hub.members(room)

    def is_online(self, user):
        return self.chat.hub.is_online(user)
