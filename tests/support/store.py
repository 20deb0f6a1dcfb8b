"""Started history stores for the store tests (tests/e2e/test_store_*.py)."""

from __future__ import annotations

from twisted.internet import defer

from chatd.cluster.redis import RedisMessageLog, make_node
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
    """A RedisNode on the private redis-server *redis* (tests/redis_server.py) or
    Redis Cluster (tests/redis_cluster.py)."""
    extra = "".join(f"&{k}={v}" for k, v in query.items())
    return make_node(f"{redis.url}?prefix={prefix}&backoff_max=0.3{extra}")


@defer.inlineCallbacks
def open_redis(redis, prefix="t:", **kw):
    """A started RedisStore on *redis*, pruning off by default."""
    kw.setdefault("prune_interval", None)
    store = RedisStore(redis_node(redis, prefix), **kw)
    yield store.start()
    return store


@defer.inlineCallbacks
def redis_log_with_listener(redis):
    """``(store, listener, seen, log)``: a started RedisStore on *redis*, a second
    started RedisNode whose bus payloads are collected in the list *seen*, and the
    store's RedisMessageLog (the commit-and-publish path). Stop listener and store
    when done."""
    store = yield open_redis(redis)
    listener = redis_node(redis)
    seen = []
    listener.add_bus_handler(seen.append)
    yield listener.start()
    return store, listener, seen, RedisMessageLog(store, store.node)
