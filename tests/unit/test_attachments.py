"""Attachments in the ``Chat`` realm: ``send``/``dm`` with uploads, the frames that show
them (URLs signed when each frame is made), who may attach and see what, and the
lifecycle (recall, pruning, the sweep). The real MemoryStore and the real Media on a
temporary directory, its blocking parts run in place; time from ``task.Clock``."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sqlite3
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from twisted.internet import defer

from chatd import errors, wire
from chatd.auth import Identity
from chatd.media.meta import MediaMeta, SchemaTooNew
from chatd.media.signing import Signer
from chatd.media.sweep import INTERVAL, PART_GRACE, RESOLVE_AFTER, RETIRED_GRACE
from chatd.media.web import MediaError
from chatd.service import build_chat
from chatd.settings import Settings
from chatd.store.memory import MemoryStore
from tests import media_samples
from tests.support.media import GRACE, TTL, URL_KEY, media_for, object_path, upload
from tests.support.realm import (
    Fanout,
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

FIXTURE = Path(__file__).parent.parent / "fixtures" / "media-meta-v1.sqlite3"


@pytest.fixture
def media(chat, tmp_path):
    return media_for(chat, tmp_path)


def attached(*uploads) -> list[dict]:
    return [{"media_id": u["media_id"]} for u in uploads]


def assert_signed(shown: dict, now: float) -> None:
    """*shown*'s URLs are signed for its id (and thumbnail), valid from *now* for the TTL."""
    signer = Signer(URL_KEY, TTL)
    assert shown["expires"] == int(now + TTL)
    urls = [("", shown["url"])]
    if "thumb" in shown:
        urls.append(("thumb", shown["thumb_url"]))
    else:
        assert "thumb_url" not in shown
    for variant, url in urls:
        parts = urlsplit(url)
        suffix = "/thumb" if variant else ""
        assert parts.path == f"/media/{shown['media_id']}{suffix}"
        q = parse_qs(parts.query)
        assert signer.check(shown["media_id"], variant, q["e"][0], q["s"][0], now) is None
        assert signer.check(shown["media_id"], variant, q["e"][0], q["s"][0], now + TTL + 1)


def objects(directory) -> list[str]:
    return sorted(f for _, _, files in os.walk(Path(directory) / "objects") for f in files)


def stored(chat, channel, seq):
    return fired(chat.store.items(channel, [seq]))[seq]


# sending and showing


def test_a_room_message_shows_its_attachments_with_urls_signed_at_delivery(chat, media, clock):
    alice, bob = team(chat, "alice", "bob")
    bob_phone = token_user(chat, "bob")
    say(chat, bob_phone, type="join", room="team")
    pic = upload(media, "alice", filename="cat.png")
    say(chat, alice, type="send", room="team", id="m1", attachments=attached(pic))
    ack = last(alice, "ack")
    message = last(bob, "message")
    assert (message["text"], message["id"], message["seq"]) == ("", "m1", ack["seq"])
    [shown] = message["attachments"]
    expected = {"media_id": pic["media_id"], "kind": "image", "mime": "image/png"}
    expected.update(size=pic["size"], name="cat.png", width=40, height=30)
    assert {k: shown[k] for k in expected} == expected
    assert shown["thumb"] == {"mime": "image/webp", "size": pic["thumb"]["size"]}
    assert_signed(shown, clock.seconds())
    # one frame, signed once, for every connection it goes to
    assert bob.frames[-1] is bob_phone.frames[-1]
    # stored as data, without URLs (they are signed whenever a frame is made)
    data = stored(chat, "team", ack["seq"]).data
    assert data["attachments"] == [
        {k: v for k, v in shown.items() if "url" not in k and k != "expires"}
    ]


def test_a_caption_and_several_attachments_keep_their_order(chat, media, clock):
    alice, bob = team(chat, "alice", "bob")
    voice = upload(media, "alice", media_samples.mp3(1.5)[0], filename="hi.mp3")
    pic = upload(media, "alice")
    say(
        chat,
        alice,
        type="send",
        room="team",
        id="m1",
        text="look",
        attachments=attached(voice, pic),
    )
    message = last(bob, "message")
    assert message["text"] == "look"
    assert [a["media_id"] for a in message["attachments"]] == [voice["media_id"], pic["media_id"]]
    first = message["attachments"][0]
    assert (first["kind"], first["mime"], first["name"]) == ("voice", "audio/mpeg", "hi.mp3")
    assert abs(first["duration_ms"] - 1500) < 60 and "width" not in first
    for shown in message["attachments"]:
        assert_signed(shown, clock.seconds())


def test_history_replay_and_sync_sign_fresh_urls_each_time(chat, media, clock):
    alice, bob = team(chat, "alice", "bob")
    pic = upload(media, "alice")
    say(chat, alice, type="send", room="team", id="m1", attachments=attached(pic))
    clock.advance(3 * 86400)  # the delivered URLs have long expired
    now = clock.seconds()
    say(chat, bob, type="history", room="team", id="h")
    assert_signed(last(bob, "history")["messages"][-1]["attachments"][0], now)
    say(chat, bob, type="sync", id="s")
    [room] = [c for c in last(bob, "sync")["conversations"] if c.get("room") == "team"]
    [message] = [i for i in room["items"] if i["type"] == "message"]
    assert_signed(message["attachments"][0], now)
    carol = token_user(chat, "carol")
    say(chat, carol, type="join", room="team", since=0)
    [replayed] = [m for m in carol.of("message") if m["id"] == "m1"]
    assert_signed(replayed["attachments"][0], now)


def test_a_dm_shows_its_attachments_live_and_in_dm_history(chat, media, clock):
    alice, bob = token_user(chat, "alice"), token_user(chat, "bob")
    fired(chat.store.add_user("bob", "bob", 0))
    voice = upload(media, "alice", media_samples.mp3(0.5)[0])
    say(chat, alice, type="dm", to="bob", id="d1", attachments=attached(voice))
    dm = last(bob, "dm")
    assert (dm["from"], dm["to"], dm["text"]) == ("alice", "bob", "")
    assert_signed(dm["attachments"][0], clock.seconds())
    clock.advance(7200)
    say(chat, bob, type="dm_history", **{"with": "alice"}, id="h")
    assert_signed(last(bob, "dm_history")["messages"][-1]["attachments"][0], clock.seconds())


def test_an_exact_resend_is_acked_once_and_shows_the_original(chat, media):
    alice, bob = team(chat, "alice", "bob")
    pic = upload(media, "alice")
    for _ in range(2):
        say(chat, alice, type="send", room="team", id="m1", attachments=attached(pic))
    acks = alice.of("ack")
    assert [a.get("duplicate", False) for a in acks] == [False, True]
    assert len(bob.of("message")) == 1


# who may attach what (docs/security.md)


@pytest.mark.parametrize(
    "attachments, code",
    [
        ("pic", "bad_request"),
        ([], "bad_request"),
        ({"media_id": "x"}, "bad_request"),
        ([{"id": "x"}], "bad_request"),
        ([{"media_id": 5}], "bad_request"),
        (["just-an-id"], "bad_request"),
        ([{"media_id": "has space"}], "bad_request"),
        ([{"media_id": "x" * 65}], "bad_request"),
        ([{"media_id": "same"}, {"media_id": "same"}], "bad_request"),
        ([{"media_id": f"m{i}"} for i in range(10)], "too_large"),
        ([{"media_id": "A" * 22}], "bad_attachment"),
        ([{"media_id": "~" * 64, "extra": "ignored"}], "bad_attachment"),
    ],
)
@pytest.mark.parametrize("kind", ["send", "dm"])
def test_malformed_too_many_and_unknown_attachments_store_nothing(
    chat, media, kind, attachments, code
):
    alice, bob = team(chat, "alice", "bob")
    where = {"room": "team"} if kind == "send" else {"to": "bob"}
    before = fired(chat.store.replay("team", None, 0)).last_seq
    say(chat, alice, type=kind, **where, id="bad", attachments=attachments)
    error = last(alice, "error")
    assert (error["code"], error["ref"]) == (code, "bad")
    assert not alice.of("ack") and not bob.of("message") and not bob.of("dm")
    assert fired(chat.store.replay("team", None, 0)).last_seq == before


def test_someone_elses_upload_is_refused_like_an_unknown_one(chat, media):
    alice, bob = team(chat, "alice", "bob")
    bobs = upload(media, "bob")
    say(chat, alice, type="send", room="team", id="theirs", attachments=attached(bobs))
    say(chat, alice, type="send", room="team", id="none", attachments=[{"media_id": "B" * 22}])
    theirs, unknown = alice.of("error")
    assert theirs["code"] == unknown["code"] == "bad_attachment"
    assert theirs["message"].replace(bobs["media_id"], "X") == unknown["message"].replace(
        "B" * 22, "X"
    )
    assert not alice.of("ack") and not bob.of("message")
    row = fired(media._row(bobs["media_id"]))
    assert row["attached"] == 0  # a refused attaching leaves it as it was


def test_an_upload_still_being_stored_cannot_be_attached(chat, media, clock):
    alice, bob = team(chat, "alice", "bob")
    row = {
        "id": "C" * 22,
        "owner": "alice",
        "kind": "image",
        "mime": "image/png",
        "size": 10,
        "sha256": "c" * 64,
        "created": clock.seconds(),
    }
    fired(media.meta.record(row, 0))  # recorded, its bytes not stored yet (see Media.upload)
    say(
        chat,
        alice,
        type="send",
        room="team",
        id="early",
        attachments=attached({"media_id": row["id"]}),
    )
    error = last(alice, "error")
    assert error["code"] == "bad_attachment" and "still being processed" in error["message"]
    assert not bob.of("message")
    fired(media.meta.ready(row["id"]))
    say(
        chat,
        alice,
        type="send",
        room="team",
        id="later",
        attachments=attached({"media_id": row["id"]}),
    )
    assert last(bob, "message")["attachments"][0]["media_id"] == row["id"]


def test_text_is_optional_only_with_attachments(chat, media):
    alice, bob = team(chat, "alice", "bob")
    pic = upload(media, "alice")
    say(chat, alice, type="send", room="team", id="a", text="", attachments=attached(pic))
    assert last(bob, "message")["id"] == "a"
    say(chat, alice, type="send", room="team", id="b")
    say(chat, alice, type="send", room="team", id="c", text="")
    assert [(e["ref"], e["code"]) for e in alice.of("error")] == [
        ("b", "bad_request"),
        ("c", "bad_request"),
    ]


def test_anonymous_connections_cannot_attach(chat, media):
    guest = opened(chat, "guest")
    say(chat, guest, type="join", room="lobby")
    say(
        chat,
        guest,
        type="send",
        room="lobby",
        id="g",
        text="hi",
        attachments=[{"media_id": "A" * 22}],
    )
    assert last(guest, "error")["code"] == "auth_required"
    assert fired(chat.store.replay("lobby", None, 0)).last_seq == 0


def test_a_server_without_uploads_refuses_attachments(chat):
    alice, bob = team(chat, "alice", "bob")
    say(chat, alice, type="send", room="team", id="m", attachments=[{"media_id": "A" * 22}])
    assert last(alice, "error")["code"] == "bad_attachment"
    assert not bob.of("message")


# who may see what (GET /api/media/ID: Media.owned)


def owned(media, user, media_id, rooms=None):
    return fired(media.owned(Identity(user, user, rooms), media_id))


def not_found(media, user, media_id, rooms=None) -> bool:
    with pytest.raises(MediaError) as e:
        owned(media, user, media_id, rooms)
    return e.value.status == 404


def test_readers_of_a_conversation_get_fresh_urls_others_nothing(chat, media, clock):
    alice = token_user(chat, "alice")
    timeline_event(chat, "secret", "created", "alice", changes={"kind": "private"})
    timeline_event(chat, "secret", "invited", "bob", by="alice")
    say(chat, alice, type="join", room="secret")
    mine = upload(media, "alice")
    say(chat, alice, type="send", room="secret", id="s", attachments=attached(mine))
    media_id = mine["media_id"]
    clock.advance(10)
    assert_signed(owned(media, "bob", media_id), clock.seconds())
    assert owned(media, "alice", media_id)["media_id"] == media_id
    assert not_found(media, "carol", media_id)  # not a member of the private room
    timeline_event(chat, "secret", "kicked", "bob", by="alice")
    assert not_found(media, "bob", media_id)  # not after being kicked either
    # a public room: whoever may read its history; a DM: its two users
    public = token_user(chat, "dave")
    member_join(chat, public, "open")
    theirs = upload(media, "dave")
    say(chat, public, type="send", room="open", id="o", attachments=attached(theirs))
    assert owned(media, "carol", theirs["media_id"])["media_id"] == theirs["media_id"]
    assert not_found(media, "carol", theirs["media_id"], rooms=["elsewhere"])  # token's rooms
    fired(chat.store.add_user("erin", "erin", 0))
    say(chat, public, type="dm", to="erin", id="d", attachments=attached(theirs))
    assert owned(media, "erin", theirs["media_id"])["media_id"] == theirs["media_id"]
    private = upload(media, "dave")
    say(chat, public, type="dm", to="erin", id="d2", attachments=attached(private))
    assert owned(media, "erin", private["media_id"])
    assert not_found(media, "carol", private["media_id"])
    assert not_found(media, "carol", "Z" * 22)


# the lifecycle


def test_recall_removes_the_media_unless_another_message_shows_it(chat, media, tmp_path):
    alice, bob = team(chat, "alice", "bob")
    pic, other = upload(media, "alice"), upload(media, "alice", media_samples.image("GIF", (9, 9)))
    say(chat, alice, type="send", room="team", id="m1", attachments=attached(pic, other))
    say(chat, alice, type="send", room="team", id="m2", text="again", attachments=attached(pic))
    first = next(a["seq"] for a in alice.of("ack") if a["id"] == "m1")
    second = next(a["seq"] for a in alice.of("ack") if a["id"] == "m2")
    assert len(objects(tmp_path)) == 4
    say(chat, alice, type="recall", room="team", seq=first, id="r1")
    assert last(bob, "recalled")["target"] == first
    assert fired(media._row(other["media_id"])) is None  # only m1 showed it
    assert fired(media._row(pic["media_id"])) is not None  # m2 still does
    assert len(objects(tmp_path)) == 2
    say(chat, bob, type="history", room="team", id="h")
    recalled = next(m for m in last(bob, "history")["messages"] if m["seq"] == first)
    assert "attachments" not in recalled and recalled["recalled"]["by"] == "alice"
    say(chat, bob, type="sync", id="s")
    [room] = [c for c in last(bob, "sync")["conversations"] if c.get("room") == "team"]
    [synced] = [i for i in room["items"] if i["type"] == "message" and i["seq"] == first]
    assert "attachments" not in synced
    carol = token_user(chat, "carol")
    say(chat, carol, type="join", room="team", since=0)
    [replayed] = [m for m in carol.of("message") if m["seq"] == first]
    assert "attachments" not in replayed and "recalled" in replayed
    say(chat, alice, type="recall", room="team", seq=second, id="r2")
    assert fired(media._row(pic["media_id"])) is None and objects(tmp_path) == []


def holding(monkeypatch, obj, name, first: bool) -> list:
    """Calls of ``obj.name`` held until released (the list's callables, in call
    order): the real call made at once (*first*) or only at the release."""
    real, held = getattr(obj, name), []

    def call(*args):
        d = defer.Deferred()
        if first:
            result = defer.maybeDeferred(real, *args)
            held.append(lambda: result.chainDeferred(d))
        else:
            held.append(lambda: defer.maybeDeferred(real, *args).chainDeferred(d))
        return d

    monkeypatch.setattr(obj, name, call)
    return held


@pytest.mark.parametrize(
    "where, name, first",
    [
        ("meta", "remove", True),  # the row is gone, the bytes not touched yet (failed before)
        ("meta", "referenced", False),  # the object retired, the metadata not asked yet
        ("store", "purge", False),  # the metadata said unused, the retired object not purged
    ],
)
def test_an_identical_upload_while_a_recall_removes_its_bytes_keeps_them(
    chat, media, tmp_path, monkeypatch, where, name, first
):
    """The content-address race: bob uploads the same bytes while the recall of
    alice's only message showing them removes them. Whatever point of the removal
    his upload falls into, his media id keeps its bytes (and they go with his row)."""
    alice, bob = team(chat, "alice", "bob")
    data = media_samples.image("PNG", (40, 30))
    pic = upload(media, "alice", data)
    say(chat, alice, type="send", room="team", id="m1", attachments=attached(pic))
    seq = last(alice, "ack")["seq"]
    held = holding(monkeypatch, getattr(media, where), name, first)
    say(chat, alice, type="recall", room="team", seq=seq, id="r")
    assert len(held) == 1 and fired(media._row(pic["media_id"])) is None
    again = upload(media, "bob", data)  # the same image: the same content address
    assert fired(media._row(again["media_id"]))["ready"] == 1
    while held:  # the image's, then the thumbnail's
        held.pop(0)()
    assert fired(media._row(pic["media_id"])) is None
    row = fired(media._row(again["media_id"]))
    assert media.store.get(row["sha256"]) and media.store.get(row["thumb_sha256"])
    assert len(objects(tmp_path)) == 2  # the image and its thumbnail, nothing retired left
    monkeypatch.undo()
    say(chat, bob, type="send", room="team", id="m2", attachments=attached(again))
    say(chat, bob, type="recall", room="team", seq=last(bob, "ack")["seq"], id="r2")
    assert objects(tmp_path) == []


def test_the_retired_sweep_leaves_a_running_removal_its_object(chat, media, tmp_path, monkeypatch):
    """A recall's removal retired the image and waits for the metadata's answer: the
    retired-object sweep, even past RETIRED_GRACE, does not touch the object that
    removal owns; the removal then purges it, and nothing retired is left."""
    alice, _ = team(chat, "alice", "bob")
    pic = upload(media, "alice")
    say(chat, alice, type="send", room="team", id="m1", attachments=attached(pic))
    held = holding(monkeypatch, media.meta, "referenced", False)
    say(chat, alice, type="recall", room="team", seq=last(alice, "ack")["seq"], id="r")
    [(key, token, at)] = listing = media.store.retired()
    assert len(held) == 1 and token in media._retiring
    assert fired(media._settle_retired(listing, at + RETIRED_GRACE + 1)) == 0
    assert media.store.retired() == [(key, token, at)]
    while held:  # the image's answer, then the thumbnail's
        held.pop(0)()
    assert media.store.retired() == [] and objects(tmp_path) == [] and not media._retiring


def _part(media, key: str, written: float) -> str:
    """A part file a put of *key* killed half-way left, last written at *written*."""
    path = f"{object_path(media.store.root, key)}.part-{key[:12]}"
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Path(path).write_bytes(b"the first MiB of a put")
    os.utime(path, (written, written))
    return path


@pytest.mark.parametrize("shared", [False, True])
def test_part_files_of_killed_puts_are_removed(chat, tmp_path, shared):
    """Part files (``<sha>.part-<random>``) of puts a killed chatd left: alone on its
    ``--media-dir`` chatd removes every one at once, however young; with
    ``--media-shared`` (another node's put may be writing one) only once not written
    for PART_GRACE. Objects, retired objects and other names are left alone."""
    media = media_for(chat, tmp_path, shared=shared)
    pic = upload(media, "alice")
    now = chat.clock.seconds()
    old = _part(media, "a" * 64, now - PART_GRACE)
    young = _part(media, "b" * 64, now - 1)
    foreign = Path(object_path(tmp_path, "c" * 64)).with_name("notes.part-x")
    foreign.parent.mkdir(parents=True)
    foreign.write_bytes(b"not chatd's")
    before = objects(tmp_path)
    assert len(before) == 5
    parts = media.store.leftovers()[1]
    assert sorted(p for p, _ in parts) == sorted([old, young])
    assert dict(parts)[young] == now - 1  # dated by the last write
    assert fired(media._sweep_parts(parts, now)) == (1 if shared else 2)
    assert os.path.exists(young) == shared and not os.path.exists(old)
    if shared:
        chat.clock.advance(PART_GRACE - 2)
        assert fired(media._sweep_parts(media.store.leftovers()[1], chat.clock.seconds())) == 0
        chat.clock.advance(1)
        assert fired(media._sweep_parts(media.store.leftovers()[1], chat.clock.seconds())) == 1
    assert objects(tmp_path) == sorted(
        set(before) - {os.path.basename(old), os.path.basename(young)}
    )
    assert foreign.exists() and fired(media.owned(Identity("alice", "alice"), pic["media_id"]))


def test_pruned_history_takes_its_media_with_it(clock, tmp_path):
    chat = build_chat(MemoryStore(history_max=3), Fanout(), Settings(), clock)
    media = media_for(chat, tmp_path)
    alice, bob = team(chat, "alice", "bob")
    pic = upload(media, "alice")
    say(chat, alice, type="send", room="team", id="m1", attachments=attached(pic))
    assert fired(media.sweep()) == 0  # shown by a stored message: kept
    for i in range(3):
        say(chat, alice, type="send", room="team", id=f"x{i}", text="push it out")
    assert fired(media._row(pic["media_id"])) is not None  # until the next sweep
    assert fired(media.sweep()) == 1
    assert fired(media._row(pic["media_id"])) is None and objects(tmp_path) == []


def test_the_sweep_keeps_posted_uploads_and_removes_unposted_ones_after_the_grace(
    chat, media, clock, tmp_path
):
    alice, bob = team(chat, "alice", "bob")
    posted, never = (
        upload(media, "alice"),
        upload(media, "alice", media_samples.image("GIF", (9, 9))),
    )
    say(chat, alice, type="send", room="team", id="m1", attachments=attached(posted))
    clock.advance(3599)
    assert fired(media.sweep()) == 0
    clock.advance(1)
    assert fired(media.sweep()) == 1
    assert fired(media._row(never["media_id"])) is None
    clock.advance(10 * 86400)
    assert fired(media.sweep()) == 0 and fired(media._row(posted["media_id"])) is not None


# the metadata file of the upload core (version 1), upgraded in place


def test_a_version_1_metadata_file_is_upgraded_in_place(tmp_path):
    path = tmp_path / "media.sqlite3"
    shutil.copy(FIXTURE, path)
    meta = MediaMeta(str(path))
    try:
        rows = meta.get_many(["A" * 22, "B" * 22])
        assert {r["owner"] for r in rows.values()} == {"alice", "bob"}
        assert all(r["ready"] == 1 and r["attached"] == 0 for r in rows.values())
        assert rows["A" * 22]["thumb_sha256"] == "b" * 64
        meta.post(["A" * 22], "room", 7)
        assert meta.channels("A" * 22) == ["room"] and meta.posted_in("room", 7) == ["A" * 22]
        assert [r["id"] for r in meta.unposted_before(5000.0)] == ["B" * 22]
    finally:
        meta.close()
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == 3
    MediaMeta(str(path)).close()  # opening it again changes nothing


def test_chat_without_media_shows_stored_attachments_without_urls(clock):
    """A server whose uploads were turned off still shows what messages carry."""
    chat = make_chat(clock)
    alice, bob = team(chat, "alice", "bob")
    entry = {"media_id": "A" * 22, "kind": "image", "mime": "image/png", "size": 3}
    data = {"attachments": [entry]}
    fields = ("team", "alice", "alice", "x", "", chat.now_ms(), "message", data)
    fired(chat.messages.append("message", fields, (None, False)))
    assert last(bob, "message")["attachments"] == [entry]


def test_only_send_and_dm_drop_the_text_for_attachments():
    """``edit`` (and every other type with ``text``) still needs its text."""
    some = [{"media_id": "A" * 22}]
    parsed = wire.parse(json.dumps({"type": "dm", "to": "bob", "attachments": some}).encode(), 4000)
    assert parsed.fields["text"] == "" and parsed.raw_extras == {"attachments": some}
    with pytest.raises(errors.BadRequest):
        edit = {"type": "edit", "room": "r", "seq": 1, "attachments": some}
        wire.parse(json.dumps(edit).encode(), 4000)


def test_a_metadata_file_of_a_newer_chatd_is_refused(tmp_path):
    path = tmp_path / "media.sqlite3"
    shutil.copy(FIXTURE, path)
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version = 4")
    db.close()
    with pytest.raises(SchemaTooNew):
        MediaMeta(str(path))


# in use before the commit: a kill between commit and post record, the recall race


def commit_unrecorded(chat, claim, channel="team", sender="alice", client_id="k"):
    """Commit a message showing *claim*'s uploads without recording its posts: what a
    chatd killed between the commit and the post record (or with its media pool
    stopped at shutdown) leaves behind. Fires with the committed Message."""
    data = {"attachments": claim.entries}
    fields = (channel, sender, sender, client_id, "", chat.now_ms(), "message", data)
    return fired(chat.messages.append("message", fields, (None, False))).message


def test_a_kill_between_commit_and_post_record_loses_nothing(chat, media, clock, tmp_path):
    alice, bob = team(chat, "alice", "bob")
    pic = upload(media, "alice")
    claim = fired(media.claim("alice", [pic["media_id"]], "team"))
    message = commit_unrecorded(chat, claim)
    assert last(bob, "message")["attachments"][0]["media_id"] == pic["media_id"]
    # members may see it at once (the pending post names the channel)
    assert owned(media, "bob", pic["media_id"])["media_id"] == pic["media_id"]
    for _ in range(int(2 * GRACE / INTERVAL)):  # sweeps long past the grace period
        clock.advance(INTERVAL)
        assert fired(media.sweep()) == 0
    assert fired(media._row(pic["media_id"])) is not None and len(objects(tmp_path)) == 2
    # the sweep found the message in the history: a post like any other, so the
    # recall removes the upload
    assert fired(media.meta.posts([pic["media_id"]])) == [(pic["media_id"], "team", message.seq)]
    assert fired(media.meta.pending_before(clock.seconds())) == []
    chat.settings = dataclasses.replace(chat.settings, recall_window=3 * GRACE)
    say(chat, alice, type="recall", room="team", seq=message.seq, id="r")
    assert last(alice, "ack")["id"] == "r"
    assert fired(media._row(pic["media_id"])) is None and objects(tmp_path) == []


def test_a_claim_whose_message_never_committed_expires_with_the_grace(chat, media, clock):
    team(chat, "alice", "bob")
    pic = upload(media, "alice")
    clock.advance(GRACE)  # an old upload, attached now: the grace counts from here
    fired(media.claim("alice", [pic["media_id"]], "team"))  # then chatd died
    clock.advance(RESOLVE_AFTER)
    assert fired(media.sweep()) == 0  # not in the history: the pending post dropped
    assert fired(media.meta.pending_before(clock.seconds())) == []
    assert fired(media.meta.channels(pic["media_id"])) == []
    clock.advance(GRACE - RESOLVE_AFTER - 1)
    assert fired(media.sweep()) == 0
    clock.advance(1)
    assert fired(media.sweep()) == 1 and fired(media._row(pic["media_id"])) is None


def test_a_failed_commit_releases_the_claim_at_once(chat, media, clock, monkeypatch):
    from chatd.store import StoreUnavailable

    alice, bob = team(chat, "alice", "bob")
    pic = upload(media, "alice")
    monkeypatch.setattr(
        chat.store, "append", lambda *a, **k: defer.fail(StoreUnavailable("disk gone"))
    )
    say(chat, alice, type="send", room="team", id="m", attachments=attached(pic))
    assert last(alice, "error")["ref"] == "m" and not bob.of("message")
    assert fired(media.meta.pending_before(clock.seconds())) == []


def test_a_recall_while_the_upload_is_attached_to_a_new_message_keeps_it(
    chat, media, clock, tmp_path
):
    alice, bob = team(chat, "alice", "bob")
    pic = upload(media, "alice")
    say(chat, alice, type="send", room="team", id="m1", attachments=attached(pic))
    first = last(alice, "ack")["seq"]
    # attached again, its message not committed yet, when the first one is recalled
    claim = fired(media.claim("alice", [pic["media_id"]], "team"))
    say(chat, alice, type="recall", room="team", seq=first, id="r1")
    assert last(bob, "recalled")["target"] == first
    assert fired(media._row(pic["media_id"])) is not None and len(objects(tmp_path)) == 2
    message = commit_unrecorded(chat, claim, client_id="m2")
    fired(media.posted(message, claim))
    assert fired(media.meta.posts([pic["media_id"]])) == [(pic["media_id"], "team", message.seq)]
    say(chat, alice, type="recall", room="team", seq=message.seq, id="r2")
    assert fired(media._row(pic["media_id"])) is None and objects(tmp_path) == []
