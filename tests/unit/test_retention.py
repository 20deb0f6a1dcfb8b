"""The retention rules (chatd.store.retention), row by row: pure, with a fixed now."""

from __future__ import annotations

import pytest

from chatd.store.retention import DAY_MS, Retention

NOW = 1_000 * 86_400  # seconds: day 1000
NOW_MS = NOW * 1000


def _rows(first_seq, ages_days):
    """``(seq, ts)`` from *first_seq* on, each *ages_days* old at NOW."""
    return [(first_seq + i, int(NOW_MS - age * DAY_MS)) for i, age in enumerate(ages_days)]


def test_enabled_when_some_rule_can_delete():
    """Pruning is scheduled only when a count, an age or a dedupe bound is set."""
    assert Retention().enabled
    assert not Retention(history_max=None, history_days=None, dedupe_days=None).enabled
    assert not Retention(history_max=None, history_days=0, dedupe_days=0).enabled
    assert Retention(history_max=0, history_days=None, dedupe_days=None).enabled
    assert Retention(history_max=None, history_days=1, dedupe_days=None).enabled
    assert Retention(history_max=None, history_days=None, dedupe_days=1).enabled


@pytest.mark.parametrize(
    ("history_max", "first_seq", "last_seq", "chunk", "upto"),
    [
        (10, 1, 10, 500, None),  # exactly history_max kept: nothing goes
        (10, 1, 11, 500, 1),  # one over: the oldest goes
        (10, 1, 60, 500, 50),  # keep the newest 10
        (10, 1, 60, 7, 7),  # at most one chunk from the first seq
        (10, 8, 60, 7, 14),  # the next chunk
        (10, 50, 60, 7, 50),  # the last one over the bound
        (10, 51, 60, 7, None),  # done
        (0, 1, 3, 500, 3),  # history_max=0 keeps nothing
        (None, 1, 10**6, 500, None),  # no count bound
    ],
)
def test_count_bound(history_max, first_seq, last_seq, chunk, upto):
    """Over history_max, the oldest go, at most a chunk at a time."""
    rules = Retention(history_max=history_max, history_days=None, chunk=chunk)
    assert rules.messages_upto(NOW, last_seq, [(first_seq, 0)]) == upto


@pytest.mark.parametrize(
    ("ages", "upto"),
    [
        ([5, 4, 3, 1, 0], 3),  # older than 2 days: the first three
        ([1, 0], None),  # nothing old
        ([3, 3, 3], 3),  # all of them
        ([3, 1, 3], 1),  # a young one protects every newer one, however old
        ([2.0001, 1.9999], 1),  # just over / just under the bound
    ],
)
def test_age_bound_deletes_the_leading_old_run(ages, upto):
    """With history_days=2 the leading run of messages older than 2 days goes."""
    rules = Retention(history_max=None, history_days=2)
    rows = _rows(1, ages)
    assert rules.needs_timestamps(NOW, rows[0][1]) == (ages[0] > 2)
    assert rules.messages_upto(NOW, len(rows), rows) == upto


def test_a_message_exactly_at_the_cutoff_is_kept():
    """ts == cutoff is not older than history_days."""
    rules = Retention(history_max=None, history_days=2)
    cutoff = rules.message_cutoff(NOW)
    assert cutoff == NOW_MS - 2 * DAY_MS
    assert not rules.needs_timestamps(NOW, cutoff)
    assert rules.messages_upto(NOW, 2, [(1, cutoff - 1), (2, cutoff)]) == 1
    assert rules.messages_upto(NOW, 1, [(1, cutoff)]) is None


def test_age_bound_stops_at_the_chunk_end():
    """Rows past the chunk are not deleted in this chunk, even if old."""
    rules = Retention(history_max=None, history_days=1, chunk=3)
    rows = _rows(10, [9] * 6)
    assert rules.chunk_end(10) == 12
    assert rules.messages_upto(NOW, 15, rows) == 12


def test_count_and_age_together_take_the_larger():
    """Both bounds apply: whichever deletes more wins."""
    rules = Retention(history_max=3, history_days=2)
    rows = _rows(1, [9, 9, 1, 1, 1, 1])  # count says up to 3, age up to 2
    assert rules.messages_upto(NOW, 6, rows) == 3
    rows = _rows(1, [9, 9, 9, 9, 9, 1])  # age says up to 5, count up to 3
    assert rules.messages_upto(NOW, 6, rows) == 5
    rules = Retention(history_max=10, history_days=2)
    assert rules.messages_upto(NOW, 6, rows) == 5  # count alone: nothing


def test_no_rows_nothing_to_delete():
    """A channel whose every message is gone has nothing left to prune."""
    assert Retention(history_max=0, history_days=1).messages_upto(NOW, 99, []) is None


def test_seqs_pruned_before_are_not_counted_again():
    """last_seq counts pruned messages too: 5 kept of seqs 56..65 is right."""
    rules = Retention(history_max=10, history_days=None)
    assert rules.messages_upto(NOW, 65, [(56, 0)]) is None
    assert rules.messages_upto(NOW, 65, [(55, 0)]) == 55


@pytest.mark.parametrize(
    ("ages", "upto"),
    [
        ([31, 30.5, 29, 40], 2),  # the leading run older than 30 days
        ([29, 31], None),  # a young first record stops it
        ([], None),
        ([30, 31], None),  # exactly 30 days is at the cutoff: kept, and protects the next
    ],
)
def test_client_ids_leading_run_older_than_dedupe_days(ages, upto):
    """Exactly-once records older than dedupe_days go, in insertion (rowid) order."""
    rules = Retention(dedupe_days=30)
    rows = [(i + 1, int(NOW_MS - a * DAY_MS)) for i, a in enumerate(ages)]
    assert rules.client_ids_upto(NOW, rows) == upto


def test_client_ids_kept_without_dedupe_days():
    """dedupe_days None or 0: exactly-once records are kept for ever."""
    old = [(1, 0), (2, 0)]
    assert Retention(dedupe_days=None).client_ids_upto(NOW, old) is None
    assert Retention(dedupe_days=0).client_ids_upto(NOW, old) is None


def test_cursors_beyond_the_newest_16_or_older_than_30_days_are_dropped():
    """A user's cursors (oldest first) keep the newest cursor_max and none older than
    cursor_days; the cutoff itself is kept."""
    rules = Retention()
    now = 100 * DAY_MS / 1000
    fresh = [(f"c{i}", 99 * DAY_MS + i) for i in range(18)]
    assert rules.cursors_to_drop(now, fresh) == ["c0", "c1"]
    cutoff = rules.cursor_cutoff(now)
    assert cutoff == 70 * DAY_MS
    aged = [("old", cutoff - 1), ("edge", cutoff), ("new", cutoff + 5)]
    assert rules.cursors_to_drop(now, aged) == ["old"]
    assert rules.cursors_to_drop(now, []) == []
    assert Retention(cursor_max=1).cursors_to_drop(now, aged) == ["old", "edge"]
