"""The ``store`` fixture of the store contract tests that run against every store
declaring one interface (tests/e2e/test_store_moderation.py, test_store_push.py)."""

from __future__ import annotations

import pytest
import pytest_twisted

from chatd.store.memory import MemoryStore
from chatd.store.redis import RedisStore
from chatd.store.sqlite import SQLiteStore
from tests.support.store import open_redis, open_sqlite

CLASSES = {
    "memory": MemoryStore,
    "sqlite-file": SQLiteStore,
    "sqlite-memory": SQLiteStore,
    "redis": RedisStore,
}


def backends(interface):
    """The store kinds whose class declares *interface* (redis marked ``redis``)."""
    return [
        b if b != "redis" else pytest.param("redis", marks=pytest.mark.redis)
        for b in CLASSES
        if interface.implementedBy(CLASSES[b])
    ]


def store_fixture(interface):
    """A ``store`` fixture: a started store of each kind that declares *interface*
    (MemoryStore, SQLiteStore on a file and on ``:memory:``, RedisStore on the
    private redis-server), stopped afterwards. Assign it to ``store`` in the test module."""

    @pytest_twisted.async_yield_fixture(params=backends(interface))
    async def store(request, tmp_path):
        kind = request.param
        if kind == "memory":
            s = MemoryStore()
            await s.start()
        elif kind == "sqlite-file":
            s = await open_sqlite(tmp_path / "history.db")
        elif kind == "sqlite-memory":
            s = await open_sqlite(":memory:")
        else:
            s = await open_redis(request.getfixturevalue("redis"))
        yield s
        await s.stop()

    return store
