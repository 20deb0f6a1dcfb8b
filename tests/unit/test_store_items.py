"""The pure rules of what a timeline item does to the rows it changes (chatd.store.items)."""

from __future__ import annotations

import pytest

from chatd.store import EVENTS, Member, Message, Room, items


def _event(ev, user="bob", seq=5, ts=1000, **extra):
    data = {"event": ev, "user": user, "by": "ann", **extra}
    return Message("team", seq, "ann", "Ann", "", ts, None, "event", data)


ROW = Member("team", "bob", "admin", "member", None, 3, True, 2)


def test_every_event_has_a_rule():
    """EVENTS (the contract) and the rules name the same events."""
    assert set(items.EVENT_STATES) == set(EVENTS)


@pytest.mark.parametrize(
    ("ev", "state", "role", "read_seq"),
    [
        ("joined", "member", "member", 5),
        ("invited", "member", "member", 5),
        ("created", "member", "owner", 5),
        ("left", "left", "admin", 3),
        ("kicked", "kicked", "admin", 3),
        ("banned", "banned", "admin", 3),
        ("unbanned", "left", "admin", 3),
        ("role", "member", "admin", 3),
    ],
)
def test_apply_event_to_an_existing_row(ev, state, role, read_seq):
    """Each event's state, role and marker; muted and peer are kept; since_seq is
    the event's seq."""
    got = items.apply_event(ROW, _event(ev))
    assert got == Member("team", "bob", role, state, None, read_seq, True, 5)


def test_apply_event_without_a_row():
    """joined/invited make a row with the given role and the marker at the event; a
    ban of a stranger makes a banned row (marker 0); role and room_updated make none."""
    assert items.apply_event(None, _event("invited", role="admin")) == Member(
        "team", "bob", "admin", "member", None, 5, False, 5
    )
    assert items.apply_event(None, _event("banned")) == Member(
        "team", "bob", "member", "banned", None, 0, False, 5
    )
    assert items.apply_event(None, _event("role", role="admin")) is None
    assert items.apply_event(ROW, _event("room_updated", user=None)) is None


def test_joined_never_moves_the_marker_back():
    """A join event older than the marker (it cannot be, but) leaves the marker."""
    row = Member("team", "bob", "member", "left", None, 9, False, 8)
    assert items.apply_event(row, _event("joined", seq=5)).read_seq == 9


def test_malformed_events_change_nothing():
    """An unknown event, a non-dict data or a non-string user leave no row."""
    bad = [
        _event("exploded"),
        Message("team", 5, "a", "A", "", 1, None, "event", None),
        Message("team", 5, "a", "A", "", 1, None, "event", {"event": "joined", "user": 7}),
        Message("team", 5, "a", "A", "hi", 1, None, "message", {"event": "joined", "user": "b"}),
    ]
    for item in bad:
        assert items.apply_event(ROW, item) is None
        assert items.apply_room(None, item) is None


def test_apply_room():
    """created makes the row (creator, ts) from changes; room_updated changes only
    what it names, creating a 0.1 room's row as public with no owner."""
    created = _event("created", user="ann", changes={"kind": "private", "title": "T"})
    room = items.apply_room(None, created)
    assert room == Room("team", "private", "T", "", "", "ann", 1000)
    updated = _event("room_updated", user=None, changes={"topic": "x", "title": None})
    assert items.apply_room(room, updated) == Room("team", "private", "T", "x", "", "ann", 1000)
    assert items.apply_room(None, updated) == Room("team", "public", "", "x", "", None, 0)
    assert items.apply_room(room, _event("joined")) is None


def test_target_and_data_of_recall_edit_reaction():
    """target_of reads an int target (not a bool); the data helpers add their field
    without touching the input."""
    recall = Message("r", 9, "a", "A", "", 5, None, "recalled", {"target": 3, "by": "a"})
    assert items.target_of(recall) == 3
    assert (
        items.target_of(Message("r", 9, "a", "A", "", 5, None, "edited", {"target": True})) is None
    )
    assert (
        items.target_of(Message("r", 9, "a", "A", "x", 5, None, "message", {"target": 3})) is None
    )
    data = {"mentions": ["b"], "edited_ts": 4}
    assert items.recalled_data(data, "a", 5) == {
        "mentions": ["b"],
        "edited_ts": 4,
        "recalled": {"by": "a", "ts": 5},
    }
    assert items.edited_data(data, 6)["edited_ts"] == 6 and data["edited_ts"] == 4
    assert items.reaction_data({"emoji": "x", "on": False}, True) == {"emoji": "x", "on": True}
    assert (
        items.is_recalled(Message("r", 3, "a", "A", "", 1, None, "message", {"recalled": {}}))
        is False
    )
    assert items.is_recalled(
        Message("r", 3, "a", "A", "", 1, None, "message", items.recalled_data(None, "a", 1))
    )


def test_mentions_of():
    """Strings only, each once, in order; none for other kinds or without a list."""
    m = Message("r", 1, "a", "A", "hi", 1, None, "message", {"mentions": ["b", 3, "@all", "b"]})
    assert items.mentions_of(m) == ["b", "@all"]
    assert items.mentions_of(Message("r", 1, "a", "A", "hi", 1, None)) == []
    assert (
        items.mentions_of(Message("r", 1, "a", "A", "", 1, None, "edited", {"mentions": ["b"]}))
        == []
    )
    assert (
        items.mentions_of(Message("r", 1, "a", "A", "", 1, None, "message", {"mentions": "b"}))
        == []
    )


def test_read_ord_bound_never_undercounts_unread():
    """Below the oldest stored item, the marker's ordinal is the lowest it can be."""
    assert items.read_ord_bound(10, 15, 12) == 7
    assert items.read_ord_bound(1, 15, 3) == 0
    assert items.dm_member("@dm:x", "a", "b", 4) == Member(
        "@dm:x", "a", "member", "member", "b", 4, False, 0
    )
