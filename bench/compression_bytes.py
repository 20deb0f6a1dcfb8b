"""Bytes on the wire per delivered message, with and without permessage-deflate.

Starts ``twistd -n chatd --db :memory:`` and, on raw sockets, reads whole frames
exactly as they come off the wire to two receivers in one room, one that offered
permessage-deflate and one that did not:

* ``message`` frames for chat texts of realistic lengths (English and Chinese);
* the reply to ``history`` for a page of 50 such messages.

The ``joined`` reply of a 1,000-member room is computed instead (1,000 live
chatd.v1 members would cost a million presence frames on a shared machine): its
payload is built by ``chatd.wire`` and framed by ``chatd.fanout.Fanout.frame``, the
code that frames every reply (the live frames above are checked against the same
computation).

Prints one JSON object per line, then a summary line::

    python3 bench/compression_bytes.py
"""

from __future__ import annotations

import base64
import json
import os
import random
import socket
import struct
import sys

BENCH = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH)
sys.path.insert(0, REPO)
sys.path.insert(0, BENCH)

from autobahn.websocket.protocol import PreparedMessage  # noqa: E402
from chatd_process import start_chatd as start  # noqa: E402  (bench/)

from chatd import wire  # noqa: E402
from chatd.fanout import Fanout  # noqa: E402

EN = (
    "ok see you at eight then. did anyone grab the slides from yesterday's meeting? "
    "I'm running ten minutes late, the metro is stuck again. can you send me the "
    "address of the restaurant, and is it the one near the station or the new place? "
    "thanks! I'll bring the tickets and the charger you left at my flat last week. "
)
ZH = (
    "好的，我们八点见。昨天会议的幻灯片有人下载了吗？地铁又停了，我要晚到十分钟。"
    "能把餐厅的地址发给我吗？是车站旁边那家还是新开的那家？谢谢！我会带上票和你上周落在我家的充电器。"
)
TEXTS = [
    ("en", 2),
    ("en", 20),
    ("en", 60),
    ("en", 140),
    ("en", 300),
    ("en", 1000),
    ("zh", 10),
    ("zh", 40),
    ("zh", 150),
]


def text_of(lang: str, chars: int, rng: random.Random) -> str:
    """*chars* characters of *lang* made of the corpus's words (characters for
    Chinese) in random order: no message repeats another wholesale."""
    units = EN.split() if lang == "en" else list(ZH)
    sep = " " if lang == "en" else ""
    out = ""
    while len(out) < chars:
        out += rng.choice(units) + sep
    return out[:chars]


class Raw:
    """A chatd.v1 client on a plain socket: masked frames out, whole frames in."""

    def __init__(self, port, deflate: bool):
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.settimeout(10)
        key = base64.b64encode(os.urandom(16)).decode()
        ext = "Sec-WebSocket-Extensions: permessage-deflate\r\n" if deflate else ""
        self.sock.sendall(
            (
                f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n{ext}"
                "Sec-WebSocket-Protocol: chatd.v1\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            self.buf += self.sock.recv(4096)
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        self.extensions = "permessage-deflate" in head.decode("latin-1").lower()
        self.frame()  # welcome

    def _need(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed")
            self.buf += chunk

    def frame(self) -> bytes:
        self._need(2)
        n = self.buf[1] & 0x7F
        head = 2
        if n == 126:
            self._need(4)
            head, n = 4, struct.unpack("!H", self.buf[2:4])[0]
        elif n == 127:
            self._need(10)
            head, n = 10, struct.unpack("!Q", self.buf[2:10])[0]
        self._need(head + n)
        out, self.buf = self.buf[: head + n], self.buf[head + n :]
        return out

    def until(self, kind: str) -> bytes:
        """The next frame whose payload is a *kind* frame (raw bytes)."""
        while True:
            raw = self.frame()
            if json.loads(payload_of(raw)).get("type") == kind:
                return raw

    def send(self, obj) -> None:
        data = json.dumps(obj).encode()
        n = len(data)
        head = struct.pack("!BB", 0x81, 0x80 | n) if n < 126 else struct.pack("!BBH", 0x81, 0xFE, n)
        mask = os.urandom(4)
        self.sock.sendall(head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data)))


def payload_of(raw: bytes) -> bytes:
    import zlib

    n = raw[1] & 0x7F
    head = 2 if n < 126 else 4 if n == 126 else 10
    body = raw[head:]
    if raw[0] & 0x40:
        return zlib.decompressobj(-15).decompress(body + b"\x00\x00\xff\xff")
    return body


def start_chatd():
    return start(["--db", ":memory:", "--rate-limit", "0", "--user-rate-limit", "0"])


def framer():
    """Fanout.frame with autobahn's framing, as chatd's factory builds it."""
    out = Fanout.__new__(Fanout)
    out.prepare = lambda payload, is_binary: (
        PreparedMessage(payload, is_binary, False, True).payloadHybi
    )
    return out


def row(kind, payload_len, plain, deflated, **extra):
    return {
        "kind": kind,
        "payload_bytes": payload_len,
        "wire_bytes_plain": plain,
        "wire_bytes_deflate": deflated,
        "ratio": round(deflated / plain, 3),
        **extra,
    }


def main():
    rows = []
    proc, port = start_chatd()
    try:
        on, off, sender = Raw(port, True), Raw(port, False), Raw(port, False)
        assert on.extensions and not off.extensions
        for c in (on, off, sender):
            c.send({"type": "join", "room": "bytes"})
            c.until("joined")
        rng = random.Random(7)
        for lang, chars in TEXTS:
            text = text_of(lang, chars, rng)
            sender.send({"type": "send", "room": "bytes", "text": text, "id": None})
            a, b = on.until("message"), off.until("message")
            assert payload_of(a) == payload_of(b)
            rows.append(row("message", len(payload_of(b)), len(b), len(a), lang=lang, chars=chars))
        for i in range(50):
            lang, chars = rng.choice(TEXTS[1:5] + TEXTS[6:8])
            text = text_of(lang, chars, rng)
            sender.send({"type": "send", "room": "bytes", "text": text, "id": f"h{i}"})
            sender.until("ack")
        for c in (on, off):
            c.send({"type": "history", "room": "bytes", "limit": 50})
        a, b = on.until("history"), off.until("history")
        assert payload_of(a) == payload_of(b)
        assert len(json.loads(payload_of(b))["messages"]) == 50
        rows.append(row("history_page_50", len(payload_of(b)), len(b), len(a)))
    finally:
        proc.terminate()
        proc.wait()
    out = framer()
    for style, member in (
        ("guest ids", lambda i: f"guest-{random.Random(i).getrandbits(24):06x}"),
        (
            "WeChat openids",
            lambda i: "o" + base64.b64encode(random.Random(i).randbytes(21)).decode()[:27],
        ),
    ):
        members = sorted(member(i) for i in range(1000))
        payload = wire.frame("joined", room="bytes", members=members, seq=1234, truncated=False)
        rows.append(
            row(
                "joined_1000_members",
                len(payload),
                len(out.frame(payload, False)),
                len(out.frame(payload, False, 15)),
                members=style,
                computed=True,
            )
        )
    for r in rows:
        print(json.dumps(r))
    msgs = [r for r in rows if r["kind"] == "message"]
    print(
        json.dumps(
            {
                "summary": "messages (all lengths)",
                "wire_bytes_plain": sum(r["wire_bytes_plain"] for r in msgs),
                "wire_bytes_deflate": sum(r["wire_bytes_deflate"] for r in msgs),
            }
        )
    )


if __name__ == "__main__":
    main()
