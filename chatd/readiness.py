"""``/readyz``: whether this process should get new clients.

:class:`Readiness` answers with a store round-trip, the store's latest commit and the
broker's health; :class:`ReadyResource` serves it. While chatd shuts down it answers
503 at once, so a load balancer stops sending new clients before the 1001 closes go
out.
"""

from __future__ import annotations

import json

from twisted.internet import defer
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

#: seconds the store round-trip may take before /readyz says it failed
TIMEOUT = 2.0


class Readiness:
    """Checks the store and the broker of one process (see the module docstring).

    A store whose commits fail (a full disk) still answers reads, so the round-trip
    alone would stay 200 while every ``send`` gets ``unavailable``: its
    ``commit_error`` (SQLite's; other stores have none) counts too.
    """

    def __init__(self, store, broker, reactor):
        self.store = store
        self.broker = broker
        self.reactor = reactor
        #: True once shutdown began: every check answers "stopping"
        self.stopping = False
        #: ``{index, pid}`` in a ``--workers`` worker (shown in every answer)
        self.worker = None

    def check(self):
        """Fires with ``(ok, body)``: store round-trip and broker health."""
        if self.stopping:
            return defer.succeed((False, {"status": "stopping"}))
        broker_ok = bool(self.broker.healthy)
        d = self.store.replay("@readyz", None, 0)
        d.addTimeout(TIMEOUT, self.reactor)

        def result(outcome):
            commit_error = getattr(self.store, "commit_error", None)
            if isinstance(outcome, Failure):
                store = outcome.getErrorMessage() or "failed"
            elif commit_error is not None:
                store = f"commits fail: {commit_error}"
            else:
                store = "ok"
            store_ok = store == "ok"
            body = {
                "status": "ready" if store_ok and broker_ok else "unavailable",
                "store": store,
                "broker": "ok" if broker_ok else "unhealthy",
            }
            return (store_ok and broker_ok, body)

        return d.addBoth(result)


class ReadyResource(Resource):
    """``GET /readyz``: 200 with :meth:`Readiness.check`'s body when ready, else 503."""

    isLeaf = True

    def __init__(self, readiness: Readiness):
        super().__init__()
        self.readiness = readiness

    def render_GET(self, request):
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"cache-control", b"no-store")
        d = self.readiness.check()

        def answer(result):
            ok, body = result
            if self.readiness.worker is not None:
                body = {**body, "worker": self.readiness.worker}
            if request._disconnected:
                return
            request.setResponseCode(200 if ok else 503)
            request.write(json.dumps(body).encode())
            request.finish()

        d.addCallback(answer)
        return NOT_DONE_YET
