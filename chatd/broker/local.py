"""The single-process broker: every event is delivered at once, on this node only."""

from __future__ import annotations

from zope.interface import implementer

from chatd.broker import IBroker


@implementer(IBroker)
class LocalBroker:
    """Delivers each published event straight to the local chat, synchronously."""

    healthy = True

    def __init__(self):
        self._deliver = {}

    def attach(self, chat):
        from chatd.broker import KINDS

        self._deliver = {kind: getattr(chat, "deliver_" + kind) for kind in KINDS}

    def publish(self, kind, *args):
        self._deliver[kind](*args)
