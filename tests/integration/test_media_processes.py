"""Image work in worker processes (chatd.media.process.Processes): real forkserver
workers decode and re-encode a real photo; refusals cross the process boundary with
their HTTP status and code; the workers run niced behind the chat."""

from __future__ import annotations

import os

import pytest

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
    pid, nice = processes._executor().submit(_who).result()
    assert pid != os.getpid() and nice >= os.nice(0) + 10


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


def _who():
    return os.getpid(), os.nice(0)
