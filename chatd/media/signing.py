"""Signed, expiring media URLs: ``/media/<id>?e=<expires>&s=<signature>``.

The signature is HMAC-SHA256 with the server's URL key over
``<id>\\n<variant>\\n<expires>`` (*variant* is ``""`` for the file, ``thumb``
for its thumbnail), URL-safe base64 without padding. The key is
``--media-url-key``, or derived from ``--jwt-secret``
(HMAC-SHA256(secret, "chatd media url key")), so every node of a cluster
with the same secret signs alike. Pure: the time is passed in.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

#: seconds a minted URL is valid (``--media-url-ttl``)
DEFAULT_TTL = 3600.0


def derive_key(secret: str) -> bytes:
    """The URL key derived from a JWT secret."""
    return hmac.new(secret.encode(), b"chatd media url key", hashlib.sha256).digest()


class Signer:
    """Mints and checks media URL signatures with *key*."""

    def __init__(self, key: bytes, ttl: float = DEFAULT_TTL):
        self.key = key
        self.ttl = ttl

    def signature(self, media_id: str, variant: str, expires: int) -> str:
        mac = hmac.new(self.key, f"{media_id}\n{variant}\n{expires}".encode(), hashlib.sha256)
        return base64.urlsafe_b64encode(mac.digest()).rstrip(b"=").decode()

    def url(self, media_id: str, variant: str, now: float) -> str:
        """A path with query valid for :attr:`ttl` seconds from *now*."""
        expires = int(now + self.ttl)
        suffix = f"/{variant}" if variant else ""
        sig = self.signature(media_id, variant, expires)
        return f"/media/{media_id}{suffix}?e={expires}&s={sig}"

    def check(self, media_id: str, variant: str, expires: str | None, sig: str | None, now: float):
        """None when the signature is good and unexpired, else the reason (a string)."""
        if not expires or not sig:
            return "a signed URL is required (e= and s=)"
        if not expires.isdigit() or len(expires) > 12:
            return "bad signature"
        good = self.signature(media_id, variant, int(expires))
        if not hmac.compare_digest(good.encode(), sig.encode("utf-8", "replace")):
            return "bad signature"
        if int(expires) < now:
            return "the URL has expired"
        return None
