"""A connection's messages to one conversation are stored in its send order, even
when some are refused with ``rate_limited`` and resent (docs/protocol.md,
*Ordering*): the pure :class:`chatd.session.SendOrder`, and the Chat realm on a
task.Clock with the real MemoryStore taking an 80-DM burst."""

from __future__ import annotations

from chatd.session import ORDER_CONVERSATIONS, ORDER_HOLD, ORDER_MAX, SendOrder
from chatd.store import dm_channel
from tests.support.realm import make_chat, say, token_user

ROOM, DM = ("room", "r"), ("dm", "bob")


# the pure rule


def test_a_refused_message_holds_its_conversation_back_until_it_comes_back():
    order = SendOrder()
    order.refused(DM, "m1", 0.0)
    assert order
    assert order.admits(ROOM, "x", 0.1)  # another conversation is not held back
    assert not order.admits(DM, "m2", 0.1)  # refused, remembered behind m1
    assert not order.admits(DM, "m3", 0.2)
    assert order.admits(DM, "m1", 1.0)
    assert not order.admits(DM, "m3", 1.1)  # m2 first
    assert order.admits(DM, "m2", 1.2)
    assert order.admits(DM, "m3", 1.3)
    assert not order
    assert order.admits(DM, "m4", 1.4)


def test_resends_out_of_order_wait_for_the_first():
    """Pipelined resends m2, m3 while m1 is still refused: neither goes ahead of m1."""
    order = SendOrder()
    order.refused(DM, "m1", 0.0)
    order.refused(DM, "m2", 0.0)
    assert not order.admits(DM, "m2", 1.0)
    assert not order.admits(DM, "m3", 1.0)
    assert order.admits(DM, "m1", 1.1)
    assert [order.admits(DM, ref, 1.2) for ref in ("m2", "m3")] == [True, True]
    assert not order


def test_a_hold_ends_when_its_first_message_does_not_come_back_in_time():
    order = SendOrder()
    order.refused(DM, "m1", 0.0)
    assert not order.admits(DM, "m2", ORDER_HOLD)
    assert order.admits(DM, "m3", ORDER_HOLD + 0.01)
    assert not order


def test_each_resend_restarts_the_time_the_next_has_to_come_back():
    order = SendOrder()
    for ref in ("m1", "m2", "m3"):
        order.refused(DM, ref, 0.0)
    assert order.admits(DM, "m1", ORDER_HOLD - 1)
    assert not order.admits(DM, "m9", ORDER_HOLD + 1)  # m2 has had 2 s only
    assert order.admits(DM, "m2", ORDER_HOLD + 2)


def test_what_a_connection_holds_back_is_bounded():
    """Refused DMs to ever new users, or ever new ids to one: at most
    ORDER_CONVERSATIONS conversations (the oldest hold ends) of ORDER_MAX ids each."""
    order = SendOrder()
    for i in range(ORDER_CONVERSATIONS + 10):
        order.refused(("dm", f"u{i}"), "x", 0.0)
    assert len(order._held) == ORDER_CONVERSATIONS
    assert order.admits(("dm", "u0"), "y", 0.0)  # its hold ended
    assert not order.admits(("dm", "u10"), "y", 0.0)
    for i in range(ORDER_MAX + 10):
        order.refused(DM, f"m{i}", 0.0)
    assert len(order._held[DM][1]) == ORDER_MAX
    assert order.admits(DM, "m10", 0.0)  # the oldest ten were let go


# the realm: an 80-DM burst


def burst(chat, clock, conn, texts, refill_at=None):
    """Send every pending DM of *texts* to bob in one go, as the SDK's outbox does
    (pipelined); resend the refused ones (same id, in order) after a pause until all
    are acked. *refill_at*: in the first round, let the clock run 1.5 tokens' worth
    after that many frames (a bucket refilling mid-burst). Returns the rounds."""
    pending = [f"d{i}" for i in range(len(texts))]
    rounds = 0
    while pending:
        rounds += 1
        acked_before = {a["id"] for a in conn.of("ack")}
        for n, ref in enumerate(pending):
            if rounds == 1 and n == refill_at:
                clock.advance(1.5 / chat.settings.rate_limit)
            say(chat, conn, type="dm", to="bob", text=texts[int(ref[1:])], id=ref)
        acked = {a["id"] for a in conn.of("ack")} - acked_before
        pending = [ref for ref in pending if ref not in acked]
        clock.advance(1.0)
        assert rounds < 100
    return rounds


def test_an_80_dm_burst_is_stored_and_delivered_in_send_order_exactly_once(clock):
    """alice's 80 DMs to bob, sent at once over a 10 / s limit (burst 20), the bucket
    refilling in the middle of the burst: refused ones are resent; bob gets each DM
    once, in alice's order, and the store's seqs follow it."""
    chat = make_chat(clock, rate_limit=10.0, rate_burst=20.0, flood_strikes=0)
    alice, bob = token_user(chat, "alice"), token_user(chat, "bob")
    texts = [f"m{i:02d}" for i in range(80)]
    rounds = burst(chat, clock, alice, texts, refill_at=40)
    assert rounds > 1  # some were refused and resent
    assert {e["code"] for e in alice.of("error")} == {"rate_limited"}
    assert [d["text"] for d in bob.of("dm")] == texts
    page = chat.store.history(dm_channel("alice", "bob"), None, 200).result
    assert [m.text for m in page.messages] == texts
    assert [m.seq for m in page.messages] == list(range(1, 81))
    assert alice.session.order is None  # nothing held back any more


def test_a_send_to_another_room_or_user_is_not_held_back(clock):
    """A refused DM to bob holds back only alice's DMs to bob: her message to a room
    and her DM to carol go ahead at once."""
    chat = make_chat(clock, rate_limit=1.0, rate_burst=1.0, flood_strikes=0)
    alice = token_user(chat, "alice")
    token_user(chat, "bob"), token_user(chat, "carol")
    say(chat, alice, type="join", room="r", id="j")
    clock.advance(1.0)
    say(chat, alice, type="dm", to="bob", text="1", id="b1")  # the bucket's token
    say(chat, alice, type="dm", to="bob", text="2", id="b2")  # refused: holds bob back
    clock.advance(1.0)
    say(chat, alice, type="send", room="r", text="room", id="r1")
    clock.advance(1.0)
    say(chat, alice, type="dm", to="carol", text="c", id="c1")
    clock.advance(1.0)
    say(chat, alice, type="dm", to="bob", text="3", id="b3")  # behind b2: refused
    clock.advance(1.0)
    say(chat, alice, type="dm", to="bob", text="2", id="b2")
    clock.advance(1.0)
    say(chat, alice, type="dm", to="bob", text="3", id="b3")
    assert [a["id"] for a in alice.of("ack")] == ["b1", "r1", "c1", "b2", "b3"]
    assert [e["ref"] for e in alice.of("error")] == ["b2", "b3"]
