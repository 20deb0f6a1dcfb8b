"""The IPushStore contract (chatd.store, chatd.pushrules), run against every store
that declares it: MemoryStore, SQLiteStore (a file and ``:memory:``) and RedisStore
(a private redis-server and a local Redis Cluster; skipped without redis-server
unless CI=true). A SQLite file keeps
the subscriptions across a restart."""

from __future__ import annotations

import pytest_twisted
from zope.interface.verify import verifyObject

from chatd.pushrules import QUOTA_MAX, ROOMS_MAX, Claim, PushState
from chatd.store import IPushStore
from tests.support.store import open_sqlite
from tests.support.store_backends import store_fixture

store = store_fixture(IPushStore)


def test_provides_the_interface(store):
    assert verifyObject(IPushStore, store)


@pytest_twisted.inlineCallbacks
def test_subscribe_adds_counts_capped_and_sets_rooms(store):
    """Accepted messages add up per template, capped at QUOTA_MAX; rooms go on and off."""
    assert (yield store.push_state("u")) == PushState({}, ())
    s = yield store.push_subscribe("u", {"T1": 2, "T2": 1}, {"dev": True, "ops": True}, 1)
    assert s == PushState({"T1": 2, "T2": 1}, ("dev", "ops"))
    s = yield store.push_subscribe("u", {"T1": QUOTA_MAX}, {"ops": False}, 2)
    assert s == PushState({"T1": QUOTA_MAX, "T2": 1}, ("dev",))
    assert (yield store.push_state("u")) == s
    assert (yield store.push_state("other")) == PushState({}, ())
    assert (yield store.push_watchers("dev", 10)) == ["u"]
    assert (yield store.push_watchers("ops", 10)) == []


@pytest_twisted.inlineCallbacks
def test_rooms_are_capped(store):
    """A user is notified for at most ROOMS_MAX rooms; more are not added."""
    choose = {f"r{i:04d}": True for i in range(ROOMS_MAX + 5)}
    s = yield store.push_subscribe("u", {}, choose, 1)
    assert len(s.rooms) == ROOMS_MAX


@pytest_twisted.inlineCallbacks
def test_claims_digest_and_quota(store):
    """One notification per conversation per interval; each takes one message of the
    quota while there is one; the digest runs per (user, conversation)."""
    yield store.push_subscribe("u", {"T": 2}, {}, 1)
    assert (yield store.claim_push("u", "dev", "T", 1000, 500)) == Claim(True, True)
    assert (yield store.claim_push("u", "dev", "T", 1400, 500)) == Claim(False, False)
    assert (yield store.claim_push("u", "ops", "T", 1400, 500)) == Claim(True, True)
    assert (yield store.push_state("u")).templates == {}
    # the quota is spent: the digest still records a notification (for webhooks)
    assert (yield store.claim_push("u", "dev", "T", 1500, 500)) == Claim(True, False)
    assert (yield store.claim_push("u", "dm", None, 1500, 500)) == Claim(True, False)
    assert (yield store.claim_push("v", "dev", "T", 1500, 500)) == Claim(True, False)


@pytest_twisted.inlineCallbacks
def test_drop_quota(store):
    """A refused user's quota of that template is gone, the others stay."""
    yield store.push_subscribe("u", {"T": 5, "S": 1}, {}, 1)
    yield store.drop_push_quota("u", "T")
    assert (yield store.push_state("u")).templates == {"S": 1}
    assert (yield store.claim_push("u", "dev", "T", 1000, 0)) == Claim(True, False)


@pytest_twisted.inlineCallbacks
def test_sqlite_file_keeps_subscriptions_across_a_restart(tmp_path):
    path = tmp_path / "history.db"
    s = yield open_sqlite(path)
    yield s.push_subscribe("wx:o", {"T": 3}, {"dev": True}, 1)
    yield s.claim_push("wx:o", "dev", "T", 1000, 60_000)
    yield s.stop()
    s = yield open_sqlite(path)
    try:
        assert (yield s.push_state("wx:o")) == PushState({"T": 2}, ("dev",))
        assert (yield s.claim_push("wx:o", "dev", "T", 2000, 60_000)) == Claim(False, False)
    finally:
        yield s.stop()
