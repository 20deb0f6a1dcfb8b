"""Admission at the WebSocket handshake: origins, tokens, auth mode, connection caps.

:class:`Gate` decides, before a connection is accepted, who it is and whether
it may connect at all. Refusals carry an HTTP status (the handshake answers
with it): 401 for a missing or bad token, 403 for a foreign origin, 429 for
too many connections. Pure logic: the protocol passes in what the request
said, and the gate keeps only counters.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from chatd.auth import AuthError, Identity, header_token
from chatd.limits import ConnectionCounter

AUTH_MODES = ("off", "optional", "required")
_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


class Refused(Exception):
    """The handshake is refused with HTTP *status* and a short *reason*."""

    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status = status
        self.reason = reason


def normalize_origin(origin: str) -> str:
    """``scheme://host[:port]`` in lower case, without the scheme's default port."""
    origin = origin.strip().lower()
    if origin in ("*", "null"):
        return origin
    parts = urlsplit(origin)
    scheme = parts.scheme
    host = parts.hostname or ""
    try:
        port = parts.port
    except ValueError:
        port = None
    if port is None or port == _DEFAULT_PORTS.get(scheme):
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


class Gate:
    """Admits or refuses connections; counts them per IP address and per user."""

    def __init__(
        self,
        auth: str = "off",
        verifier=None,
        allowed_origins=(),
        max_per_ip: int = 0,
        max_per_user: int = 0,
        trusted_proxies=(),
    ):
        if auth not in AUTH_MODES:
            raise ValueError(f"auth must be one of {AUTH_MODES}")
        if auth != "off" and verifier is None:
            raise ValueError(f"--auth {auth} needs a JWT secret or public key")
        self.auth = auth
        self.verifier = verifier
        self.allowed_origins = [normalize_origin(o) for o in allowed_origins]
        self.trusted_proxies = frozenset(trusted_proxies)
        self.per_ip = ConnectionCounter(max_per_ip)
        self.per_user = ConnectionCounter(max_per_user)

    def update_from(self, other: Gate) -> None:
        """Take *other*'s rules (origins, proxies, caps), keeping the live counts."""
        self.allowed_origins = other.allowed_origins
        self.trusted_proxies = other.trusted_proxies
        self.per_ip.maximum = other.per_ip.maximum
        self.per_user.maximum = other.per_user.maximum

    def client_ip(self, peer_ip: str, forwarded_for: str | None) -> str:
        """The client's address: the peer's, or, behind a trusted proxy, the last
        address that proxy put in X-Forwarded-For."""
        if forwarded_for and peer_ip in self.trusted_proxies:
            last = forwarded_for.split(",")[-1].strip()
            if last:
                return last
        return peer_ip

    def origin_allowed(self, origin: str | None) -> bool:
        """No Origin header (mini-programs, native and server clients) is always allowed;
        a browser's Origin must match the allowlist when one is configured."""
        if origin is None or not self.allowed_origins:
            return True
        origin = normalize_origin(origin)
        for allowed in self.allowed_origins:
            if allowed in ("*", origin):
                return True
            scheme, _, host = allowed.partition("://")
            if host.startswith("*."):
                o_scheme, _, o_host = origin.partition("://")
                if o_scheme == scheme and o_host.endswith(host[1:]):
                    return True
        return False

    def token_from(self, query_token: str | None, authorization: str | None) -> str | None:
        """The token a handshake carries: ``?token=``, else the ``Authorization``
        header's. Under ``--auth off`` tokens are ignored (None); otherwise a
        header chatd cannot read raises :class:`Refused` 401."""
        if self.auth == "off":
            return None
        if query_token is not None:
            return query_token
        try:
            return header_token(authorization)
        except AuthError as e:
            raise Refused(401, e.reason) from None

    def admit(self, ip: str, origin: str | None, token: str | None) -> Identity | None:
        """Check a handshake; returns the token's identity (None: anonymous).

        Raises :class:`Refused`. A connection admitted here must be given
        back with :meth:`release` when it closes.
        """
        if not self.origin_allowed(origin):
            raise Refused(403, "origin not allowed")
        identity = None
        if token is not None and self.auth != "off":
            try:
                identity = self.verifier.verify(token)
            except AuthError as e:
                raise Refused(401, e.reason) from None
        elif self.auth == "required":
            raise Refused(401, "a token is required (?token= or Authorization: Bearer)")
        if not self.per_ip.acquire(ip):
            raise Refused(429, "too many connections from this address")
        if identity is not None and not self.per_user.acquire(identity.user):
            self.per_ip.release(ip)
            raise Refused(429, "too many connections for this user")
        return identity

    def release(self, ip: str, identity: Identity | None) -> None:
        """Give back what :meth:`admit` counted."""
        self.per_ip.release(ip)
        if identity is not None:
            self.per_user.release(identity.user)
