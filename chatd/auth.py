"""Identities: verifying connection tokens (JWT) and issuing them after a login.

Tokens are JWTs: HS256 with a shared secret, or RS256/ES256 verified with a
public key file. Claims used:

``sub``   the user id (required; 1-128 characters, no control characters, not
          starting with ``~``, which marks anonymous users)
``name``  the display name (optional; defaults to ``sub``)
``exp``   expiry (honoured when present; :class:`TokenVerifier` can require it)
``rooms`` optional list of rooms the user may join; an entry ending in ``*``
          is a prefix (``"team-*"``)
``mod``   ``true``: a global moderator (also ``"roles": ["moderator"]``; see
          :mod:`chatd.modrules`): mutes, bans and recalls in every conversation

This module does no I/O besides reading key files at construction.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

import jwt

from chatd import modrules

SUB_RULE = re.compile(r"[^\x00-\x1f\x7f\ud800-\udfff~][^\x00-\x1f\x7f\ud800-\udfff]{0,127}")
#: control characters and lone surrogates (which cannot be encoded) are dropped from names
_CONTROL = re.compile(r"[\x00-\x1f\x7f\ud800-\udfff]")
ANONYMOUS_PREFIX = "~"


class AuthError(Exception):
    """A token was refused; ``reason`` says why (never the token itself)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a connection is: ``user`` (id), ``name`` (display), allowed ``rooms``."""

    user: str
    name: str
    rooms: tuple[str, ...] | None = None
    exp: float | None = None
    #: a global moderator (the token's ``"mod": true`` or ``"roles": ["moderator"]``,
    #: chatd.modrules.is_moderator)
    moderator: bool = False

    def may_join(self, room: str) -> bool:
        """True when the token's ``rooms`` claim (if any) admits *room*."""
        if self.rooms is None:
            return True
        for allowed in self.rooms:
            if allowed == room or (allowed.endswith("*") and room.startswith(allowed[:-1])):
                return True
        return False


class TokenVerifier:
    """Verifies (and, with a shared secret, issues) chatd access tokens."""

    def __init__(
        self,
        secret: str | None = None,
        public_key_file: str | None = None,
        algorithm: str | None = None,
        audience: str | None = None,
        issuer: str | None = None,
        require_exp: bool = False,
        leeway: float = 5.0,
    ):
        if (secret is None) == (public_key_file is None):
            raise ValueError("give exactly one of a JWT secret or a public key file")
        if secret is not None:
            self.key = secret
            self.algorithms = [algorithm or "HS256"]
        else:
            with open(public_key_file, "rb") as f:
                pem = f.read()
            self.key = pem
            if algorithm is None:
                algorithm = "ES256" if b"BEGIN EC" in pem or _is_ec(pem) else "RS256"
            self.algorithms = [algorithm]
        if self.algorithms[0].lower() == "none":
            raise ValueError("alg 'none' is never accepted")
        self.secret = secret
        self.audience = audience
        self.issuer = issuer
        self.require_exp = require_exp
        self.leeway = leeway

    @property
    def can_issue(self) -> bool:
        """True when tokens can be signed here (a shared secret is configured)."""
        return self.secret is not None

    def verify(self, token: str, now: float | None = None) -> Identity:
        """The identity in *token*, or :class:`AuthError` saying why it was refused."""
        options = {"require": ["sub"] + (["exp"] if self.require_exp else [])}
        try:
            claims = jwt.decode(
                token,
                self.key,
                algorithms=self.algorithms,
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway,
                options=options,
            )
        except jwt.ExpiredSignatureError:
            raise AuthError("token expired") from None
        except jwt.InvalidTokenError as e:
            raise AuthError(f"invalid token: {type(e).__name__}") from None
        sub = claims.get("sub")
        if type(sub) is not str or not SUB_RULE.fullmatch(sub):
            raise AuthError("invalid token: bad sub claim")
        name = claims.get("name")
        if type(name) is not str or not _CONTROL.sub("", name).strip():
            name = sub
        name = _CONTROL.sub("", name).strip()[:64]
        rooms = claims.get("rooms")
        if rooms is not None:
            if type(rooms) is not list or not all(type(r) is str for r in rooms):
                raise AuthError("invalid token: rooms claim must be a list of strings")
            rooms = tuple(rooms)
        exp = claims.get("exp")
        exp = float(exp) if exp is not None else None
        return Identity(sub, name, rooms, exp, modrules.is_moderator(claims))

    def issue(self, sub: str, name: str | None = None, ttl: float = 86400, now=None) -> str:
        """Sign a token for *sub* valid for *ttl* seconds (needs a shared secret)."""
        if not self.can_issue:
            raise AuthError("this server has no secret to sign tokens with")
        now = time.time() if now is None else now
        claims = {"sub": sub, "iat": int(now), "exp": int(now + ttl)}
        if name:
            claims["name"] = name
        if self.audience:
            claims["aud"] = self.audience
        if self.issuer:
            claims["iss"] = self.issuer
        return jwt.encode(claims, self.secret, algorithm=self.algorithms[0])


def _is_ec(pem: bytes) -> bool:
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    try:
        return isinstance(load_pem_public_key(pem), ec.EllipticCurvePublicKey)
    except ValueError:
        return False


def bearer_token(authorization: bytes | str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header value, if any."""
    if not authorization:
        return None
    if isinstance(authorization, bytes):
        authorization = authorization.decode("latin-1")
    scheme, _, value = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def header_token(authorization: bytes | str | None) -> str | None:
    """The token of an ``Authorization`` header: None without the header.

    Raises :class:`AuthError` for a header that is not ``Bearer <token>`` (another
    scheme, a tab after ``Bearer``, no token): a credential chatd cannot read is
    refused like a bad token, never taken as anonymous.
    """
    if authorization is None:
        return None
    token = bearer_token(authorization)
    if token is None:
        raise AuthError("unrecognised Authorization header: send 'Authorization: Bearer <token>'")
    return token


def bearer_identity(verifier, authorization: bytes | str | None) -> Identity:
    """The :class:`Identity` of an ``Authorization: Bearer <token>`` header (HTTP
    endpoints for users: media uploads, push subscriptions); :class:`AuthError`
    without a header, with an unreadable one or with a token *verifier* refuses."""
    token = header_token(authorization)
    if token is None:
        raise AuthError("a token is required: Authorization: Bearer <token>")
    return verifier.verify(token)
