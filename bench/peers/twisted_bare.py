"""The ceiling: a bare Twisted ``Protocol`` relay with no WebSocket library.

It does the HTTP upgrade with the least work that still follows RFC 6455
(reads the request head, answers 101 with the computed accept key), unmasks
each incoming client frame, builds the unmasked server frame once and hands
that one ``bytes`` object to ``transport.write`` of every other connection.
Nothing else (no UTF-8 validation, no ping, no close handshake beyond
dropping the connection), so it is the upper bound any Twisted relay can
reach on one core.

Run: ``python3 bench/peers/twisted_bare.py PORT``
"""

import base64
import hashlib
import struct
import sys

from twisted.internet import protocol

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def encode_frame(opcode: int, payload: bytes) -> bytes:
    """Build one unmasked server frame (FIN set) for ``payload``."""
    n = len(payload)
    if n < 126:
        return struct.pack("!BB", 0x80 | opcode, n) + payload
    if n < 65536:
        return struct.pack("!BBH", 0x80 | opcode, 126, n) + payload
    return struct.pack("!BBQ", 0x80 | opcode, 127, n) + payload


def unmask(mask: bytes, data: bytes) -> bytes:
    """XOR ``data`` with the 4-byte ``mask`` using one big-integer operation."""
    n = len(data)
    if not n:
        return data
    key = (mask * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "big") ^ int.from_bytes(key, "big")).to_bytes(n, "big")


class BareRelay(protocol.Protocol):
    """One connection: handshake, then relay every data frame to all the others."""

    def connectionMade(self):
        self.transport.setTcpNoDelay(True)
        self.buf = b""
        self.open = False

    def dataReceived(self, data):
        self.buf += data
        if not self.open:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head, self.buf = self.buf[:end], self.buf[end + 4 :]
            key = b""
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"sec-websocket-key":
                    key = value.strip()
            if not key:
                self.transport.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                self.transport.loseConnection()
                return
            accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
            self.transport.write(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n"
            )
            self.open = True
            self.factory.clients.append(self)
        self._frames()

    def _frames(self):
        buf = self.buf
        i = 0
        while len(buf) - i >= 6:
            b0, b1 = buf[i], buf[i + 1]
            n = b1 & 0x7F
            h = i + 2
            if n == 126:
                if len(buf) - i < 8:
                    break
                (n,) = struct.unpack_from("!H", buf, h)
                h += 2
            elif n == 127:
                if len(buf) - i < 14:
                    break
                (n,) = struct.unpack_from("!Q", buf, h)
                h += 8
            if len(buf) < h + 4 + n:
                break
            payload = unmask(buf[h : h + 4], buf[h + 4 : h + 4 + n])
            i = h + 4 + n
            opcode = b0 & 0x0F
            if opcode in (1, 2):
                frame = encode_frame(opcode, payload)
                for c in self.factory.clients:
                    if c is not self:
                        c.transport.write(frame)
            elif opcode == 9:
                self.transport.write(encode_frame(10, payload))
            elif opcode == 8:
                self.transport.write(encode_frame(8, payload[:2]))
                self.transport.loseConnection()
                break
        self.buf = buf[i:]

    def connectionLost(self, reason):
        if self.open:
            self.factory.clients.remove(self)


class BareRelayFactory(protocol.ServerFactory):
    """Holds the list of open connections."""

    protocol = BareRelay

    def __init__(self):
        self.clients = []


def main():
    """Listen on 127.0.0.1:PORT and run the reactor."""
    from twisted.internet import reactor

    port = int(sys.argv[1])
    reactor.listenTCP(port, BareRelayFactory(), interface="127.0.0.1")
    print(f"twisted_bare listening on {port}", flush=True)
    reactor.run()


if __name__ == "__main__":
    main()
