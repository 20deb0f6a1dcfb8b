"""Data outlives versions: history files written by earlier chatd releases.

``tests/fixtures/chatd-<version>.sqlite3`` were written by that release's
``SQLiteStore`` (``tests/fixtures/make_sqlite_fixture.py``), next to a
``.json`` of what that store answered. Each test opens a COPY with today's
code (the committed file is never touched).
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest
import pytest_twisted

from chatd.store import Message, SchemaTooNew, StoreUnavailable, dm_channel
from chatd.store.sqlite import APPLICATION_ID, SCHEMA_VERSION, SQLiteStore

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
RELEASES = sorted(FIXTURES.glob("chatd-*.sqlite3"))
#: the files of schema version 1 (chatd 0.1: no conversations yet)
SCHEMA_1 = [
    p for p in RELEASES if json.loads(p.with_suffix(".json").read_text())["user_version"] == 1
]


def _copy(fixture: Path, tmp_path: Path) -> tuple[Path, dict]:
    expected = json.loads(fixture.with_name(fixture.stem + ".json").read_text())
    db = tmp_path / fixture.name
    shutil.copyfile(fixture, db)
    return db, expected


def test_there_is_a_fixture_of_a_release():
    """At least one earlier release's file is checked (the glob found something)."""
    assert RELEASES, f"no chatd-*.sqlite3 in {FIXTURES}"


@pytest.mark.parametrize("fixture", RELEASES, ids=lambda p: p.stem)
@pytest_twisted.inlineCallbacks
def test_every_message_seq_and_dedupe_record_of_a_release_survives(fixture, tmp_path):
    """Every message (all fields), each channel's newest seq and every exactly-once
    record of the old file are there; seqs continue after it; the file is migrated
    to the current schema version."""
    db, expected = _copy(fixture, tmp_path)
    s = SQLiteStore(str(db), prune_interval=None)
    yield s.start()
    try:
        assert expected["channels"]
        for channel, want in expected["channels"].items():
            messages = [Message(**m) for m in want["messages"]]
            r = yield s.replay(channel, 0, 10_000)
            assert r.messages == messages, channel
            assert r.last_seq == want["last_seq"], channel
            page = yield s.history(channel, None, 10_000)
            assert page.messages == messages and page.more is False, channel
        assert expected["client_ids"]
        for key, (channel, seq, ts) in expected["client_ids"].items():
            sender, client_id = json.loads(key)
            again = yield s.append("elsewhere", sender, "X", client_id, "resent", 1)
            assert again.duplicate, key
            m = again.message
            assert (m.channel, m.seq, m.ts, m.sender, m.client_id) == (
                channel,
                seq,
                ts,
                sender,
                client_id,
            )
        assert (yield s.replay("elsewhere", 0, 10)).last_seq == 0  # nothing stored twice
        for channel, want in expected["channels"].items():
            a = yield s.append(channel, "dave", "Dave", None, "after the upgrade", 2)
            assert a.message.seq == want["last_seq"] + 1, channel
    finally:
        yield s.stop()
    conn = sqlite3.connect(str(db))
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
    finally:
        conn.close()


@pytest.mark.parametrize("fixture", RELEASES, ids=lambda p: p.stem)
@pytest_twisted.inlineCallbacks
def test_a_file_of_a_newer_chatd_is_refused_and_left_alone(fixture, tmp_path):
    """A release's file whose user_version a newer chatd raised is refused with
    SchemaTooNew naming the file, both versions and what to do; the file is unchanged."""
    db, _ = _copy(fixture, tmp_path)
    conn = sqlite3.connect(str(db))
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    before = db.read_bytes()
    s = SQLiteStore(str(db), prune_interval=None)
    with pytest.raises(SchemaTooNew) as e:
        yield s.start()
    msg = str(e.value)
    assert str(db) in msg
    assert f"schema version {SCHEMA_VERSION + 1}" in msg
    assert f"versions up to {SCHEMA_VERSION}" in msg
    assert "upgrade chatd" in msg
    with pytest.raises(StoreUnavailable):
        yield s.append("lobby", "u", "U", None, "t", 1)
    yield s.stop()
    assert db.read_bytes() == before


@pytest.mark.parametrize("fixture", SCHEMA_1, ids=lambda p: p.stem)
@pytest_twisted.inlineCallbacks
def test_conversations_work_on_a_migrated_release_file_and_survive_a_reopen(fixture, tmp_path):
    """On a migrated file of a release: membership events, read markers with unread
    counts over the old messages, a DM's member rows created by a new message on an
    old DM channel, edit, recall and a reaction of an OLD message, a cursor; all of
    it is still there after closing and reopening, and the old messages are intact."""
    db, expected = _copy(fixture, tmp_path)
    room = "lobby"
    old = expected["channels"][room]
    last = old["last_seq"]
    target = old["messages"][-1]["seq"]  # an old message, stored by the release
    dm = dm_channel("alice", "bob")
    dm_last = expected["channels"][dm]["last_seq"]
    s = SQLiteStore(str(db), prune_interval=None)
    yield s.start()
    try:
        assert (yield s.room(room)) is None  # a 0.1 room: public, no owner
        j = yield s.append(
            room,
            "dave",
            "Dave",
            "j1",
            "",
            10,
            "event",
            {"event": "joined", "user": "dave", "by": "dave"},
        )
        assert j.message.seq == last + 1
        yield s.append(
            room,
            "erin",
            "Erin",
            None,
            "",
            11,
            "event",
            {"event": "joined", "user": "erin", "by": "erin"},
        )
        yield s.append(
            room, "erin", "Erin", None, "hi @dave", 12, "message", {"mentions": ["dave"]}
        )
        yield s.append(room, "erin", "Erin", None, "edited", 13, "edited", {"target": target})
        yield s.append(
            room, "dave", "Dave", None, "", 14, "reaction", {"target": target, "emoji": "👍"}
        )
        r = yield s.append(
            room, "erin", "Erin", None, "", 15, "recalled", {"target": target, "by": "erin"}
        )
        (conv,) = yield s.summaries("dave", [room])
        assert (conv.read_seq, conv.unread, conv.mentions, conv.last_seq) == (
            last + 1,
            1,
            1,
            r.message.seq,
        )
        assert (yield s.mark_read("dave", room, last + 3)) == last + 3
        # an old DM channel: its next message creates both member rows, their
        # markers just before it
        d = yield s.append(dm, "bob", "Bob", "dm-new", "after the upgrade", 16)
        assert d.message.seq == dm_last + 1
        (dm_conv,) = yield s.summaries("alice", [dm])
        assert (dm_conv.kind, dm_conv.peer, dm_conv.unread, dm_conv.peer_read) == (
            "dm",
            "bob",
            1,
            dm_last + 1,
        )
        assert dm_conv.read_seq == dm_last  # the DM's 0.1 history counts as read
        yield s.mark_read("alice", dm, dm_last + 1)
        yield s.save_cursor("dave", "cur", b"snapshot", 17)
    finally:
        yield s.stop()
    s = SQLiteStore(str(db), prune_interval=None)
    yield s.start()
    try:
        for channel, want in expected["channels"].items():
            messages = [Message(**m) for m in want["messages"]]
            page = yield s.history(channel, want["last_seq"] + 1, 10_000)
            if channel == room:
                recalled = messages[-1]
                assert page.messages[:-1] == messages[:-1]
                got = page.messages[-1]
                assert (got.seq, got.text, got.data["recalled"]) == (
                    recalled.seq,
                    "",
                    {"by": "erin", "ts": 15},
                )
            else:
                assert page.messages == messages, channel
        (conv,) = yield s.summaries("dave", [room])
        assert (conv.read_seq, conv.unread, conv.mentions) == (last + 3, 0, 0)
        assert (yield s.member(room, "dave")).state == "member"
        assert (yield s.member_count(room)) == 2
        assert (yield s.reactions(room, [target])) == {target: {"👍": ["dave"]}}
        edits = yield s.replay(room, last + 3, 10)
        assert edits.messages[0].kind == "edited" and edits.messages[0].text == ""
        (dm_conv,) = yield s.summaries("alice", [dm])
        assert (dm_conv.read_seq, dm_conv.unread) == (dm_last + 1, 0)
        assert (yield s.load_cursor("dave", "cur")) == b"snapshot"
        assert (yield s.has_user("alice")) and not (yield s.has_user("zed"))
        names = [c.channel for c in (yield s.conversations("dave"))]
        assert names == [room]
    finally:
        yield s.stop()


@pytest.mark.parametrize("fixture", RELEASES, ids=lambda p: p.stem)
@pytest_twisted.inlineCallbacks
def test_a_release_file_gets_push_subscriptions_in_place(fixture, tmp_path):
    """Schema 3 (offline push) is added in place to every release's file: its
    conversations are untouched and subscriptions, claims and watchers work."""
    db, expected = _copy(fixture, tmp_path)
    s = SQLiteStore(str(db), prune_interval=None)
    yield s.start()
    try:
        state = yield s.push_subscribe("alice", {"T": 2}, {"lobby": True}, 1)
        assert (state.templates, state.rooms) == ({"T": 2}, ("lobby",))
        assert (yield s.push_watchers("lobby", 10)) == ["alice"]
        claim = yield s.claim_push("alice", "lobby", "T", 1000, 60_000)
        assert (claim.notify, claim.quota) == (True, True)
        for channel, want in expected["channels"].items():
            assert (yield s.replay(channel, 0, 10_000)).last_seq == want["last_seq"], channel
    finally:
        yield s.stop()


@pytest.mark.parametrize("fixture", RELEASES, ids=lambda p: p.stem)
@pytest_twisted.inlineCallbacks
def test_a_release_file_gets_moderation_in_place(fixture, tmp_path):
    """Schema 4 (moderation: sanctions, the queue, the audit log) is added in place to
    every release's file (chatd-0.1.0-13fd04a was written by the schema-3 code just
    before it): its history is untouched and moderation works, also after a reopen."""
    db, expected = _copy(fixture, tmp_path)
    s = SQLiteStore(str(db), prune_interval=None)
    yield s.start()
    try:
        yield s.set_sanction("alice", "mute", "lobby", 5000)
        entry, duplicate = yield s.add_report("alice\n1", {"reason": "spam"})
        assert not duplicate and entry["state"] == "open"
        yield s.add_audit({"who": "api", "what": "mute", "target": "alice"})
        yield s.add_media_check("trace-1", {"ts": 1, "seq": 1}, 60_000)  # schema 5
        assert (yield s.take_media_check("trace-1")) == {"ts": 1, "seq": 1}
        for channel, want in expected["channels"].items():
            assert (yield s.replay(channel, 0, 10_000)).last_seq == want["last_seq"], channel
    finally:
        yield s.stop()
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION >= 4
    s = SQLiteStore(str(db), prune_interval=None)
    yield s.start()
    try:
        assert (yield s.sanctions("alice")) == {("mute", "lobby"): 5000}
        assert (yield s.report(entry["id"]))["reason"] == "spam"
        assert [e["target"] for e in (yield s.audit_log(None, 10))] == ["alice"]
    finally:
        yield s.stop()
