"""Hostile join replays and per-channel state (issue 18 items 1 and 7).

Replay amplification: a room with 1,000 messages of ~4 KB; anonymous
connections each send 40 ``join {since: 0}`` in one write and reset their
sockets. The server must stream replays in bounded pages paced by the client,
cancel them when the client goes away and not replay a room again to a
connection already in it, so its memory stays bounded and a bystander's acks
stay fast.

Memory never freed: lookups of channels that do not exist must not create
state, and the store's per-channel seq cache is bounded.
"""

from __future__ import annotations

import gc
import socket
import threading
import time
import tracemalloc
import urllib.request
import uuid

import pytest
import pytest_twisted
from twisted.internet import defer

from chatd.store.sqlite import SQLiteStore
from tests.conftest import poll
from tests.support.process import rss_kb
from tests.support.rawws import RawWS, rst, text
from tests.wsclient import Client, wait_for

ROOM = "big"
MESSAGES = 1000
TEXT = "x" * 4000  # ~4 KB per message frame

#: the attack of the issue: 25 connections x 40 joins since 0, then RST
ATTACKERS = 25
JOINS = 40
#: RSS growth the attack may cause (the old code grew by ~4 GB)
RSS_GROWTH_MB = 200
#: a bystander's connect + join + 5 acks under the attack (the old code took 16 s)
BYSTANDER_S = 3.0


def fill(path, room=ROOM, count=MESSAGES, text_=TEXT):
    """Write *count* messages into a SQLite history file through the store (group commit)."""
    store = SQLiteStore(str(path), synchronous="OFF", prune_interval=None)

    @defer.inlineCallbacks
    def run():
        yield store.start()
        yield defer.gatherResults(
            [
                store.append(room, "~filler", "filler", None, text_, 1_700_000_000_000 + i)
                for i in range(count)
            ]
        )
        yield store.stop()

    return run()


#: the attackers' socket receive buffer: small, so that the server's kernel buffers
#: cannot take a whole 4 MB replay and every replay is still being sent at the reset
ATTACK_RCVBUF = 4096


def attack(port, url, connections=ATTACKERS, joins=JOINS, room=ROOM):
    """Each connection sends *joins* ``join {room, since: 0}`` in one write and reads
    nothing; once the server is sending replays (``chatd_replays_active``), all reset.

    (Resetting each connection right after its write raced the server: with its
    kernel buffers free, a fast server had written a whole replay before the RST
    came, and then there was no replay left to cancel.)"""
    burst = text({"type": "join", "room": room, "since": 0}) * joins
    conns = []
    try:
        for _ in range(connections):
            ws = RawWS.v1(port, rcvbuf=ATTACK_RCVBUF)
            ws.send(burst)
            conns.append(ws)
        started = poll(lambda: metric(url, "chatd_replays_active", 0) >= 1, 20, 0.02)
        assert started, "the attack's joins started no replay"
    finally:
        for ws in conns:
            ws.reset()


def bystander(port, room=ROOM, acks=5) -> float:
    """Seconds for a fresh client's connect + join (no since) + *acks* acknowledged sends."""
    started = time.monotonic()
    ws = RawWS.v1(port, timeout=60)
    ws.send_json(type="join", room=room)
    ws.expect("joined", room=room)
    for i in range(acks):
        ws.send_json(type="send", room=room, text=f"bystander {i}", id=f"b{i}-{uuid.uuid4()}")
        while True:  # messages of others may come first
            frame = ws.recv()
            if frame["type"] == "ack":
                break
    took = time.monotonic() - started
    ws.sock.close()
    return took


def metric(url, name, default=None) -> float:
    """One unlabelled sample of ``/metrics`` (*default* when there is none)."""
    with urllib.request.urlopen(url + "/metrics", timeout=10) as r:
        body = r.read().decode()
    for line in body.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    if default is None:
        raise KeyError(name)
    return default


class RSSWatch:
    """Samples a process's VmRSS every 20 ms in a thread; ``peak`` in kB."""

    def __init__(self, pid):
        self.pid = pid
        self.peak = rss_kb(pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.wait(0.02):
            try:
                self.peak = max(self.peak, rss_kb(self.pid))
            except (OSError, RuntimeError):
                return

    def stop(self):
        self._stop.set()
        self._thread.join(5)
        return self.peak


@pytest.mark.subprocess
@pytest_twisted.inlineCallbacks
def test_join_replay_flood_with_resets_keeps_memory_and_acks_bounded(twistd_factory, tmp_path):
    """25 connections x 40 ``join {since: 0}`` of a 1,000 x 4 KB room, then RST while
    their replays are being sent: the
    server's RSS grows by less than RSS_GROWTH_MB, a bystander's connect + join + 5 acks
    takes less than BYSTANDER_S, the abandoned replays are cancelled, and afterwards a
    client still gets the whole replay, gap-free."""
    db = tmp_path / "history.db"
    yield fill(db)
    # (the server is a subprocess: the blocking sockets below may hold this reactor)
    proc = twistd_factory("--listen", "tcp:0:interface=127.0.0.1", "--db", str(db))
    pid = proc.proc.pid
    quiet = bystander(proc.port)
    base = rss_kb(pid)
    watch = RSSWatch(pid)
    try:
        attack(proc.port, proc.http_url)
        under_attack = bystander(proc.port)
        # let the server work off whatever the attack queued, then measure again
        idle = poll(lambda: metric(proc.http_url, "chatd_replays_active", 0) == 0, 20, 0.05)
        assert idle, "replays of closed connections still run"
    finally:
        peak = watch.stop()
    growth_mb = (peak - base) / 1024
    print(
        f"\nbystander quiet {quiet:.3f} s, under attack {under_attack:.3f} s; "
        f"RSS before {base / 1024:.0f} MB, peak {peak / 1024:.0f} MB (+{growth_mb:.0f} MB)"
    )
    assert growth_mb < RSS_GROWTH_MB, f"RSS grew by {growth_mb:.0f} MB under the replay flood"
    assert under_attack < BYSTANDER_S, f"a bystander needed {under_attack:.2f} s for 5 acks"
    # the replays of the reset connections were cancelled, not run to the end
    assert metric(proc.http_url, "chatd_stats_replays_cancelled_total") >= 1
    # the server is whole: a new client gets every message, in order, once
    ws = RawWS.v1(proc.port, timeout=30)
    ws.send_json(type="join", room=ROOM, since=10)
    joined = ws.expect("joined", room=ROOM, since=10, truncated=False)
    assert joined["seq"] == MESSAGES + 10  # the two bystanders' 5 messages each
    seqs = [ws.expect("message", room=ROOM)["seq"] for _ in range(MESSAGES)]
    assert seqs == list(range(11, MESSAGES + 11))
    ws.sock.close()


@pytest.mark.subprocess
@pytest_twisted.inlineCallbacks
def test_paced_join_flood_by_reading_clients_keeps_acks_fast(twistd_factory, tmp_path):
    """The slower variant: 8 connections that read everything send ``join {since: 0}``
    of the big room at 20 per second (under the rate limit) for 4 s. Each gets the
    replay once; the server's RSS grows by less than RSS_GROWTH_MB and a bystander's
    acks during the flood stay under BYSTANDER_S each."""
    db = tmp_path / "history.db"
    yield fill(db)
    proc = twistd_factory("--listen", "tcp:0:interface=127.0.0.1", "--db", str(db))
    pid = proc.proc.pid
    base = rss_kb(pid)
    stop = threading.Event()
    received = []

    def attacker():
        ws = RawWS.v1(proc.port, timeout=30)

        def read():
            try:
                while True:
                    received.append(len(ws.recv_frame()[1]))
            except (OSError, EOFError):
                pass

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        join = text({"type": "join", "room": ROOM, "since": 0})
        while not stop.wait(0.05):  # the attack's pace: 20 joins/s
            ws.send(join)
        ws.sock.shutdown(socket.SHUT_RDWR)  # (wakes the reader)
        ws.sock.close()
        reader.join(10)

    watch = RSSWatch(pid)
    threads = [threading.Thread(target=attacker, daemon=True) for _ in range(8)]
    for t in threads:
        t.start()
    acks = []
    try:
        ws = RawWS.v1(proc.port, timeout=60)
        ws.send_json(type="join", room="quiet")
        ws.expect("joined", room="quiet")
        ends = time.monotonic() + 4
        i = 0
        while time.monotonic() < ends:
            started = time.monotonic()
            ws.send_json(type="send", room="quiet", text="hi", id=f"q{i}")
            ws.expect("ack", id=f"q{i}")
            acks.append(time.monotonic() - started)
            i += 1
            stop.wait(max(0.0, 0.1 - acks[-1]))  # 10 sends/s: under the rate limit
        ws.sock.close()
    finally:
        stop.set()
        for t in threads:
            t.join(15)
        peak = watch.stop()
    acks.sort()
    p99 = acks[int(len(acks) * 0.99)]
    growth_mb = (peak - base) / 1024
    print(
        f"\n{len(acks)} bystander acks: p99 {p99 * 1000:.1f} ms, max {acks[-1] * 1000:.1f} ms; "
        f"RSS +{growth_mb:.0f} MB; attackers read {sum(received) / 1e6:.0f} MB"
    )
    assert growth_mb < RSS_GROWTH_MB, f"RSS grew by {growth_mb:.0f} MB"
    assert acks[-1] < BYSTANDER_S, f"a bystander's ack took {acks[-1]:.2f} s"
    # each attacker got the room's replay once (8 x ~4 MB), not once per join
    assert sum(received) < 8 * 2 * MESSAGES * len(TEXT)


# -- repeated joins and cancellation, in-process ------------------------------


@defer.inlineCallbacks
def posted(srv, room, count, text_="m"):
    """Post *count* messages to *room* through the chat (as the HTTP API does)."""
    for i in range(count):
        yield srv.chat.post(room, "~poster", "poster", f"{text_} {i}")


@defer.inlineCallbacks
def frames_until_silent(client, wait=0.3):
    """Every frame *client* receives until nothing arrives for *wait* seconds."""
    out = []
    while True:
        try:
            out.append((yield client.recv(timeout=wait)))
        except defer.TimeoutError:
            return out


@pytest_twisted.inlineCallbacks
def test_repeated_join_replays_nothing_new(server_factory):
    """A join of a room the connection is already in answers ``joined`` again but
    replays nothing: neither when it comes while the first replay is still being
    sent nor once the connection is live; later messages still arrive exactly once."""
    srv = yield server_factory()
    yield posted(srv, "r", 120)
    a = yield Client.v1(srv.port, "alice")
    for _ in range(3):  # in one go: the 2nd and 3rd arrive while the 1st is replaying
        a.send(type="join", room="r", since=0)
    frames = yield frames_until_silent(a)
    kinds = [f["type"] for f in frames]
    assert kinds.count("joined") == 3
    assert [f["seq"] for f in frames if f["type"] == "message"] == list(range(1, 121))
    assert all(f["seq"] == 120 and f["truncated"] is False for f in frames if f["type"] == "joined")
    # live now: joining again (with since 0) answers joined and replays nothing
    a.send(type="join", room="r", since=0)
    again = yield a.expect("joined", room="r", since=0, truncated=False)
    assert again["seq"] == 120
    yield a.quiet()  # no replay came with it (a ping barrier, no sleep)
    yield posted(srv, "r", 1, "after")
    live = yield a.expect("message", room="r")
    assert live["seq"] == 121
    yield a.quiet()
    assert srv.chat.replayer.active == 0
    yield a.close()


@pytest_twisted.inlineCallbacks
def test_closed_connections_pending_replay_is_cancelled(server_factory):
    """A client that stops reading during a big replay, then resets: its replay waits
    for the transport to drain (it does not read the rest of the room), and is
    cancelled when the connection goes; the store reads no further page."""
    srv = yield server_factory()
    yield posted(srv, "r", MESSAGES, TEXT)
    store, replayer = srv.store, srv.chat.replayer
    a = yield Client.v1(srv.port, "alice")
    a.proto.transport.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    a.proto.transport.pauseProducing()  # reads nothing more from its socket
    a.send(type="join", room="r", since=0)
    # blocked on the client's full transport buffer
    yield wait_for(lambda: replayer.waiting, 10, what="the replay waiting for the client")
    reads = store.reads
    assert replayer.active == 1
    rst(a.proto.transport.socket)
    a.proto.transport.abortConnection()
    yield wait_for(lambda: not replayer.active, 10, what="the closed connection's replay to end")
    assert srv.chat.stats.replays_cancelled == 1
    assert store.reads == reads  # no page was read for the closed connection
    assert replayer.waiting == 0


@pytest_twisted.inlineCallbacks
def test_joiner_too_far_behind_its_replay_is_dropped(server_factory):
    """Live messages for a joiner are buffered until its replay is sent; a joiner that
    stops reading while the room is busy is dropped (4008) once --max-queue-bytes are
    buffered for it, instead of the buffer growing; the others carry on."""
    srv = yield server_factory("--max-queue-bytes", "65536")
    yield posted(srv, "r", MESSAGES, TEXT)
    replayer, hub, stats = srv.chat.replayer, srv.chat.hub, srv.chat.stats
    other = yield Client.v1(srv.port, "other")
    yield other.join("r")
    a = yield Client.v1(srv.port, "alice")
    a.proto.transport.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    a.proto.transport.pauseProducing()
    a.send(type="join", room="r", since=0)
    yield wait_for(lambda: replayer.waiting, 10, what="the replay waiting for the client")
    for i in range(20):  # 80 KB of live messages while alice's replay waits
        yield srv.chat.post("r", "~poster", "poster", f"{i} {TEXT}")
    assert stats.closes[4008] == 1
    assert hub.rooms["r"].pending == {} and hub.rooms["r"].pending_bytes == {}
    yield wait_for(lambda: not replayer.active, 10, what="the dropped joiner's replay to end")
    yield other.expect("presence", room="r", user="alice", event="join")
    seqs = []
    for _ in range(20):
        seqs.append((yield other.expect("message"))["seq"])
    assert seqs == list(range(MESSAGES + 1, MESSAGES + 21))
    a.proto.transport.abortConnection()
    yield other.close()


# -- bounded per-channel state (item 7) ---------------------------------------


@pytest_twisted.inlineCallbacks
def test_seq_cache_is_a_bounded_lru():
    """The store's per-channel seq cache holds at most ``seq_cache_max`` channels,
    evicts the least recently used, and a lookup of a channel that does not exist
    adds nothing; seqs stay right for evicted channels, also within one batch."""
    store = SQLiteStore(":memory:", seq_cache_max=3, prune_interval=None)
    yield store.start()
    try:
        for ch in ("a", "b", "c", "d"):
            yield store.append(ch, "u", "u", None, "t", 1)
        assert store.seq_cache_size == 3
        for i in range(50):
            yield store.replay(f"nobody-{i}", 0, 10)
            yield store.history(f"nobody-{i}", None, 10)
        assert store.seq_cache_size == 3
        # "a" was evicted first: its seq comes back from the file
        a2 = yield store.append("a", "u", "u", None, "t", 2)
        assert a2.message.seq == 2
        # one batch over more channels than the cache holds: no seq is reused
        results = yield defer.gatherResults(
            [store.append(ch, "u", "u", None, "t", 3) for ch in "abcdefgh" * 3]
        )
        by_channel = {}
        for r in results:
            by_channel.setdefault(r.message.channel, []).append(r.message.seq)
        assert by_channel["a"] == [3, 4, 5]
        assert by_channel["e"] == [1, 2, 3]
        assert store.seq_cache_size <= 3
    finally:
        yield store.stop()


@pytest_twisted.inlineCallbacks
def test_random_lookups_leave_no_state(server_factory):
    """10,000 ``dm_history``/``history`` lookups of random channels and join/leave of
    distinct rooms: the store's seq cache and the hub keep nothing of them, and the
    traced memory of the process grows by less than 128 KB (the old code: ~510 KB)."""
    srv = yield server_factory("--rate-limit", "0", "--user-rate-limit", "0")
    a = yield Client.v1(srv.port, "alice")
    store, hub = srv.store, srv.chat.hub

    @defer.inlineCallbacks
    def lookups(n, batch=8):
        for i in range(0, n, batch):
            for _ in range(batch):
                other = uuid.uuid4().hex
                a.send(type="dm_history", **{"with": other})
                a.send(type="dm_history", **{"with": other, "since": 0})
                a.send(type="history", room=f"h{other}")
                a.send(type="join", room=f"j{other}", since=0)
                a.send(type="leave", room=f"j{other}")
            # a connection's reads run in order: once this one is answered, all are
            a.send(type="history", room=f"mark{i}")
            while (yield a.recv(timeout=30)).get("room") != f"mark{i}":
                pass

    yield lookups(250)  # warm up (allocator pools, code paths)
    tracemalloc.start()
    try:
        gc.collect()
        before = tracemalloc.get_traced_memory()[0]
        yield lookups(2000)
        gc.collect()  # (finished replays' Deferred/generator cycles)
        grown = tracemalloc.get_traced_memory()[0] - before
        print(f"\n10,000 lookups: {grown} bytes traced")
    finally:
        tracemalloc.stop()
    assert store.seq_cache_size == 0, "lookups of empty channels were cached"
    assert list(hub.rooms) == []
    assert srv.chat.replayer.active == 0
    assert grown < 128 * 1024, f"10,000 lookups kept {grown} bytes"
    yield a.close()
