"""Media: the IMediaStore contract, the same tests on local disk and on S3 (moto's
server on a loopback port; no network)."""

import hashlib

import pytest
from zope.interface.verify import verifyObject

from chatd.media.store import IMediaStore, LocalStore, S3Store, parse_s3_url


@pytest.fixture(scope="module")
def moto_endpoint():
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path, monkeypatch):
    if request.param == "local":
        return LocalStore(str(tmp_path / "media"))
    endpoint = request.getfixturevalue("moto_endpoint")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    s3 = S3Store(f"s3://chatd-media/uploads/x?endpoint={endpoint}&region=us-east-1")
    s3.client.create_bucket(Bucket="chatd-media")
    return s3


def _file(tmp_path, data):
    path = tmp_path / hashlib.sha256(data).hexdigest()[:8]
    path.write_bytes(data)
    return str(path), hashlib.sha256(data).hexdigest()


def test_provides_the_interface(store):
    assert verifyObject(IMediaStore, store)


def test_put_get_exists_size_delete(store, tmp_path):
    data = bytes(range(256)) * 4000
    path, key = _file(tmp_path, data)
    assert not store.exists(key)
    store.put(key, path)
    assert store.exists(key) and store.size(key) == len(data) and store.get(key) == data
    store.put(key, path)  # identical content: stored once, no error
    store.delete(key)
    assert not store.exists(key)
    store.delete(key)  # missing: not an error
    with pytest.raises(KeyError):
        store.get(key)
    with pytest.raises(KeyError):
        store.size(key)


def test_open_range(store, tmp_path):
    data = b"0123456789" * 100
    path, key = _file(tmp_path, data)
    store.put(key, path)
    assert store.open_range(key, 0, 10) == b"0123456789"
    assert store.open_range(key, 995, 1000) == b"56789"
    assert store.open_range(key, 10, 10) == b""
    with pytest.raises(KeyError):
        store.open_range("0" * 64, 0, 1)


def test_keys_must_be_digests(store):
    for bad in ("../../etc/passwd", "ABC", "0" * 63):
        with pytest.raises(ValueError):
            store.exists(bad)


def test_parse_s3_url():
    assert parse_s3_url("s3://b/p/q?endpoint=http://minio:9000&region=eu") == {
        "bucket": "b",
        "prefix": "p/q",
        "endpoint": "http://minio:9000",
        "region": "eu",
    }
    for bad in ("http://b/p", "s3:///p", "s3://b/p?secret=x"):
        with pytest.raises(ValueError):
            parse_s3_url(bad)
