"""Room receipt batching (``--receipt-window``, chatd.receipts): the pure batcher on a
``task.Clock``, the ``features`` parameter, and the realm's receipts to batching and
non-batching connections (a real MemoryStore, time from the clock)."""

from __future__ import annotations

from twisted.internet import task

from chatd.cluster import codec
from chatd.receipts import FEATURES_MAX, RECEIPTS_BATCH, ReceiptBatcher, parse_features
from tests.support.realm import last, make_chat, member_join, say, team, token_user

BATCH = frozenset((RECEIPTS_BATCH,))


def batcher():
    clock, flushed = task.Clock(), []
    return clock, flushed, ReceiptBatcher(clock, lambda room, r: flushed.append((room, r)))


def test_a_window_coalesces_each_users_newest_seq_in_first_move_order():
    clock, flushed, b = batcher()
    assert b.add("team", "bob", 3, 0.2) is True  # opens the window
    assert b.add("team", "carol", 2, 0.2) is False
    assert b.add("team", "bob", 5, 0.2) is False
    assert b.add("team", "carol", 1, 0.2) is False  # (an older seq never wins)
    clock.advance(0.19)
    assert flushed == [] and len(b) == 1
    clock.advance(0.01)
    assert flushed == [("team", [("bob", 5), ("carol", 2)])]
    assert len(b) == 0


def test_rooms_have_windows_of_their_own_and_the_next_receipt_opens_a_new_one():
    clock, flushed, b = batcher()
    b.add("a", "bob", 1, 0.2)
    clock.advance(0.1)
    b.add("b", "bob", 1, 0.2)
    clock.advance(0.1)
    assert flushed == [("a", [("bob", 1)])]
    assert b.add("a", "carol", 4, 0.2) is True
    clock.advance(0.1)
    assert flushed[1:] == [("b", [("bob", 1)])]
    clock.advance(0.1)
    assert flushed[2:] == [("a", [("carol", 4)])]
    clock.advance(10)
    assert len(flushed) == 3  # nothing more: an idle room has no timer


def test_features_keep_known_names_only_and_read_a_bounded_prefix():
    assert parse_features(None) is None
    assert parse_features("") == frozenset()
    assert parse_features("receipts_batch") == BATCH
    assert parse_features("x, receipts_batch ,receipts_batch,y") == BATCH
    assert parse_features("nope," * 1000) == frozenset()
    # past FEATURES_MAX names (or 256 characters) nothing is read
    assert parse_features("x," * FEATURES_MAX + "receipts_batch") == frozenset()
    assert parse_features(" " * 300 + "receipts_batch") == frozenset()


def test_welcome_lists_granted_features_only_when_asked(clock):
    chat = make_chat(clock)
    plain = token_user(chat, "alice")
    asked = token_user(chat, "bob", features=BATCH)
    none = token_user(chat, "carol", features=frozenset())
    assert "features" not in last(plain, "welcome")
    assert last(asked, "welcome")["features"] == ["receipts_batch"]
    assert last(none, "welcome")["features"] == []
    off = make_chat(clock, receipt_window=0)
    assert last(token_user(off, "bob", features=BATCH), "welcome")["features"] == []


def _seq(conn, mid):
    return next(f["seq"] for f in conn.of("ack") if f["id"] == mid)


def test_batching_members_get_one_frame_per_window_the_others_each_receipt(clock):
    chat = make_chat(clock)
    alice, bob, carol, dave = team(chat, "alice", "bob", "carol", "dave")
    batched = token_user(chat, "alice", features=BATCH)  # alice's second device
    member_join(chat, batched, "team")
    for n in range(3):
        say(chat, alice, type="send", room="team", text=f"m{n}", id=f"m{n}")
    end = _seq(alice, "m2")
    say(chat, bob, type="read", room="team", seq=end - 1)
    say(chat, carol, type="read", room="team", seq=end)
    say(chat, bob, type="read", room="team", seq=end)
    # the device that did not ask: a receipt per read, at once (as with the window off)
    assert [(r["user"], r["seq"]) for r in alice.of("receipt")] == [
        ("bob", end - 1),
        ("carol", end),
        ("bob", end),
    ]
    assert batched.of("receipt") == [] and batched.of("receipts_batch") == []
    clock.advance(0.2)
    assert batched.of("receipts_batch") == [
        {
            "type": "receipts_batch",
            "room": "team",
            "receipts": [{"user": "bob", "seq": end}, {"user": "carol", "seq": end}],
        }
    ]
    assert batched.of("receipt") == []
    # the next read opens the next window
    say(chat, dave, type="read", room="team", seq=end)
    clock.advance(0.2)
    assert last(batched, "receipts_batch")["receipts"] == [{"user": "dave", "seq": end}]
    assert len(batched.of("receipts_batch")) == 2


def test_window_off_is_todays_receipt_for_everyone(clock):
    chat = make_chat(clock, receipt_window=0)
    alice, bob = team(chat, "alice", "bob")
    batched = token_user(chat, "alice", features=BATCH)
    member_join(chat, batched, "team")
    say(chat, alice, type="send", room="team", text="hi", id="m1")
    say(chat, bob, type="read", room="team", seq=_seq(alice, "m1"))
    want = {"type": "receipt", "room": "team", "user": "bob", "seq": _seq(alice, "m1")}
    assert last(batched, "receipt") == want and last(alice, "receipt") == want
    clock.advance(1)
    assert batched.of("receipts_batch") == []


def test_a_connection_that_stopped_receiving_the_room_gets_no_batch(clock):
    chat = make_chat(clock)
    alice, bob = team(chat, "alice", "bob")
    carol = token_user(chat, "carol", features=BATCH)
    member_join(chat, carol, "team")
    say(chat, alice, type="send", room="team", text="hi", id="m1")
    say(chat, bob, type="read", room="team", seq=_seq(alice, "m1"))
    say(chat, carol, type="leave", room="team")  # within the window
    clock.advance(0.2)
    assert carol.of("receipts_batch") == []


def test_dms_and_large_rooms_are_unchanged_by_the_window(clock):
    chat = make_chat(clock, receipt_members=2)
    alice = token_user(chat, "alice", features=BATCH)
    bob = token_user(chat, "bob")
    say(chat, alice, type="dm", to="bob", text="hi", id="d1")
    say(chat, bob, type="read", **{"with": "alice"}, seq=_seq(alice, "d1"))
    # a DM's receipt is immediate, batching or not
    assert last(alice, "receipt") == {
        "type": "receipt",
        "with": "bob",
        "user": "bob",
        "seq": _seq(alice, "d1"),
    }
    for conn in (alice, bob, token_user(chat, "carol")):
        member_join(chat, conn, "big")
    say(chat, alice, type="send", room="big", text="hi", id="m1")
    say(chat, bob, type="read", room="big", seq=_seq(alice, "m1"))
    clock.advance(1)
    assert alice.of("receipts_batch") == []
    assert len(alice.of("receipt")) == 1


def test_the_receipt_bus_event_round_trips_through_the_codec():
    """docs/cluster.md: ``{"k": "receipt", "a": [room, user, seq, origin]}``; the origin
    session means something only on the node that published it."""
    payload = '{"k": "receipt", "n": "n0de1", "a": ["team", "zo\\u00eb", 42, "sess-a"]}'
    event = codec.BusEvent("receipt", "n0de1", ("team", "zoë", 42, "sess-a"))
    assert codec.decode(payload) == event
    assert codec.encode(event) == payload
    assert event.deliver_args(True) == ("team", "zoë", 42, "sess-a")
    assert event.deliver_args(False) == ("team", "zoë", 42, None)


def test_stats_count_the_batched_receipts_and_the_batches_sent(clock):
    chat = make_chat(clock)
    alice, bob, carol = team(chat, "alice", "bob", "carol")
    for user in ("alice", "dave"):
        member_join(chat, token_user(chat, user, features=BATCH), "team")
    say(chat, alice, type="send", room="team", text="hi", id="m1")
    for conn in (bob, carol):
        say(chat, conn, type="read", room="team", seq=_seq(alice, "m1"))
    assert (chat.stats.receipts_batched, chat.stats.receipt_batches) == (2, 0)
    clock.advance(0.2)
    assert (chat.stats.receipts_batched, chat.stats.receipt_batches) == (2, 2)


def test_a_window_turned_off_live_sends_receipts_to_batching_connections_too(clock):
    """SIGHUP with --receipt-window 0 (the setting changes in place): a connection
    granted receipts_batch gets each receipt as ``receipt`` from then on."""
    chat = make_chat(clock)
    alice, bob = team(chat, "alice", "bob")
    batched = token_user(chat, "carol", features=BATCH)
    member_join(chat, batched, "team")
    say(chat, alice, type="send", room="team", text="hi", id="m1")
    chat.settings.receipt_window = 0
    say(chat, bob, type="read", room="team", seq=_seq(alice, "m1"))
    want = {"type": "receipt", "room": "team", "user": "bob", "seq": _seq(alice, "m1")}
    assert last(batched, "receipt") == want
    clock.advance(1)
    assert batched.of("receipts_batch") == []
