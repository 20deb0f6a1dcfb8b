"""``/metrics`` in the Prometheus text format, read from a live chatd."""

from __future__ import annotations

import pytest_twisted

from tests.support.http import KEY, http, samples
from tests.wsclient import Client


def value(metrics, name, **labels):
    return metrics[(name, frozenset(labels.items()))]


@pytest_twisted.inlineCallbacks
def test_metrics_count_connections_messages_errors_and_latencies(server_factory):
    """After real traffic, /metrics shows connections by mode, rooms, messages stored,
    deliveries and bytes, errors by code, the ack latency histogram and the store's
    commit / batch size / append latency figures."""
    srv = yield server_factory("--api-key", KEY)
    alice = yield Client.v1(srv.port, "alice")
    bob = yield Client.v1(srv.port, "bob")
    relay = yield Client.connect(srv.port, "/")
    yield alice.join("r1")
    yield bob.join("r1")
    yield alice.expect("presence", user="bob")
    for i in range(3):
        alice.send(type="send", room="r1", text=f"m{i}", id=f"id{i}")
        yield alice.expect("ack", id=f"id{i}")
        yield bob.expect("message", text=f"m{i}")
    alice.send(type="send", room="elsewhere", text="x")
    yield alice.expect("error", code="not_in_room")

    status, headers, body = yield http("GET", srv.http_url + "/metrics", key=None)
    assert status == 200
    assert headers.getRawHeaders(b"content-type")[0].startswith(b"text/plain; version=0.0.4")
    m = samples(body.decode())
    assert value(m, "chatd_connections", mode="chatd.v1") == 2
    assert value(m, "chatd_connections", mode="relay") == 1
    assert value(m, "chatd_users") == 2
    assert value(m, "chatd_rooms") == 2  # r1 and the relay client's lobby
    assert value(m, "chatd_messages_stored_total") == 3
    assert value(m, "chatd_deliveries_total") >= 3
    assert value(m, "chatd_delivery_bytes_total") > 0
    assert value(m, "chatd_errors_total", code="not_in_room") == 1
    assert value(m, "chatd_ack_latency_seconds_count") == 3
    assert value(m, "chatd_ack_latency_seconds_bucket", le="+Inf") == 3
    assert value(m, "chatd_store_commits_total") >= 1
    assert value(m, "chatd_store_appended_total") == 3
    assert value(m, "chatd_store_batch_size_count") == value(m, "chatd_store_commits_total")
    assert value(m, "chatd_store_batch_size_sum") == 3
    assert value(m, "chatd_store_append_latency_seconds_count") == 3
    assert value(m, "chatd_broker_up", broker="LocalBroker") == 1

    # histograms are cumulative across scrapes (samples are drained, not lost)
    alice.send(type="send", room="r1", text="again", id="id9")
    yield alice.expect("ack", id="id9")
    _, _, body = yield http("GET", srv.http_url + "/metrics", key=None)
    m = samples(body.decode())
    assert value(m, "chatd_ack_latency_seconds_count") == 4
    yield relay.close()
    yield alice.close()
    yield bob.close()
    _, _, body = yield http("GET", srv.http_url + "/metrics", key=None)
    m = samples(body.decode())
    assert value(m, "chatd_connections", mode="chatd.v1") == 0


@pytest_twisted.inlineCallbacks
def test_metrics_listen_moves_metrics_off_the_public_endpoint(server_factory):
    """With --metrics-listen, /metrics is served there (with /healthz and /readyz) and the
    chat endpoint answers 404 for it."""
    srv = yield server_factory("--metrics-listen", "tcp:0:interface=127.0.0.1")
    metrics_port = srv.service.listeners[-1].port.getHost().port
    assert metrics_port != srv.port
    status, _, _ = yield http("GET", srv.http_url + "/metrics", key=None)
    assert status == 404
    status, _, body = yield http("GET", f"http://127.0.0.1:{metrics_port}/metrics", key=None)
    assert status == 200 and b"chatd_connections" in body
    status, _, body = yield http("GET", f"http://127.0.0.1:{metrics_port}/readyz", key=None)
    assert status == 200 and body["status"] == "ready"


@pytest_twisted.inlineCallbacks
def test_healthz_and_readyz(server_factory):
    """/healthz says the process is up; /readyz is 200 with the store answering and 503
    once the store is stopped (and while shutting down)."""
    srv = yield server_factory()
    status, _, body = yield http("GET", srv.http_url + "/healthz", key=None)
    assert status == 200 and body["status"] == "ok"
    status, _, body = yield http("GET", srv.http_url + "/readyz", key=None)
    assert status == 200 and body == {"status": "ready", "store": "ok", "broker": "ok"}
    yield srv.store.stop()
    status, _, body = yield http("GET", srv.http_url + "/readyz", key=None)
    assert status == 503 and body["status"] == "unavailable" and body["store"] != "ok"
