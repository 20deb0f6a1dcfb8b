"""``rediss://`` and a password against Debian's redis-server (built with TLS).

The test makes its own self-signed certificate with ``openssl`` (nothing is
downloaded) and starts a private ``redis-server`` serving TLS only, with
``requirepass``: the store commits and replays over TLS, the commit script's
publish reaches a second node's subscriber connection, and a wrong password, a
server the client does not trust and a plain ``redis://`` to the TLS port are all
refused (``RedisUnavailable`` once ``connect_timeout`` has passed).
"""

from __future__ import annotations

import json
import subprocess
from urllib.parse import quote

import pytest
import pytest_twisted

from chatd.cluster.redis import RedisUnavailable, RedisURL
from tests.conftest import need_binary
from tests.redis_cluster import RedisCluster
from tests.redis_server import RedisServer
from tests.support.store import redis_log_with_listener, redis_node
from tests.wsclient import wait_for

pytestmark = pytest.mark.redis
PASSWORD = "s3cr@t pw"


def self_signed(directory):
    """``(cert, key)``: a fresh self-signed certificate for 127.0.0.1 (also its CA)."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            need_binary("openssl"),
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return str(cert), str(key)


@pytest.fixture
def tls_redis(tmp_path):
    """A private redis-server on TLS only, with a password; its URL trusts its cert."""
    cert, key = self_signed(tmp_path)
    d = tmp_path / "redis"
    d.mkdir()
    server = RedisServer(d, password=PASSWORD, tls=(cert, key, cert)).start()
    yield server
    server.kill()


class _URL:
    """A stand-in for a server fixture: only its ``url``."""

    def __init__(self, url):
        self.url = url


@pytest_twisted.inlineCallbacks
def test_rediss_with_a_password_commits_replays_and_publishes(tls_redis):
    assert tls_redis.url.startswith("rediss://:")
    store, listener, seen, log = yield redis_log_with_listener(tls_redis)
    try:
        assert store.node.url.tls and store.node.url.password == PASSWORD
        sent = yield store.append("r", "alice", "A", "c1", "over TLS", 1)
        assert sent.message.seq == 1 and not sent.duplicate
        again = yield store.append("r", "alice", "A", "c1", "over TLS", 2)
        assert again.duplicate and again.message.seq == 1
        replay = yield store.replay("r", 0, 10)
        assert [m.text for m in replay.messages] == ["over TLS"]
        yield log.append("message", ("r", "bob", "B", "c2", "published", 3), ("sess", False))
        yield wait_for(lambda: any("published" in p for p in seen), 5.0, what="the bus event")
    finally:
        yield listener.stop()
        yield store.stop()


@pytest.mark.parametrize("why", ["wrong password", "untrusted", "plain redis://"])
@pytest_twisted.inlineCallbacks
def test_a_wrong_password_an_untrusted_server_or_plain_tcp_is_refused(tls_redis, why):
    url = tls_redis.url
    if why == "wrong password":
        url = url.replace(quote(PASSWORD, safe=""), "nope")
    elif why == "untrusted":
        url = url.split("?")[0]  # the system trust store: the self-signed cert is not in it
    else:
        url = url.split("?")[0].replace("rediss://", "redis://")
    node = redis_node(_URL(url), connect_timeout=1)
    try:
        with pytest.raises(RedisUnavailable):
            yield node.start()
        assert not node.healthy
    finally:
        yield node.stop()


def test_tls_ca_needs_rediss_and_a_readable_pem(tmp_path):
    with pytest.raises(ValueError, match="needs rediss"):
        RedisURL(f"redis://h/?tls_ca={tmp_path}/ca.pem")
    with pytest.raises(ValueError, match="cannot read"):
        RedisURL(f"rediss://h/?tls_ca={tmp_path}/missing.pem")
    (tmp_path / "empty.pem").write_text("not a certificate\n")
    with pytest.raises(ValueError, match="no certificate"):
        RedisURL(f"rediss://h/?tls_ca={tmp_path}/empty.pem")
    cert, _ = self_signed(tmp_path)
    assert RedisURL(f"rediss://h/?tls_ca={cert}").trust is not None
    assert RedisURL("rediss://h/").trust is None


@pytest.fixture
def tls_cluster(tmp_path):
    """A private Redis Cluster (3 masters, 1 replica each) on TLS only: clients, the
    cluster bus and the replication; its URL trusts its cert."""
    cert, key = self_signed(tmp_path)
    d = tmp_path / "cluster"
    d.mkdir()
    cluster = RedisCluster(d, tls=(cert, key, cert)).start()
    yield cluster
    cluster.kill()


@pytest_twisted.inlineCallbacks
def test_rediss_cluster_routes_commits_replays_and_follows_rooms(tls_cluster):
    """``rediss+cluster://``: the slot map is read over TLS (CLUSTER SLOTS names the
    TLS ports), commits on every master, replays, and the sharded bus -- a room's own
    shard channel followed by a second node -- all over TLS; plain TCP is refused."""
    assert tls_cluster.url.startswith("rediss+cluster://")
    rooms = [f"r{i}" for i in range(12)]  # over the three masters
    store, listener, seen, log = yield redis_log_with_listener(tls_cluster, rooms=rooms)
    try:
        assert store.node.url.tls and store.cluster
        assert len(store.node.cluster.map.masters()) == 3
        for room in rooms:
            a = yield log.append("message", (room, "u", "U", f"c-{room}", room, 1), ("s", False))
            assert a.message.seq == 1 and not a.duplicate
        assert {tls_cluster.master_of(f"t:s:{{{r}}}") for r in rooms} == set(
            tls_cluster.master_ports()
        )
        for room in rooms:
            replay = yield store.replay(room, 0, 10)
            assert [m.text for m in replay.messages] == [room]
        yield listener.barrier()
        assert sorted(json.loads(p)["m"][0] for p in seen) == sorted(rooms)
    finally:
        yield listener.stop()
        yield store.stop()
    url = tls_cluster.url.split("?")[0].replace("rediss+", "redis+")
    plain = redis_node(_URL(url), connect_timeout=1)
    try:
        with pytest.raises(RedisUnavailable):
            yield plain.start()
    finally:
        yield plain.stop()
