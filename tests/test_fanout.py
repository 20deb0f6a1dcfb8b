"""The fast fan-out path: byte-identical frames, per-connection order, no compression."""

import base64
import os
import socket
import struct

import pytest
import pytest_twisted
from twisted.internet import defer, threads

from tests.wsclient import Client, deferLater


class RawReader:
    """A relay-mode client on a plain socket that reads whole frames as raw bytes."""

    def __init__(self, port, extensions=None):
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.settimeout(5)
        key = base64.b64encode(os.urandom(16)).decode()
        ext = f"Sec-WebSocket-Extensions: {extensions}\r\n" if extensions else ""
        self.sock.sendall(
            (
                f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n{ext}"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            self.buf += self.sock.recv(4096)
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        self.response = head.decode("latin-1")
        assert self.response.startswith("HTTP/1.1 101"), self.response

    def _need(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            assert chunk, "connection closed"
            self.buf += chunk

    def frame(self) -> bytes:
        """The next whole frame, header included, exactly as it came off the wire."""
        self._need(2)
        n = self.buf[1] & 0x7F
        head = 2
        if n == 126:
            self._need(4)
            (n,) = struct.unpack("!H", self.buf[2:4])
            head = 4
        elif n == 127:
            self._need(10)
            (n,) = struct.unpack("!Q", self.buf[2:10])
            head = 10
        self._need(head + n)
        frame, self.buf = self.buf[: head + n], self.buf[head + n :]
        return frame


@pytest.mark.parametrize("size", [1, 125, 126, 65535, 65536, 70000])
@pytest.mark.parametrize("binary", [False, True])
@pytest_twisted.inlineCallbacks
def test_fast_path_frames_are_byte_identical_to_autobahns(server_factory, size, binary):
    """For every length class the fan-out writes exactly the bytes autobahn's own
    sendMessage writes for the same payload."""
    server = yield server_factory("--max-message-size", "100000")  # autobahn's send limit
    reader = yield threads.deferToThread(RawReader, server.port)
    yield deferLater(0.1)
    (proto,) = list(server.factory.connections)
    # plain TCP: the fan-out sends on the socket directly (TLS is covered by test_tls)
    assert proto.deliver_frame == proto.send_direct
    payload = (b"\x00\xff" if binary else b"xy") * (size // 2) + (b"z" * (size % 2))
    proto.sendMessage(payload, binary)  # autobahn's ordinary path
    by_autobahn = yield threads.deferToThread(reader.frame)
    server.factory.relay([proto], payload, binary)  # chatd's fast path
    by_chatd = yield threads.deferToThread(reader.frame)
    assert by_chatd == by_autobahn
    assert by_chatd[0] == (0x82 if binary else 0x81)
    reader.sock.close()


def test_compression_is_never_negotiated(chatd_process):
    """A client offering permessage-deflate gets no extension, so one frame fits all."""
    reader = RawReader(chatd_process.port, extensions="permessage-deflate; client_max_window_bits")
    assert "sec-websocket-extensions" not in reader.response.lower()
    reader.sock.close()


@pytest_twisted.inlineCallbacks
def test_each_connection_sees_acks_and_messages_in_seq_order(server_factory):
    """Two members flood one room: each sees its own acks and the other's messages
    interleaved in exactly seq order 1..N, though writes are coalesced per turn."""
    srv = yield server_factory("--rate-limit", "0", "--user-rate-limit", "0")
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
