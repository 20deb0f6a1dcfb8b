"""Identity and abuse limits over real sockets: tokens, multi-device users, limits, timeouts."""

import jwt
import pytest
import pytest_twisted
from twisted.internet import defer, reactor

from tests.support.auth import SECRET, token
from tests.wsclient import Client, deferLater


@pytest_twisted.inlineCallbacks
def test_token_in_query_or_header_sets_the_identity(server_factory):
    """?token= and Authorization: Bearer both authenticate; from/presence use the token's sub."""
    srv = yield server_factory("--jwt-secret", SECRET)
    a = yield Client.v1(srv.port, token=token("u-alice", name="Alice"))
    b = yield Client.connect(
        srv.port,
        "/ws",
        protocols=["chatd.v1"],
        headers={"Authorization": "Bearer " + token("u-bob", name="Bob")},
    )
    b.welcome = yield b.expect("welcome")
    assert (a.welcome["user"], a.welcome["name"], a.welcome["authenticated"]) == (
        "u-alice",
        "Alice",
        True,
    )
    assert "resume" not in a.welcome
    assert b.welcome["user"] == "u-bob"
    yield a.join("r")
    yield b.join("r")
    yield a.expect("presence", user="u-bob")
    b.send(type="send", room="r", text="hi", id="1")
    m = yield a.expect("message", text="hi")
    assert (m["from"], m["name"]) == ("u-bob", "Bob")
    # optional mode: anonymous users still connect, with a "~" user id
    anon = yield Client.v1(srv.port, "alice")
    assert (anon.welcome["user"], anon.welcome["name"]) == ("~alice", "alice")
    for c in (a, b, anon):
        yield c.close()


@pytest_twisted.inlineCallbacks
def test_required_auth_refuses_missing_and_bad_tokens(server_factory):
    """--auth required: no token or a bad one fails the handshake; relay clients need one too."""
    srv = yield server_factory("--jwt-secret", SECRET, "--auth", "required")
    for params in ({}, {"token": "garbage"}, {"token": jwt.encode({"sub": "x"}, "wrong-key")}):
        with pytest.raises(ConnectionError):
            yield Client.connect(srv.port, "/ws", protocols=["chatd.v1"], **params)
        with pytest.raises(ConnectionError):
            yield Client.connect(srv.port, **params)
    ok = yield Client.connect(srv.port, token=token("relay-user"))
    yield ok.close()


@pytest_twisted.inlineCallbacks
def test_one_user_many_connections(server_factory):
    """A user's phone and web connections both get DMs and room messages; presence counts once."""
    srv = yield server_factory("--jwt-secret", SECRET)
    phone = yield Client.v1(srv.port, token=token("carol"))
    web = yield Client.v1(srv.port, token=token("carol"))
    dave = yield Client.v1(srv.port, token=token("dave"))
    yield dave.join("r")
    yield phone.join("r")
    yield dave.expect("presence", user="carol", event="join")
    joined = yield web.join("r")
    assert joined["members"] == ["carol", "dave"]
    yield dave.quiet()  # no second presence join (chatd sends it, if at all, before joined)
    dave.send(type="send", room="r", text="to carol", id="1")
    yield dave.expect("ack", id="1")
    yield phone.expect("message", text="to carol")
    yield web.expect("message", text="to carol")
    dave.send(type="dm", to="carol", text="dm", id="2")
    yield phone.expect("dm", text="dm")
    yield web.expect("dm", text="dm")
    phone.send(type="dm", to="dave", text="from phone", id="3")
    yield phone.expect("ack", id="3")
    yield dave.expect("ack", id="2")
    yield dave.expect("dm", text="from phone")
    yield web.expect("dm", text="from phone")  # the sender's other device sees it too
    yield phone.close()
    yield srv.gone(phone)
    yield dave.quiet()  # no presence leave: carol is still there through the web connection
    yield web.close()
    yield dave.expect("presence", user="carol", event="leave")
    yield dave.close()


@pytest_twisted.inlineCallbacks
def test_rooms_claim_restricts_join_and_history(server_factory):
    """A token's rooms claim admits listed rooms and prefixes, forbids the rest."""
    srv = yield server_factory("--jwt-secret", SECRET)
    c = yield Client.v1(srv.port, token=jwt.encode({"sub": "e", "rooms": ["a", "team-*"]}, SECRET))
    yield c.join("a")
    yield c.join("team-x")
    c.send(type="join", room="b", id="j")
    yield c.expect("error", code="forbidden", ref="j")
    c.send(type="history", room="b", id="h")
    yield c.expect("error", code="forbidden", ref="h")
    yield c.close()


@pytest_twisted.inlineCallbacks
def test_expired_token_closes_the_connection_with_4401(server_factory):
    """A connection whose token expires is closed with 4401 at the expiry time."""
    srv = yield server_factory("--jwt-secret", SECRET)
    exp = int(reactor.seconds()) + 2
    c = yield Client.v1(srv.port, token=jwt.encode({"sub": "f", "exp": exp}, SECRET))
    code, reason = yield c.closed(timeout=6)
    assert code == 4401 and "expired" in reason


@pytest_twisted.inlineCallbacks
def test_connection_caps_per_user_and_per_ip(server_factory):
    """Beyond --max-connections-per-user / -per-ip the handshake is refused (HTTP 429)."""
    srv = yield server_factory(
        "--jwt-secret", SECRET, "--max-connections-per-user", "2", "--max-connections-per-ip", "4"
    )
    t = token("g")
    a = yield Client.v1(srv.port, token=t)
    b = yield Client.v1(srv.port, token=t)
    with pytest.raises(ConnectionError):
        yield Client.v1(srv.port, token=t)
    c = yield Client.v1(srv.port, "anon1")
    d = yield Client.connect(srv.port)
    with pytest.raises(ConnectionError):
        yield Client.v1(srv.port, "anon2")
    yield a.close()
    yield srv.gone(a)
    e = yield Client.v1(srv.port, token=t)  # a slot is free again
    for x in (b, c, d, e):
        yield x.close()


@pytest_twisted.inlineCallbacks
def test_resume_secret_lets_a_reconnect_share_its_name(server):
    """An anonymous reconnect presenting welcome.resume may use its name while the old
    connection is still alive; a wrong secret gets name_taken."""
    old = yield Client.v1(server.port, "henry")
    secret = old.welcome["resume"]
    thief = yield Client.connect(
        server.port, "/ws", protocols=["chatd.v1"], name="henry", resume="guess"
    )
    yield thief.expect("error", code="name_taken")
    new = yield Client.v1(server.port, "henry", resume=secret)
    assert new.welcome["user"] == "henry" and new.welcome["resume"] == secret
    yield old.close()
    yield server.gone(old)
    assert "henry" in server.chat.names  # still held by the new connection
    yield new.close()
    yield server.gone(new)
    assert "henry" not in server.chat.names


@pytest_twisted.inlineCallbacks
def test_rate_limit_then_flood_close(server_factory):
    """Over the rate: rate_limited errors (with ref) and nothing stored; sustained: close 1008."""
    srv = yield server_factory("--rate-limit", "5", "--rate-burst", "5", "--flood-strikes", "20")
    a = yield Client.v1(srv.port, "flood")
    yield a.join("r")
    for i in range(10):
        a.send(type="send", room="r", text=f"m{i}", id=f"f{i}")
    frames = []
    for _ in range(10):
        frames.append((yield a.recv()))
    acks = [f for f in frames if f["type"] == "ack"]
    limited = [f for f in frames if f.get("code") == "rate_limited"]
    assert len(acks) == 4 and len(limited) == 6  # the join took one token
    assert {f["ref"] for f in limited} == {f"f{i}" for i in range(4, 10)}
    for _ in range(40):
        a.send(type="ping")
    code, _ = yield a.closed()
    assert code == 1008
    assert srv.chat.stats.rate_limited >= 20


@pytest_twisted.inlineCallbacks
def test_a_flood_does_not_slow_others(server_factory):
    """While one client floods (and is cut off), two others keep chatting promptly."""
    srv = yield server_factory()
    flooder = yield Client.v1(srv.port, "flooder")
    a = yield Client.v1(srv.port, "calm-a")
    b = yield Client.v1(srv.port, "calm-b")
    for c in (flooder, a, b):
        yield c.join("r")
    yield a.expect("presence", user="calm-b")
    for i in range(3000):
        if flooder.close_code is not None:
            break
        flooder.send(type="send", room="r", text="x" * 100, id=f"z{i}")
    worst = 0.0
    for i in range(20):
        started = reactor.seconds()
        a.send(type="send", room="r", text=f"calm {i}", id=f"c{i}")
        while True:
            frame = yield b.recv()
            if frame["type"] == "message" and frame["text"] == f"calm {i}":
                break
        worst = max(worst, reactor.seconds() - started)
    code, _ = yield flooder.closed()
    assert code == 1008
    assert worst < 0.5, f"a calm message took {worst:.3f} s during the flood"
    yield a.close()
    yield b.close()


@pytest_twisted.inlineCallbacks
def test_max_rooms(server_factory):
    """A connection may be in --max-rooms rooms; one more is too_many_rooms."""
    srv = yield server_factory("--max-rooms", "3")
    c = yield Client.v1(srv.port, "roomy")
    assert c.welcome["max_rooms"] == 3
    for r in ("a", "b", "c"):
        yield c.join(r)
    c.send(type="join", room="d", id="x")
    yield c.expect("error", code="too_many_rooms", ref="x")
    yield c.join("a")  # re-joining a room it is in is fine
    c.send(type="leave", room="a")
    yield c.expect("left")
    yield c.join("d")
    yield c.close()


@pytest_twisted.inlineCallbacks
def test_idle_timeout(server_factory):
    """--idle-timeout closes a client that sent nothing with 4408; an active one stays.

    Time is the behaviour here: a short real timeout (0.5 s), and the test waits for the
    idle client's close (under a deadline) while the busy one pings every *gap* seconds
    (its activity pattern, not a wait), then keeps it busy one more timeout. The sweep's
    exact boundaries are checked by clock in tests/unit/test_idle_clock.py."""
    timeout, gap = 0.5, 0.1
    srv = yield server_factory("--idle-timeout", str(timeout))
    idle = yield Client.v1(srv.port, "idle")
    busy = yield Client.v1(srv.port, "busy")

    @defer.inlineCallbacks
    def keep_busy(until):
        while not until():
            busy.send(type="ping")
            yield busy.expect("pong")
            yield deferLater(gap)

    deadline = reactor.seconds() + 10
    yield keep_busy(lambda: idle.close_code is not None or reactor.seconds() > deadline)
    code, _ = yield idle.closed()
    assert code == 4408
    # one more idle timeout: had the pings not counted, busy (opened just after idle)
    # would be closed by now as well
    later = reactor.seconds() + timeout + 0.2
    yield keep_busy(lambda: reactor.seconds() > later)
    assert busy.close_code is None
    yield busy.close()
