"""The JWT secret and token maker of the auth tests."""

from __future__ import annotations

from chatd.auth import TokenVerifier

SECRET = "a-test-secret-that-is-32-bytes-long!"


def token(sub, **claims):
    return TokenVerifier(secret=SECRET).issue(sub, claims.pop("name", None), **claims)
