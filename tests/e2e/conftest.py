"""Fixtures of the e2e tier: the fan-out loop a test runs with, socket pairs, a private
redis-server and chatd cluster nodes on it."""

from __future__ import annotations

import socket

import pytest

from chatd import fanout
from tests.conftest import need
from tests.redis_cluster import RedisCluster
from tests.redis_server import RedisServer
from tests.support.fanout import BUILD_HINT, C_BUILT
from tests.support.process import wait_log


@pytest.fixture(params=["c", "python", "transport"])
def fanout_impl(request, monkeypatch):
    """Run the test with the C fan-out loop, with the pure-Python one, and with direct
    sends off: servers started by the test then find a name the direct path reads
    missing from Twisted (one that no Twisted has, as if a release had renamed it)."""
    if request.param == "c":
        need(BUILD_HINT, C_BUILT)
    if request.param == "transport":
        monkeypatch.setattr(fanout, "TWISTED_NAMES", (*fanout.TWISTED_NAMES, "_renamed"))
    return request.param


@pytest.fixture
def socket_pairs():
    pairs = [socket.socketpair() for _ in range(4)]
    for ours, _theirs in pairs:
        ours.setblocking(False)
    yield pairs
    for pair in pairs:
        for sock in pair:
            sock.close()


TUNING = "heartbeat=0.5&node_ttl=2&ping=1&ping_timeout=1&backoff_max=0.5&connect_timeout=20"


@pytest.fixture
def redis(request, tmp_path):
    """A private redis-server for one test: no persistence, or with AOF (appendfsync
    always) in a module that sets ``REDIS_AOF = True``, so it can be restarted."""
    d = tmp_path / "redis"
    d.mkdir()
    server = RedisServer(d, appendonly=getattr(request.module, "REDIS_AOF", False)).start()
    yield server
    server.kill()


@pytest.fixture(scope="module")
def redis_cluster_module(tmp_path_factory):
    """A private Redis Cluster (3 masters, 3 replicas; tests/redis_cluster.py) shared by
    the tests of one module: use :func:`redis_cluster`, which empties it first."""
    cluster = RedisCluster(tmp_path_factory.mktemp("redis-cluster")).start()
    yield cluster
    cluster.kill()


@pytest.fixture
def redis_cluster(redis_cluster_module):
    """The module's Redis Cluster, every master FLUSHALLed for this test."""
    redis_cluster_module.flush()
    return redis_cluster_module


@pytest.fixture
def own_redis_cluster(tmp_path):
    """A Redis Cluster of this test alone (one that kills its nodes: failover)."""
    cluster = RedisCluster(tmp_path / "redis-cluster").start()
    yield cluster
    cluster.kill()


@pytest.fixture(params=["redis", "redis-cluster"])
def redis_any(request):
    """Run the test twice: on the private redis-server (:func:`redis`) and on the
    module's Redis Cluster (:func:`redis_cluster`)."""
    return request.getfixturevalue("redis" if request.param == "redis" else "redis_cluster")


def node_starter(twistd_factory, url, tmp_path):
    """start(n, *extra) -> n chatd nodes on the Redis (or Redis Cluster) at *url* (each
    given the options *extra* too), each healthy (connected) before use."""

    def start(n=2, *extra):
        procs = []
        for i in range(n):
            cwd = tmp_path / f"node{i}"  # own twistd.pid per node
            cwd.mkdir()
            procs.append(
                twistd_factory(
                    "--listen",
                    "tcp:0:interface=127.0.0.1",
                    "--redis",
                    f"{url}{'&' if '?' in url else '?'}prefix=test:&{TUNING}",
                    *extra,
                    cwd=cwd,
                )
            )
        for proc in procs:
            wait_log(proc, "healthy: Redis reachable", 1)
        return procs

    return start


@pytest.fixture
def nodes(twistd_factory, redis, tmp_path):
    """start(n, *extra) -> n chatd nodes on the shared Redis, each healthy (connected)
    before use."""
    return node_starter(twistd_factory, redis.url, tmp_path)


@pytest.fixture(params=["redis", "redis-cluster"])
def any_nodes(request, twistd_factory, tmp_path):
    """:func:`nodes`, once on the private redis-server and once on the module's Redis
    Cluster (``redis+cluster://``)."""
    name = "redis" if request.param == "redis" else "redis_cluster"
    return node_starter(twistd_factory, request.getfixturevalue(name).url, tmp_path)
