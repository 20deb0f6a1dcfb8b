"""Durable history over real sockets: resume with since, exactly-once, restarts and SIGKILL."""

import signal
import sqlite3

import pytest
import pytest_twisted
from twisted.internet import defer

from tests.support.auth import SECRET, token
from tests.support.process import twistd_exit
from tests.wsclient import Client, deferLater, wait_for


@pytest_twisted.inlineCallbacks
def test_resume_under_concurrent_traffic_has_no_gap_and_no_duplicate(server_factory):
    """A client drops, others keep sending, it rejoins with since and sees exactly what others saw."""
    server = yield server_factory("--rate-limit", "0", "--user-rate-limit", "0")
    senders = yield defer.gatherResults([Client.v1(server.port, f"s{i}") for i in range(3)])
    watcher = yield Client.v1(server.port, "watcher")
    roamer = yield Client.v1(server.port, "roamer")
    for c in [*senders, watcher, roamer]:
        yield c.join("busy")
    seen_by_roamer = []
    stop = []
    sent = [0]

    @defer.inlineCallbacks
    def pump(client, tag):
        i = 0
        while not stop:
            client.send(type="send", room="busy", text=f"{tag}-{i}", id=f"{tag}-{i}")
            i += 1
            sent[0] += 1
            yield deferLater(0.002)  # pacing the load, not waiting for anything

    pumps = [pump(c, f"s{i}") for i, c in enumerate(senders)]
    # the roamer reads a while, remembering the highest seq it saw
    while len(seen_by_roamer) < 50:
        frame = yield roamer.recv()
        if frame["type"] == "message":
            seen_by_roamer.append(frame["seq"])
    last = seen_by_roamer[-1]
    roamer.abort()
    yield server.gone(roamer)  # its name is free again; the others keep sending
    roamer = yield Client.v1(server.port, "roamer")
    roamer.send(type="join", room="busy", since=last)
    joined = yield roamer.expect("joined", room="busy", since=last, truncated=False)
    assert joined["seq"] > last
    # let the live stream run on after the replay for a while
    at_join = sent[0]
    yield wait_for(lambda: sent[0] >= at_join + 60, timeout=30, what="60 more sends")
    stop.append(True)
    yield defer.gatherResults(pumps)
    # a last message whose ack names the final seq: everything before it was sent
    senders[0].send(type="send", room="busy", text="end", id="end")
    while True:
        frame = yield senders[0].recv()
        if frame["type"] == "ack" and frame["id"] == "end":
            final = frame["seq"]
            break

    @defer.inlineCallbacks
    def seqs_up_to_final(client):
        """Message seqs *client* receives until the final one (everything after it is
        read by nobody: the room is quiet)."""
        out = []
        while not out or out[-1] < final:
            frame = yield client.recv()
            if frame["type"] == "message":
                out.append(frame["seq"])
        return out

    # everything after `last` arrives once, in order, replay and live stream joined seamlessly
    resumed = yield seqs_up_to_final(roamer)
    watcher_seqs = yield seqs_up_to_final(watcher)
    yield roamer.quiet()
    yield watcher.quiet()
    assert watcher_seqs == list(range(1, final + 1))
    assert resumed == list(range(last + 1, final + 1))
    assert seen_by_roamer == list(range(seen_by_roamer[0], last + 1))
    for c in [*senders, watcher, roamer]:
        yield c.close()


@pytest_twisted.inlineCallbacks
def test_truncated_replay(server_factory):
    """More missed messages than --replay-limit: joined says truncated, the newest are replayed."""
    srv = yield server_factory("--replay-limit", "5")
    a = yield Client.v1(srv.port, "alice")
    yield a.join("r")
    for i in range(1, 13):
        a.send(type="send", room="r", text=f"t{i}", id=f"x{i}")
        yield a.expect("ack", seq=i)
    b = yield Client.v1(srv.port, "bob")
    b.send(type="join", room="r", since=2)
    joined = yield b.expect("joined", seq=12, since=2, truncated=True)
    assert joined["members"] == ["alice", "bob"]
    replayed = []
    for _ in range(5):
        replayed.append((yield b.expect("message"))["seq"])
    assert replayed == [8, 9, 10, 11, 12]
    b.send(type="history", room="r", before=8, limit=5)
    page = yield b.expect("history", more=True)
    assert [m["seq"] for m in page["messages"]] == [3, 4, 5, 6, 7]
    yield b.quiet()
    yield a.close()
    yield b.close()


@pytest_twisted.inlineCallbacks
def test_join_with_since_zero_replays_everything(server):
    """join {since: 0} replays the room from its first stored message."""
    a = yield Client.v1(server.port, "alice")
    yield a.join("r")
    for i in range(1, 4):
        a.send(type="send", room="r", text=f"t{i}", id=f"z{i}")
        yield a.expect("ack", seq=i)
    b = yield Client.v1(server.port, "bob")
    b.send(type="join", room="r", since=0)
    yield b.expect("joined", seq=3)
    for i in range(1, 4):
        yield b.expect("message", seq=i, text=f"t{i}", id=f"z{i}")
    yield a.close()
    yield b.close()


@pytest.mark.subprocess
@pytest_twisted.inlineCallbacks
def test_sigkill_loses_no_acked_message_and_seq_continues(twistd_factory, tmp_path):
    """Kill -9 in the middle of a burst: every acked message is there after restart, once."""
    db = str(tmp_path / "chat.sqlite3")
    unlimited = ("--rate-limit", "0", "--user-rate-limit", "0")
    proc = twistd_factory("--listen", "tcp:0:interface=127.0.0.1", "--db", db, *unlimited)
    senders = yield defer.gatherResults([Client.v1(proc.port, f"k{i}") for i in range(4)])
    for c in senders:
        yield c.join("durable")
    acked = {}

    @defer.inlineCallbacks
    def burst(client, tag):
        for i in range(2000):
            if client.close_code is not None:
                return  # the server was killed
            client.send(type="send", room="durable", text=f"{tag}:{i}", id=f"{tag}:{i}")
            if i % 20 == 19:
                yield deferLater(0.001)  # pacing: let the reactor write between bursts

    @defer.inlineCallbacks
    def collect(client):
        while True:
            try:
                frame = yield client.recv(timeout=2)
            except Exception:
                return
            if frame["type"] == "ack":
                acked[frame["id"]] = frame["seq"]

    collectors = [collect(c) for c in senders]
    for i, c in enumerate(senders):
        burst(c, f"k{i}")
    yield wait_for(lambda: len(acked) >= 1000, timeout=60, what="1000 acks")
    proc.stop(signal.SIGKILL)
    yield defer.gatherResults(collectors)
    assert len(acked) >= 1000
    proc2 = twistd_factory("--listen", "tcp:0:interface=127.0.0.1", "--db", db)
    reader = yield Client.v1(proc2.port, "reader")
    stored = {}
    before = None
    while True:
        reader.send(
            type="history", room="durable", limit=200, **({"before": before} if before else {})
        )
        page = yield reader.expect("history")
        for m in page["messages"]:
            assert m["id"] not in stored, "a message was stored twice"
            stored[m["id"]] = m["seq"]
        if not page["more"]:
            break
        before = page["messages"][0]["seq"]
    for client_id, seq in acked.items():
        assert stored.get(client_id) == seq
    seqs = sorted(stored.values())
    assert seqs == list(range(1, len(seqs) + 1))
    # seq continues after the restart, and an acked id resent returns its original ack
    yield reader.join("durable")
    reader.send(type="send", room="durable", text="after restart", id="new-1")
    yield reader.expect("ack", id="new-1", seq=seqs[-1] + 1)
    k0 = yield Client.v1(proc2.port, "k0")
    some_id = next(i for i in acked if i.startswith("k0:"))
    some_seq = acked[some_id]
    yield k0.join("durable")
    # a resend repeats the message (k0 is a new anonymous session of the name k0: it
    # has the original ack only for an exact repeat, see docs/protocol.md)
    k0.send(type="send", room="durable", text=some_id, id=some_id)
    yield k0.expect("ack", id=some_id, seq=some_seq, duplicate=True)
    yield reader.close()
    yield k0.close()


@pytest.mark.subprocess
@pytest_twisted.inlineCallbacks
def test_dm_history_and_dedupe_survive_a_clean_restart(twistd_factory, tmp_path):
    """DMs are stored: after a SIGTERM restart dm_history has them and resends are deduped.

    (Token users: an anonymous user after a restart is a new session, which reads
    no earlier DMs; see tests/integration/test_hostile_identity.py.)"""
    db = str(tmp_path / "chat.sqlite3")
    auth = ("--jwt-secret", SECRET)
    proc = twistd_factory("--listen", "tcp:0:interface=127.0.0.1", "--db", db, *auth)
    a = yield Client.v1(proc.port, token=token("alice"))
    b = yield Client.v1(proc.port, token=token("bob"))
    a.send(type="dm", to="bob", text="before restart", id="dm-1")
    ack = yield a.expect("ack", id="dm-1", seq=1)
    yield b.expect("dm", id="dm-1")
    assert proc.stop() in (0, -signal.SIGTERM)
    yield a.closed()
    proc2 = twistd_factory("--listen", "tcp:0:interface=127.0.0.1", "--db", db, *auth)
    b2 = yield Client.v1(proc2.port, token=token("bob"))
    a2 = yield Client.v1(proc2.port, token=token("alice"))
    b2.send(type="dm_history", since=0, **{"with": "alice"})
    got = yield b2.expect("dm_history", more=False)
    assert [(m["text"], m["seq"], m["from"]) for m in got["messages"]] == [
        ("before restart", 1, "alice")
    ]
    a2.send(type="dm", to="bob", text="before restart", id="dm-1")
    again = yield a2.expect("ack", id="dm-1", seq=1, duplicate=True)
    assert again["ts"] == ack["ts"]
    yield b2.quiet()
    yield a2.close()
    yield b2.close()


@pytest.mark.subprocess
def test_a_newer_schema_is_refused_with_a_clear_message(tmp_path):
    """A history file written by a newer chatd stops start-up with exit 1 and says why."""
    db = tmp_path / "future.sqlite3"
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA user_version = 999")
    proc = twistd_exit(
        tmp_path,
        "-n",
        "--pidfile=",
        "chatd",
        "--listen",
        "tcp:0:interface=127.0.0.1",
        "--db",
        str(db),
    )
    assert proc.returncode == 1
    assert "schema version 999" in proc.stdout and "newer chatd" in proc.stdout
