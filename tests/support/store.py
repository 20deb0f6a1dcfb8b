"""Started history stores for the store tests (tests/e2e/test_store_*.py)."""

from __future__ import annotations

from twisted.internet import defer

from chatd.cluster.redis import RedisNode
from chatd.store.redis import RedisStore
from chatd.store.sqlite import SQLiteStore


@defer.inlineCallbacks
def open_sqlite(path, **kw):
    """A started SQLiteStore on *path* (a file or ``:memory:``), pruning off by default."""
    kw.setdefault("prune_interval", None)
    store = SQLiteStore(str(path), **kw)
    yield store.start()
    return store


def redis_node(redis, prefix="t:", **query):
    """A RedisNode on the private redis-server *redis* (tests/redis_server.py)."""
    extra = "".join(f"&{k}={v}" for k, v in query.items())
    return RedisNode(f"{redis.url}?prefix={prefix}&backoff_max=0.3{extra}")


@defer.inlineCallbacks
def open_redis(redis, prefix="t:", **kw):
    """A started RedisStore on *redis*, pruning off by default."""
    kw.setdefault("prune_interval", None)
    store = RedisStore(redis_node(redis, prefix), **kw)
    yield store.start()
    return store
