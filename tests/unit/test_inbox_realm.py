"""The inbox in the ``Chat`` realm: read markers, receipts, mute, recall, edit,
reactions, replies, mentions, the conversation list and sync of token users, on a
real MemoryStore, time from ``task.Clock`` (recall windows are clock advances)."""

from __future__ import annotations

import json

from chatd import wire
from tests.support.realm import (
    fired,
    last,
    make_chat,
    member_join,
    opened,
    say,
    team,
    timeline_event,
    token_user,
)

INBOX_TYPES = {
    "conversations": {},
    "sync": {},
    "read": {"room": "r", "seq": 1},
    "receipts": {"room": "r", "seq": 1},
    "mute": {"room": "r", "muted": True},
    "recall": {"room": "r", "seq": 1},
    "edit": {"room": "r", "seq": 1, "text": "x"},
    "react": {"room": "r", "seq": 1, "emoji": "+1"},
}


def seq_of(conn, mid):
    return next(f["seq"] for f in conn.of("ack") if f["id"] == mid)


def conversation(chat, conn, room=None, peer=None):
    say(chat, conn, type="conversations")
    for c in last(conn, "conversations")["conversations"]:
        if (room is not None and c.get("room") == room) or (
            peer is not None and c.get("with") == peer
        ):
            return c
    return None


def test_anonymous_connections_get_auth_required_for_every_inbox_request(chat):
    anon = opened(chat, "anna")
    for kind, fields in INBOX_TYPES.items():
        say(chat, anon, type=kind, id="q-" + kind, **fields)
        error = last(anon, "error")
        assert (error["code"], error["ref"]) == ("auth_required", "q-" + kind)
    say(chat, anon, type="ping", id="p")
    assert last(anon, "pong")["id"] == "p"


def test_anonymous_send_with_mentions_is_a_plain_message_as_before(chat):
    """An anonymous send's mentions/reply_to are ignored (not stored, not delivered):
    the frame is byte-identical to chatd 0.1's."""
    a, b = opened(chat, "anna"), opened(chat, "ben")
    for conn in (a, b):
        say(chat, conn, type="join", room="lobby2")
    say(chat, a, type="send", room="lobby2", text="hi", id="m1", mentions=["ben"], reply_to=1)
    raw = [f for f in b.frames if b'"message"' in f][-1]
    assert raw == wire.encode(
        {
            "type": "message",
            "room": "lobby2",
            "seq": 1,
            "from": "anna",
            "name": "anna",
            "text": "hi",
            "ts": 1_700_000_000_000,
            "id": "m1",
        }
    )
    say(chat, a, type="send", room="lobby2", text="ho", id="m2", mentions=5, reply_to="x")
    assert a.of("error") == []  # (unknown members are ignored, as they always were)
    assert json.loads([f for f in b.frames if b'"message"' in f][-1])["text"] == "ho"


def test_a_token_users_plain_message_frame_is_unchanged(chat):
    alice, bob = team(chat, "alice", "bob")
    say(chat, alice, type="send", room="team", text="hi", id="m1")
    message = last(bob, "message")
    assert set(message) == {"type", "room", "seq", "from", "name", "text", "ts", "id"}


def test_unread_follows_sends_reads_and_recalls(chat):
    alice, bob = team(chat, "alice", "bob")
    for i in range(3):
        say(chat, alice, type="send", room="team", text=f"m{i}", id=f"m{i}")
    c = conversation(chat, bob, room="team")
    assert (c["unread"], c["mentions"], c["last"]["text"]) == (3, 0, "m2")
    assert conversation(chat, alice, room="team")["unread"] == 0  # sending is reading
    say(chat, bob, type="read", room="team", seq=seq_of(alice, "m0"))
    assert last(bob, "read")["unread"] == 2
    say(chat, alice, type="recall", room="team", seq=seq_of(alice, "m2"), id="r1")
    c = conversation(chat, bob, room="team")
    # a recall is not a message: it adds nothing; the tombstone is the list's last
    assert c["unread"] == 2
    assert c["last"] == {
        "seq": seq_of(alice, "m2"),
        "from": "alice",
        "name": "alice",
        "text": "",
        "ts": 1_700_000_000_000,
        "recalled": True,
    }
    say(chat, bob, type="send", room="team", text="ok", id="b1")
    assert conversation(chat, bob, room="team")["unread"] == 0
    assert conversation(chat, alice, room="team")["unread"] == 1


def test_read_on_one_device_clears_the_badge_on_the_other(chat):
    alice, phone = team(chat, "alice", "bob")
    web = token_user(chat, "bob")
    say(chat, alice, type="send", room="team", text="hi", id="m1")
    seq = seq_of(alice, "m1")
    say(chat, phone, type="read", room="team", seq=seq)
    for device in (phone, web):
        assert last(device, "read") == {
            "type": "read",
            "room": "team",
            "seq": seq,
            "unread": 0,
            "mentions": 0,
        }
    # the room is small: its members get the receipt
    assert last(alice, "receipt") == {"type": "receipt", "room": "team", "user": "bob", "seq": seq}


def test_read_never_moves_back_and_clamps_beyond_the_end(chat):
    alice, bob = team(chat, "alice", "bob")
    say(chat, alice, type="send", room="team", text="hi", id="m1")
    end = seq_of(alice, "m1")
    say(chat, bob, type="read", room="team", seq=10**9)
    assert last(bob, "read")["seq"] == end
    receipts = len(alice.of("receipt"))
    say(chat, bob, type="read", room="team", seq=1)
    assert last(bob, "read")["seq"] == end  # the marker stays; only the asker is told
    assert len(alice.of("receipt")) == receipts
    say(chat, bob, type="read", room="team", seq=-1, id="neg")
    assert (last(bob, "error")["code"], last(bob, "error")["ref"]) == ("bad_request", "neg")


def test_large_rooms_send_no_receipts_and_receipts_counts_them(clock):
    chat = make_chat(clock, receipt_members=2)
    alice, bob, carol = team(chat, "alice", "bob", "carol")
    say(chat, alice, type="send", room="team", text="hi", id="m1")
    seq = seq_of(alice, "m1")
    say(chat, bob, type="read", room="team", seq=seq)
    assert alice.of("receipt") == []
    say(chat, alice, type="receipts", room="team", seq=seq)
    assert last(alice, "receipts") == {
        "type": "receipts",
        "room": "team",
        "seq": seq,
        "count": 1,
        "users": None,
    }


def test_receipts_lists_readers_of_a_small_room_without_me(chat):
    alice, bob, carol = team(chat, "alice", "bob", "carol")
    say(chat, alice, type="send", room="team", text="hi", id="m1")
    seq = seq_of(alice, "m1")
    say(chat, carol, type="read", room="team", seq=seq)
    say(chat, alice, type="receipts", room="team", seq=seq)
    assert last(alice, "receipts")["users"] == ["carol"]
    assert last(alice, "receipts")["count"] == 1


def test_dm_read_sends_the_receipt_to_the_peer(chat):
    alice, bob = token_user(chat, "alice"), token_user(chat, "bob")
    say(chat, alice, type="dm", to="bob", text="hi", id="d1")
    seq = seq_of(alice, "d1")
    c = conversation(chat, bob, peer="alice")
    assert (c["kind"], c["unread"], c["peer_read"]) == ("dm", 1, seq)
    say(chat, bob, type="read", **{"with": "alice"}, seq=seq)
    assert last(alice, "receipt") == {"type": "receipt", "with": "bob", "user": "bob", "seq": seq}
    assert last(bob, "read") == {
        "type": "read",
        "with": "alice",
        "seq": seq,
        "unread": 0,
        "mentions": 0,
    }
    assert conversation(chat, alice, peer="bob")["peer_read"] == seq


def test_reading_a_conversation_one_is_not_in_says_nothing(chat):
    owner = token_user(chat, "owner")
    timeline_event(chat, "secret", "created", "owner", changes={"kind": "private"})
    say(chat, owner, type="join", room="secret")
    say(chat, owner, type="send", room="secret", text="classified", id="s1")
    mallory = token_user(chat, "mallory")
    before = len(owner.frames)
    for kind, fields in INBOX_TYPES.items():
        if "room" in fields:
            say(chat, mallory, type=kind, id="x-" + kind, **{**fields, "room": "secret"})
    codes = {f["ref"]: f["code"] for f in mallory.of("error")}
    assert codes == {
        "x-read": "no_such_room",
        "x-receipts": "forbidden",
        "x-mute": "no_such_room",
        "x-recall": "no_such_room",
        "x-edit": "no_such_room",
        "x-react": "no_such_room",
    }
    assert not any(b"classified" in f for f in mallory.frames)
    assert len(owner.frames) == before  # nothing reached the members either
    say(chat, mallory, type="read", **{"with": "nobody"}, seq=1, id="dm")
    assert last(mallory, "error")["code"] == "no_such_room"


def test_recall_within_the_window_and_too_late_after_it(chat, clock):
    alice, bob = team(chat, "alice", "bob")
    say(chat, alice, type="send", room="team", text="oops", id="m1")
    say(chat, alice, type="send", room="team", text="fine", id="m2")
    clock.advance(119)
    say(chat, alice, type="recall", room="team", seq=seq_of(alice, "m1"), id="r1")
    recalled = last(bob, "recalled")
    assert recalled == {
        "type": "recalled",
        "room": "team",
        "seq": seq_of(alice, "r1"),
        "target": seq_of(alice, "m1"),
        "by": "alice",
        "ts": 1_700_000_119_000,
    }
    clock.advance(2)
    say(chat, alice, type="recall", room="team", seq=seq_of(alice, "m2"), id="r2")
    assert (last(alice, "error")["code"], last(alice, "error")["ref"]) == ("too_late", "r2")
    say(chat, bob, type="recall", room="team", seq=seq_of(alice, "m2"), id="r3")
    assert last(bob, "error")["code"] == "forbidden"  # someone else's message
    say(chat, alice, type="recall", room="team", seq=999, id="r4")
    assert last(alice, "error")["code"] == "no_such_message"
    say(chat, alice, type="recall", room="team", seq=1, id="r5")  # an event, not a message
    assert last(alice, "error")["code"] == "no_such_message"


def test_owners_and_admins_recall_any_message_any_time(chat, clock):
    owner = token_user(chat, "owner")
    timeline_event(chat, "club", "created", "owner", changes={"kind": "public"})
    say(chat, owner, type="join", room="club")
    admin, member = team(chat, "admin", "member", room="club")
    timeline_event(chat, "club", "role", "admin", by="owner", role="admin")
    say(chat, member, type="send", room="club", text="spam", id="s1")
    say(chat, member, type="send", room="club", text="spam2", id="s2")
    clock.advance(3600)
    say(chat, admin, type="recall", room="club", seq=seq_of(member, "s1"), id="a1")
    say(chat, owner, type="recall", room="club", seq=seq_of(member, "s2"), id="o1")
    assert [f["by"] for f in member.of("recalled")] == ["admin", "owner"]
    say(chat, member, type="recall", room="club", seq=seq_of(member, "s1"), id="m1")
    assert last(member, "error")["code"] == "no_such_message"  # recalled already


def test_recall_removes_the_text_from_history_sync_and_replay(chat):
    alice, bob = team(chat, "alice", "bob")
    say(chat, alice, type="send", room="team", text="secret", id="m1")
    say(chat, alice, type="edit", room="team", seq=seq_of(alice, "m1"), text="secret2", id="e1")
    say(chat, alice, type="recall", room="team", seq=seq_of(alice, "m1"), id="r1")
    say(chat, bob, type="history", room="team")
    page = last(bob, "history")
    assert page["messages"][0]["text"] == ""
    assert page["messages"][0]["recalled"] == {"by": "alice", "ts": 1_700_000_000_000}
    say(chat, bob, type="sync")
    items = last(bob, "sync")["conversations"][0]["items"]
    assert [i["type"] for i in items] == ["event", "event", "message", "edited", "recalled"]
    late = opened(chat, "late")  # (a token user's connections are subscribed: no replay)
    say(chat, late, type="join", room="team", since=0)
    replayed = [f for f in late.json() if f["type"] in ("message", "edited", "recalled")]
    assert [f["type"] for f in replayed] == ["message", "edited", "recalled"]
    dumped = json.dumps([page, items, replayed])
    assert "secret" not in dumped


def test_edit_by_the_sender_only_and_never_of_a_recalled_message(chat, clock):
    alice, bob = team(chat, "alice", "bob")
    say(chat, alice, type="send", room="team", text="helo", id="m1")
    seq = seq_of(alice, "m1")
    clock.advance(5)
    say(chat, alice, type="edit", room="team", seq=seq, text="hello", id="e1")
    assert last(bob, "edited") == {
        "type": "edited",
        "room": "team",
        "seq": seq_of(alice, "e1"),
        "target": seq,
        "text": "hello",
        "edited_ts": 1_700_000_005_000,
        "ts": 1_700_000_005_000,
    }
    say(chat, bob, type="edit", room="team", seq=seq, text="hacked", id="b1")
    assert last(bob, "error")["code"] == "forbidden"
    say(chat, bob, type="history", room="team")
    message = last(bob, "history")["messages"][0]
    assert (message["text"], message["edited_ts"]) == ("hello", 1_700_000_005_000)
    say(chat, alice, type="recall", room="team", seq=seq, id="r1")
    say(chat, alice, type="edit", room="team", seq=seq, text="again", id="e2")
    assert (last(alice, "error")["code"], last(alice, "error")["ref"]) == ("no_such_message", "e2")


def test_reactions_toggle_and_history_counts_them(chat):
    alice, bob, carol = team(chat, "alice", "bob", "carol")
    say(chat, alice, type="send", room="team", text="lunch?", id="m1")
    seq = seq_of(alice, "m1")
    say(chat, bob, type="react", room="team", seq=seq, emoji="👍", id="b1")
    say(chat, carol, type="react", room="team", seq=seq, emoji="👍", id="c1")
    say(chat, carol, type="react", room="team", seq=seq, emoji="🍕", id="c2")
    say(chat, carol, type="react", room="team", seq=seq, emoji="🍕", id="c3")
    assert [(f["user"], f["emoji"], f["on"]) for f in alice.of("reaction")] == [
        ("bob", "👍", True),
        ("carol", "👍", True),
        ("carol", "🍕", True),
        ("carol", "🍕", False),
    ]
    say(chat, bob, type="history", room="team")
    assert last(bob, "history")["messages"][0]["reactions"] == [
        {"emoji": "👍", "count": 2, "me": True}
    ]
    # a resend (same id) is acked again and toggles nothing
    say(chat, bob, type="react", room="team", seq=seq, emoji="👍", id="b1")
    assert last(bob, "ack")["duplicate"] is True
    say(chat, alice, type="history", room="team")
    assert last(alice, "history")["messages"][0]["reactions"][0]["count"] == 2


def test_a_reactions_flood_is_refused_past_the_per_user_cap(chat):
    alice, bob = team(chat, "alice", "bob")
    say(chat, alice, type="send", room="team", text="x", id="m1")
    seq = seq_of(alice, "m1")
    for i in range(21):
        say(chat, bob, type="react", room="team", seq=seq, emoji=f"e{i}", id=f"r{i}")
    assert last(bob, "error")["code"] == "too_large"
    assert len(alice.of("reaction")) == 20
    say(chat, bob, type="react", room="team", seq=seq, emoji="e0", id="off")  # taking back works
    assert last(alice, "reaction")["on"] is False


def test_replies_carry_a_quote_that_shows_the_tombstone(chat):
    alice, bob = team(chat, "alice", "bob")
    say(chat, alice, type="send", room="team", text="q" * 150, id="m1")
    seq = seq_of(alice, "m1")
    say(chat, bob, type="send", room="team", text="agreed", id="b1", reply_to=seq)
    assert last(alice, "message")["reply_to"] == seq
    say(chat, bob, type="history", room="team")
    reply = last(bob, "history")["messages"][-1]
    assert reply["quote"] == {"seq": seq, "from": "alice", "name": "alice", "text": "q" * 100}
    say(chat, alice, type="recall", room="team", seq=seq, id="r1")
    say(chat, bob, type="history", room="team")
    assert last(bob, "history")["messages"][-1]["quote"]["text"] == ""
    for bad in (1, 999):  # an event, a seq beyond the end
        say(chat, bob, type="send", room="team", text="x", id=f"bad{bad}", reply_to=bad)
        assert (last(bob, "error")["code"], last(bob, "error")["ref"]) == (
            "no_such_message",
            f"bad{bad}",
        )


def test_mentions_are_counted_and_at_all_is_for_admins(chat):
    owner = token_user(chat, "owner")
    timeline_event(chat, "club", "created", "owner", changes={"kind": "public"})
    say(chat, owner, type="join", room="club")
    bob, carol = team(chat, "bob", "carol", room="club")
    say(chat, bob, type="send", room="club", text="@all hi", id="b1", mentions=["@all"])
    assert last(bob, "error")["code"] == "forbidden"
    say(chat, bob, type="send", room="club", text="@carol", id="b2", mentions=["carol", "carol"])
    assert last(carol, "message")["mentions"] == ["carol"]
    say(chat, owner, type="send", room="club", text="@all", id="o1", mentions=["@all"])
    assert conversation(chat, carol, room="club")["mentions"] == 2
    assert conversation(chat, bob, room="club")["mentions"] == 1
    say(
        chat,
        carol,
        type="send",
        room="club",
        text="x",
        id="c1",
        mentions=[f"u{i}" for i in range(10_000)],
    )
    assert last(carol, "error")["code"] == "bad_request"


def test_sends_of_one_connection_stay_in_order_when_some_are_checked(chat):
    alice, bob = team(chat, "alice", "bob")
    say(chat, alice, type="send", room="team", text="first", id="m1")
    say(chat, alice, type="send", room="team", text="reply", id="m2", reply_to=seq_of(alice, "m1"))
    say(chat, alice, type="send", room="team", text="third", id="m3")
    assert [f["text"] for f in bob.of("message")] == ["first", "reply", "third"]
    assert [f["seq"] for f in alice.of("ack")] == sorted(f["seq"] for f in alice.of("ack"))


def test_recall_edit_react_resends_are_exactly_once(chat, clock):
    alice, bob = team(chat, "alice", "bob")
    say(chat, alice, type="send", room="team", text="x", id="m1")
    seq = seq_of(alice, "m1")
    say(chat, alice, type="edit", room="team", seq=seq, text="y", id="e1")
    say(chat, alice, type="edit", room="team", seq=seq, text="y", id="e1")
    say(chat, alice, type="recall", room="team", seq=seq, id="r1")
    clock.advance(600)  # past the window: the resend is still recognised
    say(chat, alice, type="recall", room="team", seq=seq, id="r1")
    acks = [f for f in alice.of("ack") if f["id"] in ("e1", "r1")]
    assert [a.get("duplicate", False) for a in acks] == [False, True, False, True]
    assert acks[0]["seq"] == acks[1]["seq"] and acks[2]["seq"] == acks[3]["seq"]
    assert len(bob.of("edited")) == len(bob.of("recalled")) == 1


def test_mute_reaches_every_connection_and_the_list(chat):
    alice, bob = team(chat, "alice", "bob")
    web = token_user(chat, "bob")
    say(chat, bob, type="mute", room="team", muted=True)
    assert last(web, "muted") == {"type": "muted", "room": "team", "muted": True}
    assert conversation(chat, web, room="team")["muted"] is True
    say(chat, alice, type="send", room="team", text="still counted", id="m1")
    assert conversation(chat, bob, room="team")["unread"] == 1
    timeline_event(chat, "team", "left", "bob")
    say(chat, bob, type="mute", room="team", muted=False, id="gone")
    assert (last(bob, "error")["code"], last(bob, "error")["ref"]) == ("no_such_room", "gone")


def test_conversations_are_paged_most_recent_first(chat, clock):
    me = token_user(chat, "me")
    for i in range(5):
        member_join(chat, me, f"room{i}")
        clock.advance(1)
    rooms = []
    cursor = None
    while True:
        say(chat, me, type="conversations", limit=2, **({"cursor": cursor} if cursor else {}))
        reply = last(me, "conversations")
        rooms += [c["room"] for c in reply["conversations"]]
        cursor = reply["cursor"]
        if cursor is None:
            break
    assert rooms == [f"room{i}" for i in reversed(range(5))]
    say(chat, me, type="conversations", cursor="forged!", id="f")
    assert (last(me, "error")["code"], last(me, "error")["ref"]) == ("bad_request", "f")


def test_sync_sends_only_what_changed_and_a_new_cursor(chat):
    alice, bob = team(chat, "alice", "bob")
    member_join(chat, bob, "quiet")
    say(chat, bob, type="sync")
    first = last(bob, "sync")
    assert (first["reset"], first["more"]) == (False, False)
    assert {c["room"] for c in first["conversations"]} == {"team", "quiet"}
    say(chat, bob, type="sync", since=first["cursor"])
    assert last(bob, "sync")["conversations"] == []  # nothing changed
    say(chat, alice, type="send", room="team", text="new", id="m1")
    say(chat, alice, type="dm", to="bob", text="psst", id="d1")
    say(chat, bob, type="sync", since=first["cursor"])
    again = last(bob, "sync")
    got = {c.get("room") or c.get("with"): c for c in again["conversations"]}
    assert set(got) == {"team", "alice"}
    assert [i["text"] for i in got["team"]["items"]] == ["new"]
    assert [(i["type"], i["text"]) for i in got["alice"]["items"]] == [("dm", "psst")]
    # a marker change alone: the conversation, no items
    say(chat, bob, type="read", room="team", seq=seq_of(alice, "m1"))
    say(chat, bob, type="sync", since=again["cursor"])
    changed = last(bob, "sync")["conversations"]
    assert [(c["room"], c["items"], c["read"]) for c in changed] == [
        ("team", [], seq_of(alice, "m1"))
    ]
    # the DM peer's marker moved: the DM is in alice's next sync
    say(chat, alice, type="sync")
    cursor = last(alice, "sync")["cursor"]
    say(chat, bob, type="read", **{"with": "alice"}, seq=seq_of(alice, "d1"))
    say(chat, alice, type="sync", since=cursor)
    peer = last(alice, "sync")["conversations"]
    assert [(c["with"], c["peer_read"]) for c in peer] == [("bob", seq_of(alice, "d1"))]


def test_sync_with_an_unknown_cursor_is_a_reset(chat):
    (bob,) = team(chat, "bob")
    for forged in ("nope", "A" * 64, "../../etc/passwd"):
        say(chat, bob, type="sync", since=forged)
        reply = last(bob, "sync")
        assert reply["reset"] is True
        assert [c["room"] for c in reply["conversations"]] == ["team"]
    say(chat, bob, type="sync", since="A" * 65, id="long")
    assert (last(bob, "error")["code"], last(bob, "error")["ref"]) == ("bad_request", "long")
    eve = token_user(chat, "eve")  # another user's cursor is unknown to eve
    say(chat, eve, type="sync", since=reply["cursor"])
    assert last(eve, "sync")["reset"] is True
    assert last(eve, "sync")["conversations"] == []


def test_sync_reports_removed_rooms_with_why(chat):
    alice, bob = team(chat, "alice", "bob")
    member_join(chat, bob, "other")
    say(chat, bob, type="sync")
    cursor = last(bob, "sync")["cursor"]
    timeline_event(chat, "team", "kicked", "bob", by="alice")
    timeline_event(chat, "other", "left", "bob")
    say(chat, alice, type="send", room="team", text="after the kick", id="m1")
    say(chat, bob, type="sync", since=cursor)
    reply = last(bob, "sync")
    assert sorted(reply["removed"], key=lambda r: r["room"]) == [
        {"room": "other", "kind": "left"},
        {"room": "team", "kind": "kicked"},
    ]
    assert reply["conversations"] == []
    assert "after the kick" not in json.dumps(reply)


def test_sync_truncates_per_conversation_and_pages_conversations(clock):
    chat = make_chat(clock, sync_limit=3)
    alice, bob = team(chat, "alice", "bob")
    for i in range(5):
        say(chat, alice, type="send", room="team", text=f"m{i}", id=f"m{i}")
    say(chat, bob, type="sync")
    (c,) = last(bob, "sync")["conversations"]
    assert c["truncated"] is True
    assert [i.get("text") for i in c["items"]] == ["m2", "m3", "m4"]
    for i in range(201):
        say(chat, token_user(chat, f"u{i}"), type="dm", to="bob", text="hi", id="d")
    say(chat, bob, type="sync")
    page1 = last(bob, "sync")
    assert (page1["more"], len(page1["conversations"])) == (True, 200)
    say(chat, bob, type="sync", since=page1["cursor"])
    page2 = last(bob, "sync")
    assert page2["more"] is False
    seen = {c.get("with") or c.get("room") for c in page1["conversations"] + page2["conversations"]}
    assert len(seen) == 202


def test_history_keeps_messages_and_lists_events_apart(chat):
    alice, bob = team(chat, "alice", "bob")
    say(chat, alice, type="send", room="team", text="hi", id="m1")
    say(chat, bob, type="history", room="team")
    page = last(bob, "history")
    assert [m["text"] for m in page["messages"]] == ["hi"]
    assert [(e["kind"], e["user"]) for e in page["events"]] == [
        ("joined", "alice"),
        ("joined", "bob"),
    ]
    anon = opened(chat, "anna")
    say(chat, anon, type="history", room="empty")
    assert last(anon, "history") == {
        "type": "history",
        "room": "empty",
        "messages": [],
        "more": False,
    }


def test_dm_items_name_from_and_to(chat):
    alice, bob = token_user(chat, "alice"), token_user(chat, "bob")
    say(chat, alice, type="dm", to="bob", text="hi", id="d1")
    seq = seq_of(alice, "d1")
    say(chat, bob, type="react", **{"with": "alice"}, seq=seq, emoji="❤", id="r1")
    assert last(alice, "reaction") == {
        "type": "reaction",
        "from": "bob",
        "to": "alice",
        "seq": seq_of(bob, "r1"),
        "target": seq,
        "emoji": "❤",
        "user": "bob",
        "on": True,
        "ts": 1_700_000_000_000,
    }
    assert last(bob, "ack")["to"] == "alice"
    say(chat, bob, type="dm_history", **{"with": "alice"})
    (message,) = last(bob, "dm_history")["messages"]
    assert message["reactions"] == [{"emoji": "❤", "count": 1, "me": True}]
    say(chat, alice, type="recall", **{"with": "bob"}, seq=seq, id="x1")
    assert (last(bob, "recalled")["from"], last(bob, "recalled")["to"]) == ("alice", "bob")
    say(chat, bob, type="dm_history", **{"with": "alice"})
    assert last(bob, "dm_history")["messages"][0]["text"] == ""
    assert fired(chat.store.member(message["from"], "alice")) is None  # a user id is no room


def test_a_sync_reply_stops_taking_conversations_past_its_text_budget(chat, monkeypatch):
    from chatd import inbox

    monkeypatch.setattr(inbox, "SYNC_TEXT", 30)
    monkeypatch.setattr(inbox, "SYNC_READ_BATCH", 1)
    (alice,) = team(chat, "alice", room="r0")
    bob = token_user(chat, "bob")
    for i in range(4):
        member_join(chat, bob, f"r{i}")
    say(chat, bob, type="sync")
    cursor = last(bob, "sync")["cursor"]
    for i in range(4):
        member_join(chat, alice, f"r{i}")
        say(chat, alice, type="send", room=f"r{i}", text="x" * 20, id=f"m{i}")
    got = []
    while True:
        say(chat, bob, type="sync", since=cursor)
        reply = last(bob, "sync")
        got += [
            (c["room"], [i.get("text") for i in c["items"] if i["type"] == "message"])
            for c in reply["conversations"]
        ]
        cursor = reply["cursor"]
        if not reply["more"]:
            break
        assert len(reply["conversations"]) == 2  # 20 + 20 characters pass the budget of 30
    assert sorted(got) == [(f"r{i}", ["x" * 20]) for i in range(4)]
