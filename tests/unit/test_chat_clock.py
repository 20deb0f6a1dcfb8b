"""The ``Chat`` realm on its own: no sockets, no reactor run, time from ``task.Clock``.

Each test builds a real :class:`chatd.chat.Chat` with a :class:`MemoryStore`, the local
broker and directory, and connections that record what the realm sends them. Time-
dependent behaviour (rate buckets, flood strikes, timestamps) is driven by
``clock.advance()``, never by sleeping.
"""

from __future__ import annotations

import pytest
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from zope.interface.verify import verifyObject

from chatd.chat import FLOOD, RELAY
from chatd.interfaces import IChatClient, IFanout, ISession
from chatd.service import build
from chatd.session import CLOSED, LIVE, REFUSED
from chatd.settings import Settings
from chatd.store.memory import MemoryStore
from tests.support.realm import Fanout, make_chat, opened, say


@pytest.fixture
def clock():
    clock = Clock()
    clock.advance(1_700_000_000)  # a plausible wall-clock time, so ts values look real
    return clock


def test_fakes_provide_the_interfaces_the_realm_relies_on():
    """The recording connection and fan-out implement IChatClient and IFanout; the
    realm's sessions implement ISession."""
    conn = opened(make_chat(Clock()), "a")
    assert verifyObject(IChatClient, conn)
    assert verifyObject(ISession, conn.session)
    assert verifyObject(IFanout, Fanout())


def test_the_protocol_provides_IChatClient_and_holds_no_chat_state():
    """The server's connection implements IChatClient and carries none of the session's
    fields (they live on the Session only)."""
    proto = build(MemoryStore(), Settings()).buildProtocol(None)
    proto.makeConnection(StringTransport())
    try:
        assert verifyObject(IChatClient, proto)
        for name in ("user", "name", "identity", "bucket", "strikes", "anonymous", "held"):
            assert not hasattr(proto, name), name
    finally:
        proto.connectionLost(Failure(ConnectionDone()))


def test_session_state_follows_open_refuse_and_close(clock):
    """A session is LIVE once admitted, REFUSED when its name is, CLOSED after close;
    the realm writes nothing onto the connection."""
    chat = make_chat(clock)
    alice = opened(chat, "alice")
    session = alice.session
    assert session.state is LIVE and (session.user, session.name) == ("alice", "alice")
    assert session.client is alice and chat.sessions[session.id] is session
    assert alice.of("welcome")[0]["session"] == session.id
    assert vars(alice).keys() == {"session", "frames", "closed"}
    thief = opened(chat, "alice")
    assert thief.session.state is REFUSED and thief.session.id not in chat.sessions
    chat.close(session)
    assert session.state is CLOSED and session.id not in chat.sessions


def test_welcome_then_join_send_ack_and_delivery_with_clock_time(clock):
    """A send is acked with seq 1 and delivered to the other member, ``ts`` from the clock."""
    chat = make_chat(clock)
    alice, bob = opened(chat, "alice"), opened(chat, "bob")
    assert alice.of("welcome")[0]["user"] == "alice" and "resume" in alice.of("welcome")[0]
    for conn in (alice, bob):
        say(chat, conn, type="join", room="general")
    clock.advance(2.5)
    say(chat, alice, type="send", room="general", text="hi", id="m1")
    [ack] = alice.of("ack")
    assert (ack["id"], ack["seq"]) == ("m1", 1)
    [message] = bob.of("message")
    assert (message["from"], message["text"], message["seq"]) == ("alice", "hi", 1)
    assert message["ts"] == int(clock.seconds() * 1000)
    assert not alice.of("message"), "the sender does not get its own message back"


def test_exactly_once_a_resent_id_is_acked_again_and_not_stored_twice(clock):
    """Resending the same id answers the original seq; the room sees one message."""
    chat = make_chat(clock)
    alice, bob = opened(chat, "alice"), opened(chat, "bob")
    for conn in (alice, bob):
        say(chat, conn, type="join", room="r")
    say(chat, alice, type="send", room="r", text="once", id="x")
    say(chat, alice, type="send", room="r", text="once", id="x")
    assert [a["seq"] for a in alice.of("ack")] == [1, 1]
    assert len(bob.of("message")) == 1


def test_rate_limit_refuses_past_the_burst_and_refills_with_the_clock(clock):
    """Past ``rate_burst`` frames the next is ``rate_limited``; one second later
    ``rate_limit`` more are allowed again."""
    chat = make_chat(clock, rate_limit=2.0, rate_burst=3.0, flood_strikes=100)
    alice = opened(chat, "alice")
    for i in range(4):
        say(chat, alice, type="typing", room="r", id=f"t{i}")
    codes = [e["code"] for e in alice.of("error")]
    assert codes.count("rate_limited") == 1, codes
    alice.frames.clear()
    clock.advance(1.0)  # two tokens back
    for i in range(3):
        say(chat, alice, type="typing", room="r", id=f"u{i}")
    assert [e["code"] for e in alice.of("error")].count("rate_limited") == 1
    assert alice.closed is None, "two strikes of 100: not closed for flooding"


def test_sustained_flooding_closes_with_1008_and_strikes_expire(clock):
    """More than ``flood_strikes`` refused frames within 10 s close the connection with
    1008; strikes older than the window do not count."""
    chat = make_chat(clock, rate_limit=1.0, rate_burst=1.0, flood_strikes=3)
    slow, flood = opened(chat, "slow"), opened(chat, "flood")
    for _ in range(4):
        say(chat, slow, type="typing", room="r")  # one token, then three strikes
    clock.advance(11.0)  # the strikes leave the window (and the bucket refills)
    for _ in range(4):
        say(chat, slow, type="typing", room="r")  # three fresh strikes
    assert slow.closed is None, "six strikes, but never more than three within 10 s"
    for _ in range(5):
        say(chat, flood, type="typing", room="r")  # one token, then four strikes
    assert flood.closed is not None and flood.closed[0] == FLOOD


def test_a_taken_name_is_refused_unless_resume_is_given_and_freed_on_close(clock):
    """A second anonymous ``alice`` gets ``name_taken``; with the first one's resume
    secret it shares the name; once both close the name is free for anyone."""
    chat = make_chat(clock)
    first = opened(chat, "alice")
    secret = first.of("welcome")[0]["resume"]
    thief = opened(chat, "alice")
    assert [e["code"] for e in thief.of("error")] == ["name_taken"]
    assert thief.closed is not None
    second = opened(chat, "alice", resume=secret)
    assert second.of("welcome")[0]["user"] == "alice"
    chat.close(first.session)
    chat.close(second.session)
    chat.close(thief.session)  # a refused connection's close changes nothing
    assert opened(chat, "alice").of("welcome")


def test_relay_text_reaches_other_relays_verbatim_and_lobby_members_as_messages(clock):
    """A relay client's text goes verbatim to the other relay clients (never back) and
    into ``lobby`` as a chatd.v1 message from its guest name."""
    chat = make_chat(clock)
    r1, r2 = opened(chat, mode=RELAY), opened(chat, mode=RELAY)
    member = opened(chat, "watcher")
    say(chat, member, type="join", room="lobby")
    chat.relay(r1.session, b"hello", False)
    assert r2.frames == [b"hello"] and r1.frames == []
    [message] = member.of("message")
    assert message["text"] == "hello" and message["from"] == r1.session.name
    assert r1.session.name.startswith("guest-")


def test_dm_reaches_every_connection_of_the_user_and_the_senders_others(clock):
    """A DM is delivered to each of the recipient's connections and echoed to the
    sender's other connections; the sending connection gets the ack."""
    chat = make_chat(clock)
    alice = opened(chat, "alice")
    secret = alice.of("welcome")[0]["resume"]
    alice2 = opened(chat, "alice", resume=secret)
    bob = opened(chat, "bob")
    say(chat, alice, type="dm", to="bob", text="psst", id="d1")
    assert alice.of("ack")[0]["id"] == "d1"
    assert [d["text"] for d in bob.of("dm")] == ["psst"]
    assert [d["text"] for d in alice2.of("dm")] == ["psst"]


def test_presence_on_join_and_leave_on_close(clock):
    """Members of a room see ``presence`` join when someone joins and leave when their
    last connection closes."""
    chat = make_chat(clock)
    alice, bob = opened(chat, "alice"), opened(chat, "bob")
    say(chat, alice, type="join", room="r")
    say(chat, bob, type="join", room="r")
    chat.close(bob.session)
    states = [(p["user"], p["event"]) for p in alice.of("presence")]
    assert states == [("bob", "join"), ("bob", "leave")], states


def test_flood_strikes_0_is_off_refused_frames_never_close(clock):
    """With ``flood_strikes`` 0 a flood is only refused (``rate_limited``), never closed."""
    chat = make_chat(clock, rate_limit=1.0, rate_burst=1.0, flood_strikes=0)
    flood = opened(chat, "flood")
    for _ in range(200):
        say(chat, flood, type="typing", room="r")
    assert flood.closed is None
    assert [e["code"] for e in flood.of("error")].count("rate_limited") == 199
