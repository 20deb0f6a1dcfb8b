"""Identity attacks on live chatd servers (docs/security.md, hostile table,
"Identities"): anonymous names taken over, ids reused by a later holder of a
name, and the token ``rooms`` claim in relay mode.

Each test runs against a real ``twistd -n chatd`` over loopback with the raw
client of tests/e2e/test_hostile.py, and ends with that suite's after-every-row
check (the server is whole, bystanders talk, nothing acknowledged is lost,
nothing refused is stored).
"""

from __future__ import annotations

import itertools
import json

import pytest

from chatd.anonymous import AnonymousNames
from tests.support.hostile import (
    SECRET,
    _start,
    _token,
    _world,
    dm_texts,
    next_id,
    v1,
    v1_when_free,
)
from tests.support.rawws import RawWS, handshake_status, text


@pytest.fixture(scope="module")
def off_server(tmp_path_factory):
    """chatd with --auth off: anonymous user ids are the names."""
    yield from _world(_start(tmp_path_factory))


@pytest.fixture(scope="module")
def optional_server(tmp_path_factory):
    """chatd with --jwt-secret (--auth optional): anonymous user ids are ``~name``."""
    yield from _world(_start(tmp_path_factory, "--jwt-secret", SECRET))


@pytest.fixture(scope="module")
def required_server(tmp_path_factory):
    """chatd with --jwt-secret --auth required (bystanders carry tokens)."""
    proc = _start(tmp_path_factory, "--jwt-secret", SECRET, "--auth", "required")
    users = itertools.count()

    def connect():
        return {"path": "/ws?token=" + _token({"sub": f"bystander{next(users)}"})}

    yield from _world(proc, connect)


def dm_pair(port, a, b, n):
    """*a* and *b* connect and exchange one DM each way; returns (alice, bob, ids)."""
    alice, bob = v1(port, name=a), v1(port, name=b)
    ua, ub = alice.welcome["user"], bob.welcome["user"]
    alice.send_json(type="dm", to=ub, text=f"secret from {a}", id=f"a-{n}")
    alice.expect("ack", id=f"a-{n}", to=ub, seq=1)
    bob.expect("dm", id=f"a-{n}", text=f"secret from {a}")
    bob.send_json(type="dm", to=ua, text=f"secret from {b}", id=f"b-{n}")
    bob.expect("ack", id=f"b-{n}", to=ua, seq=2)
    alice.expect("dm", id=f"b-{n}", text=f"secret from {b}")
    return alice, bob


@pytest.mark.parametrize("mode", ["off", "optional"])
def test_next_holder_of_an_anonymous_name_gets_no_dm_and_no_ack(mode, request):
    """alice and bob (anonymous) exchange DMs and leave; mallory takes ``?name=alice``:
    ``dm_history`` with bob is empty (with ``since`` and without), and reusing
    alice's ids never answers an ``ack`` naming the conversation nor swallows the
    send: ``error id_reused`` (with the id as ``ref``), nothing stored. An exact
    repeat of alice's public room message is still the original ack."""
    world = request.getfixturevalue(f"{mode}_server")
    n = next_id("")
    a, b = f"alice{n}", f"bob{n}"
    alice, bob = dm_pair(world.port, a, b, n)
    alice.send_json(type="join", room="den")
    alice.expect("joined", room="den")
    room_ack = world.post(alice, "den", f"public from {a}")
    room_id = world.acked[-1][2]
    ub = bob.welcome["user"]
    alice.close()
    bob.close()

    mallory = v1_when_free(world.port, a)
    assert mallory.welcome["user"] == ("" if mode == "off" else "~") + a
    assert dm_texts(mallory, ub, since=0) == ([], False)
    assert dm_texts(mallory, ub) == ([], False)
    assert dm_texts(mallory, ub, before=10) == ([], False)

    carol = v1(world.port, name=f"carol{n}")
    mallory.send_json(type="join", room="den")
    mallory.expect("joined", room="den")
    world.post(mallory, "den", "mallory's own message")
    requests = [
        {"type": "send", "room": "den", "text": "reuse a DM id", "id": f"a-{n}"},
        {"type": "dm", "to": carol.welcome["user"], "text": "reuse a DM id", "id": f"a-{n}"},
        {"type": "send", "room": "den", "text": "reuse a room id", "id": room_id},
    ]
    for req in requests:
        mallory.send_json(**req)
        err = mallory.expect_error("id_reused", req["id"])
        assert "@dm" not in json.dumps(err) and b not in json.dumps(err)
    world.never_stored.add(f"a-{n}")
    # the identical room message is public anyway: its resend is acknowledged
    mallory.send_json(type="send", room="den", text=f"public from {a}", id=room_id)
    mallory.expect("ack", id=room_id, seq=room_ack["seq"], duplicate=True)
    ping = next_id("ping-")
    carol.send_json(type="ping", id=ping)
    carol.expect("pong", id=ping)  # no dm reached carol
    for ws in (mallory, carol):
        ws.close()
    world.check(f"name takeover ({mode})")


def test_resume_secret_keeps_the_session_and_its_dm_history(off_server):
    """The same anonymous client keeps its session: a second tab with ``resume``
    while connected, and a reconnect with ``resume`` after its last connection
    closed, read the session's DMs and get its resends acknowledged as duplicates."""
    world = off_server
    n = next_id("")
    a, b = f"alice{n}", f"bob{n}"
    alice, bob = dm_pair(world.port, a, b, n)
    secret = alice.welcome["resume"]
    both = [f"secret from {a}", f"secret from {b}"]
    tab = v1(world.port, name=a, resume=secret)
    assert dm_texts(tab, b, since=0) == (both, False)
    alice.close()
    tab.close()
    again = v1_when_free(world.port, a, resume=secret)
    assert again.welcome["resume"] == secret
    assert dm_texts(again, b, since=0) == (both, False)
    assert dm_texts(again, b, since=1) == (both[1:], False)
    assert dm_texts(again, b, limit=1) == (both[1:], True)
    again.send_json(type="dm", to=b, text=f"secret from {a}", id=f"a-{n}")
    again.expect("ack", id=f"a-{n}", to=b, seq=1, duplicate=True)
    ping = next_id("ping-")
    bob.send_json(type="ping", id=ping)
    bob.expect("pong", id=ping)  # the resend was not delivered again
    again.close()
    bob.close()
    world.check("resume")


def test_a_later_holder_ends_the_earlier_session_for_good(off_server):
    """Once mallory has held ``alice``, alice's old secret resumes nothing: a new
    session (a new secret) that reads none of the earlier DMs."""
    world = off_server
    n = next_id("")
    a, b = f"alice{n}", f"bob{n}"
    alice, bob = dm_pair(world.port, a, b, n)
    secret = alice.welcome["resume"]
    alice.close()
    mallory = v1_when_free(world.port, a, resume="guessed-" + secret[:4])
    assert mallory.welcome["resume"] != secret
    mallory.close()
    back = v1_when_free(world.port, a, resume=secret)
    assert back.welcome["resume"] != secret
    assert dm_texts(back, b, since=0) == ([], False)
    back.close()
    bob.close()
    world.check("later holder")


def test_imposter_frames_on_one_node_are_never_executed(off_server):
    """Single node: a second ``?name=alice`` that sends join + send + dm right after
    the 101 is refused (``name_taken``, 4409) before any of its frames runs."""
    world = off_server
    n = next_id("")
    alice = v1(world.port, name=f"alice{n}")
    bob = v1(world.port, name=f"bob{n}")
    for ws in (alice, bob):
        ws.send_json(type="join", room="den")
        ws.expect("joined", room="den")
    alice.expect("presence", user=bob.welcome["user"])
    imposter = RawWS(world.port, path=f"/ws?name=alice{n}")
    burst = [
        {"type": "join", "room": "den"},
        {"type": "send", "room": "den", "text": "imposter", "id": f"imp-{n}"},
        {"type": "dm", "to": bob.welcome["user"], "text": "imposter", "id": f"impdm-{n}"},
    ]
    imposter.send(b"".join(text(f) for f in burst))
    code, frames = imposter.until_closed()
    assert code == 4409
    assert [json.loads(p)["code"] for _, p in frames] == ["name_taken"]
    world.never_stored.update({f"imp-{n}", f"impdm-{n}"})
    for ws in (alice, bob):
        ping = next_id("ping-")
        ws.send_json(type="ping", id=ping)
        ws.expect("pong", id=ping)
    assert dm_texts(bob, alice.welcome["user"], since=0) == ([], False)
    alice.close()
    bob.close()
    world.check("imposter on one node")


@pytest.mark.parametrize("where", ["query", "bearer"])
def test_relay_mode_honours_the_rooms_claim(required_server, where):
    """A token whose ``rooms`` claim does not allow ``lobby`` (relay clients live
    there) is refused relay mode at the handshake with HTTP 403; chatd.v1 with the
    same token still works, and a token allowing ``lobby`` relays."""
    world = required_server
    eve = _token({"sub": "eve", "rooms": ["support"]})
    if where == "query":
        status = handshake_status(world.port, "/?token=" + eve, protocols=())
    else:
        headers = [("Authorization", f"Bearer {eve}")]
        status = handshake_status(world.port, "/", headers=headers, protocols=())
    assert status == 403
    ws = RawWS.v1(world.port, path="/ws?token=" + eve)
    ws.send_json(type="join", room="lobby", id="jl")
    ws.expect_error("forbidden", "jl")
    ws.close()
    lobby = RawWS.v1(world.port, path="/ws?token=" + _token({"sub": "watcher"}))
    lobby.send_json(type="join", room="lobby")
    lobby.expect("joined", room="lobby")
    relay = RawWS(
        world.port, path="/?token=" + _token({"sub": "ron", "rooms": ["lob*"]}), protocols=()
    )
    assert relay.status == 101
    relay.send(text("hello from relay"))
    lobby.expect("presence", user="ron", event="join")
    lobby.expect("message", room="lobby", text="hello from relay", **{"from": "ron"})
    relay.close()
    lobby.close()
    world.check(f"relay with a rooms claim ({where})")


def test_rooms_claim_restricts_the_token_not_the_room(optional_server):
    """Under --auth optional the claim limits its token's holder: eve's token
    (``rooms: ["support"]``) gets ``forbidden`` for ``team-b`` and no relay mode,
    while an anonymous connection reads public ``team-b`` history by design."""
    world = optional_server
    writer = v1(world.port, name=f"writer{next_id('')}")
    writer.send_json(type="join", room="team-b")
    writer.expect("joined", room="team-b")
    world.post(writer, "team-b", "public in team-b")
    eve = _token({"sub": "eve", "rooms": ["support"]})
    assert handshake_status(world.port, "/?token=" + eve, protocols=()) == 403
    ws = RawWS.v1(world.port, path="/ws?token=" + eve)
    ws.send_json(type="history", room="team-b", id="hb")
    ws.expect_error("forbidden", "hb")
    anonymous = v1(world.port)
    assert anonymous.welcome["authenticated"] is False
    texts = [m["text"] for m in world.history(anonymous, "team-b").values()]
    assert texts == ["public in team-b"]
    for c in (ws, anonymous, writer):
        c.close()
    world.check("rooms claim under optional")


# --------------------------------------------------------------------------
# chatd.anonymous on its own: pure logic, time passed in


def test_a_live_name_is_shared_only_with_its_secret():
    """A held name is refused without its secret and shared with it; the last
    release frees it."""
    names = AnonymousNames(grace=300)
    first = names.claim("alice", None, now=0)
    assert "alice" in names and len(names) == 1
    assert names.claim("alice", None, now=1) is None
    assert names.claim("alice", "wrong", now=1) is None
    assert names.claim("alice", first.secret, now=1) is first
    names.release(first, now=2)
    assert "alice" in names
    names.release(first, now=3)
    assert "alice" not in names and len(names) == 0


def test_a_released_session_resumes_within_the_grace_only():
    """Its secret takes a released session back (floors kept) until ``grace``
    seconds after the release; later, or without the secret, a new session."""
    names = AnonymousNames(grace=300)
    session = names.claim("alice", None, now=0)
    session.record("@dm:x", 5)
    names.release(session, now=10)
    back = names.claim("alice", session.secret, now=309)
    assert back is session and back.owns("@dm:x", 5) and not back.owns("@dm:x", 4)
    names.release(back, now=310)
    late = names.claim("alice", session.secret, now=611)
    assert late is not session and late.secret != session.secret and late.floors == {}


def test_a_new_session_ends_the_earlier_one_for_good():
    """Once another session claimed the name, the earlier secret resumes nothing;
    guest sessions and forgotten ones are never resumable."""
    names = AnonymousNames(grace=300)
    alice = names.claim("alice", None, now=0)
    names.release(alice, now=1)
    mallory = names.claim("alice", None, now=2)
    assert mallory is not alice
    names.release(mallory, now=3)
    assert names.claim("alice", alice.secret, now=4) not in (alice, mallory)
    guest = names.claim("guest-abc123", None, now=0, resumable=False)
    names.release(guest, now=1)
    assert names.claim("guest-abc123", guest.secret, now=2) is not guest
    bob = names.claim("bob", None, now=0)
    names.release(bob, now=1, forget=True)
    assert names.claim("bob", bob.secret, now=2) is not bob


def test_released_sessions_are_bounded():
    """At most ``max_released`` released sessions are kept; the oldest go first."""
    names = AnonymousNames(grace=300, max_released=2)
    sessions = [names.claim(f"n{i}", None, now=i) for i in range(3)]
    for i, s in enumerate(sessions):
        names.release(s, now=10 + i)
    assert names.claim("n0", sessions[0].secret, now=20) is not sessions[0]
    assert names.claim("n2", sessions[2].secret, now=20) is sessions[2]


def test_floors_take_the_earliest_message_and_restart_drops_them():
    """A session owns a channel's messages above the seq before its earliest one
    recorded (in whatever order they are recorded); restart owns nothing."""
    session = AnonymousNames().claim("alice", None, now=0)
    assert session.floor("r") is None and not session.owns("r", 1)
    session.record("r", 7)
    session.record("r", 5)
    session.record("r", 9)
    assert session.floor("r") == 4 and session.owns("r", 5) and not session.owns("r", 4)
    session.restart()
    assert session.floor("r") is None
