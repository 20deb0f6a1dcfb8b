"""The fast fan-out path: byte-identical frames, per-connection order, compression
negotiated only without server context takeover (tests/e2e/test_compression.py has the rest),
with the C loop (chatd._fanout), with the pure-Python loop, and with the direct path
off (as when a Twisted release lacks a name it reads): everything through
``transport.write``."""

import pytest
import pytest_twisted
from twisted.internet import defer, threads

from chatd import fanout
from chatd.fanout import NO_C_FANOUT
from chatd.service import build
from tests.conftest import need
from tests.support.fanout import BUILD_HINT, C_BUILT, use_impl
from tests.support.rawws import RawWS
from tests.wsclient import Client, deferLater, wait_for


@pytest.mark.parametrize("size", [1, 125, 126, 65535, 65536, 70000])
@pytest.mark.parametrize("binary", [False, True])
@pytest_twisted.inlineCallbacks
def test_fast_path_frames_are_byte_identical_to_autobahns(
    server_factory, size, binary, fanout_impl
):
    """For every length class the fan-out writes exactly the bytes autobahn's own
    sendMessage writes for the same payload."""
    server = yield server_factory("--max-message-size", "100000")  # autobahn's send limit
    use_impl(server, fanout_impl)
    reader = yield threads.deferToThread(RawWS.relay, server.port)
    yield wait_for(lambda: len(server.factory.connections) == 1, what="the reader tracked")
    (proto,) = list(server.factory.connections)
    server.factory.fanout.rearm_all()  # (the fan-out does this first) the 101 reply is written
    if fanout_impl == "transport":
        assert proto.deliver_frame == proto.write_through
        assert proto._fd == -1
    else:
        # plain TCP: the fan-out sends on the socket directly (TLS is covered by test_tls)
        assert proto.deliver_frame == proto.send_direct
        assert proto._fd == proto.transport.socket.fileno()
    payload = (b"\x00\xff" if binary else b"xy") * (size // 2) + (b"z" * (size % 2))
    proto.sendMessage(payload, binary)  # autobahn's ordinary path
    by_autobahn = yield threads.deferToThread(reader.read_frame)
    server.factory.fanout.broadcast([proto], payload, binary)  # chatd's fast path
    by_chatd = yield threads.deferToThread(reader.read_frame)
    assert by_chatd == by_autobahn
    assert by_chatd[0] == (0x82 if binary else 0x81)
    reader.sock.close()


def test_compression_is_negotiated_without_server_context_takeover(chatd_process):
    """A client offering permessage-deflate gets it, always with
    server_no_context_takeover, so one compressed frame fits every such recipient."""
    reader = RawWS.relay(
        chatd_process.port, extensions="permessage-deflate; client_max_window_bits"
    )
    assert (
        "Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover\r\n"
        in reader.head + "\r\n"
    )
    reader.sock.close()


def test_compression_off_negotiates_nothing(twistd_factory):
    """With --compression off a client offering permessage-deflate gets no extension."""
    proc = twistd_factory("--listen", "tcp:0:interface=127.0.0.1", "--compression", "off")
    reader = RawWS.relay(proc.port, extensions="permessage-deflate; client_max_window_bits")
    assert "sec-websocket-extensions" not in reader.head.lower()
    reader.sock.close()


@pytest_twisted.inlineCallbacks
def test_each_connection_sees_acks_and_messages_in_seq_order(server_factory, fanout_impl):
    """Two members flood one room: each sees its own acks and the other's messages
    interleaved in exactly seq order 1..N, though writes are coalesced per turn."""
    srv = yield server_factory("--rate-limit", "0", "--user-rate-limit", "0")
    use_impl(srv, fanout_impl)
    a = yield Client.v1(srv.port, "a")
    b = yield Client.v1(srv.port, "b")
    watcher = yield Client.v1(srv.port, "w")
    for c in (a, b, watcher):
        yield c.join("r")
    yield a.expect("presence")
    yield a.expect("presence")
    yield b.expect("presence")
    n = 300
    for i in range(n):
        a.send(type="send", room="r", text=f"a{i}", id=f"a{i}")
        b.send(type="send", room="r", text=f"b{i}", id=f"b{i}")

    @defer.inlineCallbacks
    def seqs(client, count):
        out = []
        while len(out) < count:
            frame = yield client.recv()
            assert frame["type"] in ("ack", "message"), frame
            out.append(frame["seq"])
        return out

    got_a = yield seqs(a, 2 * n)
    got_b = yield seqs(b, 2 * n)
    got_w = yield seqs(watcher, 2 * n)
    assert got_a == got_b == got_w == list(range(1, 2 * n + 1))
    for c in (a, b, watcher):
        yield c.close()


def test_c_fanout_is_used_when_built(monkeypatch):
    """A factory picks the C loop when chatd._fanout is importable (bash .ci/run
    builds it), and the pure-Python loop when CHATD_NO_C_FANOUT is set."""
    need(BUILD_HINT, C_BUILT)
    from chatd.store.memory import MemoryStore

    assert build(MemoryStore()).fanout.impl == "c"
    monkeypatch.setenv(NO_C_FANOUT, "1")
    out = build(MemoryStore()).fanout
    assert out.impl == "python"
    assert out.send_all == fanout.send_all_py


class _Conn:
    """What send_all reads of a ChatProtocol: ``_fd`` (its socket's descriptor while
    armed, -1 otherwise)."""

    def __init__(self, fd):
        self._fd = fd


def test_c_send_all_contract(socket_pairs):
    """chatd._fanout.send_all sends the frame once to every armed connection but
    the excluded one, and hands back exactly the ones Python must finish: not
    armed (-1), failed (-2), partial or would-block (bytes sent)."""
    need(BUILD_HINT, C_BUILT)
    from chatd._fanout import send_all

    frame = b"\x81\x05hello"
    (a, a_peer), (b, b_peer), (c, c_peer), (d, d_peer) = socket_pairs
    ok = _Conn(a.fileno())
    excluded = _Conn(b.fileno())
    slow = _Conn(-1)  # write_slowly, or bytes buffered in its transport
    odd = _Conn(None)  # anything but a non-negative int counts as not armed
    left = send_all((ok, excluded, slow, odd), excluded, frame)
    assert left == [(slow, -1), (odd, -1)]
    assert a_peer.recv(100) == frame
    for peer in (b_peer, c_peer, d_peer):
        peer.setblocking(False)
        with pytest.raises(BlockingIOError):
            peer.recv(100)
    assert send_all([ok], None, frame) is None
    assert a_peer.recv(100) == frame
    assert send_all([], None, frame) is None


def test_c_send_all_partial_and_failed_sends(socket_pairs):
    """A peer that stopped reading: the first frame that does not fit comes back
    with the bytes that went (0 when none did); a dead descriptor comes back as -2."""
    need(BUILD_HINT, C_BUILT)
    from chatd._fanout import send_all

    (a, a_peer), (b, _b_peer), _, _ = socket_pairs
    conn = _Conn(a.fileno())
    frame = b"\x82\x7e\xff\xff" + b"x" * 0xFFFF
    total = 0
    codes = []
    while len(codes) < 2:
        left = send_all([conn], None, frame)
        if left is None:
            total += len(frame)
            continue
        ((who, code),) = left
        assert who is conn and 0 <= code < len(frame)
        total += code
        codes.append(code)
    assert codes[-1] == 0  # the buffer is full: nothing more went
    a_peer.setblocking(False)
    got = 0
    while True:
        try:
            chunk = a_peer.recv(1 << 20)
        except BlockingIOError:
            break
        got += len(chunk)
    assert got == total
    dead = _Conn(b.fileno())
    b.close()
    assert send_all([dead], None, frame) == [(dead, -2)]


def assert_armed_means_empty(factory):
    """The invariant the C loop relies on: a connection with a descriptor in ``_fd``
    has nothing in its transport's write buffer (nothing can be overtaken)."""
    for conn in factory.connections:
        if conn._fd >= 0:
            t = conn.transport
            assert not t.dataBuffer and not t._tempDataLen, conn.peer
            assert conn._fd == t.socket.fileno()
            assert conn.deliver_frame == conn.send_direct


@pytest_twisted.inlineCallbacks
def test_connections_are_armed_only_with_empty_buffers(server_factory):
    """Open connections get armed once the handshake reply is written; autobahn's
    own frames (pings, pongs) disarm them until Twisted has written them, and the
    next fan-out re-arms them: meanwhile every frame still arrives, in order."""
    need(BUILD_HINT, C_BUILT)
    srv = yield server_factory("--rate-limit", "0", "--user-rate-limit", "0")
    clients = []
    for _ in range(5):
        c = yield Client.connect(srv.port)
        clients.append(c)
    sender, *readers = clients
    yield wait_for(lambda: len(srv.factory.connections) == 5, what="5 connections tracked")
    assert_armed_means_empty(srv.factory)
    for i in range(200):
        if i % 20 == 0:
            for conn in srv.factory.connections:
                conn.sendPing()  # an autobahn write behind the fan-out's back
            assert_armed_means_empty(srv.factory)
            assert srv.factory.fanout.rearm  # waiting to be re-armed
        sender.send_raw(b"%05d" % i)
        yield deferLater(0.002)  # pacing: one fan-out per reactor turn, not a wait
        assert_armed_means_empty(srv.factory)
    for r in readers:
        got = []
        while len(got) < 200:
            payload, _ = yield r.recv_raw()
            got.append(int(payload))
        assert got == list(range(200))
    protos = list(srv.factory.connections)
    armed = [conn for conn in protos if conn._fd >= 0]
    assert len(armed) == 5  # all re-armed by the fan-outs after the pings
    for c in clients:
        yield c.close()
    yield wait_for(lambda: not srv.factory.connections, what="every connection untracked")
    # closed: no descriptor left for the C loop, nothing waiting to be re-armed
    assert [conn._fd for conn in protos] == [-1] * 5
    assert not srv.factory.connections and not srv.factory.fanout.rearm


@pytest_twisted.inlineCallbacks
def test_stalled_reader_with_each_fanout_loop(server_factory, fanout_impl):
    """One member stops reading while another keeps sending: the reading members get
    every frame in order, the stalled one is dropped as a slow consumer (4008) once
    its backlog passes --max-queue-bytes, with either loop."""
    srv = yield server_factory(
        "--rate-limit", "0", "--user-rate-limit", "0", "--max-queue-bytes", "200000"
    )
    use_impl(srv, fanout_impl)
    sender = yield Client.connect(srv.port)
    reader = yield Client.connect(srv.port)
    stalled = yield threads.deferToThread(RawWS.relay, srv.port)
    yield wait_for(lambda: len(srv.factory.connections) == 3, what="3 connections tracked")
    text = b"m" * 4000
    n = 4000  # 16 MB: far more than the stalled socket and the queue bound hold
    got = []
    for i in range(n):
        sender.send_raw(b"%05d" % i + text)
        if i % 50 == 49:
            while len(got) <= i:
                payload, _ = yield reader.recv_raw()
                got.append(int(payload[:5]))
            assert_armed_means_empty(srv.factory)
    assert got == list(range(n))
    assert srv.chat.stats.closes[4008] == 1
    yield sender.close()
    yield reader.close()
    stalled.sock.close()


@pytest.mark.subprocess
@pytest.mark.parametrize("disabled", [False, True], ids=["c", "python"])
def test_twistd_logs_its_fanout_loop_and_relays(twistd_factory, disabled):
    """``twistd -n chatd`` says which fan-out loop it runs (C unless CHATD_NO_C_FANOUT
    is set) and relays with it between real clients."""
    if not disabled:
        need(BUILD_HINT, C_BUILT)
    proc = twistd_factory("--port", "0", env={NO_C_FANOUT: "1"} if disabled else None)
    from websockets.sync.client import connect

    with connect(proc.ws_url) as a, connect(proc.ws_url) as b, connect(proc.ws_url) as c:
        a.send("hello from a")
        assert b.recv(timeout=5) == "hello from a"
        assert c.recv(timeout=5) == "hello from a"
    expected = "fan-out loop: pure Python" if disabled else "fan-out loop: C (chatd._fanout)"
    assert expected in proc.log


def test_direct_support_names_what_twisted_lacks():
    """The start-up probe finds every name it reads on this Twisted, and names the one
    a connection class lacks."""
    from twisted.internet import reactor, tcp

    assert fanout.direct_support(reactor) is None

    class Renamed(tcp.Connection):
        """As if a Twisted release had renamed its buffer counter."""

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            del self._tempDataLen

    assert fanout.direct_support(reactor, Renamed) == (
        "twisted.internet.tcp.Connection has no _tempDataLen"
    )


def test_only_the_fanout_module_writes_to_connections():
    """No chatd module but chatd/fanout.py hands bytes to a transport or a socket, or
    calls autobahn's own send methods: the direct-send invariant has one owner."""
    import re
    from pathlib import Path

    import chatd

    writes = re.compile(r"transport\.write|\.send(Data|Message|PreparedMessage)\(|_sock_send")
    # the HTTP layer answers refused requests on the HTTP channel: that is before any
    # WebSocket (and so any armed descriptor) exists for the connection
    before_websocket = {"httpserver.py"}
    # the Redis Cluster client writes its pipelined SSUBSCRIBEs on its own connection
    # to Redis, which is never a chat connection
    redis_client = {"rediscluster.py"}
    offenders = [
        f"{path.name}:{n}"
        for path in Path(chatd.__file__).parent.rglob("*.py")
        if path.name != "fanout.py" and path.name not in before_websocket | redis_client
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if writes.search(line)
    ]
    assert offenders == []
