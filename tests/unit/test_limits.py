"""Unit tests of the pure abuse-limit and admission logic: token buckets, gate, tokens."""

import time

import jwt
import pytest

from chatd.auth import AuthError, Identity, TokenVerifier, bearer_token
from chatd.gate import Gate, Refused, normalize_origin
from chatd.limits import ConnectionCounter, RateLimiter, Strikes, TokenBucket


def test_token_bucket_refills_at_its_rate_up_to_the_burst():
    """A bucket allows its burst at once, then `rate` per second."""
    b = TokenBucket(rate=2, burst=3, now=0)
    assert [b.take(0) for _ in range(4)] == [True, True, True, False]
    assert b.take(0.4) is False
    assert b.take(0.5) is True  # 0.5 s * 2/s = one token
    assert [b.take(100) for _ in range(4)] == [True, True, True, False]


def test_strikes_slide_out_of_the_window():
    """More than `limit` strikes within the window is abuse; old strikes expire."""
    s = Strikes(limit=3, window=10)
    assert [s.strike(t) for t in (0, 1, 2)] == [False, False, False]
    assert s.strike(3) is True
    s2 = Strikes(limit=3, window=10)
    assert not any(s2.strike(t) for t in (0, 5, 11, 16, 22, 27))


def test_rate_limiter_per_user_bucket_is_shared_and_zero_is_unlimited():
    """Two connections of one user share the user bucket; rate 0 never limits."""
    rl = RateLimiter(rate=100, burst=100, user_rate=1, user_burst=2, strikes=2)
    a, sa = rl.connection(0)
    b, sb = rl.connection(0)
    rl.add_user("u", 0)
    rl.add_user("u", 0)
    assert rl.check(a, sa, "u", 0) == "ok"
    assert rl.check(b, sb, "u", 0) == "ok"
    assert rl.check(a, sa, "u", 0) == "limited"
    assert rl.check(a, sa, "u", 0) == "limited"
    assert rl.check(a, sa, "u", 0) == "abuse"
    rl.remove_user("u")
    rl.remove_user("u")
    assert rl._users == {}
    free = RateLimiter(rate=0, burst=0, user_rate=0, user_burst=0)
    c, sc = free.connection(0)
    free.add_user("x", 0)
    assert all(free.check(c, sc, "x", 0) == "ok" for _ in range(10000))


def test_connection_counter():
    """A counter admits up to its maximum per key; 0 means unlimited."""
    c = ConnectionCounter(2)
    assert c.acquire("ip") and c.acquire("ip") and not c.acquire("ip")
    c.release("ip")
    assert c.acquire("ip")
    assert all(ConnectionCounter(0).acquire("k") for _ in range(100))


def test_origins():
    """Origins are compared normalised; no Origin header is always allowed."""
    assert normalize_origin("HTTPS://Chat.Example.com:443") == "https://chat.example.com"
    assert normalize_origin("http://localhost:8080") == "http://localhost:8080"
    g = Gate(allowed_origins=["https://chat.example.com", "https://*.example.org"])
    assert g.origin_allowed(None)
    assert g.origin_allowed("https://chat.example.com")
    assert g.origin_allowed("https://chat.example.com:443")
    assert g.origin_allowed("https://a.b.example.org")
    assert not g.origin_allowed("http://chat.example.com")
    assert not g.origin_allowed("https://evil.com")
    assert not g.origin_allowed("https://example.org.evil.com")
    assert Gate().origin_allowed("https://anything.example")


def test_gate_modes_and_caps():
    """off ignores tokens, optional verifies them, required demands one; caps give 429."""
    v = TokenVerifier(secret="k")
    good = v.issue("alice", "Alice")
    assert Gate("off").admit("1.1.1.1", None, good) is None
    g = Gate("optional", v, max_per_ip=2, max_per_user=1)
    assert g.admit("1.1.1.1", None, None) is None
    assert g.admit("1.1.1.1", None, good).user == "alice"
    with pytest.raises(Refused) as e:
        g.admit("1.1.1.1", None, None)
    assert e.value.status == 429
    g.release("1.1.1.1", None)
    with pytest.raises(Refused) as e:
        g.admit("1.1.1.1", None, good)
    assert e.value.status == 429 and "user" in e.value.reason
    with pytest.raises(Refused) as e:
        g.admit("2.2.2.2", None, "not-a-token")
    assert e.value.status == 401
    with pytest.raises(Refused) as e:
        Gate("required", v).admit("3.3.3.3", None, None)
    assert e.value.status == 401
    with pytest.raises(Refused) as e:
        Gate(allowed_origins=["https://a.com"]).admit("4.4.4.4", "https://b.com", None)
    assert e.value.status == 403


def test_trusted_proxy_forwarded_for():
    """X-Forwarded-For is believed only from a trusted proxy, and only its last entry."""
    g = Gate(trusted_proxies=["10.0.0.1"])
    assert g.client_ip("10.0.0.1", "6.6.6.6, 1.2.3.4") == "1.2.3.4"
    assert g.client_ip("9.9.9.9", "1.2.3.4") == "9.9.9.9"
    assert g.client_ip("10.0.0.1", None) == "10.0.0.1"


def test_tokens():
    """Claims become an Identity; expired, forged, alg none and bad subs are refused."""
    v = TokenVerifier(secret="s3cret")
    ident = v.verify(v.issue("u1", "Ünïcode\x07 name", ttl=60))
    assert (ident.user, ident.name) == ("u1", "Ünïcode name")
    assert ident.exp is not None
    now = time.time()
    expired = jwt.encode({"sub": "u1", "exp": int(now) - 60}, "s3cret", algorithm="HS256")
    forged = jwt.encode({"sub": "u1"}, "wrong", algorithm="HS256")
    none = jwt.encode({"sub": "u1"}, None, algorithm="none")
    tilde = jwt.encode({"sub": "~u1"}, "s3cret", algorithm="HS256")
    nosub = jwt.encode({"name": "x"}, "s3cret", algorithm="HS256")
    badrooms = jwt.encode({"sub": "u", "rooms": "a"}, "s3cret", algorithm="HS256")
    for token, why in [
        (expired, "expired"),
        (forged, "invalid"),
        (none, "invalid"),
        (tilde, "sub"),
        (nosub, "invalid"),
        (badrooms, "rooms"),
    ]:
        with pytest.raises(AuthError) as e:
            v.verify(token)
        assert why in e.value.reason
    rooms = v.verify(jwt.encode({"sub": "u", "rooms": ["a", "team-*"]}, "s3cret"))
    assert rooms.may_join("a") and rooms.may_join("team-x") and not rooms.may_join("b")
    assert Identity("u", "u").may_join("anything")
    with pytest.raises(ValueError):
        TokenVerifier(secret="x", algorithm="none")


def test_public_key_tokens(tmp_path):
    """RS256 and ES256 tokens verify against a public key file; the type picks the alg."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    for key, alg in [
        (rsa.generate_private_key(65537, 2048), "RS256"),
        (ec.generate_private_key(ec.SECP256R1()), "ES256"),
    ]:
        pem = key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        path = tmp_path / f"{alg}.pem"
        path.write_bytes(pem)
        v = TokenVerifier(public_key_file=str(path))
        assert v.algorithms == [alg] and not v.can_issue
        token = jwt.encode({"sub": "k"}, key, algorithm=alg)
        assert v.verify(token).user == "k"
        # a token signed with HS256 using the public key as the secret is refused
        with pytest.raises(AuthError):
            v.verify(jwt.encode({"sub": "k"}, "x", algorithm="HS256"))


def test_bearer_header():
    """Only `Bearer <token>` headers yield a token."""
    assert bearer_token("Bearer abc") == "abc"
    assert bearer_token(b"bearer  abc ") == "abc"
    assert bearer_token("Basic abc") is None
    assert bearer_token("Bearer ") is None
    assert bearer_token(None) is None
