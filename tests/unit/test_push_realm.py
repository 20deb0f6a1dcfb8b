"""Offline push in the ``Chat`` realm (chatd/push.py, chatd/pushrules.py): who is
notified of what, on a real MemoryStore with time from ``task.Clock``. The ``push``
chat events are what the webhook and the WeChat sender act on."""

from __future__ import annotations

import pytest
from twisted.internet.task import Clock

from chatd import pushrules
from chatd.push import WATCHERS_TTL, PushConfig
from chatd.store import Message, dm_channel
from chatd.wechat import PushSender, WeChatApi
from tests.support.realm import fired, make_chat, member_join, opened, say, token_user

ALICE, BOB, CAROL = "wx:o-alice", "wx:o-bob", "carol"


@pytest.fixture
def clock():
    c = Clock()
    c.advance(1_700_000_000)
    return c


@pytest.fixture
def chat(clock):
    chat = make_chat(clock, push_interval=60.0)
    chat.push.configure(PushConfig(), events=lambda: True)
    for user in (ALICE, BOB, CAROL):
        fired(chat.store.add_user(user, user, 0))
    return chat


@pytest.fixture
def pushes(chat):
    seen = []

    def observer(event, **fields):
        if event == "push":
            seen.append((fields["user"], fields["reason"], fields["preview"], fields["message"]))

    chat.observers.append(observer)
    return seen


def offline(chat, conn):
    chat.close(conn.session)


def dm(chat, conn, to, text, id):
    say(chat, conn, type="dm", to=to, text=text, id=id)
    assert [f for f in conn.of("ack") if f.get("id") == id], conn.json()


def test_an_offline_users_dm_notifies_once_per_interval(chat, clock, pushes):
    """A DM to a user with no connection is one push (reason dm, the text as preview);
    more DMs within --push-interval are not; after it, the next one is."""
    alice = token_user(chat, ALICE)
    dm(chat, alice, BOB, "hello\nthere", "d1")
    assert [(u, r, p) for u, r, p, _ in pushes] == [(BOB, "dm", "hello there")]
    clock.advance(59)
    dm(chat, alice, BOB, "again", "d2")
    assert len(pushes) == 1
    clock.advance(1)
    dm(chat, alice, BOB, "later", "d3")
    assert [p for _, _, p, _ in pushes] == ["hello there", "later"]
    assert pushes[-1][3].channel == dm_channel(ALICE, BOB)


def test_online_recipients_and_muted_conversations_are_not_notified(chat, pushes):
    alice = token_user(chat, ALICE)
    bob = token_user(chat, BOB)
    dm(chat, alice, BOB, "bob is online", "d1")
    say(chat, bob, type="mute", **{"with": ALICE}, muted=True, id="m1")
    assert bob.of("muted"), bob.json()
    offline(chat, bob)
    dm(chat, alice, BOB, "muted", "d2")
    dm(chat, alice, CAROL, "carol is notified", "d3")
    assert [(u, r) for u, r, _, _ in pushes] == [(CAROL, "dm")]


def test_mentions_and_chosen_rooms_notify_members(chat, pushes):
    """A room message notifies the offline members it @mentions and the ones who chose
    the room (push_subscribe rooms); not @all, not the sender, not other members."""
    alice, bob, carol = (token_user(chat, u) for u in (ALICE, BOB, CAROL))
    for conn in (alice, bob, carol):
        member_join(chat, conn, "team")
    say(chat, carol, type="push_subscribe", rooms=["team"], id="p1")
    (answer,) = carol.of("push_subscriptions")
    assert answer == {
        "type": "push_subscriptions",
        "id": "p1",
        "templates": [],
        "rooms": ["team"],
        "refused": [],
    }
    offline(chat, bob)
    offline(chat, carol)
    say(chat, alice, type="send", room="team", text="hi @bob", mentions=[BOB], id="s1")
    assert sorted((u, r) for u, r, _, _ in pushes) == [(CAROL, "room"), (BOB, "mention")]
    say(chat, alice, type="send", room="team", text="everyone", mentions=["@all"], id="s2")
    assert len(pushes) == 2  # carol's digest; @all is no reason of its own


def test_previews_off_and_private_rooms_show_no_text(chat, pushes):
    chat.settings.push_previews = "off"
    alice = token_user(chat, ALICE)
    dm(chat, alice, BOB, "secret", "d1")
    assert pushes[-1][2] == pushrules.NO_PREVIEW
    chat.settings.push_previews = "on"
    assert pushrules.preview_of("secret", True, private=True) == pushrules.NO_PREVIEW
    assert pushrules.preview_of("x" * 500, True, private=False) == "x" * pushrules.PREVIEW_CHARS


def test_anonymous_users_cannot_subscribe(chat):
    guest = opened(chat, "guest1")
    say(chat, guest, type="push_subscribe", templates=[{"id": "T"}], id="p1")
    (error,) = guest.of("error")
    assert (error["code"], error["ref"]) == ("auth_required", "p1")


def test_templates_not_configured_are_refused_and_counts_add_up(chat, clock):
    """Only --push-template's template is kept (the others are answered as refused);
    counts add up to QUOTA_MAX."""
    # a WeChat sender (never asked to send here: no one is offline)
    api = WeChatApi(clock, "wx123", "secret", "http://127.0.0.1:9")
    chat.push.configure(PushConfig(template="TPL"), PushSender(api, clock))
    bob = token_user(chat, BOB)
    say(chat, bob, type="push_subscribe", templates=[{"id": "TPL", "count": 60},
        {"id": "OTHER"}, {"id": "TPL", "count": 60}], id="p1")  # fmt: skip
    (answer,) = bob.of("push_subscriptions")
    assert answer["templates"] == [{"id": "TPL", "count": pushrules.QUOTA_MAX}]
    assert answer["refused"] == ["OTHER"]


def test_recipients_rules():
    m = Message("team", 1, "a", "A", "t", 0, None, data={"mentions": ["b", "@all", "a"]})
    assert pushrules.recipients(m, None, ["a", "c", "b"]) == {"b": "mention", "c": "room"}
    d = Message(dm_channel("a", "b"), 1, "a", "A", "t", 0, None)
    assert pushrules.recipients(d, "b") == {"b": "dm"}
    assert pushrules.recipients(d, "a") == {}


def test_claim_is_the_digest_and_the_quota():
    assert pushrules.claim(None, None, 1000, 500) == pushrules.Claim(True, False)
    assert pushrules.claim(None, 2, 1000, 500) == pushrules.Claim(True, True)
    assert pushrules.claim(700, 2, 1000, 500) == pushrules.NO_CLAIM
    assert pushrules.claim(500, 0, 1000, 500) == pushrules.Claim(True, False)
    assert pushrules.subscribe({"T": 99}, {"r"}, {"T": 5, "S": 1}, {"r": False, "q": True}) == (
        {"T": pushrules.QUOTA_MAX, "S": 1},
        {"q"},
    )


def test_template_data_fits_wechats_fields_and_pages_name_the_conversation():
    fields = pushrules.parse_fields("thing1=name,thing2=preview,time3=time,name4=name")
    data = pushrules.template_data(
        fields, name="一个很长很长的名字ABCDEFG", preview="x" * 30, ts_ms=0, room="r"
    )
    assert data["thing2"]["value"] == "x" * 19 + "…"
    assert data["name4"]["value"] == "一个很长很长的名字…"
    assert data["time3"]["value"] == "1970-01-01 08:00"
    assert data["thing1"]["value"] == "一个很长很长的名字ABCDEFG"
    d = Message(dm_channel("wx:o-a", "b"), 1, "wx:o-a", "A", "t", 0, None)
    assert pushrules.page_of("pages/chat/chat", d) == "pages/chat/chat?with=wx%3Ao-a"
    r = Message("dev#1", 1, "a", "A", "t", 0, None)
    assert pushrules.page_of("pages/c?x=1", r) == "pages/c?x=1&room=dev%231"
    for bad in ("thing1", "thing1=nope", "1=name", "thing1=name,thing1=time"):
        with pytest.raises(ValueError):
            pushrules.parse_fields(bad)


def test_a_rooms_watchers_are_cached_for_a_few_seconds(chat, clock, pushes):
    """A room's watchers are read once per WATCHERS_TTL: a choice stored by another
    node counts after it; one made on this node at once."""
    alice, bob, carol = (token_user(chat, u) for u in (ALICE, BOB, CAROL))
    for conn in (alice, bob, carol):
        member_join(chat, conn, "team")
    offline(chat, bob)
    offline(chat, carol)
    say(chat, alice, type="send", room="team", text="one", id="s1")
    assert pushes == []
    fired(chat.store.push_subscribe(BOB, {}, {"team": True}, 0))  # as another node would
    say(chat, alice, type="send", room="team", text="two", id="s2")
    assert pushes == []
    clock.advance(WATCHERS_TTL)
    say(chat, alice, type="send", room="team", text="three", id="s3")
    assert [(u, r, p) for u, r, p, _ in pushes] == [(BOB, "room", "three")]
    carol_again = token_user(chat, CAROL)
    say(chat, carol_again, type="push_subscribe", rooms=["team"], id="p1")
    offline(chat, carol_again)
    say(chat, alice, type="send", room="team", text="four", id="s4")
    assert [(u, p) for u, _, p, _ in pushes][1:] == [(CAROL, "four")]
