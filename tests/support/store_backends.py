"""The ``store`` fixture of the store contract tests that run against every store
declaring one interface (tests/e2e/test_store_contract.py, test_store_moderation.py,
test_store_push.py). RedisStore runs twice: on a private redis-server and on the module's Redis Cluster
(tests/redis_cluster.py, the ``redis_cluster`` fixture of tests/e2e/conftest.py)."""

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
    "redis-cluster": RedisStore,
}

#: the fixture (tests/e2e/conftest.py) of each Redis kind's server
REDIS_FIXTURES = {"redis": "redis", "redis-cluster": "redis_cluster"}


def backends(interface, cluster=True):
    """The store kinds whose class declares *interface*, in :data:`CLASSES` order (the
    Redis ones marked ``redis``; ``redis-cluster`` unless *cluster* is false)."""
    return [
        b if b not in REDIS_FIXTURES else pytest.param(b, marks=pytest.mark.redis)
        for b in CLASSES
        if interface.implementedBy(CLASSES[b]) and (cluster or b != "redis-cluster")
    ]


def store_fixture(interface, cluster=True):
    """A ``store`` fixture: a started store of each kind that declares *interface*
    (MemoryStore, SQLiteStore on a file and on ``:memory:``, RedisStore on the
    private redis-server and, unless *cluster* is false, on the Redis Cluster), stopped
    afterwards. Assign it to ``store`` in the test module; a test may narrow the kinds
    with ``pytest.mark.parametrize("store", [...], indirect=True)``."""

    @pytest_twisted.async_yield_fixture(params=backends(interface, cluster))
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
            s = await open_redis(request.getfixturevalue(REDIS_FIXTURES[kind]))
        yield s
        await s.stop()

    return store
