"""Media: the sweep removes unattached uploads after the grace period (injected clock),
and bytes shared by identical uploads go only with the last of them."""

import io
import os

import pytest_twisted
from twisted.internet import reactor, task

from chatd.auth import Identity, TokenVerifier
from chatd.media.process import Limits
from chatd.media.signing import Signer
from chatd.media.store import LocalStore
from chatd.media.sweep import INTERVAL
from chatd.media.web import Media
from tests import media_samples
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
