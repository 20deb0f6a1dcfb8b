"""The one raw-frame WebSocket client of the test suite: our own handshake and
framing on a blocking socket, so a test can send anything at all (broken framing,
reserved bits, unmasked frames, garbage lengths) and read the server's frames
exactly as they come off the wire (header included, for byte-identity tests).

:func:`frame` builds one frame (well-formed unless told otherwise), :func:`parse`
splits one, :class:`RawWS` does the HTTP upgrade (optional subprotocols,
extensions, headers, path) and reads, answers pings, sends, closes and resets.
The server runs in another process or in the test's reactor; in the latter case
call the blocking methods through ``threads.deferToThread``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import socket
import struct
from typing import NamedTuple

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
TIMEOUT = 5.0


def _mask(data: bytes, key: bytes) -> bytes:
    n = len(data)
    if not n:
        return b""
    k = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "big") ^ int.from_bytes(k, "big")).to_bytes(n, "big")


def frame(opcode, payload=b"", fin=True, rsv=0, mask=True, length=None, ext=None):
    """One WebSocket frame as bytes, well-formed unless told otherwise.

    *rsv* sets the three reserved bits (4 = RSV1), *mask* False sends it
    unmasked, *length* overrides the length header (the payload is sent as
    given), *ext* forces the 7-bit (0), 16-bit or 64-bit length encoding.
    """
    if isinstance(payload, str):
        payload = payload.encode()
    b0 = (0x80 if fin else 0) | (rsv << 4) | opcode
    n = len(payload) if length is None else length
    m = 0x80 if mask else 0
    if ext is None:
        ext = 0 if n < 126 else 16 if n < 65536 else 64
    if ext == 0:
        head = bytes([b0, m | n])
    elif ext == 16:
        head = bytes([b0, m | 126]) + struct.pack("!H", n)
    else:
        head = bytes([b0, m | 127]) + struct.pack("!Q", n)
    if mask:
        key = os.urandom(4)
        head += key
        payload = _mask(payload, key)
    return head + payload


def text(obj) -> bytes:
    """A masked text frame holding *obj* as JSON (or *obj* itself if str/bytes)."""
    if not isinstance(obj, str | bytes):
        obj = json.dumps(obj, ensure_ascii=False)
    return frame(0x1, obj)


def header_length(data: bytes) -> int:
    """The length of the frame header at the start of *data* (at least 2 bytes of it)."""
    n = data[1] & 0x7F
    return (2 if n < 126 else 4 if n == 126 else 10) + (4 if data[1] & 0x80 else 0)


class Frame(NamedTuple):
    """One frame split into its parts (the payload unmasked)."""

    fin: bool
    rsv: int  # the three reserved bits: 4 = RSV1
    opcode: int
    masked: bool
    payload: bytes


def parse(data: bytes) -> Frame:
    """Split one whole frame (as :meth:`RawWS.read_frame` returns it)."""
    b0, b1 = data[0], data[1]
    n = b1 & 0x7F
    start = 2 if n < 126 else 4 if n == 126 else 10
    if n == 126:
        (n,) = struct.unpack("!H", data[2:4])
    elif n == 127:
        (n,) = struct.unpack("!Q", data[2:10])
    payload = data[header_length(data) :]
    assert len(payload) == n, f"a frame of {n} payload bytes holds {len(payload)}"
    if b1 & 0x80:
        payload = _mask(payload, data[start : start + 4])
    return Frame(bool(b0 & 0x80), (b0 >> 4) & 7, b0 & 0x0F, bool(b1 & 0x80), payload)


class RawWS:
    """A WebSocket client on a plain socket: it can send anything at all.

    The constructor does the HTTP upgrade and records ``status`` (101 when
    upgraded) and the response ``head``. *protocols* are offered as
    ``Sec-WebSocket-Protocol``, *extensions* (a header value) as
    ``Sec-WebSocket-Extensions``; *rcvbuf* sets ``SO_RCVBUF`` before connecting.
    Pings from the server are answered transparently by :meth:`recv_frame`;
    :meth:`read_frame` returns whole frames untouched.
    """

    def __init__(
        self,
        port,
        path="/ws",
        protocols=("chatd.v1",),
        headers=(),
        timeout=TIMEOUT,
        extensions=None,
        rcvbuf=None,
    ):
        self.sock = socket.socket()
        if rcvbuf is not None:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect(("127.0.0.1", port))
        key = base64.b64encode(os.urandom(16)).decode()
        lines = [
            f"GET {path} HTTP/1.1",
            f"Host: 127.0.0.1:{port}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {key}",
            "Sec-WebSocket-Version: 13",
        ]
        if protocols:
            lines.append("Sec-WebSocket-Protocol: " + ", ".join(protocols))
        if extensions:
            lines.append(f"Sec-WebSocket-Extensions: {extensions}")
        lines += [f"{name}: {value}" for name, value in headers]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                break
            self.buf += chunk
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        self.head = head.decode("latin-1")
        self.status = int(self.head.split(" ", 2)[1]) if self.head.startswith("HTTP/") else None
        if self.status == 101:
            accept = base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()
            assert f"\r\nsec-websocket-accept: {accept.lower()}" in self.head.lower()
        self.welcome = None

    @classmethod
    def upgraded(cls, port, **kwargs):
        """A connection whose handshake must have been answered 101."""
        ws = cls(port, **kwargs)
        assert ws.status == 101, ws.head
        return ws

    @classmethod
    def relay(cls, port, extensions=None, protocol=None, **kwargs):
        """An upgraded relay-mode connection (path ``/``, no subprotocol unless given)."""
        protocols = (protocol,) if protocol else ()
        return cls.upgraded(port, path="/", protocols=protocols, extensions=extensions, **kwargs)

    @classmethod
    def v1(cls, port, **kwargs):
        """A chatd.v1 connection whose ``welcome`` has been read."""
        ws = cls.upgraded(port, **kwargs)
        ws.welcome = ws.expect("welcome")
        return ws

    def header(self, name) -> str | None:
        """The value of response header *name* (any case), or None."""
        prefix = name.lower() + ":"
        for line in self.head.split("\r\n")[1:]:
            if line.lower().startswith(prefix):
                return line[len(prefix) :].strip()
        return None

    def send(self, data: bytes):
        """Write raw bytes."""
        self.sock.sendall(data)

    def send_frame(self, payload: bytes, first: int = 0x81):
        """Send one masked frame: *first* is its first byte (FIN, RSV bits, opcode)."""
        self.send(frame(first & 0x0F, payload, fin=bool(first & 0x80), rsv=(first >> 4) & 7))

    def send_json(self, **obj):
        """Send one well-formed chatd.v1 frame."""
        self.send(text(obj))

    def _need(self, n):
        """Buffer at least *n* bytes (EOFError when the server ends the connection first)."""
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("the server closed the TCP connection")
            self.buf += chunk

    def read_frame(self) -> bytes:
        """The next whole frame, header included, exactly as it came off the wire."""
        self._need(2)
        n = self.buf[1] & 0x7F
        if n == 126:
            self._need(4)
            (n,) = struct.unpack("!H", self.buf[2:4])
        elif n == 127:
            self._need(10)
            (n,) = struct.unpack("!Q", self.buf[2:10])
        size = header_length(self.buf) + n
        self._need(size)
        out, self.buf = self.buf[:size], self.buf[size:]
        return out

    def recv_frame(self, pings=False):
        """The next ``(opcode, payload)`` from the server (pings are answered, and with
        *pings* true returned too, so a test can wait for the server's next ping)."""
        while True:
            got = parse(self.read_frame())
            assert not got.masked, "server frames must not be masked"
            assert got.rsv == 0, "server frames must not set reserved bits"
            if got.opcode == 0x9:
                self.send(frame(0xA, got.payload))
                if not pings:
                    continue
            return got.opcode, got.payload

    def recv(self):
        """The next data frame as JSON (it must be a text frame)."""
        opcode, payload = self.recv_frame()
        assert opcode == 0x1, f"expected a text frame, got opcode {opcode}: {payload[:200]!r}"
        return json.loads(payload)

    def expect(self, kind, **fields):
        """The next frame must be *kind* with *fields*; returns it."""
        msg = self.recv()
        assert msg.get("type") == kind, f"expected {kind}, got {msg}"
        for key, value in fields.items():
            assert msg.get(key) == value, f"{key}: expected {value!r} in {msg}"
        return msg

    def expect_error(self, code, ref):
        """The next frame must be ``error {code, ref}``."""
        return self.expect("error", code=code, ref=ref)

    def until_closed(self):
        """Read to the end: ``(close code or None, data frames before it)``.

        None means the TCP connection ended (EOF or reset) without a close
        frame. A close frame is answered, then the socket is closed.
        """
        frames = []
        try:
            while True:
                opcode, payload = self.recv_frame()
                if opcode == 0x8:
                    code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
                    try:
                        self.send(frame(0x8, payload[:2]))
                    except OSError:
                        pass
                    return code, frames
                frames.append((opcode, payload))
        except (EOFError, ConnectionResetError, BrokenPipeError):
            return None, frames
        finally:
            self.sock.close()

    def close(self):
        """Close normally (best effort) and drop the socket."""
        try:
            self.send(frame(0x8, struct.pack("!H", 1000)))
        except OSError:
            pass
        self.sock.close()

    def reset(self):
        """Drop the connection with a TCP RST (SO_LINGER 0), sending no close frame."""
        rst(self.sock)
        self.sock.close()


def rst(sock: socket.socket) -> socket.socket:
    """Make closing *sock* send a TCP RST (SO_LINGER 0); returns *sock*."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    return sock


def handshake_status(port, path="/ws", headers=(), protocols=("chatd.v1",)):
    """The HTTP status a handshake gets (101 when upgraded); the socket is closed."""
    ws = RawWS(port, path=path, headers=headers, protocols=protocols)
    ws.close()
    return ws.status
