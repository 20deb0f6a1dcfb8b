"""The file part of a ``multipart/form-data`` body (RFC 7578), streamed file to file.

twisted.web parses a multipart body into ``request.args`` in memory; chatd turns
that off for ``/api/media`` (:class:`chatd.httpserver.BodyRule` ``parse_form``)
and reads the body, which twisted.web has spooled to a temporary file, here:
:func:`extract_file` copies the first part that has a ``filename`` (or is
named ``file``) into a new file, :data:`CHUNK` bytes at a time, and stops
with :class:`TooLarge` as soon as it passes the limit. Other parts are
skipped. Blocking: run it in a thread.
"""

from __future__ import annotations

import os
import tempfile
from email.message import Message

#: bytes read from the body at a time
CHUNK = 1 << 16
#: the largest header block of one part
MAX_PART_HEAD = 8192


class BadForm(ValueError):
    """The body is not a ``multipart/form-data`` body with a file part."""


class TooLarge(ValueError):
    """The file part is over the limit."""


def boundary_of(content_type: str | bytes | None) -> bytes:
    """The boundary parameter of a ``multipart/form-data`` Content-Type, or :class:`BadForm`."""
    if isinstance(content_type, bytes):
        content_type = content_type.decode("latin-1")
    if not content_type:
        raise BadForm("send multipart/form-data with a file field")
    msg = Message()
    msg["content-type"] = content_type
    if msg.get_content_type() != "multipart/form-data":
        raise BadForm("send multipart/form-data with a file field")
    boundary = msg.get_param("boundary")
    if not isinstance(boundary, str) or not 1 <= len(boundary) <= 70:
        raise BadForm("the multipart/form-data Content-Type has no valid boundary")
    return boundary.encode("latin-1")


def _disposition(head: bytes) -> tuple[str | None, str | None]:
    """``(name, filename)`` of a part's Content-Disposition header."""
    msg = Message()
    for line in head.decode("utf-8", "replace").split("\r\n"):
        name, sep, value = line.partition(":")
        if sep:
            msg[name.strip()] = value.strip()
    if msg.get("content-disposition") is None:
        return None, None
    field = msg.get_param("name", header="content-disposition")
    filename = msg.get_filename()
    return (field if isinstance(field, str) else None), filename


class _Reader:
    """A buffered reader over *src* that finds delimiters across chunk boundaries."""

    def __init__(self, src):
        self.src = src
        self.buf = b""
        self.eof = False

    def fill(self) -> bool:
        if self.eof:
            return False
        data = self.src.read(CHUNK)
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True

    def until(self, delimiter: bytes, limit: int) -> bytes:
        """Everything up to *delimiter* (consumed, not returned), at most *limit* bytes."""
        while True:
            at = self.buf.find(delimiter)
            if at >= 0:
                out, self.buf = self.buf[:at], self.buf[at + len(delimiter) :]
                return out
            if len(self.buf) > limit + len(delimiter) or not self.fill():
                raise BadForm("malformed multipart/form-data body")

    def copy_until(self, delimiter: bytes, out, limit: int) -> int:
        """Copy bytes up to *delimiter* into *out* (None: discard); the count copied."""
        copied = 0
        keep = len(delimiter) - 1
        while True:
            at = self.buf.find(delimiter)
            if at >= 0:
                piece, self.buf = self.buf[:at], self.buf[at + len(delimiter) :]
            else:
                cut = max(0, len(self.buf) - keep)
                piece, self.buf = self.buf[:cut], self.buf[cut:]
            copied += len(piece)
            if out is not None:
                if copied > limit:
                    raise TooLarge(limit)
                out.write(piece)
            if at >= 0:
                return copied
            if not self.fill():
                raise BadForm("the multipart/form-data body ends inside a part")


def extract_file(src, boundary: bytes, directory: str, limit: int) -> tuple[str, str | None, int]:
    """Copy the file part of the multipart body *src* into a new file in *directory*.

    Returns ``(path, filename, size)``; the caller owns (and removes) *path*.
    Raises :class:`BadForm` or :class:`TooLarge`, leaving no file behind.
    """
    reader = _Reader(src)
    dash = b"--" + boundary
    reader.until(dash, MAX_PART_HEAD)  # the preamble
    while True:
        while len(reader.buf) < 2 and reader.fill():
            pass
        if reader.buf.startswith(b"--"):
            raise BadForm("the multipart/form-data body has no file field")
        reader.until(b"\r\n", MAX_PART_HEAD)  # transport padding after the boundary
        head = reader.until(b"\r\n\r\n", MAX_PART_HEAD)
        field, filename = _disposition(head)
        if filename is None and field != "file":
            reader.copy_until(b"\r\n" + dash, None, 0)
            continue
        fd, path = tempfile.mkstemp(prefix="upload-", dir=directory)
        try:
            with os.fdopen(fd, "wb") as out:
                size = reader.copy_until(b"\r\n" + dash, out, limit)
        except BaseException:
            os.unlink(path)
            raise
        return path, filename, size
