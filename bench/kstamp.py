"""Latency load generator with kernel receive timestamps (the harness's ``klat50`` mode).

``bench/loadgen.js`` measures latency when it *reads* a frame, so its figure
includes its own time to get round to the socket: at S=1000 one generator core
needs 6-7 ms per message just to read 1000 sockets, and once a server fans out
faster than that, the p99 shows the generator, not the server. This generator
asks the kernel instead: every subscriber socket has ``SO_TIMESTAMPNS`` on, and
each read's ``SCM_TIMESTAMPNS`` says when the data entered the socket's receive
queue (on loopback: while the server's ``send()`` ran). Latency = that time
minus the send time written into the payload, both ``CLOCK_REALTIME``. How late
this process reads no longer counts, as long as it keeps up on average.

Same workload and JSON fields as loadgen.js's latency mode (S subscribers, P
publishers, relay or chatd.v1, text ``~B~<send time>~<pub>~<n>~`` padded to
``payload`` bytes, fixed total rate, warm-up, drain, loss/extra, keeps_up),
plus ``read_lag_p99_ms`` (how long frames waited in the socket for this process)
and ``multi_frame_reads`` (reads that carried more than one counted frame; they
get the timestamp of the read's last segment, so their earlier frames count
late: an upper bound).

Usage: ``python3 bench/kstamp.py '<json config>'`` (bench/fanout.py runs it).
Linux only; it is meant for rates a Python process can read (50k frames/s here).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import select
import socket
import struct
import sys
import time

from cluster_bench import CLK_TCK, cpu_seconds  # bench/ is this script's directory

SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
SCM_TIMESTAMPNS = SO_TIMESTAMPNS
CMSG_SPACE = socket.CMSG_SPACE(16)
MARK = b"~B~"
ROOM = "bench"
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

DEFAULTS = {
    "host": "127.0.0.1",
    "port": 0,
    "path": "/",
    "protocol": "relay",
    "S": 1000,
    "P": 4,
    "duration": 10,
    "warmup": 2,
    "rate": 50,
    "payload": 80,
    "serverPid": 0,
    "settleMs": 500,
    "drainMs": 3000,
}


def masked(payload: bytes, opcode: int = 0x1) -> bytes:
    """A client frame with an all-zero mask key (valid RFC 6455, no XOR work)."""
    n = len(payload)
    if n < 126:
        head = bytes((0x80 | opcode, 0x80 | n))
    elif n < 65536:
        head = bytes((0x80 | opcode, 0xFE)) + struct.pack("!H", n)
    else:
        head = bytes((0x80 | opcode, 0xFF)) + struct.pack("!Q", n)
    return head + b"\0\0\0\0" + payload


def server_cpu_seconds(pid: int) -> float | None:
    """The server's CPU time so far (None if it cannot be read)."""
    try:
        return cpu_seconds(pid)
    except (OSError, IndexError, ValueError):
        return None


def core_busy() -> dict[str, int]:
    out = {}
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu") and line[3].isdigit():
                name, *vals = line.split()
                v = [int(x) for x in vals[:8]]
                out[name[3:]] = sum(v) - v[3] - v[4]
    return out


class Conn:
    __slots__ = ("idx", "role", "sock", "fd", "rest", "joined", "n")

    def __init__(self, idx: int, role: str, cfg: dict):
        self.idx, self.role = idx, role
        self.rest = b""
        self.joined = cfg["protocol"] != "chatd.v1"
        self.n = 0
        sock = socket.create_connection((cfg["host"], cfg["port"]), timeout=30)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        key = base64.b64encode(os.urandom(16))
        proto = "Sec-WebSocket-Protocol: chatd.v1\r\n" if cfg["protocol"] == "chatd.v1" else ""
        sock.sendall(
            (
                f"GET {cfg['path']} HTTP/1.1\r\nHost: {cfg['host']}:{cfg['port']}\r\n"
                "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key.decode()}\r\nSec-WebSocket-Version: 13\r\n{proto}\r\n"
            ).encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(4096)
            if not chunk:
                raise RuntimeError(f"connection {idx} closed during the handshake")
            head += chunk
        head, _, self.rest = head.partition(b"\r\n\r\n")
        accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
        if not head.startswith(b"HTTP/1.1 101") or accept not in head:
            raise RuntimeError(f"handshake refused on connection {idx}: {head[:80]!r}")
        sock.setblocking(False)
        self.sock, self.fd = sock, sock.fileno()
        if not self.joined:
            sock.sendall(masked(json.dumps({"type": "join", "room": ROOM}).encode()))


class Generator:
    def __init__(self, cfg: dict):
        self.cfg = cfg
        self.fanout = cfg["S"] + cfg["P"] - 1
        self.phase = "connect"
        self.recording = False
        self.rx = self.sent = self.validated = self.invalid = 0
        self.lat: list[int] = []
        self.lag: list[int] = []
        self.multi = 0
        self.last_frame = time.monotonic()
        self.ep = select.epoll()
        self.conns: dict[int, Conn] = {}
        self.pubs: list[Conn] = []

    def open_all(self):
        cfg = self.cfg
        for i in range(cfg["S"] + cfg["P"]):
            conn = Conn(i, "sub" if i < cfg["S"] else "pub", cfg)
            self.conns[conn.fd] = conn
            self.ep.register(conn.fd, select.EPOLLIN)
            if conn.role == "pub":
                self.pubs.append(conn)
            if conn.rest:
                self.frames(conn, conn.rest, 0, time.time_ns())
        deadline = time.monotonic() + 120
        while not all(c.joined for c in self.conns.values()):
            if time.monotonic() > deadline:
                raise RuntimeError("timed out waiting for joined")
            self.poll(0.05)
        self.phase = "settle"
        t0 = time.monotonic()
        self.last_frame = t0
        while time.monotonic() - self.last_frame < cfg["settleMs"] / 1000:
            if time.monotonic() - t0 > 30:
                break
            self.poll(0.05)

    def poll(self, timeout: float):
        recvmsg_size = 65536
        for fd, _ in self.ep.poll(timeout):
            conn = self.conns[fd]
            try:
                data, anc, _flags, _addr = conn.sock.recvmsg(recvmsg_size, CMSG_SPACE)
            except BlockingIOError:
                continue
            if not data:
                raise RuntimeError(f"server closed connection {conn.idx}")
            now = time.time_ns()
            kts = now
            for level, kind, payload in anc:
                if level == socket.SOL_SOCKET and kind == SCM_TIMESTAMPNS:
                    sec, nsec = struct.unpack("qq", payload[:16])
                    kts = sec * 1_000_000_000 + nsec
            if self.recording:
                self.lag.append(now - kts)
            self.last_frame = time.monotonic()
            if conn.rest:
                data = conn.rest + data
                conn.rest = b""
            self.frames(conn, data, kts, now)

    def frames(self, conn: Conn, buf: bytes, kts: int, now: int):
        n = len(buf)
        i = 0
        counted = 0
        while n - i >= 2:
            b0, b1 = buf[i], buf[i + 1] & 0x7F
            h = i + 2
            if b1 == 126:
                if n - i < 4:
                    break
                (b1,) = struct.unpack_from("!H", buf, h)
                h += 2
            elif b1 == 127:
                if n - i < 10:
                    break
                (b1,) = struct.unpack_from("!Q", buf, h)
                h += 8
            if h + b1 > n:
                break
            op = b0 & 0x0F
            if op in (1, 2):
                counted += self.frame(conn, buf, h, h + b1, kts)
            elif op == 9:
                conn.sock.sendall(masked(buf[h : h + b1], 0xA))
            i = h + b1
        if i < n:
            conn.rest = buf[i:]
        if counted > 1:
            self.multi += 1

    def frame(self, conn: Conn, buf: bytes, s: int, e: int, kts: int) -> int:
        k = buf.find(MARK, s, e)
        if k < 0:
            if not conn.joined:
                text = buf[s:e]
                if b'"joined"' in text:
                    conn.joined = True
                elif b'"error"' in text:
                    raise RuntimeError(f"chatd error during join: {text[:200]!r}")
            elif conn.role == "sub" and conn.idx == 0 and self.phase == "run":
                self.invalid += 1
            return 0
        if self.phase != "run":
            return 0
        self.rx += 1
        if conn.idx == 0:
            self.validated += 1
        if self.recording:
            j = buf.find(b"~", k + 3, e)
            self.lat.append(kts - int(buf[k + 3 : j]))
        return 1

    def publish(self, pub: Conn):
        n = pub.n
        pub.n += 1
        text = f"~B~{time.time_ns()}~{pub.idx}~{n}~"
        text = text.ljust(self.cfg["payload"], "x")
        if self.cfg["protocol"] == "chatd.v1":
            msg = json.dumps({"type": "send", "room": ROOM, "text": text, "id": f"b{pub.idx}-{n}"})
        else:
            msg = text
        pub.sock.sendall(masked(msg.encode()))
        self.sent += 1

    def snapshot(self) -> dict:
        return {
            "t": time.monotonic(),
            "rx": self.rx,
            "sent": self.sent,
            "cpu": time.process_time(),
            "srv": server_cpu_seconds(self.cfg["serverPid"]),
            "cores": core_busy(),
            "backlog": self.sent * self.fanout - self.rx,
        }

    def run(self) -> dict:
        cfg = self.cfg
        t_setup = time.monotonic()
        self.open_all()
        setup_s = time.monotonic() - t_setup
        self.phase = "run"
        rate = cfg["rate"]
        t_start = time.monotonic()
        t_rec = t_start + cfg["warmup"]
        t_end = t_rec + cfg["duration"]
        rr = 0
        m0 = None
        while True:
            now = time.monotonic()
            if m0 is None and now >= t_rec:
                self.recording = True
                m0 = self.snapshot()
            if now >= t_end:
                break
            due = int((now - t_start) * rate) - self.sent
            for _ in range(due):
                self.publish(self.pubs[rr])
                rr = (rr + 1) % len(self.pubs)
            next_due = t_start + (self.sent + 1) / rate
            self.poll(max(0.0, min(next_due, t_end) - time.monotonic()))
        m1 = self.snapshot()
        self.recording = False
        expected = self.sent * self.fanout
        t_stop = time.monotonic()
        last_rx, last_change = -1, time.monotonic()
        while self.rx < expected and time.monotonic() - last_change < cfg["drainMs"] / 1000:
            self.poll(0.02)
            if self.rx != last_rx:
                last_rx, last_change = self.rx, time.monotonic()
        drain_ms = (time.monotonic() - t_stop) * 1000
        wall = m1["t"] - m0["t"]
        lat = sorted(self.lat)
        lag = sorted(self.lag)
        deliveries = (m1["rx"] - m0["rx"]) / wall
        offered = rate * self.fanout

        def pct(values, q):
            if not values:
                return None
            return round(values[min(len(values) - 1, int(q * len(values)))] / 1e6, 3)

        out = {
            "mode": "latency",
            "clock": "kernel",
            "protocol": cfg["protocol"],
            "S": cfg["S"],
            "P": cfg["P"],
            "payload": cfg["payload"],
            "window": None,
            "rate": rate,
            "duration": round(wall, 3),
            "setup_s": round(setup_s, 3),
            "deliveries_per_s": round(deliveries),
            "messages_per_s": round((m1["sent"] - m0["sent"]) / wall),
            "offered_per_s": offered,
            "sent": self.sent,
            "expected": expected,
            "received": self.rx,
            "loss": max(0, expected - self.rx),
            "extra": max(0, self.rx - expected),
            "drain_ms": round(drain_ms),
            "backlog_growth": m1["backlog"] - m0["backlog"],
            "p50_ms": pct(lat, 0.5),
            "p90_ms": pct(lat, 0.9),
            "p99_ms": pct(lat, 0.99),
            "max_ms": round(lat[-1] / 1e6, 3) if lat else None,
            "samples": len(lat),
            "read_lag_p50_ms": pct(lag, 0.5),
            "read_lag_p99_ms": pct(lag, 0.99),
            "multi_frame_reads": self.multi,
            "gen_cpu": round((m1["cpu"] - m0["cpu"]) / wall, 3),
            "server_cpu": (
                round((m1["srv"] - m0["srv"]) / wall, 3)
                if m0["srv"] is not None and m1["srv"] is not None
                else None
            ),
            "validated": self.validated,
            "invalid": self.invalid,
            "core_busy": {
                k: round((m1["cores"][k] - m0["cores"][k]) / CLK_TCK / wall, 3) for k in m1["cores"]
            },
        }
        out["keeps_up"] = (
            deliveries >= 0.97 * offered
            and out["loss"] == 0
            and drain_ms < 1000
            and out["backlog_growth"] <= 0.05 * offered
        )
        return out


def main() -> int:
    cfg = {**DEFAULTS, **json.loads(sys.argv[1] if len(sys.argv) > 1 else "{}")}
    try:
        out = Generator(cfg).run()
    except (RuntimeError, OSError) as e:
        print(json.dumps({"error": str(e), "mode": "latency"}), flush=True)
        return 2
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
