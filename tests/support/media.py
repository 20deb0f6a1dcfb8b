"""Media for the realm tests: the real :class:`chatd.media.web.Media` on a local
directory, its blocking parts run in place (no thread pool), time from the chat's Clock."""

from __future__ import annotations

import io
import os

from twisted.internet.defer import maybeDeferred

from chatd.auth import Identity, TokenVerifier
from chatd.media.process import Limits
from chatd.media.signing import Signer
from chatd.media.store import LocalStore
from chatd.media.web import Media
from tests import media_samples
from tests.support.realm import fired

URL_KEY = b"k" * 32
TTL = 3600.0
GRACE = 3600.0


def object_path(directory, key: str) -> str:
    """Where a LocalStore in *directory* keeps *key*: ``objects/ab/cd/<key>`` (docs/api.md)."""
    return os.path.join(str(directory), "objects", key[:2], key[2:4], key)


def in_place(f, *args):
    """Run ``f(*args)`` now (instead of in the media thread pool): a fired Deferred."""
    return maybeDeferred(f, *args)


def media_for(chat, directory, shared=False) -> Media:
    """A Media in *directory*, attached to *chat* (its clock signs and sweeps);
    *shared*: as with ``--media-shared``."""
    media = Media(
        LocalStore(str(directory)),
        str(directory),
        Signer(URL_KEY, TTL),
        TokenVerifier(secret="s" * 32),
        Limits(1 << 20, 1 << 20, 1 << 20),
        grace=GRACE,
        reactor=chat.clock,
        clock=chat.clock,
        run=in_place,
        shared=shared,
    )
    media.attach(chat)
    return media


def upload(media: Media, user: str, data: bytes | None = None, filename="pic.png") -> dict:
    """*user* uploads *data* (a 40x30 PNG by default): the upload's answer."""
    if data is None:
        data = media_samples.image("PNG", (40, 30))
    body, ctype = media_samples.form(data, filename, "image/png")
    return fired(media.upload(Identity(user, user), io.BytesIO(body), ctype))
