"""A ``multipart/form-data`` body (RFC 7578) parsed as it arrives, its file part into a file.

twisted.web parses a multipart body into ``request.args`` in memory; chatd turns
that off for ``/api/media`` (:class:`chatd.httpserver.BodyRule` ``parse_form``).
:class:`FormParser` is a push parser: :meth:`FormParser.feed` takes the body
piece by piece (as the reactor receives it), copies the first part that has a
``filename`` (or is named ``file``) into a new file and stops with
:class:`TooLarge` as soon as it passes the limit. The work per piece is bounded
by the piece: one search for the delimiter in it plus at most a few bytes kept
from the one before, one write; a part head is at most :data:`MAX_PART_HEAD`
bytes and a body at most :data:`MAX_PARTS` parts, so no piece costs more than
a few header parses. Text fields named in *fields* (``name``: the file's name as
the client knows it) are kept, at most :data:`MAX_FIELD` bytes each; other parts
are skipped. :class:`FormSink` is the file-like object twisted.web writes the
``/api/media`` body to (``request.content``); its file part is a
:class:`QueuedFile`, written by the one :class:`Writer` thread (the reactor only
queues, and pauses the socket while too much waits for the disk).
:func:`extract_file` parses a body already in a file (blocking: run it in a
thread; the file part a :class:`LocalFile`).
"""

from __future__ import annotations

import os
import queue
import secrets
import tempfile
import threading
from dataclasses import dataclass, field
from email.message import Message

from chatd.media.process import lower_thread_priority

#: bytes read from a body file at a time (extract_file)
CHUNK = 1 << 16
#: the largest header block of one part
MAX_PART_HEAD = 8192
#: the most parts of one body (the file, its name and a few more fields)
MAX_PARTS = 32
#: the largest text field kept (longer ones are cut here)
MAX_FIELD = 4096
#: bytes of a file part queued for the disk beyond which the socket is no longer read
HIGH_WATER = 4 << 20
#: ... and below which it is read again
LOW_WATER = 1 << 20


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
    """``(name, filename)`` of a part's Content-Disposition header; ``filename*=``
    (RFC 5987/2231, ``UTF-8''…``) is preferred to ``filename=``."""
    msg = Message()
    for line in head.decode("utf-8", "replace").split("\r\n"):
        name, sep, value = line.partition(":")
        if sep:
            msg[name.strip()] = value.strip()
    if msg.get("content-disposition") is None:
        return None, None
    field_name = msg.get_param("name", header="content-disposition")
    filename = msg.get_filename()
    return (field_name if isinstance(field_name, str) else None), filename


@dataclass
class Form:
    """What a parsed body held: the file part (*path*, its *size*, the part's
    *filename*) and the kept text *fields*."""

    path: str
    filename: str | None
    size: int
    fields: dict = field(default_factory=dict)


_PREAMBLE, _BOUNDARY, _HEAD, _BODY, _DONE = range(5)


class FormParser:
    """The push parser (see the module docstring): :meth:`feed` pieces, then :meth:`end`.

    *directory* receives the file part (``upload-*``); *limit* is its largest size;
    *fields* the names of the text fields kept. After an error (:class:`BadForm`,
    :class:`TooLarge`, raised by the call that found it) the file is gone and every
    later call raises it again.
    """

    def __init__(self, boundary: bytes, directory: str, limit: int, fields=("name",), opener=None):
        self.dash = b"--" + boundary
        self.delimiter = b"\r\n" + self.dash
        self.directory = directory
        self.opener = opener or LocalFile
        self.limit = limit
        self.wanted = frozenset(fields)
        self.fields: dict[str, str] = {}
        self.buf = b""
        self.state = _PREAMBLE
        self.parts = 0
        self.error: Exception | None = None
        self.path: str | None = None
        self.filename: str | None = None
        self.size = 0
        self._file = None  # the file part (a LocalFile or QueuedFile) until handed over
        self._target = None  # the current part: "file", a field's name, or None (skipped)
        self._value = bytearray()
        self._done_file = False

    # feeding

    def feed(self, data: bytes) -> None:
        """Take the next piece of the body."""
        if self.error is not None:
            raise self.error
        if self.state == _DONE:
            return  # the epilogue
        self.buf += data
        try:
            while self._step():
                pass
        except Exception as e:  # BadForm, TooLarge, OSError (the temporary file)
            self._fail(e)
            raise

    def end(self) -> Form:
        """The body is complete: the :class:`Form` (the caller owns its file)."""
        if self.error is not None:
            raise self.error
        if not self._done_file:  # a body cut after its file part still has the file
            if self.state == _BODY:
                e = BadForm("the multipart/form-data body ends inside a part")
            else:
                e = BadForm("malformed multipart/form-data body")
            self._fail(e)
            raise e
        form = Form(self.path, self.filename, self.size, dict(self.fields))
        self.path = self._file = None  # the caller's now
        return form

    def discard(self) -> None:
        """Give up: remove the file part (when not taken by :meth:`end`'s caller)."""
        if self._file is not None:
            f, self._file, self.path = self._file, None, None
            f.discard()

    # the states

    def _step(self) -> bool:
        """One step of the state machine: True if it should go on with the buffer."""
        buf = self.buf
        if self.state == _PREAMBLE:
            at = buf.find(self.dash)
            if at < 0:
                if len(buf) > MAX_PART_HEAD + len(self.dash):
                    raise BadForm("malformed multipart/form-data body")
                return False
            self.buf = buf[at + len(self.dash) :]
            self.state = _BOUNDARY
            return True
        if self.state == _BOUNDARY:
            if len(buf) < 2:
                return False
            if buf.startswith(b"--"):
                if not self._done_file:
                    raise BadForm("the multipart/form-data body has no file field")
                self.state, self.buf = _DONE, b""
                return False
            at = buf.find(b"\r\n")  # transport padding after the boundary
            if at < 0:
                if len(buf) > MAX_PART_HEAD:
                    raise BadForm("malformed multipart/form-data body")
                return False
            self.buf = buf[at + 2 :]
            self.state = _HEAD
            return True
        if self.state == _HEAD:
            at = buf.find(b"\r\n\r\n")
            if at < 0:
                if len(buf) > MAX_PART_HEAD + 4:
                    raise BadForm("malformed multipart/form-data body")
                return False
            if at > MAX_PART_HEAD:
                raise BadForm("malformed multipart/form-data body")
            self.parts += 1
            if self.parts > MAX_PARTS:
                raise BadForm(f"a multipart/form-data body may have at most {MAX_PARTS} parts")
            self._begin(*_disposition(buf[:at]))
            self.buf = buf[at + 4 :]
            self.state = _BODY
            return True
        # _BODY
        at = buf.find(self.delimiter)
        if at >= 0:
            self._take(buf[:at])
            self.buf = buf[at + len(self.delimiter) :]
            self._finish_part()
            self.state = _BOUNDARY
            return True
        cut = max(0, len(buf) - (len(self.delimiter) - 1))
        if cut:
            self._take(buf[:cut])
            self.buf = buf[cut:]
        return False

    def _begin(self, field_name, filename) -> None:
        if (
            not self._done_file
            and self._file is None
            and (filename is not None or field_name == "file")
        ):
            self._file = self.opener(self.directory)
            self.path = self._file.path
            self.filename = filename
            self._target = "file"
        elif filename is None and field_name in self.wanted and field_name not in self.fields:
            self._target = field_name
            self._value = bytearray()
        else:
            self._target = None

    def _take(self, piece: bytes) -> None:
        if self._target == "file":
            self.size += len(piece)
            if self.size > self.limit:
                raise TooLarge(self.limit)
            self._file.write(piece)
        elif self._target is not None:
            room = MAX_FIELD - len(self._value)
            if room > 0:
                self._value += piece[:room]

    def _finish_part(self) -> None:
        if self._target == "file":
            self._file.close()
            self._done_file = True
        elif self._target is not None:
            self.fields[self._target] = bytes(self._value).decode("utf-8", "ignore")
        self._target = None

    def _fail(self, error: Exception) -> None:
        self.error = error
        self.discard()
        self._done_file = False
        self.buf = b""


class LocalFile:
    """The file part written in the calling thread (:func:`extract_file`, in the pool)."""

    def __init__(self, directory: str):
        fd, self.path = tempfile.mkstemp(prefix="upload-", dir=directory)
        self._f = os.fdopen(fd, "wb")

    def write(self, data: bytes) -> None:
        self._f.write(data)

    def close(self) -> None:
        self._f.close()

    def discard(self) -> None:
        self._f.close()
        _unlink(self.path)


class Writer:
    """One thread doing the disk work of every :class:`QueuedFile`, in order: the
    reactor never waits for the disk (an ext4 journal commit -- anyone's fsync --
    can hold a plain write() for a hundred milliseconds). Started on first use."""

    def __init__(self, reactor):
        self.reactor = reactor
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = None
        self._lock = threading.Lock()

    def submit(self, f, *args) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._loop, name="chatd-media-writer", daemon=True
                )
                self._thread.start()
        self._queue.put((f, args))

    def _loop(self) -> None:
        lower_thread_priority()  # the disk work runs behind the reactor on a shared core
        while True:
            f, args = self._queue.get()
            if f is None:
                return
            try:
                f(*args)
            except Exception:  # a QueuedFile keeps its own errors: this is a bug
                from twisted.logger import Logger

                Logger().failure("media writer: {f} failed", f=f)

    def stop(self) -> None:
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put((None, ()))


class QueuedFile:
    """The file part of a :class:`FormSink`: opened, written, closed and removed by
    the :class:`Writer`'s thread, in the order asked. :meth:`write` only queues; with
    more than :data:`HIGH_WATER` bytes queued it calls *pause* (stop reading the
    socket) and the writer calls *resume* from the reactor below :data:`LOW_WATER`,
    so no more than that is ever held in memory. :meth:`flushed` fires once
    everything asked before it was done (with the first OSError, if any)."""

    def __init__(self, writer: Writer, directory: str, pause, resume):
        self.writer = writer
        self.path = os.path.join(directory, f"upload-{secrets.token_hex(8)}")
        self.error: OSError | None = None
        self._pause, self._resume = pause, resume
        self._f = None
        self._lock = threading.Lock()
        self._queued = 0
        self._paused = False
        writer.submit(self._open)

    # on the reactor

    def write(self, data: bytes) -> None:
        with self._lock:
            self._queued += len(data)
            pause = not self._paused and self._queued > HIGH_WATER
            self._paused = self._paused or pause
        self.writer.submit(self._write, data)
        if pause:
            self._pause()

    def close(self) -> None:
        self.writer.submit(self._close)

    def discard(self) -> None:
        self.writer.submit(self._discard)

    def flushed(self):
        from twisted.internet import defer

        d = defer.Deferred()
        self.writer.submit(lambda: self.writer.reactor.callFromThread(d.callback, self.error))
        return d

    # in the writer's thread

    def _open(self) -> None:
        try:
            self._f = open(self.path, "xb")  # noqa: SIM115 (closed by _close/_discard)
        except OSError as e:
            self.error = e

    def _write(self, data: bytes) -> None:
        if self._f is not None and self.error is None:
            try:
                self._f.write(data)
            except OSError as e:
                self.error = e
        with self._lock:
            self._queued -= len(data)
            resume = self._paused and self._queued < LOW_WATER
            self._paused = self._paused and not resume
        if resume:
            self.writer.reactor.callFromThread(self._resume)

    def _close(self) -> None:
        if self._f is not None:
            f, self._f = self._f, None
            try:
                f.close()
            except OSError as e:
                self.error = self.error or e

    def _discard(self) -> None:
        self._close()
        _unlink(self.path)


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


class FormSink:
    """``request.content`` of an ``/api/media`` request: the body goes through a
    :class:`FormParser` as it arrives (:meth:`write`, on the reactor), never held
    whole, never spooled a second time. An error is kept (:attr:`error`) and the
    rest of the body discarded; the resource answers it once the body is in.
    :meth:`take` hands the parsed :class:`Form` over; :meth:`close` (twisted.web
    calls it when the request ends or its connection is lost) removes a file part
    nobody took: an upload cut half-way leaves nothing behind.

    *boundary* None: the Content-Type was refused (*error* says why).
    """

    def __init__(self, boundary, directory: str, limit: int, error=None, opener=None):
        self.parser = None
        if boundary is not None:
            self.parser = FormParser(boundary, directory, limit, opener=opener)
        self.error = error
        self.received = 0
        self.closed = False
        self._taken = False

    # what twisted.web calls

    def write(self, data: bytes) -> None:
        self.received += len(data)
        if self.error is not None or self.closed:
            return
        try:
            self.parser.feed(data)
        except (BadForm, TooLarge, OSError) as e:  # answered once the body is in
            self.error = e

    def tell(self) -> int:
        return self.received

    def seek(self, offset, whence=0) -> int:
        return self.received  # nothing to read back: the body went through the parser

    def read(self, size=-1) -> bytes:
        return b""

    def close(self) -> None:
        """The request ended (answered, or its connection lost): a file part not taken goes."""
        self.closed = True
        if self.parser is not None:
            self.parser.discard()

    # what the resource calls

    def take(self):
        """The parsed :class:`Form`, now owned by the caller (its file is the caller's
        to remove) -- with a :class:`QueuedFile`, a Deferred firing with it once the
        file is complete on disk; :class:`BadForm` / :class:`TooLarge` if the body was
        refused, the OSError of the file if it could not be written."""
        if self.error is None:
            if self.closed or self._taken:
                self.error = BadForm("the upload was cut short")
            else:
                self._taken = True
                file = self.parser._file
                try:
                    form = self.parser.end()
                except (BadForm, TooLarge) as e:
                    self.error = e
                else:
                    if not isinstance(file, QueuedFile):
                        return form
                    return file.flushed().addCallback(_written, file, form)
        raise self.error


def _written(error, file, form):
    if error is not None:
        file.discard()
        raise error
    return form


def extract_file(src, boundary: bytes, directory: str, limit: int) -> Form:
    """Parse the multipart body in the file *src* into a :class:`Form` (file part in
    *directory*; the caller owns and removes it). Raises :class:`BadForm` or
    :class:`TooLarge`, leaving no file behind. Blocking."""
    parser = FormParser(boundary, directory, limit)
    try:
        while True:
            data = src.read(CHUNK)
            if not data:
                return parser.end()
            parser.feed(data)
            if parser.state == _DONE:
                return parser.end()
    except BaseException:
        parser.discard()
        raise
