"""An in-memory history store: nothing survives a restart.

The reference implementation of :class:`chatd.store.IHistoryStore`: the property test
checks the SQLite store against it, and the unit tests run the ``Chat`` realm on it.
(``--db :memory:`` is SQLite in memory, not this store.)
"""

from __future__ import annotations

from bisect import bisect_left
from collections import deque

from twisted.internet.defer import succeed
from zope.interface import implementer

from chatd.store import Appended, IHistoryStore, Message, Page, Replay


@implementer(IHistoryStore)
class MemoryStore:
    """Keeps at most ``history_max`` messages per channel in memory."""

    durable = False

    def __init__(self, history_max: int = 10000):
        self.history_max = history_max
        self._channels: dict[str, deque[Message]] = {}
        self._last_seq: dict[str, int] = {}
        self._by_client_id: dict[tuple[str, str], Message] = {}

    def start(self):
        return succeed(None)

    def stop(self):
        return succeed(None)

    def append(self, channel, sender, name, client_id, text, ts):
        if client_id is not None:
            original = self._by_client_id.get((sender, client_id))
            if original is not None:
                return succeed(Appended(original, True))
        seq = self._last_seq.get(channel, 0) + 1
        self._last_seq[channel] = seq
        message = Message(channel, seq, sender, name, text, ts, client_id)
        log = self._channels.get(channel)
        if log is None:
            log = self._channels[channel] = deque()
        log.append(message)
        while len(log) > self.history_max:
            log.popleft()
        if client_id is not None:
            self._by_client_id[(sender, client_id)] = message
        return succeed(Appended(message, False))

    def _log(self, channel) -> list[Message]:
        return list(self._channels.get(channel, ()))

    def replay(self, channel, since, limit):
        last = self._last_seq.get(channel, 0)
        if since is None:
            return succeed(Replay([], last, False))
        log = self._log(channel)
        start = bisect_left([m.seq for m in log], since + 1)
        missed = log[start:]
        truncated = len(missed) > limit or (
            last > since and (not missed or missed[0].seq > since + 1)
        )
        return succeed(Replay(missed[-limit:] if limit else [], last, truncated))

    def history(self, channel, before, limit):
        log = self._log(channel)
        end = len(log) if before is None else bisect_left([m.seq for m in log], before)
        start = max(0, end - limit)
        return succeed(Page(log[start:end], start > 0))
