"""permessage-deflate (RFC 7692): negotiation, the RFC's examples, bounded inflation,
and one compressed frame per parameter set shared by every recipient.

Raw-socket clients (``RawWS`` of tests/support/rawws.py) see the frames exactly as
they come off the wire; real clients (python websockets, Node ws, Chromium) show that
compression is transparent to them.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import struct
import subprocess
import zlib

import pytest
import pytest_twisted
from twisted.internet import threads

from chatd import deflate
from tests.conftest import ROOT, need, need_binary
from tests.support.fanout import BUILD_HINT, C_BUILT, use_impl
from tests.support.rawws import RawWS, parse
from tests.wsclient import Client


def split(frame: bytes) -> tuple[int, bytes]:
    """(first byte, payload) of one unmasked frame as RawWS.read_frame returns it."""
    return frame[0], parse(frame).payload


def inflate(body: bytes, bits: int = 15) -> bytes:
    """One permessage-deflate message body inflated with a *bits* window."""
    return zlib.decompressobj(-bits).decompress(body + b"\x00\x00\xff\xff")


def message(frame: bytes, bits: int = 15) -> bytes:
    """The message a single frame carries, inflated when RSV1 is set."""
    first, body = split(frame)
    return inflate(body, bits) if first & 0x40 else body


def extension_header(reader: RawWS) -> str | None:
    """The Sec-WebSocket-Extensions value of *reader*'s 101 response, or None."""
    return reader.header("Sec-WebSocket-Extensions")


def connect(port, extensions=None, protocol=None):
    """A relay-mode RawWS opened in a thread (the server runs in the test's reactor)."""
    return threads.deferToThread(RawWS.relay, port, extensions, protocol)


def read(reader):
    return threads.deferToThread(reader.read_frame)


def close_code(frame: bytes) -> int:
    first, body = split(frame)
    assert first == 0x88, frame
    return struct.unpack("!H", body[:2])[0]


# negotiation as pure logic: every parameter combination

OFFER_FLAGS = [False, True]
CLIENT_BITS = [None, True, "9", "15"]
SERVER_BITS = [None, *map(str, range(8, 16))]


@pytest.mark.parametrize(
    "client_nct,server_nct,client_bits,server_bits",
    list(itertools.product(OFFER_FLAGS, OFFER_FLAGS, CLIENT_BITS, SERVER_BITS)),
)
def test_every_valid_offer_is_accepted_without_server_context_takeover(
    client_nct, server_nct, client_bits, server_bits
):
    """Any valid combination is accepted: the response always says
    server_no_context_takeover, echoes server_max_window_bits and a valued
    client_max_window_bits, and accepts client_no_context_takeover when offered."""
    params = {}
    if client_nct:
        params["client_no_context_takeover"] = [True]
    if server_nct:
        params["server_no_context_takeover"] = [True]
    if client_bits is not None:
        params["client_max_window_bits"] = [client_bits]
    if server_bits is not None:
        params["server_max_window_bits"] = [server_bits]
    agreed = deflate.negotiate([params])
    assert agreed is not None
    parts = agreed.response.split("; ")
    assert parts[:2] == ["permessage-deflate", "server_no_context_takeover"]
    assert ("client_no_context_takeover" in parts) == client_nct
    assert agreed.window_bits == int(server_bits or 15)
    if server_bits is not None:  # accepted by echoing it (§7.1.2.1)
        assert f"server_max_window_bits={server_bits}" in parts
    else:
        assert not any(p.startswith("server_max_window_bits") for p in parts)
    if client_bits not in (None, True):
        assert f"client_max_window_bits={client_bits}" in parts
    else:  # never a client_max_window_bits the client did not offer a value for
        assert not any(p.startswith("client_max_window_bits") for p in parts)


BAD_OFFERS = [
    "permessage-deflate; server_max_window_bits",  # needs a value
    "permessage-deflate; server_max_window_bits=7",
    "permessage-deflate; server_max_window_bits=16",
    "permessage-deflate; server_max_window_bits=010",  # leading zero
    "permessage-deflate; client_max_window_bits=x",
    "permessage-deflate; server_no_context_takeover=1",  # takes no value
    "permessage-deflate; client_no_context_takeover; client_no_context_takeover",
    "permessage-deflate; no_such_parameter",
]


@pytest.mark.parametrize("offer", BAD_OFFERS)
@pytest_twisted.inlineCallbacks
def test_bad_offer_is_declined_and_the_connection_runs_uncompressed(server, offer):
    """An offer with an unknown, repeated or ill-valued parameter is declined (RFC 7692
    §5), not the handshake: no extension, and frames arrive uncompressed."""
    reader = yield connect(server.port, offer)
    assert extension_header(reader) is None
    sender = yield Client.connect(server.port)
    text = b"uncompressed " * 40
    sender.send_raw(text)
    frame = yield read(reader)
    assert split(frame) == (0x81, text)
    reader.sock.close()
    yield sender.close()


@pytest_twisted.inlineCallbacks
def test_first_acceptable_offer_wins(server):
    """Offers are tried in the client's order: a bad first one falls back to the next."""
    reader = yield connect(
        server.port, "permessage-deflate; bogus, permessage-deflate; server_max_window_bits=10"
    )
    assert extension_header(reader) == (
        "permessage-deflate; server_no_context_takeover; server_max_window_bits=10"
    )
    reader.sock.close()


@pytest.mark.parametrize("bits", range(8, 16))
@pytest_twisted.inlineCallbacks
def test_server_max_window_bits_is_respected(server_factory, bits):
    """With server_max_window_bits=N the frames inflate with an N-bit window: the
    message repeats itself further back than that window reaches (for 8 bits, which
    zlib compresses with 9, only messages of at most 256 bytes are compressed)."""
    server = yield server_factory("--max-message-size", "200000")
    reader = yield connect(server.port, f"permessage-deflate; server_max_window_bits={bits}")
    assert f"server_max_window_bits={bits}" in extension_header(reader)
    sender = yield Client.connect(server.port)
    size = 100 if bits == 8 else (1 << bits) + 64
    block = os.urandom(size).hex().encode()[:size]
    text = block * 2
    sender.send_raw(text)
    frame = yield read(reader)
    first, body = split(frame)
    assert first == 0xC1  # FIN, RSV1, text
    assert inflate(body, bits) == text
    reader.sock.close()
    yield sender.close()


@pytest_twisted.inlineCallbacks
def test_relay_keeps_the_frame_type_when_compressing(server):
    """Relay mode stays verbatim under compression: a binary frame arrives binary
    (opcode 2, RSV1 set) and inflates to the very bytes sent."""
    reader = yield connect(server.port, "permessage-deflate")
    sender = yield Client.connect(server.port)
    data = bytes(range(256)) * 4
    sender.send_raw(data, binary=True)
    frame = yield read(reader)
    assert frame[0] == 0xC2
    assert message(frame) == data
    reader.sock.close()
    yield sender.close()


def test_rfc7692_hello_is_compressed_as_the_rfc_shows():
    """§7.2.3.1: "Hello" without context takeover is f2 48 cd c9 c9 07 00."""
    assert deflate.deflate_message(b"Hello") == bytes.fromhex("f248cdc9c90700")


def test_short_messages_go_uncompressed():
    """Below MIN_SIZE bytes nothing is compressed (RSV1 off is allowed per message)."""
    assert deflate.compress(b"x" * (deflate.MIN_SIZE - 1), 15) is None
    assert deflate.compress(b"x" * deflate.MIN_SIZE, 15) is not None
    # an 8-bit window only for messages no back-reference can exceed it in
    assert deflate.compress(b"x" * 300, 8) is None


# the RFC's examples sent by a client, interleaved with uncompressed frames

HELLO = bytes.fromhex("f248cdc9c90700")
RFC_FRAMES = [
    (0xC1, HELLO),  # §7.2.3.1 a single compressed frame
    (0x81, b"Hello"),  # an uncompressed message in between
    (0x41, bytes.fromhex("f248cd")),  # §7.2.3.1 fragmented: first frame has RSV1 ...
    (0x80, bytes.fromhex("c9c90700")),  # ... the continuation has not
    (0xC1, bytes.fromhex("000500faff48656c6c6f00")),  # §7.2.3.3 a stored block
    (0xC1, bytes.fromhex("f348cdc9c90700")),  # §7.2.3.4 a block with BFINAL set
    (0x81, b"Hello"),
]


@pytest_twisted.inlineCallbacks
def test_rfc7692_examples_from_the_client_interleaved_with_plain_frames(server):
    """The RFC's example frames (compressed, fragmented, stored block, BFINAL) and plain
    frames from one client each reach a relay peer as "Hello"."""
    sender = yield connect(server.port, "permessage-deflate; client_no_context_takeover")
    assert "client_no_context_takeover" in extension_header(sender)
    peer = yield Client.connect(server.port)
    for first, body in RFC_FRAMES:
        sender.send_frame(body, first)
    for _ in range(6):
        payload, binary = yield peer.recv_raw()
        assert (payload, binary) == (b"Hello", False)
    sender.sock.close()
    yield peer.close()


@pytest_twisted.inlineCallbacks
def test_client_context_takeover_is_accepted(server):
    """§7.2.3.2: without client_no_context_takeover the client may reuse its window:
    the second "Hello" is the 5-byte back-reference f2 00 11 00 00."""
    sender = yield connect(server.port, "permessage-deflate")
    assert extension_header(sender) == "permessage-deflate; server_no_context_takeover"
    peer = yield Client.connect(server.port)
    sender.send_frame(HELLO, 0xC1)
    sender.send_frame(bytes.fromhex("f200110000"), 0xC1)
    for _ in range(2):
        payload, _binary = yield peer.recv_raw()
        assert payload == b"Hello"
    sender.sock.close()
    yield peer.close()


# hostile input


@pytest_twisted.inlineCallbacks
def test_deflate_bomb_is_closed_with_1009(server_factory):
    """A small compressed frame that would inflate past --max-message-size is closed
    with 1009 before it does, and the server carries on."""
    srv = yield server_factory("--max-message-size", "65536")
    bomber = yield connect(srv.port, "permessage-deflate")
    assert extension_header(bomber) is not None
    bomb = deflate.deflate_message(b"\0" * (20 << 20))  # 20 MB of zeros: ~20 KB
    assert len(bomb) < 65536
    bomber.send_frame(bomb, 0xC2)
    frame = yield read(bomber)
    assert close_code(frame) == 1009
    bomber.sock.close()
    # the server is whole
    a = yield connect(srv.port, "permessage-deflate")
    sender = yield Client.connect(srv.port)
    sender.send_raw(b"still here " * 20)
    frame = yield read(a)
    assert message(frame) == b"still here " * 20
    a.sock.close()
    yield sender.close()


@pytest_twisted.inlineCallbacks
def test_a_compressed_message_just_under_the_limit_is_delivered(server_factory):
    """The limit is on the inflated size, and a message under it passes: 65000 bytes
    of text, compressed, sent in fragments, reach the relay peer whole."""
    srv = yield server_factory("--max-message-size", "65536")
    sender = yield connect(srv.port, "permessage-deflate")
    peer = yield Client.connect(srv.port)
    text = os.urandom(32500).hex().encode()
    body = deflate.deflate_message(text)
    third = len(body) // 3
    sender.send_frame(body[:third], 0x41)  # RSV1 on the first fragment only
    sender.send_frame(body[third : 2 * third], 0x00)
    sender.send_frame(body[2 * third :], 0x80)
    payload, _binary = yield peer.recv_raw()
    assert payload == text
    sender.sock.close()
    yield peer.close()


@pytest.mark.parametrize("negotiated", [True, False])
@pytest_twisted.inlineCallbacks
def test_rsv1_on_a_control_frame_is_a_protocol_error(server, negotiated):
    """A ping with RSV1 set closes the connection with 1002, negotiated or not."""
    reader = yield connect(server.port, "permessage-deflate" if negotiated else None)
    assert (extension_header(reader) is not None) == negotiated
    reader.send_frame(b"ping", 0xC9)
    frame = yield read(reader)
    assert close_code(frame) == 1002
    reader.sock.close()


@pytest_twisted.inlineCallbacks
def test_rsv1_without_negotiation_is_a_protocol_error(server):
    """A compressed frame on a connection that did not negotiate the extension: 1002."""
    reader = yield connect(server.port)
    reader.send_frame(HELLO, 0xC1)
    frame = yield read(reader)
    assert close_code(frame) == 1002
    reader.sock.close()


# one compressed frame per parameter set


@pytest_twisted.inlineCallbacks
def test_recipients_with_the_same_parameters_get_identical_bytes(server_factory, fanout_impl):  # noqa: F811
    """A room with a mix of parameter sets gets one frame per set: byte-identical within
    a set, on the direct path (first send of a turn) and coalesced (later ones)."""
    srv = yield server_factory()
    use_impl(srv, fanout_impl)
    offers = [None, None, "permessage-deflate", "permessage-deflate; client_max_window_bits"]
    offers += ["permessage-deflate; server_max_window_bits=10"] * 2
    readers = []
    for offer in offers:
        readers.append((yield connect(srv.port, offer)))
    out = srv.factory.fanout
    assert out.compressing == 4
    conns = list(srv.factory.connections)
    block = os.urandom(700).hex()  # repeated 1400 bytes back: beyond a 10-bit window
    texts = [json.dumps({"n": i, "text": block * 2}).encode() for i in range(2)]
    short = b'{"type":"typing","room":"r"}'
    for text in (*texts, short):  # one turn: the 2nd and 3rd are queued and coalesced
        out.deliver(conns, text)
    got = []
    for reader in readers:
        frames = []
        for _ in range(3):
            frames.append((yield read(reader)))
        got.append(frames)
    plain, deflate15, deflate10 = got[0], got[2], got[4]
    assert got[1] == plain and got[3] == deflate15 and got[5] == deflate10
    assert deflate15 != plain and deflate10 != deflate15
    for frames, bits in ((plain, 15), (deflate15, 15), (deflate10, 10)):
        assert [message(f, bits) for f in frames] == [*texts, short]
    assert all(f[0] == 0x81 for f in plain)
    assert [f[0] for f in deflate15] == [0xC1, 0xC1, 0x81]  # the short one uncompressed
    for reader in readers:
        reader.sock.close()


class _WindowConn:
    """What send_all reads of a ChatProtocol: ``_fd`` and ``deflate_bits``."""

    def __init__(self, fd, bits):
        self._fd = fd
        self.deflate_bits = bits


def test_c_send_all_picks_each_connections_frame(socket_pairs):  # noqa: F811
    """With *frames*, chatd._fanout.send_all sends ``frames[conn.deflate_bits]`` (the
    plain frame for 0, out-of-range or non-bytes entries) in the same single pass."""
    need(BUILD_HINT, C_BUILT)
    from chatd._fanout import send_all

    plain, small, big = b"\x81\x01p", b"\xc1\x01s", b"\xc1\x02bb"
    frames = (plain,) * 10 + (small,) + (plain,) * 4 + (big,)  # index 10 and 15
    (a, a_peer), (b, b_peer), (c, c_peer), (d, d_peer) = socket_pairs
    conns = [_WindowConn(a.fileno(), 0), _WindowConn(b.fileno(), 10)]
    conns += [_WindowConn(c.fileno(), 15), _WindowConn(d.fileno(), 99)]
    assert send_all(conns, None, plain, frames) is None
    assert [p.recv(100) for p in (a_peer, b_peer, c_peer, d_peer)] == [plain, small, big, plain]
    with pytest.raises(TypeError):
        send_all(conns, None, plain, [plain])  # a tuple or None
    left = send_all([_WindowConn(-1, 15)], None, plain, frames)
    assert [code for _conn, code in left] == [-1]  # Python finishes it (finish_sends)


@pytest_twisted.inlineCallbacks
def test_replies_are_compressed_for_a_compressing_connection(server):
    """A reply (joined, history) above the threshold is compressed for a connection
    that negotiated the extension, and not for one that did not."""
    frames = {}
    for offer in ("permessage-deflate", None):
        reader = yield connect(server.port, offer, "chatd.v1")
        welcome = yield read(reader)
        reader.send_frame(json.dumps({"type": "join", "room": "lobby"}).encode())
        joined = yield read(reader)
        frames[offer] = (welcome, joined)
        reader.sock.close()
    for welcome, joined in frames.values():
        assert json.loads(message(welcome))["type"] == "welcome"
        assert json.loads(message(joined))["type"] == "joined"
    assert frames["permessage-deflate"][0][0] == 0xC1  # the welcome is > 128 bytes
    assert frames[None][0][0] == 0x81


# real clients in one room

NODE_CLIENT = r"""
const WebSocket = require('ws');
const [url, deflate] = process.argv.slice(1);
const ws = new WebSocket(url, 'chatd.v1', {perMessageDeflate: deflate === 'on'});
ws.on('open', () => console.log(JSON.stringify({extensions: ws.extensions})));
ws.on('message', (data) => {
  const msg = JSON.parse(data.toString());
  if (msg.type === 'welcome') ws.send(JSON.stringify({type: 'join', room: 'mix'}));
  console.log(JSON.stringify(msg));
});
"""


class NodeClient:
    """A Node ``ws`` client (miniprogram/node_modules) printing each frame as a line."""

    def __init__(self, port, deflate_on):
        node = need_binary("node")
        modules = ROOT / "miniprogram" / "node_modules"
        self.proc = subprocess.Popen(
            [node, "-e", NODE_CLIENT, f"ws://127.0.0.1:{port}/ws", "on" if deflate_on else "off"],
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "NODE_PATH": str(modules)},
        )
        self.extensions = json.loads(self.proc.stdout.readline())["extensions"]

    def until(self, kind, **fields):
        """The next frame of *kind* with *fields* (ws reads ahead; lines block)."""
        while True:
            line = self.proc.stdout.readline()
            assert line, "node client ended"
            msg = json.loads(line)
            if msg.get("type") == kind and all(msg.get(k) == v for k, v in fields.items()):
                return msg

    def stop(self):
        self.proc.kill()
        self.proc.wait()


def test_python_and_node_clients_with_and_without_compression_see_the_same(chatd_process):
    """python websockets and Node ws, each with permessage-deflate on and off, in one
    room: every one sees the same messages, long and short."""
    from websockets.sync.client import connect as ws_connect

    url = f"ws://127.0.0.1:{chatd_process.port}/ws"
    with contextlib.ExitStack() as stack:
        py_on = stack.enter_context(ws_connect(url, subprotocols=["chatd.v1"], open_timeout=10))
        py_off = stack.enter_context(
            ws_connect(url, subprotocols=["chatd.v1"], compression=None, open_timeout=10)
        )
        assert "permessage-deflate" in py_on.response.headers["Sec-WebSocket-Extensions"]
        assert "Sec-WebSocket-Extensions" not in py_off.response.headers
        nodes = [NodeClient(chatd_process.port, True), NodeClient(chatd_process.port, False)]
        for node in nodes:
            stack.callback(node.stop)
        assert nodes[0].extensions.startswith("permessage-deflate")
        assert nodes[1].extensions == ""
        for ws in (py_on, py_off):
            json.loads(ws.recv(timeout=10))  # welcome
            ws.send(json.dumps({"type": "join", "room": "mix"}))
        for node in nodes:
            node.until("joined", room="mix")
        for ws in (py_on, py_off):
            while json.loads(ws.recv(timeout=10))["type"] != "joined":
                pass
        sender = stack.enter_context(ws_connect(url, subprotocols=["chatd.v1"], open_timeout=10))
        json.loads(sender.recv(timeout=10))
        sender.send(json.dumps({"type": "join", "room": "mix"}))
        texts = ["hi", "a longer message, " * 40, "é" * 500]
        for text in texts:
            sender.send(json.dumps({"type": "send", "room": "mix", "text": text}))

        def messages(recv):
            out = []
            while len(out) < len(texts):
                msg = recv()
                if msg.get("type") == "message":
                    out.append((msg["from"], msg["text"], msg["seq"]))
            return out

        seen = [messages(lambda w=ws: json.loads(w.recv(timeout=10))) for ws in (py_on, py_off)]
        seen += [messages(lambda n=node: n.until("message")) for node in nodes]
        assert [t for _, t, _ in seen[0]] == texts
        assert all(s == seen[0] for s in seen)


def test_chromium_reads_a_compressing_room(chatd_process, browser):
    """Chromium offers permessage-deflate, gets it, and reads long messages from the
    room (compressed on the wire) and short ones (not)."""
    from websockets.sync.client import connect as ws_connect

    port = chatd_process.port
    page = browser.new_page()
    try:
        page.goto(f"http://127.0.0.1:{port}/")
        page.evaluate(
            """(url) => new Promise((resolve) => {
                window.got = [];
                const ws = new WebSocket(url, 'chatd.v1');
                window.ws = ws;
                ws.onmessage = (e) => {
                    const m = JSON.parse(e.data);
                    if (m.type === 'welcome') ws.send(JSON.stringify({type: 'join', room: 'b'}));
                    if (m.type === 'joined') resolve();
                    if (m.type === 'message') window.got.push(m.text);
                };
            })""",
            f"ws://127.0.0.1:{port}/ws",
        )
        assert page.evaluate("window.ws.extensions").startswith("permessage-deflate")
        with ws_connect(f"ws://127.0.0.1:{port}/ws", subprotocols=["chatd.v1"]) as sender:
            json.loads(sender.recv(timeout=10))
            sender.send(json.dumps({"type": "join", "room": "b"}))
            texts = ["short", "long and compressible " * 50]
            for text in texts:
                sender.send(json.dumps({"type": "send", "room": "b", "text": text}))
            page.wait_for_function("() => window.got.length >= 2", timeout=10000)
            assert page.evaluate("window.got") == texts
    finally:
        page.close()


def test_an_older_c_build_leaves_compressed_fanouts_to_python():
    """A chatd._fanout built before the *frames* argument is detected: compressed
    fan-outs then take the pure-Python loop instead of failing."""
    from chatd import fanout

    def old_send_all(conns, exclude, frame):
        return None

    assert not fanout.c_takes_frames(old_send_all)
    assert fanout.c_takes_frames(fanout.send_all_py)
