"""The IModerationStore contract (chatd.store, chatd.modrules), run against every store
that declares it: MemoryStore, SQLiteStore (a file and ``:memory:``) and RedisStore
(a private redis-server and a local Redis Cluster; skipped without redis-server
unless CI=true). A SQLite file keeps
sanctions, the queue and the audit log across a restart."""

from __future__ import annotations

import pytest_twisted
from zope.interface.verify import verifyObject

from chatd import modrules
from chatd.store import IMediaCheckStore, IModerationStore
from tests.support.store import open_sqlite
from tests.support.store_backends import store_fixture

store = store_fixture(IModerationStore)


def test_provides_the_interface(store):
    assert verifyObject(IModerationStore, store)


@pytest_twisted.inlineCallbacks
def test_sanctions_are_set_overwritten_and_removed_per_scope(store):
    assert (yield store.sanctions("u")) == {}
    yield store.set_sanction("u", "mute", "dev", 5000)
    yield store.set_sanction("u", "mute", modrules.GLOBAL, 7000)
    yield store.set_sanction("u", "ban", modrules.GLOBAL, 9000)
    yield store.set_sanction("u", "mute", "dev", 6000)
    assert (yield store.sanctions("u")) == {
        ("mute", "dev"): 6000,
        ("mute", "*"): 7000,
        ("ban", "*"): 9000,
    }
    yield store.set_sanction("u", "mute", "dev", 0)
    yield store.set_sanction("u", "mute", "never-set", 0)
    assert (yield store.sanctions("u")) == {("mute", "*"): 7000, ("ban", "*"): 9000}
    assert (yield store.sanctions("other")) == {}


@pytest_twisted.inlineCallbacks
def test_reports_are_exactly_once_by_key_paged_and_closed_once(store):
    first, dup = yield store.add_report("a\n1", {"reason": "spam", "seq": 3})
    assert not dup and first["state"] == "open" and first["reason"] == "spam"
    again, dup = yield store.add_report("a\n1", {"reason": "other text", "seq": 9})
    assert dup and again == first
    second, _ = yield store.add_report("b\n1", {"reason": "举报", "seq": 4})
    third, _ = yield store.add_report("c\n1", {"reason": "x", "seq": 5})
    assert first["id"] < second["id"] < third["id"]
    page = yield store.reports("open", None, 2)
    assert [e["id"] for e in page] == [third["id"], second["id"]]
    page = yield store.reports("open", second["id"], 10)
    assert [e["id"] for e in page] == [first["id"]]
    closed = yield store.close_report(second["id"], {"action": "dismiss", "by": "mod"})
    assert closed["state"] == "closed" and closed["resolution"]["action"] == "dismiss"
    assert closed["reason"] == "举报"
    assert (yield store.close_report(second["id"], {"action": "recall"})) is None
    assert (yield store.close_report(10_000, {"action": "recall"})) is None
    assert [e["id"] for e in (yield store.reports("open", None, 10))] == [
        third["id"],
        first["id"],
    ]
    assert [e["id"] for e in (yield store.reports("closed", None, 10))] == [second["id"]]
    assert len((yield store.reports(None, None, 10))) == 3
    assert (yield store.report(second["id"]))["resolution"]["by"] == "mod"
    assert (yield store.report(10_000)) is None


@pytest_twisted.inlineCallbacks
def test_the_audit_log_is_appended_and_paged_newest_first(store):
    ids = []
    for i in range(5):
        ids.append((yield store.add_audit({"who": "mod", "what": "mute", "target": f"u{i}"})))
    assert ids == sorted(ids)
    page = yield store.audit_log(None, 2)
    assert [e["target"] for e in page] == ["u4", "u3"]
    page = yield store.audit_log(page[-1]["id"], 10)
    assert [e["target"] for e in page] == ["u2", "u1", "u0"]


@pytest_twisted.inlineCallbacks
def test_a_sqlite_file_keeps_moderation_across_a_restart(tmp_path):
    path = tmp_path / "history.db"
    s = yield open_sqlite(path)
    yield s.set_sanction("u", "mute", "*", 5000)
    entry, _ = yield s.add_report("k", {"reason": "r"})
    yield s.add_audit({"who": "m"})
    yield s.stop()
    s = yield open_sqlite(path)
    try:
        assert (yield s.sanctions("u")) == {("mute", "*"): 5000}
        assert (yield s.report(entry["id"]))["reason"] == "r"
        assert (yield s.add_report("k", {"reason": "again"}))[1] is True
        assert [e["who"] for e in (yield s.audit_log(None, 5))] == ["m"]
    finally:
        yield s.stop()


@pytest_twisted.inlineCallbacks
def test_retention_reads_the_oldest_entries_and_deletes_them_with_their_keys(store):
    """moderation_oldest pages oldest first from an id; delete_moderation removes queue
    entries (their exactly-once key freed: the same key makes a new entry) and audit
    entries; ids are never given again."""
    made = []
    for i in range(5):
        entry, _ = yield store.add_report(f"r\n{i}", {"ts": 1000 + i, "seq": i})
        made.append(entry["id"])
    oldest = yield store.moderation_oldest(modrules.QUEUE, 0, 3)
    assert [e["id"] for e in oldest] == made[:3] and oldest[0]["ts"] == 1000
    assert oldest[0]["state"] == "open"
    assert [e["id"] for e in (yield store.moderation_oldest(modrules.QUEUE, made[2], 10))] == made[
        3:
    ]
    assert (yield store.delete_moderation(modrules.QUEUE, made[:2])) == 2
    assert (yield store.delete_moderation(modrules.QUEUE, [])) == 0
    assert [e["id"] for e in (yield store.reports(None, None, 10))] == made[:1:-1]
    assert (yield store.report(made[0])) is None
    again, dup = yield store.add_report("r\n0", {"ts": 2000, "seq": 0})
    assert not dup and again["id"] > made[-1]
    kept, dup = yield store.add_report("r\n3", {"ts": 3000})
    assert dup and kept["id"] == made[3]
    audit = []
    for i in range(3):
        audit.append((yield store.add_audit({"ts": 100 + i, "action": "mute"})))
    got = yield store.moderation_oldest(modrules.AUDIT, 0, 10)
    assert [(e["id"], e["ts"]) for e in got] == [(a, 100 + i) for i, a in enumerate(audit)]
    assert (yield store.delete_moderation(modrules.AUDIT, audit[:2])) == 2
    assert [e["id"] for e in (yield store.audit_log(None, 10))] == audit[2:]
    assert (yield store.add_audit({"ts": 200})) > audit[-1]


@pytest_twisted.inlineCallbacks
def test_media_check_traces_are_taken_once_and_pruned_by_age(store):
    """IMediaCheckStore: a trace's record is handed to the first taker only (a replayed
    verdict finds nothing); records asked before a time are pruned (Redis: they expire
    by themselves)."""
    assert IMediaCheckStore.providedBy(store)
    record = {"ts": 1000, "channel": "team", "seq": 3, "media_id": "M" * 22}
    yield store.add_media_check("trace-1", record, 60_000)
    yield store.add_media_check("trace-2", {**record, "ts": 5000}, 60_000)
    assert (yield store.take_media_check("trace-1")) == record
    assert (yield store.take_media_check("trace-1")) is None
    assert (yield store.take_media_check("never")) is None
    pruned = yield store.prune_media_checks(6000)
    left = yield store.take_media_check("trace-2")
    if type(store).__name__ == "RedisStore":
        assert pruned == 0 and left["ts"] == 5000
    else:
        assert pruned == 1 and left is None
