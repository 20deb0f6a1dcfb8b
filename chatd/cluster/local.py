"""The single-process broker and message log: everything happens on this node only."""

from __future__ import annotations

from twisted.internet.defer import succeed
from zope.interface import implementer

from chatd.cluster import KINDS, IBroker
from chatd.interfaces import IMessageLog


@implementer(IBroker)
class LocalBroker:
    """Delivers each published event straight to the local chat, synchronously."""

    healthy = True

    def __init__(self):
        self._deliver = {}

    def attach(self, chat):
        self._deliver = {kind: getattr(chat, "deliver_" + kind) for kind in KINDS}

    def ready(self, room):
        return succeed(None)  # every event is delivered here

    def publish(self, kind, *args):
        self._deliver[kind](*args)


@implementer(IMessageLog)
class LocalMessageLog:
    """Commits to a history store (SQLite, memory), then publishes through *broker*."""

    def __init__(self, store, broker):
        self.store = store
        self.broker = broker

    def append(self, kind, fields, args):
        """``store.append(*fields)``; once committed (not a duplicate), ``broker.publish``."""
        return self.store.append(*fields).addCallback(self._committed, kind, args)

    def _committed(self, appended, kind, args):
        if not appended.duplicate:
            self.broker.publish(kind, appended.message, *args)
        return appended
