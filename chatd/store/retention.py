"""What the history store's retention rules delete: pure functions, no I/O, no clock.

Rules
    At most ``history_max`` messages per channel (``--history-max``) and, if
    ``history_days`` is set (``--history-days``), none older than that by
    ``ts``. Exactly-once records have their own rule: none older than
    ``dedupe_days`` (default 30 days after the message's ``ts``); they outlive
    the message so a resend after pruning is still recognised.

Contiguous seqs
    Only ever the OLDEST messages of a channel are deleted (a prefix in seq
    order), so the messages of a channel always form a contiguous seq range.
    A message younger than the cutoff protects every newer one, even if a
    newer one carries an older ``ts`` (clients' clocks differ).

Chunks
    Deleting is done in chunks of at most ``chunk`` rows, so the store's
    writer thread is never busy for long (see :mod:`chatd.store.sqlite`).
    Each function answers for one chunk: call again until it answers None.

Sync cursors
    A user's cursors are kept while they are among the user's newest
    ``cursor_max`` (16) and younger than ``cursor_days`` (30): see
    :meth:`Retention.cursors_to_drop` and :meth:`Retention.cursor_cutoff`.

Every function takes ``now`` (seconds since the epoch) and what is stored;
tests/unit/test_retention.py checks them row by row.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

DAY_MS = 86_400_000


@dataclass(frozen=True, slots=True)
class Retention:
    """The retention rules of one store (None or 0: no such bound)."""

    history_max: int | None = 10000
    history_days: float | None = None
    dedupe_days: float | None = 30
    chunk: int = 500
    #: sync cursors: at most the newest ``cursor_max`` per user, none older than
    #: ``cursor_days`` (docs/protocol.md promises the newest 16 and 30 days)
    cursor_max: int = 16
    cursor_days: float = 30

    @property
    def enabled(self) -> bool:
        """True when some rule can delete something (pruning is worth scheduling)."""
        return bool(self.history_max is not None or self.history_days or self.dedupe_days)

    def message_cutoff(self, now: float) -> int | None:
        """The ``ts`` (ms) a message must reach to be kept, or None without an age bound."""
        if not self.history_days:
            return None
        return int((now * 1000) - self.history_days * DAY_MS)

    def chunk_end(self, first_seq: int) -> int:
        """The highest seq one chunk starting at *first_seq* may reach."""
        return first_seq + self.chunk - 1

    def needs_timestamps(self, now: float, first_ts: int) -> bool:
        """Whether :meth:`messages_upto` needs the ts of the whole chunk, not only the
        first message's (only when the oldest message is older than the cutoff)."""
        cutoff = self.message_cutoff(now)
        return cutoff is not None and first_ts < cutoff

    def messages_upto(
        self, now: float, last_seq: int, oldest: Sequence[tuple[int, int]]
    ) -> int | None:
        """The highest seq of a channel to delete in this chunk, or None for nothing.

        *last_seq* is the channel's newest committed seq; *oldest* are
        ``(seq, ts)`` of its oldest stored messages, ascending: at least the
        first, and every one up to :meth:`chunk_end` when
        :meth:`needs_timestamps` says so.
        """
        if not oldest:
            return None
        first_seq, first_ts = oldest[0]
        end = self.chunk_end(first_seq)
        upto = None
        if self.history_max is not None:
            by_count = last_seq - self.history_max
            if by_count >= first_seq:
                upto = min(by_count, end)
        cutoff = self.message_cutoff(now)
        if cutoff is not None and first_ts < cutoff:
            old = None
            for seq, ts in oldest:
                if seq > end or ts >= cutoff:
                    break
                old = seq
            if old is not None:
                upto = old if upto is None else max(upto, old)
        return upto

    def client_ids_upto(self, now: float, oldest: Sequence[tuple[int, int]]) -> int | None:
        """The highest rowid of exactly-once records to delete, or None for nothing.

        *oldest* are ``(rowid, ts)`` of the oldest records in insertion order
        (at most a chunk); the leading run older than ``dedupe_days`` goes.
        """
        if not self.dedupe_days:
            return None
        cutoff = int(now * 1000 - self.dedupe_days * DAY_MS)
        upto = None
        for rowid, ts in oldest:
            if ts >= cutoff:
                break
            upto = rowid
        return upto

    def cursor_cutoff(self, now: float) -> int:
        """The ``ts`` (ms) a sync cursor must reach to be kept."""
        return int(now * 1000 - self.cursor_days * DAY_MS)

    def cursors_to_drop(self, now: float, cursors: Sequence[tuple[str, int]]) -> list[str]:
        """The cursors of one user to delete: *cursors* are ``(cursor, ts)``, oldest
        first; all but the newest ``cursor_max`` go, and any older than the cutoff."""
        cutoff = self.cursor_cutoff(now)
        excess = max(0, len(cursors) - self.cursor_max)
        return [c for i, (c, ts) in enumerate(cursors) if i < excess or ts < cutoff]
