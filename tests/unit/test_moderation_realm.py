"""Moderation: the pure rules (chatd.modrules, ``now`` given) and the Chat realm
(chatd.moderation) on a real MemoryStore with time from ``task.Clock``: mute in a
room and everywhere, expiry by the clock, unmute, global ban, reports."""

from __future__ import annotations

import pytest
from twisted.internet.defer import Deferred

from chatd import modrules
from chatd.auth import TokenVerifier
from chatd.moderation import BANNED, RetentionSweep
from chatd.permissions import ADMIN, MEMBER, OWNER, PRIVATE, PUBLIC, may
from chatd.store import dm_channel
from tests.support.realm import fired, last, make_chat, opened, say, team, token_user

NOW = 1_700_000_000_000


# pure rules


def test_active_until_counts_only_sanctions_in_force_in_the_scopes_asked():
    s = {("mute", "dev"): NOW + 5000, ("mute", "*"): NOW - 1, ("ban", "*"): NOW + 9000}
    assert modrules.active_until(s, "mute", ("*", "dev"), NOW) == NOW + 5000
    assert modrules.active_until(s, "mute", ("*",), NOW) == 0  # passed: expired by itself
    assert modrules.active_until(s, "mute", ("*", "dev"), NOW + 5000) == 0
    assert modrules.active_until(s, "ban", ("*",), NOW) == NOW + 9000
    assert modrules.prune(s, NOW) == {("mute", "dev"): NOW + 5000, ("ban", "*"): NOW + 9000}


def test_seconds_left_rounds_up_and_stops_at_zero():
    assert modrules.seconds_left(NOW + 1001, NOW) == 2
    assert modrules.seconds_left(NOW + 1000, NOW) == 1
    assert modrules.seconds_left(NOW - 5, NOW) == 0
    assert modrules.until_of(60, NOW) == NOW + 60_000


def test_reports_are_rate_limited_per_window():
    times = []
    for i in range(modrules.REPORTS_PER_WINDOW):
        ok, times = modrules.report_allowed(times, NOW + i)
        assert ok
    ok, kept = modrules.report_allowed(times, NOW + 100)
    assert not ok and kept == times
    ok, times = modrules.report_allowed(times, NOW + modrules.REPORT_WINDOW_MS + 100)
    assert ok and len(times) == 1


def test_the_cluster_report_limit_counts_per_fixed_window():
    window = modrules.report_window(NOW)
    assert modrules.report_window(NOW + modrules.REPORT_WINDOW_MS) == window + 1
    assert window * modrules.REPORT_WINDOW_MS <= NOW < (window + 1) * modrules.REPORT_WINDOW_MS
    assert modrules.report_count_allowed(modrules.REPORTS_PER_WINDOW)
    assert not modrules.report_count_allowed(modrules.REPORTS_PER_WINDOW + 1)


def test_moderator_claims_and_reasons_and_actions():
    assert modrules.is_moderator({"mod": True})
    assert modrules.is_moderator({"roles": ["x", "moderator"]})
    assert not modrules.is_moderator({"mod": "true"})
    assert not modrules.is_moderator({"roles": "moderator"})
    assert modrules.check_reason("x" * modrules.REASON_MAX) is None
    assert modrules.check_reason("x" * (modrules.REASON_MAX + 1))
    assert modrules.check_action({"action": "dismiss"}) is None
    assert modrules.check_action({"action": "ban"}) is None  # for good
    assert modrules.check_action({"action": "mute"})  # a mute needs seconds
    assert modrules.check_action({"action": "mute", "seconds": True})
    assert modrules.check_action({"action": "mute", "seconds": 60}) is None
    assert modrules.check_action({"action": "delete"})
    assert modrules.context_range(2) == [1, 2, 3, 4, 5]


@pytest.mark.parametrize(
    ("role", "target", "allowed"),
    [(OWNER, ADMIN, True), (ADMIN, MEMBER, True), (ADMIN, ADMIN, False), (MEMBER, MEMBER, False)],
)
def test_room_mute_needs_an_admin_who_outranks_the_target(role, target, allowed):
    for kind in (PUBLIC, PRIVATE):
        assert may("mute", kind, role, target) is allowed


def test_the_mod_claim_is_read_from_a_verified_token_only():
    verifier = TokenVerifier(secret="s" * 32)
    good = verifier.issue("m")
    assert not verifier.verify(good).moderator
    import jwt

    signed = jwt.encode({"sub": "m", "mod": True}, "s" * 32, algorithm="HS256")
    assert verifier.verify(signed).moderator
    forged = jwt.encode({"sub": "m", "mod": True}, "another secret" * 3, algorithm="HS256")
    with pytest.raises(Exception, match="invalid token"):
        verifier.verify(forged)


# the realm


def room_owner_and_member(chat):
    owner = token_user(chat, "olga")
    say(chat, owner, type="create", room="dev", kind="public", id="c")
    (member,) = team(chat, "bob", room="dev")
    return owner, member


def test_a_room_admin_mutes_a_member_who_then_gets_muted_until_it_expires(chat, clock):
    owner, bob = room_owner_and_member(chat)
    say(chat, owner, type="mute_user", room="dev", user="bob", seconds=60, id="m1")
    reply = last(owner, "mute_user")
    until = chat.now_ms() + 60_000
    assert reply == {
        "type": "mute_user",
        "id": "m1",
        "room": "dev",
        "user": "bob",
        "muted_until": until,
    }
    event = [e for e in bob.of("event") if e["kind"] == "muted"][-1]
    assert (event["user"], event["by"], event["until"]) == ("bob", "olga", until)
    say(chat, bob, type="send", room="dev", text="hi", id="s1")
    error = last(bob, "error")
    assert (error["code"], error["ref"], error["muted_until"], error["seconds"]) == (
        "muted",
        "s1",
        until,
        60,
    )
    assert not [m for m in bob.of("ack") if m["id"] == "s1"]
    # everything else keeps working: DMs are not muted by a room mute, reads are fine
    say(chat, bob, type="dm", to="olga", text="why?", id="d1")
    assert last(bob, "ack")["id"] == "d1"
    say(chat, bob, type="history", room="dev")
    assert last(bob, "history")["room"] == "dev"
    clock.advance(59)
    say(chat, bob, type="send", room="dev", text="hi", id="s2")
    assert last(bob, "error")["seconds"] == 1
    clock.advance(1)  # expired by itself: nothing unmuted it
    say(chat, bob, type="send", room="dev", text="hi", id="s3")
    assert last(bob, "ack")["id"] == "s3"


def test_unmute_ends_a_mute_and_is_a_timeline_event(chat):
    owner, bob = room_owner_and_member(chat)
    say(chat, owner, type="mute_user", room="dev", user="bob", seconds=600, id="m1")
    say(chat, bob, type="react", room="dev", seq=1, emoji="+1", id="r1")
    assert last(bob, "error")["code"] == "muted"
    say(chat, owner, type="unmute_user", room="dev", user="bob", id="u1")
    assert last(owner, "unmute_user")["muted_until"] == 0
    assert [e["kind"] for e in bob.of("event")][-2:] == ["muted", "unmuted"]
    say(chat, bob, type="send", room="dev", text="back", id="s1")
    assert last(bob, "ack")["id"] == "s1"
    audit = fired(chat.store.audit_log(None, 10))
    assert [(a["action"], a["by"], a["target"], a["scope"]) for a in audit] == [
        ("unmute", "olga", "bob", "dev"),
        ("mute", "olga", "bob", "dev"),
    ]


def test_a_resent_mute_keeps_the_first_until(chat, clock):
    owner, _bob = room_owner_and_member(chat)
    say(chat, owner, type="mute_user", room="dev", user="bob", seconds=60, id="m1")
    first = last(owner, "mute_user")["muted_until"]
    clock.advance(30)
    say(chat, owner, type="mute_user", room="dev", user="bob", seconds=60, id="m1")
    assert last(owner, "mute_user")["muted_until"] == first
    assert fired(chat.store.sanctions("bob")) == {("mute", "dev"): first}


def test_a_member_may_not_mute_and_nobody_mutes_everywhere_without_the_claim(chat):
    owner, bob = room_owner_and_member(chat)
    say(chat, bob, type="mute_user", room="dev", user="olga", seconds=60, id="m1")
    assert (last(bob, "error")["code"], last(bob, "error")["ref"]) == ("forbidden", "m1")
    say(chat, owner, type="mute_user", user="bob", seconds=60, id="m2")
    assert last(owner, "error")["code"] == "forbidden"
    say(chat, owner, type="ban_user", user="bob", id="b1")
    assert last(owner, "error")["code"] == "forbidden"
    assert fired(chat.store.sanctions("bob")) == {}
    say(chat, bob, type="send", room="dev", text="still here", id="s1")
    assert last(bob, "ack")["id"] == "s1"


def test_a_global_mute_by_a_moderator_mutes_sends_dms_and_edits_everywhere(chat, clock):
    _owner, bob = room_owner_and_member(chat)
    say(chat, bob, type="send", room="dev", text="before", id="s0")
    seq = last(bob, "ack")["seq"]
    mod = token_user(chat, "mia", moderator=True)
    say(chat, mod, type="mute_user", user="bob", seconds=120, id="g1")
    assert last(mod, "mute_user")["room"] is None
    for i, frame in enumerate(
        (
            {"type": "send", "room": "dev", "text": "x"},
            {"type": "dm", "to": "olga", "text": "x"},
            {"type": "edit", "room": "dev", "seq": seq, "text": "y"},
            {"type": "react", "room": "dev", "seq": seq, "emoji": "+1"},
        )
    ):
        say(chat, bob, **frame, id=f"q{i}")
        error = last(bob, "error")
        assert (error["code"], error["ref"]) == ("muted", f"q{i}")
    say(chat, bob, type="read", room="dev", seq=seq, id="rd")
    assert last(bob, "read")["seq"] == seq  # everything else keeps working
    clock.advance(120)
    say(chat, bob, type="dm", to="olga", text="ok now", id="d2")
    assert last(bob, "ack")["id"] == "d2"


def test_a_mute_set_while_connected_elsewhere_reaches_a_new_connection(chat):
    mod = token_user(chat, "mia", moderator=True)
    say(chat, mod, type="mute_user", user="zed", seconds=60, id="g1")
    zed = token_user(chat, "zed")
    say(chat, zed, type="dm", to="mia", text="x", id="d1")
    assert last(zed, "error")["code"] == "muted"


def test_a_global_ban_closes_the_connections_and_refuses_new_ones(chat, clock):
    mod = token_user(chat, "mia", moderator=True)
    bob = token_user(chat, "bob")
    say(chat, mod, type="ban_user", user="bob", seconds=60, id="b1")
    assert last(mod, "ban_user")["banned_until"] == chat.now_ms() + 60_000
    assert bob.closed == (BANNED, "banned")
    again = token_user(chat, "bob")
    assert again.closed == (BANNED, "banned")
    assert last(again, "error")["code"] == "forbidden"
    clock.advance(60)
    third = token_user(chat, "bob")
    assert third.closed is None
    say(chat, mod, type="ban_user", user="bob", id="b2")  # for good
    assert third.closed == (BANNED, "banned")
    say(chat, mod, type="unban_user", user="bob", id="u")
    assert token_user(chat, "bob").closed is None


def test_a_moderator_recalls_any_room_message(chat):
    _owner, bob = room_owner_and_member(chat)
    say(chat, bob, type="send", room="dev", text="bad", id="s1")
    seq = last(bob, "ack")["seq"]
    mod = token_user(chat, "mia", moderator=True)
    appended = fired(chat.moderation.recall("dev", seq, "mia", "mia"))
    assert appended.message.kind == "recalled"
    assert last(bob, "recalled")["target"] == seq
    assert fired(chat.store.audit_log(None, 1))[0]["action"] == "recall"
    del mod


def test_report_goes_to_the_queue_with_context_once_per_id(chat):
    _owner, bob = room_owner_and_member(chat)
    for i in range(4):
        say(chat, bob, type="send", room="dev", text=f"m{i}", id=f"s{i}")
    seq = [f["seq"] for f in bob.of("ack") if f["id"] == "s2"][0]
    carl = token_user(chat, "carl")  # not a member: the room is public, he can read it
    say(chat, carl, type="report", room="dev", seq=seq, reason="spam", id="r1")
    reply = last(carl, "report")
    assert reply["id"] == "r1" and not reply["duplicate"]
    say(chat, carl, type="report", room="dev", seq=seq, reason="spam", id="r1")
    assert last(carl, "report") == {**reply, "duplicate": True}
    (entry,) = fired(chat.store.reports("open", None, 10))
    assert (entry["id"], entry["source"], entry["reporter"], entry["sender"]) == (
        reply["report"],
        "report",
        "carl",
        "bob",
    )
    assert entry["message"]["text"] == "m2" and entry["reason"] == "spam"
    texts = [c.get("text") for c in entry["context"] if c["type"] == "message"]
    assert "m1" in texts and "m3" in texts


def test_a_report_of_an_unreadable_message_is_answered_as_a_missing_one(chat):
    owner = token_user(chat, "olga")
    say(chat, owner, type="create", room="secret", kind="private", id="c")
    say(chat, owner, type="send", room="secret", text="private words", id="s1")
    seq = last(owner, "ack")["seq"]
    eve = token_user(chat, "eve")
    say(chat, eve, type="report", room="secret", seq=seq, reason="x", id="r1")
    unreadable = last(eve, "error")
    say(chat, eve, type="report", room="secret", seq=seq + 50, reason="x", id="r1")
    missing = last(eve, "error")
    assert unreadable == missing
    assert unreadable["code"] == "no_such_message"
    assert fired(chat.store.reports(None, None, 10)) == []


def test_a_huge_reason_is_too_large_and_reports_are_rate_limited(chat):
    _owner, bob = room_owner_and_member(chat)
    say(chat, bob, type="send", room="dev", text="m", id="s1")
    seq = last(bob, "ack")["seq"]
    carl = token_user(chat, "carl")
    say(chat, carl, type="report", room="dev", seq=seq, reason="x" * 501, id="big")
    assert (last(carl, "error")["code"], last(carl, "error")["ref"]) == ("too_large", "big")
    for i in range(modrules.REPORTS_PER_WINDOW):
        say(chat, carl, type="report", room="dev", seq=seq, reason="r", id=f"r{i}")
    say(chat, carl, type="report", room="dev", seq=seq, reason="r", id="over")
    assert (last(carl, "error")["code"], last(carl, "error")["ref"]) == ("rate_limited", "over")
    assert len(fired(chat.store.reports("open", None, 100))) == modrules.REPORTS_PER_WINDOW


def test_queue_actions_close_once_and_are_audited(chat):
    _owner, bob = room_owner_and_member(chat)
    say(chat, bob, type="send", room="dev", text="bad", id="s1")
    seq = last(bob, "ack")["seq"]
    carl = token_user(chat, "carl")
    say(chat, carl, type="report", room="dev", seq=seq, reason="bad", id="r1")
    rid = last(carl, "report")["report"]
    closed = fired(chat.moderation.act(rid, {"action": "mute", "seconds": 30}, "mia"))
    assert closed["state"] == "closed" and closed["resolution"]["action"] == "mute"
    assert fired(chat.moderation.act(rid, {"action": "dismiss"}, "mia")) is None
    say(chat, bob, type="send", room="dev", text="again", id="s2")
    assert last(bob, "error")["code"] == "muted"
    actions = [(a["action"], a["target"]) for a in fired(chat.store.audit_log(None, 10))]
    assert actions == [("mute", "bob")]


# hostile input (docs/security.md, *Moderation*)


def test_report_edges_recalled_anonymous_and_bad_reasons(chat):
    _owner, bob = room_owner_and_member(chat)
    say(chat, bob, type="send", room="dev", text="oops", id="s1")
    seq = last(bob, "ack")["seq"]
    say(chat, bob, type="recall", room="dev", seq=seq, id="rc")
    carl = token_user(chat, "carl")
    say(chat, carl, type="report", room="dev", seq=seq, reason="x", id="r1")
    recalled = last(carl, "error")
    say(chat, carl, type="report", room="dev", seq=999, reason="x", id="r1")
    assert recalled == last(carl, "error") and recalled["code"] == "no_such_message"
    for reason in (5, None, ["x"], "\ud800"):
        say(chat, carl, type="report", room="dev", seq=seq, reason=reason, id="bad")
        assert (last(carl, "error")["code"], last(carl, "error")["ref"]) == ("bad_request", "bad")
    anon = opened(chat, "anna")
    say(chat, anon, type="report", room="dev", seq=seq, reason="x", id="an")
    assert last(anon, "error")["code"] == "auth_required"
    assert fired(chat.store.reports(None, None, 10)) == []


def test_mute_edges_oneself_admin_on_admin_seconds_and_unban_without_the_claim(chat):
    owner, bob = room_owner_and_member(chat)
    (ada,) = team(chat, "ada", room="dev")
    say(chat, owner, type="set_role", room="dev", user="ada", role="admin", id="r1")
    say(chat, owner, type="set_role", room="dev", user="bob", role="admin", id="r2")
    say(chat, ada, type="mute_user", room="dev", user="bob", seconds=60, id="aa")
    assert (last(ada, "error")["code"], last(ada, "error")["ref"]) == ("forbidden", "aa")
    say(chat, owner, type="mute_user", room="dev", user="olga", seconds=60, id="me")
    assert (last(owner, "error")["code"], last(owner, "error")["ref"]) == ("forbidden", "me")
    for seconds in (0, -5, 10**12, "60", 1.5, True, None):
        say(chat, owner, type="mute_user", room="dev", user="bob", seconds=seconds, id="s")
        assert (last(owner, "error")["code"], last(owner, "error")["ref"]) == ("bad_request", "s")
    say(chat, owner, type="unban_user", user="bob", id="ub")
    assert last(owner, "error")["code"] == "forbidden"
    assert fired(chat.store.sanctions("bob")) == {}
    assert not [e for e in bob.of("event") if e["kind"] == "muted"]


def test_a_muted_user_still_reports_reads_and_leaves(chat):
    owner, bob = room_owner_and_member(chat)
    say(chat, owner, type="send", room="dev", text="hey", id="o1")
    seq = last(owner, "ack")["seq"]
    say(chat, owner, type="mute_user", room="dev", user="bob", seconds=60, id="m")
    say(chat, bob, type="report", room="dev", seq=seq, reason="unfair", id="r")
    assert last(bob, "report")["id"] == "r"
    say(chat, bob, type="read", room="dev", seq=seq, id="rd")
    assert last(bob, "read")["seq"] == seq
    say(chat, bob, type="leave", room="dev", id="l")
    assert last(bob, "left")["room"] == "dev"


def hold_sanction_reads(chat):
    """Make *chat*'s store answer sanctions reads only when :func:`release` is called
    on the returned list (a read in flight, as against a remote store)."""
    held = []
    real = chat.store.sanctions

    def later(user):
        d = Deferred()
        held.append((d, real(user)))
        return d

    chat.store.sanctions = later
    return held


def release(held):
    """Answer the held sanctions reads, in the order they were made."""
    for d, answer in held:
        answer.addCallback(d.callback)


def test_a_banned_users_send_before_the_close_is_refused(clock):
    """With a store that answers later (the sanctions read in flight), a send that
    comes right after welcome waits for the read and is refused: nothing stored."""

    chat = make_chat(clock)
    fired(chat.store.set_sanction("bob", "ban", "*", chat.now_ms() + 60_000))
    held = hold_sanction_reads(chat)
    bob = token_user(chat, "bob")
    say(chat, bob, type="dm", to="bob", text="sneaky", id="d1")
    assert not bob.of("ack")
    release(held)
    assert bob.closed == (BANNED, "banned")
    assert fired(chat.store.history(dm_channel("bob", "bob"), None, 10)).messages == []


def test_a_reported_dm_recalled_from_the_queue_is_recalled_for_both_users(chat):
    """The recipient reports a DM; the queue's recall reaches both users' connections
    (the message log delivers it to one, the bus to the other), and the audit entry
    names the queue entry."""
    bob, carl = token_user(chat, "bob"), token_user(chat, "carl")
    say(chat, bob, type="dm", to="carl", text="scam link", id="d1")
    seq = last(bob, "ack")["seq"]
    say(chat, carl, type="report", **{"with": "bob"}, seq=seq, reason="scam", id="r1")
    rid = last(carl, "report")["report"]
    (entry,) = fired(chat.store.reports("open", None, 10))
    assert entry["room"] is None and sorted(entry["users"]) == ["bob", "carl"]
    fired(chat.moderation.act(rid, {"action": "recall"}, "mia"))
    for conn in (bob, carl):
        assert last(conn, "recalled")["target"] == seq
    (audit,) = fired(chat.store.audit_log(None, 10))
    assert (audit["action"], audit["target"], audit["report"]) == ("recall", "bob", rid)


def test_a_moderator_recalls_a_private_rooms_message_without_being_a_member(chat):
    owner = token_user(chat, "olga")
    say(chat, owner, type="create", room="secret", kind="private", id="c")
    say(chat, owner, type="send", room="secret", text="bad words", id="s1")
    seq = last(owner, "ack")["seq"]
    eve = token_user(chat, "eve")
    say(chat, eve, type="recall", room="secret", seq=seq, id="e1")
    assert (last(eve, "error")["code"], last(eve, "error")["ref"]) == ("no_such_room", "e1")
    mia = token_user(chat, "mia", moderator=True)
    say(chat, mia, type="recall", room="secret", seq=seq, id="m1")
    assert last(mia, "ack")["id"] == "m1"
    recalled = last(owner, "recalled")
    assert (recalled["target"], recalled["by"]) == (seq, "mia")
    say(chat, mia, type="recall", room="secret", seq=seq, id="m1")  # a resend
    assert last(mia, "ack")["duplicate"] is True
    assert [a["action"] for a in fired(chat.store.audit_log(None, 10))] == ["recall"]


# retention (chatd.modrules.expired, chatd.moderation.RetentionSweep on a task.Clock)


def test_expired_takes_old_closed_queue_entries_and_old_audit_entries_only():
    day = modrules.DAY_MS
    cutoff = NOW - 180 * day
    old, young = cutoff - day, cutoff + 1
    queue = [
        {"id": 1, "ts": old, "state": "closed", "resolution": {"ts": old + 5}},
        {"id": 2, "ts": old, "state": "open"},  # open: kept, however old
        {"id": 3, "ts": old, "state": "closed", "resolution": {"ts": young}},  # closed lately
        {"id": 4, "ts": old, "state": "closed"},  # no resolution ts: its own ts
        {"id": 5, "ts": young, "state": "closed", "resolution": {"ts": young}},
        {"id": 6, "ts": old, "state": "closed"},  # after a young one: the sweep stopped
    ]
    assert modrules.expired(modrules.QUEUE, queue, cutoff) == ([1, 4], True)
    assert modrules.expired(modrules.QUEUE, queue[:4], cutoff) == ([1, 4], False)
    audit = [{"id": 7, "ts": old}, {"id": 8, "ts": cutoff}, {"id": 9, "ts": old}]
    assert modrules.expired(modrules.AUDIT, audit, cutoff) == ([7], True)
    assert modrules.expired(modrules.AUDIT, [], cutoff) == ([], False)
    assert modrules.retention_cutoff(180, NOW) == cutoff
    assert modrules.retention_cutoff(0, NOW) is None


def test_the_sweep_deletes_closed_reports_and_audit_entries_past_retention(clock):
    """Hourly on the chat's clock: nothing goes before the retention days have passed;
    then the closed entry and the old audit entries go, the open report stays; 0 keeps
    everything."""
    chat = make_chat(clock, moderation_retention_days=2)
    owner, bob = room_owner_and_member(chat)
    say(chat, bob, type="send", room="dev", text="spam", id="s1")
    seq = last(bob, "ack")["seq"]
    for i in range(3):
        say(chat, owner, type="report", room="dev", seq=seq, reason=f"r{i}", id=f"rep{i}")
    ids = [e["id"] for e in fired(chat.store.reports("open", None, 10))]
    fired(chat.moderation.act(ids[0], {"action": "dismiss"}, by="mia"))
    say(chat, owner, type="mute_user", room="dev", user="bob", seconds=60, id="m1")
    assert len(fired(chat.store.audit_log(None, 10))) == 2
    sweep = RetentionSweep(chat.moderation)
    sweep.startService()
    try:
        clock.advance(modrules.SWEEP_INTERVAL)  # the first sweep: nothing is old enough
        assert chat.moderation.pruned == {"queue": 0, "audit": 0}
        clock.advance(2 * 86400)
        assert chat.moderation.pruned == {"queue": 1, "audit": 2}
        assert sorted(e["id"] for e in fired(chat.store.reports(None, None, 10))) == sorted(ids[1:])
        assert fired(chat.store.audit_log(None, 10)) == []
        say(chat, owner, type="unmute_user", room="dev", user="bob", id="u1")
        chat.settings.moderation_retention_days = 0  # as a SIGHUP reload sets it
        clock.advance(10 * 86400)
        assert len(fired(chat.store.audit_log(None, 10))) == 1
    finally:
        sweep.stopService()
    assert not clock.getDelayedCalls() or all(
        c.func != sweep._sweep for c in clock.getDelayedCalls()
    )


def test_a_send_while_a_sanction_change_is_being_read_waits_for_that_read(clock):
    """Another node's unmute (the bus event ``sanction``) makes this node read bob's
    sanctions again; a DM of bob's that comes while that read is in flight waits for
    it and is let through -- it is not refused as unreadable (the read's Deferred
    once carried the ban check's None to the waiting send)."""

    chat = make_chat(clock)
    fired(chat.store.set_sanction("bob", "mute", "*", chat.now_ms() + 60_000))
    bob = token_user(chat, "bob")
    say(chat, bob, type="dm", to="bob", text="muted", id="d1")
    assert last(bob, "error")["code"] == "muted"
    fired(chat.store.set_sanction("bob", "mute", "*", 0))
    held = hold_sanction_reads(chat)
    chat.moderation.changed("bob")  # what the bus event does on this node
    say(chat, bob, type="dm", to="bob", text="back", id="d2")
    say(chat, bob, type="dm", to="bob", text="again", id="d3")
    assert not [a for a in bob.of("ack") if a["id"] in ("d2", "d3")]
    assert len(held) == 1  # one read, both sends wait for it
    release(held)
    assert [a["id"] for a in bob.of("ack")] == ["d2", "d3"]
    assert not [e for e in bob.of("error") if e.get("ref") in ("d2", "d3")]
    assert chat.moderation.refused_unreadable == 0
