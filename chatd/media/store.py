"""Where media bytes live: :class:`IMediaStore`, on local disk or an S3-compatible service.

Objects are addressed by the hex SHA-256 of their bytes, so identical uploads
are stored once. Every method blocks: chatd calls them in the media thread
pool. The same contract tests (tests/integration/test_media_store.py) run against both
backends (S3 through moto's server on loopback).

* :class:`LocalStore` (``--media-dir``): ``<dir>/objects/ab/cd/<sha256>``,
  written by renaming a finished temporary file from ``<dir>/tmp`` (same file
  system), so a reader never sees half an object.
* :class:`S3Store` (``--media-s3 s3://bucket/prefix?endpoint=URL&region=R``):
  objects ``<prefix>/<sha256>`` through boto3; credentials come from the
  environment (``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` or any other
  boto3 source). Works with AWS S3, MinIO, Tencent COS, Ceph RGW.
"""

from __future__ import annotations

import os
import re
import shutil
from urllib.parse import parse_qs, urlsplit

from zope.interface import Interface, implementer

_KEY = re.compile(r"[0-9a-f]{64}")


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

    def _path(self, key: str) -> str:
        _check(key)
        return os.path.join(self.objects, key[:2], key[2:4], key)

    def put(self, key, path):
        target = self._path(key)
        if os.path.exists(target):
            return
        os.makedirs(os.path.dirname(target), exist_ok=True)
        tmp = target + ".part"
        shutil.copyfile(path, tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, target)

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
