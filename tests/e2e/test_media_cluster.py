"""Media in a cluster: two ``twistd -n chatd`` nodes on one real redis-server, the
bytes in moto's S3 server on loopback, the metadata in Redis (RedisMeta). An upload
taken by node A is attached by a DM sent on node B; the other member fetches its
metadata and bytes from either node; a recall on B removes it for both (and from the
bucket). ``--redis`` with a local ``--media-dir`` that is not declared shared is
refused at start-up."""

from __future__ import annotations

import json

import boto3
import pytest
import pytest_twisted
from moto.server import ThreadedMotoServer

from tests import media_samples
from tests.conftest import wait_until
from tests.e2e.test_media import SECRET, Http, token
from tests.support.frames import OTHER, next_of
from tests.support.process import wait_log
from tests.wsclient import Client

pytestmark = [pytest.mark.redis, pytest.mark.subprocess]
BUCKET = "chatd-cluster"


@pytest.fixture
def bucket(monkeypatch):
    """``(s3 client, endpoint)`` of a moto S3 server with the bucket ``chatd-cluster``
    (moto's state is per process: other tests' servers share it, hence a bucket of
    this test's own)."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    for name, value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing")):
        monkeypatch.setenv(name, value)
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    s3.create_bucket(Bucket=BUCKET)
    yield s3, endpoint
    server.stop()


def keys(s3) -> list[str]:
    return [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET).get("Contents", [])]


def api(http_, user, media_id):
    status, _, raw = http_.request(
        "GET", f"/api/media/{media_id}", headers={"Authorization": f"Bearer {token(user)}"}
    )
    return status, json.loads(raw)


@pytest_twisted.inlineCallbacks
def test_upload_on_one_node_send_on_the_other_every_node_serves_and_recall_removes(
    nodes, bucket, monkeypatch
):
    s3, endpoint = bucket
    monkeypatch.setenv("CHATD_JWT_SECRET", SECRET)
    a, b = nodes(2, "--media-s3", f"s3://{BUCKET}/m?endpoint={endpoint}&region=us-east-1")
    http_a, http_b = Http(a.port), Http(b.port)
    bob = yield Client.v1(a.port, token=token("bob"))  # a known user for alice's DM
    yield bob.barrier()
    data = media_samples.image("PNG", (200, 150))
    status, _, up = http_a.upload(data, filename="shared.png")
    assert status == 201, up
    assert len(keys(s3)) == 2  # the image and its thumbnail, once, in the shared bucket
    alice = yield Client.v1(b.port, token=token("alice"))
    alice.send(type="dm", to="bob", id="d1", text="", attachments=[{"media_id": up["media_id"]}])
    ack = yield next_of(alice, "ack", skip=OTHER, id="d1")
    shown = yield next_of(bob, "dm", skip=OTHER)
    assert shown["attachments"][0]["media_id"] == up["media_id"]
    # bob (a member of the DM) gets fresh URLs from either node; the bytes from either
    for http_ in (http_a, http_b):
        status, meta = wait_until(
            lambda h=http_: (lambda r: r if r[0] == 200 else None)(api(h, "bob", up["media_id"])),
            "bob's GET /api/media/ID",
        )
        assert meta["media_id"] == up["media_id"] and meta["size"] == up["size"]
        for other in (http_a, http_b):
            status, head, body = other.get(meta["url"])
            assert status == 200 and head["content-type"] == "image/png"
            assert body == http_a.get(up["url"])[2]
            assert other.get(meta["thumb_url"])[0] == 200
        assert api(http_, "carol", up["media_id"])[0] == 404  # not a member
    # the recall on B removes it on both nodes and from the bucket
    alice.send(**{"type": "recall", "with": "bob", "seq": ack["seq"], "id": "r1"})
    yield next_of(alice, "ack", skip=OTHER, id="r1")
    wait_until(lambda: not keys(s3), "the bucket emptied by the recall")
    for http_ in (http_a, http_b):
        assert api(http_, "alice", up["media_id"])[0] == 404
        assert http_.get(up["url"])[0] == 404
    for client in (alice, bob):
        yield client.close()


def test_redis_with_a_local_media_dir_not_declared_shared_is_refused(twistd_factory, redis):
    """``--media-dir`` with ``--redis`` and neither ``--media-s3`` nor ``--media-shared``:
    start-up stops with one line saying why; with ``--media-shared`` it starts."""
    import subprocess
    import sys

    from tests.conftest import chatd_env

    args = ["--redis", redis.url, "--jwt-secret", SECRET, "--media-dir", "shared-media"]
    result = subprocess.run(
        [sys.executable, "-m", "twisted", "chatd", *args],
        env=chatd_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    out = result.stdout + result.stderr
    assert result.returncode != 0 and "Traceback" not in out, out
    assert "--media-dir with --redis" in out and "--media-shared" in out, out
    proc = twistd_factory("--listen", "tcp:0:interface=127.0.0.1", *args, "--media-shared")
    wait_log(proc, "healthy: Redis reachable", 1)
    status, _, answer = Http(proc.port).upload(media_samples.image("PNG", (20, 20)))
    assert status == 201, (answer, proc.log)
