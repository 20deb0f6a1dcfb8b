"""Media: an upload whose bytes cannot be stored (``IMediaStore.put`` fails for real:
a directory of the local store blocked by a file, a stopped S3 server) answers
HTTP 503 ``unavailable`` and leaves nothing behind -- no temporary file, no part
file, no object its put stored, no metadata row, nothing counted in the quota."""

from __future__ import annotations

import os
import sqlite3

import pytest_twisted

from chatd.media.process import Limits, inspect
from tests import media_samples
from tests.support.auth import SECRET, token
from tests.support.http import http

QUOTA = 10_000_000


def _headers(sub, ctype):
    return {
        b"authorization": [b"Bearer " + token(sub).encode()],
        b"content-type": [ctype.encode()],
    }


def _upload(srv, data):
    body, ctype = media_samples.form(data, "pic.png", "image/png")
    return http("POST", srv.http_url + "/api/media", body, None, _headers("alice", ctype))


def _files(directory) -> list[str]:
    return sorted(
        os.path.relpath(os.path.join(base, f), directory)
        for base, _, files in os.walk(directory)
        for f in files
        if f not in ("media.sqlite3", "media.sqlite3-wal", "media.sqlite3-shm")
    )


def _rows(directory) -> int:
    path = os.path.join(directory, "media.sqlite3")
    if not os.path.exists(path):
        return 0
    with sqlite3.connect(path) as db:
        return db.execute("SELECT COUNT(*) FROM media").fetchone()[0]


def _image_with_apart_keys(tmp_path):
    """A PNG whose stored image and thumbnail land in different ``objects/XX``
    directories, and those two keys (chatd's own inspection, deterministic)."""
    limits = Limits(1 << 20, 1 << 20, 1 << 20)
    for side in range(40, 90):
        data = media_samples.image("PNG", (side, side))
        src = tmp_path / f"probe-{side}.png"
        src.write_bytes(data)
        done = inspect(str(src), str(tmp_path), limits)
        if done.sha256[:2] != done.thumb_sha256[:2]:
            return data, done.sha256, done.thumb_sha256
    raise AssertionError("no PNG with apart keys")


@pytest_twisted.ensureDeferred
async def test_a_failed_put_on_disk_leaves_nothing(server_factory, tmp_path):
    """The image is stored, its thumbnail's directory cannot be made (a file is in
    the way): 503 ``unavailable``; the stored image is removed again, the temporary
    and part files are gone, no row, the quota counts nothing; once the way is
    clear the same upload is taken (201)."""
    data, image_key, thumb_key = _image_with_apart_keys(tmp_path)
    media_dir = tmp_path / "media"
    blocker = media_dir / "objects" / thumb_key[:2]
    blocker.parent.mkdir(parents=True)
    blocker.write_bytes(b"in the way")
    srv = await server_factory(
        "--jwt-secret",
        SECRET,
        "--media-dir",
        str(media_dir),
        "--media-quota-bytes",
        str(QUOTA),
    )
    status, _, answer = await _upload(srv, data)
    assert (status, answer["error"]) == (503, "unavailable"), answer
    assert _files(media_dir) == [f"objects/{thumb_key[:2]}"]  # the blocker, nothing else
    assert _rows(media_dir) == 0
    assert await srv.chat.media.meta.used("alice", srv.chat.media.clock.seconds()) == 0
    blocker.unlink()
    status, _, answer = await _upload(srv, data)
    assert status == 201, answer
    stored = {os.path.basename(p) for p in _files(media_dir)}
    assert stored == {image_key, thumb_key} and _rows(media_dir) == 1


@pytest_twisted.ensureDeferred
async def test_a_failed_put_to_a_stopped_s3_server_leaves_nothing(
    server_factory, tmp_path, monkeypatch
):
    """``--media-s3`` whose server stopped: 503 ``unavailable`` (after botocore's
    retries); no temporary file, no row, nothing in the bucket once it is back."""
    from moto.server import ThreadedMotoServer

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "2")  # fewer retries: a quicker 503
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    bucket = f"put-failure-{os.urandom(4).hex()}"
    media_dir = tmp_path / "meta"
    srv = await server_factory(
        "--jwt-secret",
        SECRET,
        "--media-dir",
        str(media_dir),
        "--media-s3",
        f"s3://{bucket}/up?endpoint=http://{host}:{port}&region=us-east-1",
    )
    media = srv.chat.media
    media.store.client.create_bucket(Bucket=bucket)
    server.stop()
    status, _, answer = await _upload(srv, media_samples.image("PNG", (64, 48)))
    assert (status, answer["error"]) == (503, "unavailable"), answer
    assert _files(media_dir) == [] and _rows(media_dir) == 0
    back = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    back.start()  # moto's state is the process's: the same bucket, as it was
    try:
        import boto3

        host, port = back.get_host_and_port()
        s3 = boto3.client("s3", endpoint_url=f"http://{host}:{port}", region_name="us-east-1")
        assert s3.list_objects_v2(Bucket=bucket).get("KeyCount") == 0
    finally:
        back.stop()
