"""Media: the sweep removes unattached uploads after the grace period (injected clock),
and bytes shared by identical uploads go only with the last of them."""

import hashlib
import io
import os
import time

import pytest_twisted
from twisted.internet import reactor, task, threads

from chatd.auth import Identity, TokenVerifier
from chatd.media.process import Limits
from chatd.media.signing import Signer
from chatd.media.store import LocalStore
from chatd.media.sweep import INTERVAL, RETIRED_GRACE, RETIRED_INTERVAL, TEMPORARY_GRACE
from chatd.media.web import Media
from tests import media_samples
from tests.support.media import object_path
from tests.wsclient import wait_for


def _upload_form(data):
    body, ctype = media_samples.form(data, "x.png", "image/png")
    return io.BytesIO(body), ctype


def _objects(root):
    return sorted(f for _, _, files in os.walk(root / "objects") for f in files)


@pytest_twisted.ensureDeferred
async def test_sweep_after_grace_period(tmp_path):
    clock = task.Clock()
    clock.advance(1_000_000)
    media = Media(
        LocalStore(str(tmp_path)),
        str(tmp_path),
        Signer(b"k" * 32),
        TokenVerifier(secret="s" * 32),
        Limits(1 << 20, 1 << 20, 1 << 20),
        grace=3600.0,
        reactor=reactor,
        clock=clock,
    )
    assert await media.sweep() == 0 and not (tmp_path / "media.sqlite3").exists()
    media.startService()
    try:
        alice = Identity("alice", "alice")
        same = media_samples.image("PNG", (50, 50))
        first = await media.upload(alice, *_upload_form(same))
        second = await media.upload(alice, *_upload_form(same))
        clock.advance(3000)
        late = await media.upload(alice, *_upload_form(media_samples.image("GIF", (30, 30))))
        assert len(_objects(tmp_path)) == 4  # the PNG and its thumbnail once, the GIF's two
        clock.advance(600)  # the first two are an hour old: the LoopingCall's sweep runs
        assert INTERVAL == 600.0
        await wait_for(lambda: len(_objects(tmp_path)) == 2, what="the periodic sweep")
        assert await media._row(first["media_id"]) is None
        assert await media._row(second["media_id"]) is None
        assert await media._row(late["media_id"]) is not None
        # from here on only the explicit sweep: the periodic one would also fire at
        # the next advance and race it for the one upload left
        media._sweeper.stop()
        clock.advance(3000)
        assert await media.sweep() == 1 and _objects(tmp_path) == []
    finally:
        media.stopService()


def _media(store, directory, clock):
    return Media(
        store,
        str(directory),
        Signer(b"k" * 32),
        TokenVerifier(secret="s" * 32),
        Limits(1 << 20, 1 << 20, 1 << 20),
        grace=86400.0,  # the uploads stay: only the retired objects are swept here
        reactor=reactor,
        clock=clock,
    )


@pytest_twisted.ensureDeferred
async def test_retired_objects_left_by_a_killed_removal_are_settled(media_store, tmp_path):
    """A chatd killed between retiring an object and purging (or restoring) it left
    it behind: after RETIRED_GRACE the next start (and the sweep, every
    RETIRED_INTERVAL) puts back the one a row still uses and purges the one nobody
    uses; younger ones are left to the removal that may still own them. On local
    disk and on S3."""
    clock = task.Clock()
    # retired objects are dated by the store's clock (S3: in whole seconds, rounded down)
    clock.advance(time.time() - 2)
    media = _media(media_store, tmp_path / "m", clock)
    media.startService()
    try:
        alice = Identity("alice", "alice")
        kept = await media.upload(alice, *_upload_form(media_samples.image("PNG", (50, 50))))
        gone = await media.upload(alice, *_upload_form(media_samples.image("GIF", (30, 30))))
        kept_row = await media._row(kept["media_id"])
        # what the killed removals did: the bytes of a row removed meanwhile (an
        # identical upload's row, kept_row, still uses them) and of one nobody uses
        left = [media_store.retire(kept_row["sha256"])]
        keys = await media.meta.remove(gone["media_id"])
        left += [media_store.retire(key) for key in keys]
        assert len(keys) == 2 and sorted(t for _, t, _ in media_store.retired()) == sorted(left)
        assert RETIRED_INTERVAL == RETIRED_GRACE
        clock.advance(RETIRED_INTERVAL)  # the sweep looks again: retired after the clock's T0
        await media.sweep()  # too young: maybe a running removal's
        assert sorted(t for _, t, _ in media_store.retired()) == sorted(left)
        assert not media_store.exists(kept_row["sha256"])
    finally:
        media.stopService()
    clock.advance(120)
    restarted = _media(media_store, tmp_path / "m", clock)
    restarted.startService()  # the start settles them, before any periodic sweep
    try:
        await wait_for(lambda: not media_store.retired(), what="the start's retired sweep")
        assert media_store.exists(kept_row["sha256"]) and media_store.exists(
            kept_row["thumb_sha256"]
        )
        assert not any(media_store.exists(key) for key in keys)
        status = await restarted.owned(alice, kept["media_id"])
        assert status["media_id"] == kept["media_id"]
    finally:
        restarted.stopService()


@pytest_twisted.ensureDeferred
async def test_temporary_files_a_killed_upload_left_go_at_start(tmp_path):
    """Files in ``<media-dir>/tmp`` not written for TEMPORARY_GRACE (a body and a
    cleaned image of an upload whose chatd was killed) are removed when the service
    starts; a fresh one (an upload arriving) stays."""
    tmp = tmp_path / "m" / "tmp"
    tmp.mkdir(parents=True)
    now = time.time()
    for name in ("upload-cut", "clean-x"):
        (tmp / name).write_bytes(b"half a body")
        os.utime(tmp / name, (now - TEMPORARY_GRACE - 5, now - TEMPORARY_GRACE - 5))
    (tmp / "upload-arriving").write_bytes(b"a body")
    clock = task.Clock()
    clock.advance(now)
    media = _media(LocalStore(str(tmp_path / "m")), tmp_path / "m", clock)
    media.startService()
    try:
        await wait_for(lambda: len(os.listdir(tmp)) == 1, what="the start's temporary-file sweep")
        assert os.listdir(tmp) == ["upload-arriving"]
    finally:
        media.stopService()


def _parts(root):
    return sorted(
        os.path.join(base, f)
        for base, _, files in os.walk(root / "objects")
        for f in files
        if ".part-" in f
    )


@pytest_twisted.ensureDeferred
async def test_the_start_removes_dead_parts_and_never_a_running_puts(tmp_path):
    """At start (no ``--media-shared``) every part file is a dead put's and goes,
    however young, except one a put of this process is writing: here a put held by
    its source (a FIFO no byte came through yet) in another thread. Once the FIFO
    gives its bytes, that put completes (the object stored, no part left)."""
    root = tmp_path / "m"
    store = LocalStore(str(root))
    source = tmp_path / "held-source"
    os.mkfifo(source)
    data = b"the bytes of a slow put"
    key = hashlib.sha256(data).hexdigest()
    held = threads.deferToThread(store.put, key, str(source))
    try:
        await wait_for(lambda: _parts(root), what="the held put's part file")
        [running] = _parts(root)
        dead = f"{object_path(root, 'd' * 64)}.part-0123456789ab"
        os.makedirs(os.path.dirname(dead))
        with open(dead, "wb") as f:
            f.write(b"half of a put a kill stopped")  # written just now: young
        clock = task.Clock()
        clock.advance(time.time())
        media = _media(store, root, clock)
        media.startService()
        try:
            await wait_for(lambda: not os.path.exists(dead), what="the start's part sweep")
            assert _parts(root) == [running] and not held.called
            assert await media._sweep_parts(store.leftovers()[1], clock.seconds()) == 0
        finally:
            media.stopService()
    finally:
        with open(source, "wb") as f:  # let the put go on, whatever happened
            f.write(data)
        await held
    assert store.get(key) == data and _parts(root) == []
