"""The pure parts of the inbox: request schemas, item frames, sync snapshots and
their diff, paging, and who may recall, edit, react to and reply to a message."""

from __future__ import annotations

import json

import pytest

from chatd import conversations as conv
from chatd import errors, wire
from chatd.store import Conversation, Message, dm_channel

NOW = 1_700_000_000_000


def parse(obj):
    return wire.parse(json.dumps(obj).encode(), 4000)


def msg(seq, sender="alice", text="hi", ts=NOW, kind="message", data=None, channel="team"):
    return Message(channel, seq, sender, sender.title(), text, ts, f"id{seq}", kind, data)


def c(channel, last_seq=5, read_seq=3, kind="public", role="member", muted=False, **kw):
    peer = kw.pop("peer", None)
    return Conversation(channel, kind, peer, role, read_seq, muted, last_seq, NOW, **kw)


# schemas


@pytest.mark.parametrize("kind", sorted(wire.CONVERSATION_TYPES))
def test_conversation_requests_name_exactly_one_of_room_and_with(kind):
    base = {"type": kind, "seq": 1, "text": "x", "emoji": "+1", "muted": True, "reason": "x"}
    for where in ({}, {"room": "r", "with": "bob"}):
        with pytest.raises(errors.BadRequest):
            parse({**base, **where})
    assert parse({**base, "room": "r"}).fields["room"] == "r"
    assert parse({**base, "with": "bob"}).fields["with"] == "bob"


@pytest.mark.parametrize(
    "obj",
    [
        {"type": "mute", "room": "r", "muted": 1},
        {"type": "react", "room": "r", "seq": 1, "emoji": ""},
        {"type": "react", "room": "r", "seq": 1, "emoji": "x" * 17},
        {"type": "read", "room": "r", "seq": -1},
        {"type": "read", "room": "r", "seq": "1"},
        {"type": "sync", "since": "x" * 65},
        {"type": "sync", "since": 5},
        {"type": "conversations", "cursor": "é"},
        {"type": "conversations", "limit": 201},
        {"type": "send", "room": "r", "text": "x", "mentions": "bob"},
        {"type": "send", "room": "r", "text": "x", "mentions": [1]},
        {"type": "send", "room": "r", "text": "x", "mentions": ["u"] * 51},
        {"type": "dm", "to": "b", "text": "x", "reply_to": -3},
    ],
)
def test_bad_fields_of_the_new_requests_are_bad_request(obj):
    with pytest.raises(errors.BadRequest):
        request = parse(obj)
        wire.extras(request, 4000)  # (send/dm extras: checked for token users)


def test_send_extras_are_kept_aside_and_checked_on_demand():
    plain = parse({"type": "send", "room": "r", "text": "x"})
    assert plain.fields == {"room": "r", "text": "x"}
    assert wire.extras(plain, 4000) == {}
    given = parse({"type": "send", "room": "r", "text": "x", "mentions": ["b", "b", "@all"]})
    assert given.fields == {"room": "r", "text": "x"}
    assert wire.extras(given, 4000) == {"mentions": ["b", "@all"]}
    # an anonymous request is never checked: a malformed one parses as in chatd 0.1
    odd = parse({"type": "dm", "to": "b", "text": "x", "mentions": 5, "reply_to": "?"})
    assert odd.fields == {"to": "b", "text": "x"}


# frames


def test_a_plain_message_frame_is_byte_identical_to_chatd_0_1():
    m = msg(3)
    expected = (
        b'{"type":"message","room":"team","seq":3,"from":"alice","name":"Alice",'
        b'"text":"hi","ts":1700000000000,"id":"id3"}'
    )
    assert wire.item_frame(m) == wire.message_frame(m) == expected


def test_item_frames_of_every_kind():
    data = {"mentions": ["bob"], "reply_to": 2, "edited_ts": NOW + 1}
    assert json.loads(wire.item_frame(msg(3, data=data)))["mentions"] == ["bob"]
    recalled = msg(4, kind="recalled", text="", data={"target": 3, "by": "alice"})
    assert wire.item_object(recalled) == {
        "type": "recalled",
        "room": "team",
        "seq": 4,
        "target": 3,
        "by": "alice",
        "ts": NOW,
    }
    edited = msg(5, kind="edited", text="new", data={"target": 3})
    assert wire.item_object(edited)["text"] == "new"
    assert wire.item_object(edited)["edited_ts"] == NOW
    reaction = msg(
        6, "bob", kind="reaction", text="", data={"target": 3, "emoji": "👍", "on": True}
    )
    assert wire.item_object(reaction)["user"] == "bob"
    event = msg(
        7, kind="event", text="", data={"event": "role", "user": "b", "by": "a", "role": "admin"}
    )
    assert wire.item_object(event) == {
        "type": "event",
        "room": "team",
        "seq": 7,
        "kind": "role",
        "user": "b",
        "by": "a",
        "ts": NOW,
        "role": "admin",
    }
    channel = dm_channel("alice", "bob")
    dm = wire.item_object(msg(1, "bob", channel=channel))
    assert (dm["type"], dm["from"], dm["to"]) == ("dm", "bob", "alice")
    assert wire.item_frame(msg(1, "bob", channel=channel)) == wire.dm_frame(
        msg(1, "bob", channel=channel), "alice"
    )
    react = wire.item_object(
        msg(
            2,
            "alice",
            kind="reaction",
            channel=channel,
            data={"target": 1, "emoji": "x", "on": False},
        )
    )
    assert (react["from"], react["to"], react["on"]) == ("alice", "bob", False)


def test_the_list_cuts_last_text_and_shows_tombstones():
    long = c("team", last=msg(5, text="x" * 300), title="Team")
    d = wire.conversation_dict(long)
    assert d["last"]["text"] == "x" * 100 and "recalled" not in d["last"]
    assert (d["room"], d["title"], d["read"]) == ("team", "Team", 3)
    gone = c("team", last=msg(5, text="", data={"recalled": {"by": "a", "ts": NOW}}))
    assert wire.conversation_dict(gone)["last"]["recalled"] is True
    empty = wire.conversation_dict(c(dm_channel("a", "b"), kind="dm", peer="b", peer_read=4))
    assert (empty["with"], empty["last"], empty["peer_read"]) == ("b", None, 4)


# sync


def test_snapshots_round_trip_and_garbage_is_unknown():
    snap = {
        "team": conv.Entry(5, 3, None, "owner", False, "T"),
        "@dm:x": conv.Entry(1, 1, 0, "member", True, ""),
    }
    assert conv.decode_snapshot(conv.encode_snapshot(snap)) == snap
    for raw in (None, b"", b"[]", b'{"v":2,"c":{}}', b'{"v":1,"c":{"a":[1]}}', b"\xff"):
        assert conv.decode_snapshot(raw) is None


def test_plan_sends_new_and_changed_keeps_the_rest_and_removes_rooms():
    dm = dm_channel("me", "peer")
    old = {
        "same": conv.entry(c("same")),
        "newer": conv.entry(c("newer", last_seq=2)),
        "gone": conv.entry(c("gone")),
        dm: conv.entry(c(dm, kind="dm", peer="peer", peer_read=1)),
        '@dm:["me","old"]': conv.entry(c("x")),
    }
    cheap = [c("new"), c("newer"), c("same"), c(dm, kind="dm", peer="peer")]
    assert conv.needs_summary(old, cheap) == ["new", "newer", dm]
    full = {
        "new": c("new"),
        "newer": c("newer"),
        dm: c(dm, kind="dm", peer="peer", peer_read=5),
    }
    p = conv.plan(old, cheap, full)
    assert [(s.channel, since) for s, since in p.changed] == [("new", None), ("newer", 2), (dm, 5)]
    assert p.removed == ["gone"]  # DMs are never removed
    assert p.keep == {"same": old["same"]} and p.more is False


def test_plan_pages_and_keeps_the_old_entry_of_what_it_did_not_send():
    cheap = [c(f"r{i}") for i in range(5)]
    old = {"r4": conv.entry(c("r4", last_seq=1))}
    p = conv.plan(old, cheap, {x.channel: x for x in cheap}, page=2)
    assert [s.channel for s, _ in p.changed] == ["r0", "r1"]
    assert p.more is True
    assert p.keep == {"r4": old["r4"]}  # r2, r3 stay new for the next reply


def test_no_snapshot_means_everything_is_new():
    cheap = [c("a"), c("b")]
    assert conv.needs_summary(None, cheap) == ["a", "b"]
    p = conv.plan(None, cheap, {x.channel: x for x in cheap})
    assert [since for _, since in p.changed] == [None, None]


def test_page_of():
    items = list(range(5))
    assert conv.page_of(items, None, 2) == ([0, 1], "2")
    assert conv.page_of(items, "4", 2) == ([4], None)
    assert conv.page_of(items, "99", 2) == ([], None)
    for bad in ("-1", "x", "1" * 10):
        with pytest.raises(ValueError):
            conv.page_of(items, bad, 2)


# message rules


WINDOW = 120.0


@pytest.mark.parametrize(
    "actor,kind,role,age_s,outcome",
    [
        ("alice", "public", "member", 119, False),
        ("alice", "public", "member", 121, "too_late"),
        ("bob", "public", "member", 1, "forbidden"),
        ("bob", "public", "admin", 86400, False),
        ("bob", "private", "owner", 86400, False),
        ("alice", "dm", "member", 10, False),
        ("alice", "dm", "member", 121, "too_late"),
        ("bob", "dm", "member", 1, "forbidden"),
    ],
)
def test_who_may_recall(actor, kind, role, age_s, outcome):
    target = msg(3, "alice", ts=NOW - age_s * 1000)
    if outcome is False:
        assert conv.check_recall(target, actor, kind, role, NOW, WINDOW, "r") is False
    else:
        with pytest.raises(errors.ChatError) as e:
            conv.check_recall(target, actor, kind, role, NOW, WINDOW, "r")
        assert e.value.code == outcome


def test_recall_of_what_is_no_message_or_recalled():
    event = msg(1, kind="event", data={"event": "joined"})
    gone = msg(2, "alice", text="", data={"recalled": {"by": "alice", "ts": NOW}})
    for target in (None, event):
        with pytest.raises(errors.NoSuchMessage):
            conv.check_recall(target, "alice", "public", "owner", NOW, WINDOW, "r")
    # the recaller's resend with an id goes to the store's exactly-once; anything else is refused
    assert conv.check_recall(gone, "alice", "public", "member", NOW, WINDOW, "r") is True
    with pytest.raises(errors.NoSuchMessage):
        conv.check_recall(gone, "alice", "public", "member", NOW, WINDOW, None)
    with pytest.raises(errors.NoSuchMessage):
        conv.check_recall(gone, "bob", "public", "owner", NOW, WINDOW, "r")


def test_edit_react_reply_and_mention_rules():
    mine, gone = msg(3, "alice"), msg(4, "alice", data={"recalled": {"by": "a", "ts": 1}})
    conv.check_edit(mine, "alice", None)
    for target, actor, code in ((mine, "bob", "forbidden"), (gone, "alice", "no_such_message")):
        with pytest.raises(errors.ChatError) as e:
            conv.check_edit(target, actor, None)
        assert e.value.code == code
    conv.check_react(mine, None)
    with pytest.raises(errors.NoSuchMessage):
        conv.check_react(gone, None)
    conv.check_reply(gone, None)  # replying to a tombstone quotes the tombstone
    with pytest.raises(errors.NoSuchMessage):
        conv.check_reply(msg(1, kind="event"), None)
    conv.check_mentions(["bob"], "dm", "member", None)
    conv.check_mentions(["@all"], "private", "admin", None)
    for kind, role in (("public", "member"), ("private", None), ("dm", "member")):
        with pytest.raises(errors.Forbidden):
            conv.check_mentions(["@all"], kind, role, None)
    assert conv.message_data(None, None) is None
    assert conv.message_data(["b"], 3) == {"mentions": ["b"], "reply_to": 3}
