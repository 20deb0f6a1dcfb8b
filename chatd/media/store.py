"""Where media bytes live: :class:`IMediaStore`, on local disk or an S3-compatible service.

Objects are addressed by the hex SHA-256 of their bytes, so identical uploads
are stored once. Every method blocks: chatd calls them in the media thread
pool. The same contract tests (tests/integration/test_media_store.py) run against both
backends (S3 through moto's server on loopback).

* :class:`LocalStore` (``--media-dir``): ``<dir>/objects/ab/cd/<sha256>``,
  copied into ``<sha256>.part-<random>`` beside it (removed if the copy fails)
  and renamed, so a reader never sees half an object; a removal renames it to
  ``<sha256>.retired-<random>`` first (:meth:`IMediaStore.retire`); a retired
  object's age is its inode change time, which the rename sets (Linux).
* :class:`S3Store` (``--media-s3 s3://bucket/prefix?endpoint=URL&region=R``):
  objects ``<prefix>/<sha256>`` through boto3 (retired ones ``<prefix>/retired/<sha256>-<random>``); credentials come from the
  environment (``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` or any other
  boto3 source). Works with AWS S3, MinIO, Tencent COS, Ceph RGW. A retired
  object's age is its ``LastModified`` (the copy's time).

A chatd killed between retiring an object and purging (or restoring) it leaves
the retired object behind: :meth:`IMediaStore.retired` lists them, and the media
sweep settles those past a grace period (:func:`chatd.media.sweep.stale_retired`).
A chatd killed in the middle of a :class:`LocalStore` put leaves its
``<sha256>.part-<random>`` file: :meth:`IMediaStore.leftovers` lists them with the
retired objects (one scan of ``objects/``), the store knows which of them a put
running in this process is still writing (:meth:`IMediaStore.writing`), and the
sweep removes the others (:func:`chatd.media.sweep.stale_parts`) through
:meth:`IMediaStore.discard`, which never removes one a put here still writes.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import threading
from urllib.parse import parse_qs, urlsplit

from zope.interface import Interface, implementer

_KEY = re.compile(r"[0-9a-f]{64}")
#: a LocalStore retired object's file name: ``<sha256>.retired-<random>``
_LOCAL_RETIRED = re.compile(r"([0-9a-f]{64})\.retired-[0-9a-f]+")
#: a LocalStore put's file, copied then renamed: ``<sha256>.part-<random>``
_LOCAL_PART = re.compile(r"[0-9a-f]{64}\.part-[0-9a-f]+")
#: an S3Store retired object's name under ``<prefix>/retired/``: ``<sha256>-<random>``
_S3_RETIRED = re.compile(r"([0-9a-f]{64})-[0-9a-f]+")


class IMediaStore(Interface):
    """Blobs by content address (hex SHA-256)."""

    def put(key, path):
        """Store the file at *path* under *key* (the file itself is left to the caller)."""

    def exists(key):
        """True when *key* is stored."""

    def size(key):
        """The stored object's length in bytes (KeyError when missing)."""

    def get(key):
        """The whole object's bytes (KeyError when missing)."""

    def open_range(key, start, stop):
        """Bytes ``start`` to ``stop`` (exclusive) of the object (KeyError when missing)."""

    def delete(key):
        """Remove *key*; removing a missing key is not an error."""

    def retire(key):
        """Move *key* aside (readers see it missing): a token for :meth:`restore` or
        :meth:`purge`, None when it is not stored. How a removal leaves no upload
        without its bytes: retire, then ask the metadata whether a row uses the key
        (an identical upload recorded meanwhile, whose put found the object still
        there), then restore or purge (:meth:`chatd.media.web.Media._drop_blob`)."""

    def restore(key, token):
        """Put the retired object back under *key* (the same bytes: content-addressed,
        so it may replace one stored meanwhile)."""

    def purge(token):
        """Remove the retired object for good."""

    def retired():
        """``[(key, token, at)]`` of every retired object still stored: its key, the
        token :meth:`restore` and :meth:`purge` take, and when it was retired (POSIX
        seconds, the store's clock). A running removal's own are among them."""

    def leftovers():
        """``(retired, parts)``: :meth:`retired`, and ``[(token, at)]`` of the objects
        a put began and did not finish (a put running now, or one a killed chatd
        left), *at* when it was last written (POSIX seconds, the store's clock).
        One listing of the store for both."""

    def writing():
        """The tokens among :meth:`leftovers`' parts of the puts running in this
        process (a snapshot)."""

    def discard(token):
        """Remove the unfinished object *token* unless a put of this process is still
        writing it: whether it was removed (False too when it is gone already)."""


def _check(key: str) -> str:
    if not _KEY.fullmatch(key):
        raise ValueError("media keys are hex SHA-256 digests")
    return key


@implementer(IMediaStore)
class LocalStore:
    """Objects in a directory tree (see the module docstring)."""

    def __init__(self, root: str):
        self.root = os.path.abspath(root)
        self.objects = os.path.join(self.root, "objects")
        #: the part files the puts of this process are writing (put threads, discard)
        self._writing: set[str] = set()
        self._writing_lock = threading.Lock()

    def _path(self, key: str) -> str:
        _check(key)
        return os.path.join(self.objects, key[:2], key[2:4], key)

    def put(self, key, path):
        target = self._path(key)
        if os.path.exists(target):
            return
        os.makedirs(os.path.dirname(target), exist_ok=True)
        # a name of its own: two identical uploads stored at once never share a file
        tmp = f"{target}.part-{secrets.token_hex(6)}"
        with self._writing_lock:  # before the file exists: discard() never sees it unowned
            self._writing.add(tmp)
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask applies
            try:
                with os.fdopen(fd, "wb") as out, open(path, "rb") as src:
                    shutil.copyfileobj(src, out, 1 << 20)
                    out.flush()
                    os.fsync(out.fileno())
                os.replace(tmp, target)
            except BaseException:
                try:  # a failed put (a full disk, say) leaves no part behind
                    os.unlink(tmp)
                except FileNotFoundError:
                    pass
                raise
        finally:  # after the file is gone (renamed or removed)
            with self._writing_lock:
                self._writing.discard(tmp)

    def exists(self, key):
        return os.path.exists(self._path(key))

    def size(self, key):
        try:
            return os.path.getsize(self._path(key))
        except FileNotFoundError:
            raise KeyError(key) from None

    def get(self, key):
        try:
            with open(self._path(key), "rb") as f:
                return f.read()
        except FileNotFoundError:
            raise KeyError(key) from None

    def open_range(self, key, start, stop):
        try:
            with open(self._path(key), "rb") as f:
                f.seek(start)
                return f.read(max(0, stop - start))
        except FileNotFoundError:
            raise KeyError(key) from None

    def delete(self, key):
        try:
            os.unlink(self._path(key))
        except FileNotFoundError:
            pass

    def retire(self, key):
        path = self._path(key)
        token = f"{path}.retired-{secrets.token_hex(6)}"
        try:
            os.rename(path, token)  # atomic: the object is there or it is not
        except (FileNotFoundError, NotADirectoryError):
            return None
        return token

    def restore(self, key, token):
        os.replace(token, self._path(key))

    def purge(self, token):
        try:
            os.unlink(token)
        except FileNotFoundError:
            pass

    def retired(self):
        return self.leftovers()[0]

    def leftovers(self):
        retired, parts = [], []
        for entry in _scan(self.objects, 2):  # objects/ab/cd/<files>
            if ".retired-" in entry.name:
                match = _LOCAL_RETIRED.fullmatch(entry.name)
                if match is None:
                    continue
                try:  # the rename that retired it set the inode change time
                    at = entry.stat(follow_symlinks=False).st_ctime
                except FileNotFoundError:
                    continue  # purged or restored meanwhile
                retired.append((match.group(1), entry.path, at))
            elif ".part-" in entry.name and _LOCAL_PART.fullmatch(entry.name):
                try:  # every 1 MiB copied sets the modification time
                    at = entry.stat(follow_symlinks=False).st_mtime
                except FileNotFoundError:
                    continue  # its put finished meanwhile
                parts.append((entry.path, at))
        return retired, parts

    def writing(self):
        with self._writing_lock:
            return set(self._writing)

    def discard(self, token):
        if not _LOCAL_PART.fullmatch(os.path.basename(token)):
            raise ValueError("not a part file")
        with self._writing_lock:  # a put here adds its part before creating it
            if token in self._writing:
                return False
            try:
                os.unlink(token)
            except FileNotFoundError:
                return False
        return True


def _scan(directory: str, depth: int):
    """The file entries *depth* directories below *directory* (``os.scandir``: one
    call per directory, no stat of the files)."""
    try:
        entries = list(os.scandir(directory))
    except (FileNotFoundError, NotADirectoryError):
        return
    for entry in entries:
        if depth == 0:
            if entry.is_file(follow_symlinks=False):
                yield entry
        elif entry.is_dir(follow_symlinks=False):
            yield from _scan(entry.path, depth - 1)


def parse_s3_url(url: str) -> dict:
    """``s3://bucket/prefix?endpoint=URL&region=R`` as ``{bucket, prefix, endpoint, region}``."""
    parts = urlsplit(url)
    if parts.scheme != "s3" or not parts.netloc:
        raise ValueError("must be s3://bucket/prefix?endpoint=URL&region=REGION")
    query = parse_qs(parts.query)
    unknown = set(query) - {"endpoint", "region"}
    if unknown:
        raise ValueError(f"unknown parameter {sorted(unknown)[0]!r} (endpoint, region)")
    return {
        "bucket": parts.netloc,
        "prefix": parts.path.strip("/"),
        "endpoint": query.get("endpoint", [None])[0],
        "region": query.get("region", [None])[0],
    }


@implementer(IMediaStore)
class S3Store:
    """Objects in an S3 bucket under a prefix (see the module docstring)."""

    def __init__(self, url: str, client=None):
        spec = parse_s3_url(url)
        self.bucket = spec["bucket"]
        self.prefix = spec["prefix"]
        if client is None:
            import boto3

            client = boto3.client("s3", endpoint_url=spec["endpoint"], region_name=spec["region"])
        self.client = client

    def _name(self, key: str) -> str:
        _check(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _missing(self, error) -> bool:
        code = error.response.get("Error", {}).get("Code")
        return code in ("404", "NoSuchKey", "NotFound")

    def put(self, key, path):
        if not self.exists(key):
            self.client.upload_file(path, self.bucket, self._name(key))

    def _head(self, key):
        from botocore.exceptions import ClientError

        try:
            return self.client.head_object(Bucket=self.bucket, Key=self._name(key))
        except ClientError as e:
            if self._missing(e):
                raise KeyError(key) from None
            raise

    def exists(self, key):
        try:
            self._head(key)
        except KeyError:
            return False
        return True

    def size(self, key):
        return self._head(key)["ContentLength"]

    def _get(self, key, **extra) -> bytes:
        from botocore.exceptions import ClientError

        try:
            answer = self.client.get_object(Bucket=self.bucket, Key=self._name(key), **extra)
        except ClientError as e:
            if self._missing(e):
                raise KeyError(key) from None
            raise
        return answer["Body"].read()

    def get(self, key):
        return self._get(key)

    def open_range(self, key, start, stop):
        if stop <= start:
            self._head(key)
            return b""
        return self._get(key, Range=f"bytes={start}-{stop - 1}")

    def delete(self, key):
        self.client.delete_object(Bucket=self.bucket, Key=self._name(key))

    def _retired_prefix(self) -> str:
        return f"{self.prefix}/retired/" if self.prefix else "retired/"

    def _retired(self, key) -> str:
        return f"{self._retired_prefix()}{key}-{secrets.token_hex(6)}"

    def retire(self, key):
        from botocore.exceptions import ClientError

        token = self._retired(_check(key))
        source = {"Bucket": self.bucket, "Key": self._name(key)}
        try:  # S3 has no rename: a server-side copy, then the delete
            self.client.copy_object(Bucket=self.bucket, Key=token, CopySource=source)
        except ClientError as e:
            if self._missing(e):
                return None
            raise
        self.delete(key)
        return token

    def restore(self, key, token):
        source = {"Bucket": self.bucket, "Key": token}
        self.client.copy_object(Bucket=self.bucket, Key=self._name(key), CopySource=source)
        self.purge(token)

    def purge(self, token):
        self.client.delete_object(Bucket=self.bucket, Key=token)

    def retired(self):
        prefix = self._retired_prefix()
        out = []
        pages = self.client.get_paginator("list_objects_v2")
        for page in pages.paginate(Bucket=self.bucket, Prefix=prefix):
            for item in page.get("Contents", ()):
                match = _S3_RETIRED.fullmatch(item["Key"][len(prefix) :])
                if match is not None:
                    out.append((match.group(1), item["Key"], item["LastModified"].timestamp()))
        return out

    def leftovers(self):
        # boto3's upload_file is one PUT, or a multipart upload that S3 keeps apart
        # until it completes (a killed one: the bucket's AbortIncompleteMultipartUpload
        # rule, docs/deploy.md): no object is ever half written under the prefix
        return self.retired(), []

    def writing(self):
        return set()

    def discard(self, token):
        return False
