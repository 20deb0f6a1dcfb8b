"""Image work in worker processes (chatd.media.process.Processes): real forkserver
workers decode and re-encode a real photo; refusals cross the process boundary with
their HTTP status and code; the workers run niced behind the chat."""

from __future__ import annotations

import os
import signal
import sys

import pytest
import pytest_twisted

from chatd.media.process import Limits, Processes, Refused
from tests import media_samples

LIMITS = Limits(image=20 << 20, voice=2 << 20, file=50 << 20)


@pytest.fixture
def processes():
    p = Processes(1)
    yield p
    p.close()


def test_a_photo_is_inspected_in_a_worker_process(tmp_path, processes):
    src = tmp_path / "gps.jpg"
    src.write_bytes(media_samples.jpeg_with_gps())
    done = processes.call(str(src), str(tmp_path), LIMITS)
    assert not processes.broken
    assert (done.kind, done.mime, done.width, done.height) == ("image", "image/jpeg", 800, 600)
    assert media_samples.GPS_MARK not in open(done.path, "rb").read()  # EXIF gone
    assert done.thumb_path and os.path.getsize(done.thumb_path) == done.thumb_size
    pid, nice, policy = processes._executor().submit(_who).result()
    assert pid != os.getpid() and nice >= os.nice(0) + 10
    if hasattr(os, "SCHED_IDLE"):
        assert policy == os.SCHED_IDLE


def test_a_refusal_comes_back_with_its_status_and_code(tmp_path, processes):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(media_samples.png_bomb())
    with pytest.raises(Refused) as refused:
        processes.call(str(bomb), str(tmp_path), LIMITS)
    assert (refused.value.status, refused.value.code) == (413, "too_many_pixels")
    empty = tmp_path / "empty.bin"
    empty.write_bytes(b"")
    with pytest.raises(Refused) as refused:
        processes.call(str(empty), str(tmp_path), LIMITS)
    assert (refused.value.status, refused.value.code) == (400, "bad_request")
    assert not processes.broken


def test_no_workers_means_the_calling_thread(tmp_path):
    src = tmp_path / "a.png"
    src.write_bytes(media_samples.image("PNG", (32, 16)))
    p = Processes(0)
    assert p.call(str(src), str(tmp_path), LIMITS).width == 32 and p._pool is None


def test_a_worker_dies_with_the_forkserver_and_holds_no_alive_pipe(processes):
    """A worker asked Linux for SIGKILL when its parent (the forkserver) exits, and
    closed its copy of the forkserver's alive pipe (so the forkserver sees EOF once
    this process is gone: tests/e2e/test_media.py kills a chatd to see it)."""
    sig, alive_fd, ppid = processes._executor().submit(_death_signal).result()
    assert alive_fd is None and ppid != os.getpid()  # the forkserver's child, not ours
    if sys.platform.startswith("linux"):
        assert sig == signal.SIGKILL


def _death_signal():
    import ctypes
    from multiprocessing import forkserver

    sig = ctypes.c_int(0)
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None).prctl(2, ctypes.byref(sig), 0, 0, 0)  # PR_GET_PDEATHSIG
    return sig.value, forkserver._forkserver._forkserver_alive_fd, os.getppid()


def _who():
    return os.getpid(), os.nice(0), getattr(os, "sched_getscheduler", lambda _: None)(0)


WARM = """
import multiprocessing.forkserver as fs, os
from chatd.media.process import Processes
p = Processes(1)
p.warm().join()
pid = fs._forkserver._forkserver_pid
print(pid != os.getpid(), os.getpriority(os.PRIO_PROCESS, pid), os.sched_getscheduler(pid))
p.close()
"""


def test_warm_starts_the_forkserver_behind_the_chat():
    """Processes.warm (Media with warm=True, as chatd runs it) starts the forkserver
    from a thread that lowered its own priority: the forkserver (a Python importing
    Pillow) runs niced and SCHED_IDLE, while the calling process keeps its own."""
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-c", WARM], capture_output=True, text=True, timeout=60, check=True
    ).stdout.split()
    assert out[0] == "True" and int(out[1]) >= os.nice(0) + 10
    if hasattr(os, "SCHED_IDLE"):
        assert int(out[2]) == os.SCHED_IDLE


def _my_niceness():
    import threading

    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


@pytest_twisted.ensureDeferred
async def test_the_media_threads_run_behind_the_reactor(tmp_path):
    """chatd's own media threads -- the pool (hashing, copying into the store, the
    media SQLite) and the writer of upload bodies -- lower their own priority by
    THREAD_NICENESS (per thread on Linux), while the reactor's thread keeps its own."""
    from twisted.internet import defer, reactor

    from chatd.auth import TokenVerifier
    from chatd.media.process import THREAD_NICENESS
    from chatd.media.signing import Signer
    from chatd.media.store import LocalStore
    from chatd.media.web import Media

    mine = _my_niceness()
    media = Media(
        LocalStore(str(tmp_path)),
        str(tmp_path),
        Signer(b"k" * 32),
        TokenVerifier(secret="s" * 32),
        LIMITS,
        reactor=reactor,
    )
    media.startService()
    try:
        in_pool = await media.run(_my_niceness)
        written = defer.Deferred()
        media.writer.submit(lambda: reactor.callFromThread(written.callback, _my_niceness()))
        in_writer = await written
    finally:
        media.stopService()
    assert THREAD_NICENESS == 10
    assert in_pool == in_writer == min(mine + THREAD_NICENESS, 19)
    assert _my_niceness() == mine
