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

from chatd.store import Message, SchemaTooNew, StoreUnavailable
from chatd.store.sqlite import APPLICATION_ID, SCHEMA_VERSION, SQLiteStore

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
RELEASES = sorted(FIXTURES.glob("chatd-*.sqlite3"))


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
