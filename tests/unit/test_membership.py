"""Durable membership, room kinds and roles, offline DMs: the Chat realm on a
task.Clock with the real MemoryStore (docs/protocol.md, *Conversations*:
*Membership*, *Room kinds and roles*, *Timeline events*, *Offline DMs*)."""

from __future__ import annotations

from tests.support.realm import make_chat, opened, say, token_user


def stored(chat, room):
    """Every stored item of *room* (kind, data or text), ascending."""
    page = chat.store.history(room, None, 1000).result
    return [
        (m.kind, (m.data or {}).get("event") if m.kind == "event" else m.text)
        for m in page.messages
    ]


def events(conn, kind=None):
    return [(e["kind"], e["user"]) for e in conn.of("event") if kind in (None, e["kind"])]


def errors_of(conn):
    return [(e["code"], e["ref"]) for e in conn.of("error")]


def team(chat, kind="private", members=("bob",)):
    """alice creates *kind* room ``team`` with *members*; returns alice's and each
    member's connection."""
    alice = token_user(chat, "alice", "Alice")
    others = {user: token_user(chat, user) for user in members}
    say(
        chat,
        alice,
        type="create",
        room="team",
        kind=kind,
        title="Team",
        members=list(members),
        id="c1",
    )
    return alice, others


# membership


def test_join_makes_a_member_once_and_reconnects_are_subscribed(chat):
    """A token user's first join of a created room appends ``joined``; a join by a
    member appends nothing; a new connection is subscribed at welcome
    (``subscribed``) and gets the room's messages without joining."""
    team(chat, "public", ())
    bob = token_user(chat, "bob")
    say(chat, bob, type="join", room="r", id="j0")  # a chatd 0.1 room
    say(chat, bob, type="join", room="team", id="j1")
    assert bob.of("joined")[-1]["seq"] == 2
    phone = token_user(chat, "bob")
    assert phone.of("subscribed") == [{"type": "subscribed", "rooms": ["team"], "more": False}]
    say(chat, phone, type="join", room="team", id="j2")  # a member: answered, no event
    assert stored(chat, "team") == [("event", "created"), ("event", "joined")]
    eve = opened(chat, "eve")
    say(chat, eve, type="join", room="team")
    say(chat, eve, type="send", room="team", text="hi", id="m1")
    chat.close(bob.session)
    later = token_user(chat, "bob")
    say(chat, eve, type="send", room="team", text="again", id="m2")
    assert [m["text"] for m in phone.of("message")] == ["hi", "again"]
    assert [m["text"] for m in later.of("message")] == ["again"]
    assert later.of("subscribed")[0]["rooms"] == ["team"]


def test_a_room_never_created_keeps_its_live_frames(chat):
    """In a chatd 0.1 room, joined/left are stored but arrivals are presence, as before."""
    alice, bob = token_user(chat, "alice"), token_user(chat, "bob")
    say(chat, alice, type="join", room="r")
    say(chat, bob, type="join", room="r")
    say(chat, bob, type="leave", room="r", id="l1")
    assert [f["type"] for f in alice.json()] == ["welcome", "joined", "presence", "presence"]
    assert bob.of("left") == [{"type": "left", "room": "r"}]
    assert stored(chat, "r") == [("event", "joined"), ("event", "joined"), ("event", "left")]
    assert chat.store.member("r", "bob").result.state == "left"
    again = token_user(chat, "alice")  # a member of r: subscribed by its own join, as before
    assert [f["type"] for f in again.json()] == ["welcome"]
    assert [c.channel for c in chat.store.conversations("alice").result] == ["r"]


def test_leave_ends_the_membership_on_every_device(chat):
    alice, bob = team(chat, "public", ())[0], token_user(chat, "bob")
    say(chat, bob, type="join", room="team")
    web = token_user(chat, "bob")
    assert web.of("subscribed")[0]["rooms"] == ["team"]
    say(chat, bob, type="leave", room="team", id="l1")
    assert bob.of("left") and web.of("left")
    assert events(web, "left") == [("left", "bob")] and events(alice, "left") == [("left", "bob")]
    say(chat, alice, type="send", room="team", text="after", id="m1")
    assert not bob.of("message") and not web.of("message")
    again = token_user(chat, "bob")
    assert not again.of("subscribed")


def test_the_owner_leaves_only_after_handing_the_room_over(chat):
    alice, others = team(chat, "private", ("bob",))
    say(chat, alice, type="leave", room="team", id="l1")
    assert errors_of(alice) == [("forbidden", "l1")]
    say(chat, alice, type="set_role", room="team", user="bob", role="owner", id="r1")
    assert events(others["bob"], "role") == [("role", "bob"), ("role", "alice")]
    assert chat.store.member("team", "alice").result.role == "admin"
    say(chat, alice, type="leave", room="team", id="l2")
    assert alice.of("left") == [{"type": "left", "room": "team"}]
    assert chat.store.member("team", "bob").result.role == "owner"


def test_auto_subscription_stops_at_max_rooms(clock):
    """Subscribed at welcome: the most recently active rooms first, up to --max-rooms;
    ``more`` says there are others (the client joins those itself)."""
    chat = make_chat(clock, max_rooms=2)
    chat.close(token_user(chat, "alice").session)  # known, offline
    bob = token_user(chat, "bob")
    for room in ("r1", "r2", "r3"):
        say(chat, bob, type="create", room=room, kind="private", members=["alice"], id=room)
        clock.advance(1)
    alice = token_user(chat, "alice")
    assert alice.of("subscribed") == [{"type": "subscribed", "rooms": ["r3", "r2"], "more": True}]
    say(chat, bob, type="send", room="r1", text="to r1", id="m1")
    assert not alice.of("message")
    say(chat, alice, type="join", room="r1", id="j1")
    assert errors_of(alice) == [("too_many_rooms", "j1")]
    say(chat, alice, type="leave", room="r3")
    say(chat, alice, type="join", room="r1", id="j2")
    assert alice.of("joined")[0]["room"] == "r1"


# create, roles, events


def test_create_private_room_with_members(chat):
    alice, others = team(chat, "private", ("bob", "carol"))
    bob = others["bob"]
    ack = alice.of("ack")[0]
    assert (ack["id"], ack["room"], ack["seq"]) == ("c1", "team", 1)
    info = alice.of("room_info")[0]
    assert info == {
        "type": "room_info",
        "room": "team",
        "kind": "private",
        "title": "Team",
        "topic": "",
        "avatar": "",
        "members": 3,
        "role": "owner",
        "seq": 3,
        "created_by": "alice",
    }
    assert bob.of("subscribed") == [{"type": "subscribed", "rooms": ["team"], "more": False}]
    assert events(bob) == [("invited", "bob"), ("invited", "carol")]
    say(chat, bob, type="send", room="team", text="hello", id="m1")
    assert [m["text"] for m in alice.of("message")] == ["hello"]
    assert [m["text"] for m in others["carol"].of("message")] == ["hello"]


def test_creates_without_an_id_each_invite_their_members(chat):
    """Two ``create`` requests without ``id`` by one user, inviting the same member:
    each room gets its member (the invites share no exactly-once id)."""
    alice = token_user(chat, "alice", "Alice")
    bob = token_user(chat, "bob")
    for room in ("one", "two"):
        say(chat, alice, type="create", room=room, kind="private", members=["bob"])
    assert [i["members"] for i in alice.of("room_info")] == [2, 2]
    assert [e["room"] for e in bob.of("event") if e["kind"] == "invited"] == ["one", "two"]


def test_create_of_an_existing_room_and_its_resend(chat):
    alice, _ = team(chat)
    say(chat, alice, type="create", room="team", kind="public", id="c1")  # the same request
    acks = alice.of("ack")
    assert acks[-1]["duplicate"] is True and acks[-1]["seq"] == acks[0]["seq"]
    say(chat, alice, type="create", room="team", kind="public", id="c2")
    say(chat, alice, type="create", room="lobby", kind="public", id="c3")
    carol = token_user(chat, "carol")
    say(chat, carol, type="join", room="old")
    say(chat, carol, type="create", room="old", kind="private", id="c4")
    assert errors_of(alice) == [("room_exists", "c2"), ("room_exists", "c3")]
    assert errors_of(carol) == [("room_exists", "c4")]


def test_moderation_events_and_exactly_once(chat):
    alice, others = team(chat, "private", ("bob", "carol"))
    bob, carol = others["bob"], others["carol"]
    say(chat, alice, type="set_role", room="team", user="bob", role="admin", id="r1")
    say(chat, bob, type="kick", room="team", user="carol", id="k1")
    kicked = alice.of("event")[-1]
    assert (kicked["kind"], kicked["user"], kicked["by"]) == ("kicked", "carol", "bob")
    assert carol.json()[-2]["kind"] == "kicked" and carol.json()[-1] == {
        "type": "left",
        "room": "team",
    }
    say(chat, bob, type="kick", room="team", user="carol", id="k1")  # a resend: same ack
    first, again = bob.of("ack")[-2:]
    assert again["duplicate"] is True and again["seq"] == first["seq"]
    say(chat, bob, type="update_room", room="team", topic="new topic", id="u1")
    assert alice.of("event")[-1]["changes"] == {"topic": "new topic"}
    say(chat, bob, type="ban", room="team", user="carol", id="b1")
    say(chat, carol, type="join", room="team", id="j1")
    say(chat, alice, type="invite", room="team", user="carol", id="i1")
    assert errors_of(carol) == [("forbidden", "j1")]
    assert errors_of(alice) == [("forbidden", "i1")]
    say(chat, bob, type="unban", room="team", user="carol", id="ub1")
    say(chat, alice, type="invite", room="team", user="carol", id="i2")
    assert carol.of("subscribed")[-1]["rooms"] == ["team"]
    kinds = [e for e in stored(chat, "team") if e[0] == "event"]
    assert [e[1] for e in kinds] == [
        "created",
        "invited",
        "invited",
        "role",
        "kicked",
        "room_updated",
        "banned",
        "unbanned",
        "invited",
    ]


def test_hostile_membership_requests_store_nothing(chat):
    """Forged role names, kicking the owner, banning oneself, an unknown invitee, a
    huge members list, an empty update: each the documented error, nothing stored."""
    alice, others = team(chat, "private", ("bob", "carol"))
    bob, carol = others["bob"], others["carol"]
    say(chat, alice, type="set_role", room="team", user="bob", role="admin", id="r1")
    say(chat, alice, type="set_role", room="team", user="carol", role="admin", id="r2")
    before = stored(chat, "team")
    bad = [
        (
            alice,
            {"type": "set_role", "room": "team", "user": "bob", "role": "god", "id": "h1"},
            "bad_request",
        ),
        (
            alice,
            {"type": "set_role", "room": "team", "user": "bob", "role": ["owner"], "id": "h2"},
            "bad_request",
        ),
        (bob, {"type": "kick", "room": "team", "user": "alice", "id": "h3"}, "forbidden"),
        (bob, {"type": "ban", "room": "team", "user": "alice", "id": "h4"}, "forbidden"),
        (
            bob,
            {"type": "set_role", "room": "team", "user": "bob", "role": "owner", "id": "h5"},
            "forbidden",
        ),
        (alice, {"type": "ban", "room": "team", "user": "alice", "id": "h6"}, "forbidden"),
        (alice, {"type": "kick", "room": "team", "user": "alice", "id": "h7"}, "forbidden"),
        (
            alice,
            {"type": "invite", "room": "team", "user": "nobody-ever", "id": "h8"},
            "no_such_user",
        ),
        (
            alice,
            {
                "type": "create",
                "room": "big",
                "kind": "private",
                "members": [f"u{i}" for i in range(101)],
                "id": "h9",
            },
            "bad_request",
        ),
        (
            alice,
            {"type": "create", "room": "big", "kind": "private", "members": ["ghost"], "id": "h10"},
            "no_such_user",
        ),
        (alice, {"type": "create", "room": "big", "kind": "secret", "id": "h11"}, "bad_request"),
        (alice, {"type": "update_room", "room": "team", "id": "h12"}, "bad_request"),
        (
            alice,
            {"type": "update_room", "room": "team", "avatar": "javascript:alert(1)", "id": "h13"},
            "bad_request",
        ),
        (
            alice,
            {"type": "update_room", "room": "team", "title": "x" * 65, "id": "h14"},
            "bad_request",
        ),
        (
            alice,
            {"type": "update_room", "room": "team", "title": "a\u0000b", "id": "h15"},
            "bad_request",
        ),
        (alice, {"type": "members", "room": "team", "limit": 100000, "id": "h16"}, "bad_request"),
        (alice, {"type": "invite", "room": "team", "user": "bob", "id": "h17"}, "bad_request"),
        (
            bob,
            {"type": "set_role", "room": "team", "user": "alice", "role": "member", "id": "h18"},
            "forbidden",
        ),
        (carol, {"type": "kick", "room": "team", "user": "bob", "id": "h19"}, "forbidden"),
        (bob, {"type": "ban", "room": "team", "user": "carol", "id": "h20"}, "forbidden"),
        (
            alice,
            {"type": "update_room", "room": "team", "avatar": 'https://x/"><b>', "id": "h21"},
            "bad_request",
        ),
        (
            alice,
            {"type": "update_room", "room": "team", "avatar": "https://" + "a" * 600, "id": "h22"},
            "bad_request",
        ),
        (alice, {"type": "create", "room": "lobby", "kind": "public", "id": "h23"}, "room_exists"),
    ]
    for conn, frame, code in bad:
        conn.frames.clear()
        say(chat, conn, **frame)
        assert errors_of(conn) == [(code, frame["id"])], frame
    assert stored(chat, "team") == before and stored(chat, "big") == []
    assert chat.store.member("team", "alice").result.role == "owner"
    say(chat, bob, type="send", room="team", text="still fine", id="m1")
    assert alice.of("message")[-1]["text"] == "still fine"


def test_anonymous_connections_get_auth_required(chat):
    eve = opened(chat, "eve")
    for kind in (
        "create",
        "room_info",
        "members",
        "invite",
        "kick",
        "ban",
        "unban",
        "set_role",
        "update_room",
    ):
        say(
            chat,
            eve,
            type=kind,
            room="r",
            kind="public",
            user="x",
            role="member",
            title="t",
            id=kind,
        )
    assert errors_of(eve) == [
        ("auth_required", kind)
        for kind in (
            "create",
            "room_info",
            "members",
            "invite",
            "kick",
            "ban",
            "unban",
            "set_role",
            "update_room",
        )
    ]


def test_private_room_probing_by_a_non_member_learns_nothing(chat):
    """Over every request type, a non-member (token or anonymous) of a private room
    gets an error and receives none of its messages, events, typing or presence."""
    alice, others = team(chat, "private", ("bob",))
    mallory, eve = token_user(chat, "mallory"), opened(chat, "eve")
    probes = [
        ({"type": "join", "room": "team"}, "forbidden"),
        ({"type": "join", "room": "team", "since": 0}, "forbidden"),
        ({"type": "history", "room": "team"}, "forbidden"),
        ({"type": "room_info", "room": "team"}, "forbidden"),
        ({"type": "members", "room": "team"}, "forbidden"),
        ({"type": "send", "room": "team", "text": "spam"}, "not_in_room"),
        ({"type": "typing", "room": "team"}, "not_in_room"),
        ({"type": "leave", "room": "team"}, "not_in_room"),
        ({"type": "invite", "room": "team", "user": "mallory"}, "forbidden"),
        ({"type": "kick", "room": "team", "user": "bob"}, "forbidden"),
        ({"type": "ban", "room": "team", "user": "bob"}, "forbidden"),
        ({"type": "unban", "room": "team", "user": "bob"}, "forbidden"),
        ({"type": "set_role", "room": "team", "user": "bob", "role": "member"}, "forbidden"),
        ({"type": "update_room", "room": "team", "title": "owned"}, "forbidden"),
        ({"type": "create", "room": "team", "kind": "public"}, "room_exists"),
        ({"type": "read", "room": "team", "seq": 1}, "no_such_room"),
        ({"type": "receipts", "room": "team", "seq": 1}, "forbidden"),
        ({"type": "recall", "room": "team", "seq": 1}, "no_such_room"),
    ]
    before = stored(chat, "team")
    for i, (frame, code) in enumerate(probes):
        say(chat, mallory, **frame, id=f"p{i}")
        assert errors_of(mallory)[-1] == (code, f"p{i}"), frame
    for frame, _code in probes[:3]:
        say(chat, eve, **frame, id="e")
    assert set(errors_of(eve)) == {("forbidden", "e")}
    say(chat, others["bob"], type="send", room="team", text="secret", id="m1")
    say(chat, others["bob"], type="typing", room="team")
    assert stored(chat, "team") == [*before, ("message", "secret")]
    for conn in (mallory, eve):
        assert {f["type"] for f in conn.json()} == {"welcome", "error"}
        assert "secret" not in str(conn.frames)


def test_a_room_made_private_drops_its_anonymous_receivers(chat):
    alice, _ = team(chat, "public", ())
    eve = opened(chat, "eve")
    say(chat, eve, type="join", room="team")
    say(chat, alice, type="update_room", room="team", kind="private", id="u1")
    assert eve.of("left") == [{"type": "left", "room": "team"}]
    say(chat, alice, type="send", room="team", text="now private", id="m1")
    assert not eve.of("message")


def test_a_room_created_private_over_an_empty_old_room_drops_its_anonymous_receivers(chat):
    eve = opened(chat, "eve")
    say(chat, eve, type="join", room="quiet")  # a chatd 0.1 room without messages
    alice = token_user(chat, "alice")
    say(chat, alice, type="create", room="quiet", kind="private", id="c1")
    assert eve.of("left") == [{"type": "left", "room": "quiet"}]
    say(chat, alice, type="send", room="quiet", text="members only", id="m1")
    assert not eve.of("message") and not eve.of("event")


def test_members_pages_with_roles_and_online(chat):
    users = [f"u{i:02}" for i in range(5)]
    alice, others = team(chat, "private", users)
    chat.close(others["u03"].session)
    say(chat, alice, type="members", room="team", limit=4, id="m")
    page = alice.of("members")[0]
    assert [m["user"] for m in page["members"]] == ["alice", "u00", "u01", "u02"]
    assert page["members"][0] == {"user": "alice", "name": "Alice", "role": "owner", "online": True}
    assert page["cursor"] == "u02"
    say(chat, alice, type="members", room="team", cursor="u02", id="m")
    last = alice.of("members")[1]
    assert [(m["user"], m["online"]) for m in last["members"]] == [("u03", False), ("u04", True)]
    assert last["cursor"] is None


# offline DMs


def test_dm_to_a_known_offline_user_is_stored_and_acked(chat):
    bob = token_user(chat, "bob")
    chat.close(bob.session)
    alice = token_user(chat, "alice")
    say(chat, alice, type="dm", to="bob", text="while you were away", id="d1")
    assert alice.of("ack")[0]["to"] == "bob"
    say(chat, alice, type="dm", to="stranger", text="hello?", id="d2")
    assert errors_of(alice) == [("no_such_user", "d2")]
    back = token_user(chat, "bob")
    say(chat, back, type="dm_history", **{"with": "alice"}, since=0)
    assert [m["text"] for m in back.of("dm_history")[0]["messages"]] == ["while you were away"]


def test_anonymous_dms_stay_online_only(chat):
    alice = token_user(chat, "alice")
    anon = opened(chat, "anon")
    chat.close(anon.session)
    say(chat, alice, type="dm", to="anon", text="x", id="d1")  # a token user to an anonymous one
    eve = opened(chat, "eve")
    say(chat, eve, type="dm", to="alice", text="y", id="d2")  # online: delivered as before
    chat.close(alice.session)
    say(chat, eve, type="dm", to="alice", text="z", id="d3")  # an anonymous sender: online only
    assert errors_of(alice) == [("no_such_user", "d1")]
    assert errors_of(eve) == [("no_such_user", "d3")]


def test_a_failed_store_read_or_write_is_logged_with_its_message(chat, monkeypatch):
    """When recording the user or reading its conversations fails, the logged event
    formats as "recording user alice" / "subscribing alice" with the failure (not
    Twisted's "Log format must be str"), and the connection carries on."""
    from twisted.internet import defer
    from twisted.logger import capturedLogs, formatEvent

    from chatd.store import StoreUnavailable

    for method in ("add_user", "conversations"):
        monkeypatch.setattr(
            chat.store, method, lambda *a, **k: defer.fail(StoreUnavailable("disk gone"))
        )
    with capturedLogs() as events:
        alice = token_user(chat, "alice")
    failed = [e for e in events if "log_failure" in e]
    assert sorted(formatEvent(e) for e in failed) == ["recording user alice", "subscribing alice"]
    assert all(e["log_failure"].check(StoreUnavailable) for e in failed)
    assert alice.of("welcome")
