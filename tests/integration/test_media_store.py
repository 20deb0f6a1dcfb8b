"""Media: the IMediaStore contract, the same tests on local disk and on S3 (moto's
server on a loopback port; no network)."""

import hashlib
import time

import pytest
from zope.interface.verify import verifyObject

from chatd.media.store import IMediaStore, parse_s3_url


@pytest.fixture
def store(media_store):
    """Each test on local disk and on S3 (tests/conftest.py, ``media_store``)."""
    return media_store


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


def test_retire_restore_purge(store, tmp_path):
    """A removal retires the object (missing for readers and puts), then restores it
    (an identical upload was recorded meanwhile) or purges it."""
    data = b"retire me" * 1000
    path, key = _file(tmp_path, data)
    assert store.retire(key) is None  # not stored
    store.put(key, path)
    token = store.retire(key)
    assert token and not store.exists(key)
    with pytest.raises(KeyError):
        store.get(key)
    store.restore(key, token)
    assert store.get(key) == data
    token = store.retire(key)
    store.put(key, path)  # an upload while it is retired stores it anew
    store.restore(key, token)  # the same bytes: replacing them is harmless
    assert store.get(key) == data
    store.purge(store.retire(key))
    assert not store.exists(key) and store.retire(key) is None
    store.purge(token)  # purged already: not an error


def test_retired_lists_what_a_removal_left(store, tmp_path):
    """``retired()`` lists the retired objects still stored, with their key, token
    and when they were retired (the store's clock), and nothing else."""
    assert store.retired() == []
    left, done, kept = (_file(tmp_path, b"%d" % i * 500) for i in range(3))
    for path, key in (left, done, kept):
        store.put(key, path)
    before = time.time()
    token = store.retire(left[1])
    store.purge(store.retire(done[1]))
    [(key, listed, at)] = store.retired()
    assert (key, listed) == (left[1], token)
    assert before - 2 <= at <= time.time() + 2  # S3's LastModified has whole seconds
    store.restore(key, token)
    assert store.retired() == [] and store.exists(left[1]) and store.exists(kept[1])


def test_leftovers_are_the_retired_objects_and_no_part_after_finished_puts(store, tmp_path):
    """``leftovers()`` is ``(retired(), parts)`` in one listing; puts that finished
    (and one that failed: its source is missing) leave no part, none is being written."""
    path, key = _file(tmp_path, b"x" * 3000)
    store.put(key, path)
    with pytest.raises(FileNotFoundError):
        store.put(_file(tmp_path, b"y")[1], str(tmp_path / "missing"))
    token = store.retire(key)
    retired, parts = store.leftovers()
    assert retired == store.retired() and [t for _, t, _ in retired] == [token]
    assert parts == [] and store.writing() == set()


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
