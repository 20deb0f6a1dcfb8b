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
    sep = "&" if "?" in redis.url else "?"  # a TLS server's URL has its tls_ca
    return make_node(f"{redis.url}{sep}prefix={prefix}&backoff_max=0.3{extra}")


@defer.inlineCallbacks
def open_redis(redis, prefix="t:", **kw):
    """A started RedisStore on *redis*, pruning off by default."""
    kw.setdefault("prune_interval", None)
    store = RedisStore(redis_node(redis, prefix), **kw)
    yield store.start()
    return store


@defer.inlineCallbacks
def all_keys(store):
    """Every key of *store*'s prefix (on every master of a Redis Cluster)."""
    pattern = store.node.prefix + "*"
    if store.cluster:
        replies = yield store.node.cluster.execute_on_all("KEYS", pattern)
        return sorted(k for keys in replies for k in keys)
    return sorted((yield store.node.execute("KEYS", pattern)))


@defer.inlineCallbacks
def redis_log_with_listener(redis, rooms=(), **query):
    """``(store, listener, seen, log)``: a started RedisStore on *redis*, a second
    started RedisNode whose bus payloads are collected in the list *seen*, and the
    store's RedisMessageLog (the commit-and-publish path). The listener follows
    *rooms* (on a Redis Cluster: their own shard channels are subscribed, as a chatd
    node does while it has connections there). Stop listener and store when done."""
    store = yield open_redis(redis)
    listener = redis_node(redis, **query)
    seen = []
    listener.add_bus_handler(seen.append)
    yield listener.start()
    yield follow(listener, *rooms)
    return store, listener, seen, RedisMessageLog(store, store.node)


def follow(node, *rooms):
    """Make *node* follow *rooms* as a chatd node's hub does (nothing on one Redis);
    fires once their channels are subscribed."""
    if node.rooms is None:
        return defer.succeed(None)
    for room in rooms:
        node.rooms.hold(room)
    return defer.gatherResults([node.room_ready(room) for room in rooms])
