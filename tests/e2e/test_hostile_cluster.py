"""Identity attacks on a cluster: two real ``twistd -n chatd --redis`` nodes on a
private redis-server (the fixtures of tests/e2e/test_cluster.py), raw clients from
tests/e2e/test_hostile.py.

* an imposter taking a live user's anonymous name on another node, sending
  frames right after the 101, has none of them executed;
* a DM whose cluster-wide online check answers after its connection began
  closing is neither stored nor delivered;
* an anonymous session resumed on a node after another node gave its name to
  someone else owns none of the earlier DMs;
* a reconnect to another node with the session's secret keeps the name while the
  old connection still looks alive; without it, or with a forged one, it is refused.
"""

from __future__ import annotations

import json
import secrets
import struct
from urllib.parse import urlencode

import pytest

from tests.support.hostile import dm_texts, v1, v1_when_free
from tests.support.process import wait_log
from tests.support.rawws import RawWS, frame, text

pytestmark = [pytest.mark.redis, pytest.mark.subprocess]
REDIS_AOF = True  # the `redis` fixture (tests/e2e/conftest.py) can be restarted

TRIES = 20


def quiet(*conns):
    """Each connection's next frame is the pong to a ping: nothing else arrived."""
    for i, ws in enumerate(conns):
        ws.send_json(type="ping", id=f"quiet-{i}")
        ws.expect("pong", id=f"quiet-{i}")


def test_imposter_on_another_node_has_no_frame_executed(nodes):  # noqa: F811
    """alice is live in ``general`` on node A; 20 times mallory opens ``?name=alice``
    on node B and sends join + send + dm in the same write right after the 101:
    each time ``name_taken`` (no ``welcome``), close 4409 -- and not one of her room
    messages or DMs is stored or delivered as alice."""
    a, b = nodes(2)
    alice = v1(a.port, name="alice")
    bob = v1(a.port, name="bob")
    for ws in (alice, bob):
        ws.send_json(type="join", room="general")
        ws.expect("joined", room="general")
    alice.expect("presence", room="general", user="bob", event="join")
    for i in range(TRIES):
        mallory = RawWS(b.port, path="/ws?name=alice")
        assert mallory.status == 101, mallory.head
        burst = [
            {"type": "join", "room": "general"},
            {"type": "send", "room": "general", "text": f"imposter {i}", "id": f"m{i}"},
            {"type": "dm", "to": "bob", "text": f"imposter dm {i}", "id": f"d{i}"},
        ]
        mallory.send(b"".join(text(f) for f in burst))
        code, frames = mallory.until_closed()
        got = [json.loads(p) for _, p in frames]
        assert code == 4409, got
        assert [f["type"] for f in got] == ["error"], got
        assert got[0]["code"] == "name_taken"
    quiet(alice, bob)  # nothing from mallory was delivered to either
    alice.send_json(type="history", room="general")
    assert alice.expect("history", room="general")["messages"] == []
    assert dm_texts(bob, "alice", since=0) == ([], False)
    # node B still serves alice's name to nobody else, and alice chats on
    carol = v1(b.port, name="carol")
    carol.send_json(type="join", room="general")
    carol.expect("joined", room="general", members=["alice", "bob", "carol"])
    for ws in (alice, bob):
        ws.expect("presence", room="general", user="carol", event="join")
    alice.send_json(type="send", room="general", text="the real alice", id="real-1")
    alice.expect("ack", id="real-1", seq=1)
    message = carol.expect("message", room="general", seq=1, text="the real alice")
    assert message["from"] == "alice"
    for ws in (alice, bob, carol):
        ws.close()


def test_dm_of_a_closing_connection_is_not_posted(nodes):  # noqa: F811
    """A ``dm`` followed by a close frame in one write: the online check of ``to``
    goes to Redis, and when it answers the connection is closing, so the DM is
    neither stored nor delivered (it was never acknowledged)."""
    a, b = nodes(2)
    bob = v1(a.port, name="bob")
    carol = v1(b.port, name="carol")
    carol.send(
        text({"type": "dm", "to": "bob", "text": "sent while closing", "id": "late-1"})
        + frame(0x8, struct.pack("!H", 1000))
    )
    code, frames = carol.until_closed()
    assert code == 1000
    assert [json.loads(p)["type"] for _, p in frames] == []
    # node B asks Redis in order: a DM of dave's, sent now, is posted after any of carol's
    dave = v1(b.port, name="dave")
    dave.send_json(type="dm", to="bob", text="after carol", id="dave-1")
    dave.expect("ack", id="dave-1")
    bob.expect("dm", id="dave-1", text="after carol")
    assert dm_texts(bob, "carol", since=0) == ([], False)
    dave.close()
    bob.close()


def test_session_resumed_after_another_node_held_its_name_owns_nothing(nodes):  # noqa: F811
    """alice (node A) DMs bob and leaves; mallory holds ``alice`` on node B and
    leaves; alice comes back to node A with her secret: the session is hers again
    but owns no DM stored before, so her history with bob is empty."""
    a, b = nodes(2)
    alice = v1(a.port, name="alice")
    bob = v1(a.port, name="bob")
    alice.send_json(type="dm", to="bob", text="secret", id="s1")
    alice.expect("ack", id="s1", seq=1)
    bob.expect("dm", id="s1")
    secret = alice.welcome["resume"]
    alice.close()
    mallory = v1_when_free(b.port, "alice")
    assert dm_texts(mallory, "bob", since=0) == ([], False)
    mallory.close()
    back = v1_when_free(a.port, "alice", resume=secret)
    assert back.welcome["resume"] == secret
    assert dm_texts(back, "bob", since=0) == ([], False)
    back.send_json(type="dm", to="bob", text="secret", id="s1")
    back.expect("error", code="id_reused", ref="s1")
    # ... and what it sends now is its own again
    back.send_json(type="dm", to="bob", text="new", id="s2")
    back.expect("ack", id="s2", seq=2)
    bob.expect("dm", id="s2")
    assert dm_texts(back, "bob", since=0) == (["new"], False)
    back.close()
    bob.close()


def test_anonymous_name_is_refused_while_redis_cannot_confirm_it(nodes, redis):  # noqa: F811
    """Redis down: a new anonymous connection is not let in unchecked (it could be
    a second holder of a live name): ``error unavailable`` (no ``welcome``), close
    1013, and its frames are not executed. Once Redis is back the name is served."""

    (a,) = nodes(1)
    redis.kill()
    wait_log(a, "degraded: Redis unreachable", 1)
    ws = RawWS(a.port, path="/ws?name=alice")
    assert ws.status == 101, ws.head
    ws.send(text({"type": "ping", "id": "p"}))
    code, frames = ws.until_closed()
    got = [json.loads(p) for _, p in frames]
    assert code == 1013, got
    assert [(f["type"], f.get("code")) for f in got] == [("error", "unavailable")]
    redis.start()
    wait_log(a, "healthy: Redis reachable", 2)
    alice = v1_when_free(a.port, "alice")
    alice.close()


def test_reconnect_with_its_secret_to_another_node_keeps_the_name(any_nodes):  # noqa: F811
    """alice's connection on node A goes silent (no close, no RST: node A thinks it
    alive until its ping timeout); she reconnects to node B with her ``resume``
    secret: welcomed at once as alice, same secret, not ``name_taken`` after the
    half-second of retries. Node C, which never saw her session, refuses the name
    without the secret and with a forged one (the cluster compares the epochs of the
    secrets); a DM to alice reaches her new connection."""
    a, b, c = any_nodes(3)
    stale = v1(a.port, name="alice")
    secret = stale.welcome["resume"]
    back = v1(b.port, name="alice", resume=secret)
    assert (back.welcome["name"], back.welcome["resume"]) == ("alice", secret)
    for params in ({}, {"resume": secrets.token_urlsafe(12)}):
        mallory = RawWS(c.port, path="/ws?" + urlencode({"name": "alice", **params}))
        assert mallory.status == 101, mallory.head
        code, frames = mallory.until_closed()
        assert code == 4409
        assert [json.loads(p).get("code") for _, p in frames] == ["name_taken"]
    bob = v1(c.port, name="bob")
    bob.send_json(type="dm", to="alice", text="still you?", id="d1")
    bob.expect("ack", id="d1", to="alice")
    assert back.expect("dm", id="d1")["text"] == "still you?"
    for ws in (stale, back, bob):
        ws.close()
