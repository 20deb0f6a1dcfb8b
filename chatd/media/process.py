"""Knowing and cleaning an upload: blocking work, run in the media thread pool.

:func:`inspect` takes the file part (a temporary file), sniffs its kind from its
magic numbers (:mod:`chatd.media.sniff`) and checks the kind's size limit; then

* **images** are opened with Pillow, their dimensions checked against
  :data:`MAX_PIXELS` *before* any pixel is decoded (decompression bombs:
  :class:`Refused` ``too_many_pixels``), decoded, turned upright by their
  EXIF orientation and **re-encoded without any metadata** (EXIF with GPS,
  XMP, comments: only the ICC colour profile is kept), in their own format;
  a thumbnail of at most :data:`THUMB` pixels a side is made in WebP. A file
  that sniffs as an image but does not decode is refused (``bad_image``);
* **voice** (MP3, AAC, M4A) gets its duration from the container (mutagen);
  one that mutagen cannot read is kept as a generic file;
* **video** (MP4) gets its duration when mutagen can read it;
* anything else is a generic **file**, stored as it came.

Stored bytes are hashed with SHA-256: the content address of the store.
"""

from __future__ import annotations

import hashlib
import os
import signal
import sys
import tempfile
import threading
from dataclasses import dataclass

from chatd.media import sniff as sniffing

#: the most pixels (width x height, times frames for animations) an image may have: 40 Mpx
MAX_PIXELS = 40_000_000
#: the most frames of an animated GIF or WebP
MAX_FRAMES = 500
#: the longest side of a thumbnail
THUMB = 320
_FORMATS = {"image/jpeg": "JPEG", "image/png": "PNG", "image/gif": "GIF", "image/webp": "WEBP"}


class Refused(ValueError):
    """An upload refused: HTTP *status*, error *code*, *message*."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def __reduce__(self):  # raised in a worker process, re-raised here (Processes)
        return (Refused, (self.status, self.code, self.message))


#: the process that imported this module: in a worker, the forkserver that preloaded it
_IMPORTED_IN = os.getpid()
#: prctl(2)'s option: the signal this process gets when its parent exits (Linux)
PR_SET_PDEATHSIG = 1


def _worker_start() -> None:
    """A media worker process's initializer: it dies with chatd, and runs behind it."""
    _die_with_parent()
    _lower_priority()


def _die_with_parent() -> None:
    """In a media worker process: let the forkserver stop once chatd is gone, and
    this worker once the forkserver is -- also when chatd is killed (SIGKILL, the
    OOM killer) and closes nothing itself.

    The forkserver stops when it reads EOF on its "alive" pipe, whose write end
    chatd holds and every worker inherits (multiprocessing passes it on, for a
    child that would start processes itself, which a worker never does): each
    worker closes its copy, so chatd's is the last. Then Linux is asked to send
    the worker SIGKILL when its parent -- the single-threaded forkserver -- exits
    (``prctl(PR_SET_PDEATHSIG)``); a parent gone before that ends it at once."""
    from multiprocessing import forkserver

    server = forkserver._forkserver
    fd, server._forkserver_alive_fd = server._forkserver_alive_fd, None
    if fd is not None:
        try:
            os.close(fd)
        except OSError:
            pass
    # preloaded, this module was imported by the forkserver: the parent to outlive
    parent = _IMPORTED_IN if _IMPORTED_IN != os.getpid() else os.getppid()
    if _set_parent_death_signal(signal.SIGKILL) and os.getppid() != parent:
        os._exit(0)


def _set_parent_death_signal(sig: int) -> bool:
    """``prctl(PR_SET_PDEATHSIG, sig)`` through ctypes; whether it was set (Linux only)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _lower_priority() -> None:
    """In a media worker process: run behind the chat (nice +10, and Linux's
    ``SCHED_IDLE`` where there is one: a worker never delays the reactor's wake-up
    on a shared core; it still gets the CPU nobody else wants)."""
    try:
        os.nice(10)
    except OSError:
        pass
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):
        pass


#: how much nicer than the reactor chatd's own media threads run (upload writer, pool)
THREAD_NICENESS = 10


def lower_thread_priority(niceness: int = THREAD_NICENESS) -> None:
    """In one of chatd's own media threads: run *niceness* behind the reactor's thread
    on a shared core (on Linux the nice value is per thread: the calling one only).
    Not ``SCHED_IDLE``, unlike the worker processes: these threads share the GIL with
    the reactor, and one that holds it must get the CPU again soon to give it back."""
    try:
        os.nice(niceness)
    except OSError:
        pass


class BackgroundThread(threading.Thread):
    """A thread that lowers its own priority first (:func:`lower_thread_priority`):
    the ``threadFactory`` of the media pool."""

    def run(self):
        lower_thread_priority()
        super().run()


class Processes:
    """:func:`inspect` in worker processes, so Pillow's decode and re-encode (which
    hold the GIL for up to ~100 ms per large photo) never stall the reactor's thread.

    ``call(path, directory, limits)`` blocks the calling thread (a media pool thread,
    which releases the GIL while it waits) until a worker answered. The workers are
    forked from a ``forkserver`` that preloads only this module (never the program's
    ``__main__``); they start on first use (or :meth:`warm`), and the forkserver and
    the workers end with chatd even when it is killed (:func:`_die_with_parent`). A pool that cannot start or breaks falls
    back to running in the calling thread (logged once).
    """

    def __init__(self, workers: int = 2):
        self.workers = workers
        self._pool = None
        self._lock = threading.Lock()
        self.broken = workers <= 0

    def _executor(self):
        with self._lock:
            if self._pool is None and not self.broken:
                import multiprocessing
                from concurrent.futures import ProcessPoolExecutor

                ctx = multiprocessing.get_context("forkserver")
                ctx.set_forkserver_preload(["chatd.media.process"])
                # niced: on a shared core the reactor's process is scheduled first;
                # and gone with chatd, however it ends (_die_with_parent)
                self._pool = ProcessPoolExecutor(
                    self.workers, mp_context=ctx, initializer=_worker_start
                )
            return self._pool

    def call(self, path: str, directory: str, limits: Limits) -> Processed:
        pool = None if self.broken else self._executor()
        if pool is None:
            return inspect(path, directory, limits)
        try:
            return pool.submit(inspect, path, directory, limits).result()
        except Refused:
            raise
        except (OSError, RuntimeError) as e:  # BrokenProcessPool is a RuntimeError
            from twisted.logger import Logger

            Logger().warn("media workers failed ({e}): processing in threads from now", e=e)
            self.broken = True
            return inspect(path, directory, limits)

    def warm(self) -> threading.Thread:
        """Start the forkserver and a worker now, from a thread that first lowers its
        own priority (nice and scheduling policy are per thread on Linux and inherited
        by the processes it starts): the forkserver's start-up -- a Python importing
        Pillow, ~0.3 s of CPU -- then runs behind the chat, and not on the first upload."""

        def run():
            _lower_priority()
            pool = None if self.broken else self._executor()
            if pool is not None:
                try:
                    pool.submit(int).result()
                except Exception:  # noqa: BLE001 -- call() finds out and falls back
                    pass

        thread = threading.Thread(target=run, name="chatd-media-warm", daemon=True)
        thread.start()
        return thread

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


@dataclass(frozen=True)
class Limits:
    """The largest upload of each kind in bytes (video counts as a file)."""

    image: int
    voice: int
    file: int

    def of(self, kind: str) -> int:
        return {sniffing.IMAGE: self.image, sniffing.VOICE: self.voice}.get(kind, self.file)

    @property
    def largest(self) -> int:
        return max(self.image, self.voice, self.file)


@dataclass
class Processed:
    """What an upload turned out to be, and the files to store (in the temp directory)."""

    kind: str
    mime: str
    path: str
    size: int
    sha256: str
    width: int | None = None
    height: int | None = None
    duration_ms: int | None = None
    thumb_path: str | None = None
    thumb_size: int | None = None
    thumb_sha256: str | None = None

    def paths(self) -> list[str]:
        return [p for p in (self.path, self.thumb_path) if p]


def sha256_of(path: str) -> str:
    """The hex SHA-256 of a file, read in 1 MiB pieces."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while piece := f.read(1 << 20):
            digest.update(piece)
    return digest.hexdigest()


def inspect(path: str, directory: str, limits: Limits) -> Processed:
    """Sniff, check and clean the upload at *path* (see the module docstring).

    New files are made in *directory*; *path* itself may be returned as the file
    to store. Raises :class:`Refused` (removing any file it made).
    """
    with open(path, "rb") as f:
        head = f.read(sniffing.HEAD)
    size = os.path.getsize(path)
    kind, mime = sniffing.sniff(head)
    limit = limits.of(kind)
    if size > limit:
        raise Refused(413, "too_large", f"a {kind} upload may have at most {limit} bytes")
    if size == 0:
        raise Refused(400, "bad_request", "the file is empty")
    if kind == sniffing.IMAGE:
        return _image(path, mime, directory)
    if kind in (sniffing.VOICE, sniffing.VIDEO):
        duration = _duration_ms(path)
        if duration is None and kind == sniffing.VOICE:
            kind, mime = sniffing.FILE, sniffing.OCTET
        return Processed(kind, mime, path, size, sha256_of(path), duration_ms=duration)
    return Processed(kind, mime, path, size, sha256_of(path))


def _duration_ms(path: str) -> int | None:
    import mutagen

    try:
        audio = mutagen.File(path)
    except Exception:  # mutagen raises many kinds of errors on junk
        return None
    length = getattr(getattr(audio, "info", None), "length", None)
    if not length or length <= 0:
        return None
    return round(length * 1000)


def _image(path: str, mime: str, directory: str) -> Processed:
    from PIL import Image, ImageOps

    Image.MAX_IMAGE_PIXELS = MAX_PIXELS
    made: list[str] = []
    try:
        try:
            with Image.open(path) as im:
                fmt = _FORMATS[mime]
                if im.format != fmt:
                    raise Refused(400, "bad_image", "the image does not decode as its type")
                frames = getattr(im, "n_frames", 1)
                if im.width * im.height * min(frames, MAX_FRAMES) > MAX_PIXELS:
                    raise Refused(413, "too_many_pixels", f"images may have {MAX_PIXELS} pixels")
                if frames > MAX_FRAMES:
                    raise Refused(
                        413, "too_many_pixels", f"animations may have {MAX_FRAMES} frames"
                    )
                icc = im.info.get("icc_profile")
                im.load()
                stored = _clean(im, fmt, frames, icc, directory, ImageOps)
                made.append(stored)
                width, height = _size_of(stored)
                thumb = _thumbnail(im, directory, ImageOps)
                made.append(thumb)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise Refused(413, "too_many_pixels", f"images may have {MAX_PIXELS} pixels") from None
        except (OSError, ValueError, SyntaxError, EOFError) as e:
            if isinstance(e, Refused):
                raise
            raise Refused(400, "bad_image", "the image does not decode") from None
    except BaseException:
        for p in made:
            os.unlink(p)
        raise
    return Processed(
        sniffing.IMAGE,
        mime,
        stored,
        os.path.getsize(stored),
        sha256_of(stored),
        width=width,
        height=height,
        thumb_path=thumb,
        thumb_size=os.path.getsize(thumb),
        thumb_sha256=sha256_of(thumb),
    )


def _new_file(directory: str) -> str:
    fd, path = tempfile.mkstemp(prefix="clean-", dir=directory)
    os.close(fd)
    return path


def _size_of(path: str) -> tuple[int, int]:
    from PIL import Image

    with Image.open(path) as im:
        return im.width, im.height


def _clean(im, fmt: str, frames: int, icc, directory: str, image_ops) -> str:
    """*im* re-encoded in *fmt* with no metadata but its ICC profile; the new file's path."""
    out = _new_file(directory)
    extra = {"icc_profile": icc} if icc else {}
    if frames > 1:  # animated GIF / WebP: every frame, no EXIF (Pillow writes none unasked)
        im.info = {k: v for k, v in im.info.items() if k in ("duration", "loop", "background")}
        im.save(out, fmt, save_all=True, **extra)
        return out
    upright = image_ops.exif_transpose(im)
    upright.info = {}
    if fmt == "JPEG":
        if upright.mode not in ("RGB", "L", "CMYK"):
            upright = upright.convert("RGB")
        upright.save(out, fmt, quality=88, **extra)
    elif fmt == "WEBP":
        upright.save(out, fmt, quality=85, **extra)
    else:
        upright.save(out, fmt, **extra)
    return out


def _thumbnail(im, directory: str, image_ops) -> str:
    """A WebP of the first frame, upright, at most :data:`THUMB` pixels a side."""
    im.seek(0)
    thumb = image_ops.exif_transpose(im.copy())
    thumb.info = {}
    if thumb.mode not in ("RGB", "RGBA"):
        thumb = thumb.convert("RGBA" if "transparency" in im.info or "A" in im.mode else "RGB")
    thumb.thumbnail((THUMB, THUMB))
    out = _new_file(directory)
    thumb.save(out, "WEBP", quality=75)
    return out
