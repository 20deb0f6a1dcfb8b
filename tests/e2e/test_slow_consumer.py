"""Slow consumers: a client that stops reading cannot make the server's memory grow."""

import os
import socket
import threading
import time

import pytest
from websockets.sync.client import connect

from tests.support.process import rss_kb
from tests.support.rawws import RawWS, text
from tests.support.rawws import frame as ws_frame


def stalled_client(port: int) -> socket.socket:
    """A real WebSocket client (relay mode) that completes the handshake, then never reads."""
    return RawWS.relay(port, rcvbuf=4096, timeout=None).sock


@pytest.mark.subprocess
def test_stalled_reader_is_dropped_and_memory_stays_bounded(twistd_factory):
    """100 MB flooded at a room with one stalled reader: the server drops that reader once
    its backlog passes --max-queue-bytes, its RSS grows by far less than the flood, and a
    reading client gets every frame."""
    proc = twistd_factory(
        "--listen",
        "tcp:0:interface=127.0.0.1",
        "--db",
        ":memory:",
        "--rate-limit",
        "0",
        "--user-rate-limit",
        "0",
        "--max-message-size",
        "70000",
        "--max-queue-bytes",
        "1048576",
    )
    port = proc.port
    frame = os.urandom(60_000)
    count = 1700  # ~100 MB
    received = []

    with connect(proc.ws_url, max_size=None) as reader, connect(proc.ws_url) as flooder:
        stalled = stalled_client(port)
        # chatd has set up all three (it answered the stalled one's handshake) and
        # answered everything the others sent: a ping round trip on each, no sleep
        assert reader.ping().wait(timeout=10) and flooder.ping().wait(timeout=10)
        before = rss_kb(proc.proc.pid)
        progress = threading.Condition()

        def read_all():
            try:
                while len(received) < count:
                    size = len(reader.recv(timeout=30))
                    with progress:
                        received.append(size)
                        progress.notify()
            finally:
                with progress:
                    progress.notify()

        t = threading.Thread(target=read_all)
        t.start()
        peak = before
        for i in range(count):
            flooder.send(frame)
            # pace the flood to what the reading client takes, so only the
            # stalled one falls behind (a reader slower than the flood is, by
            # definition, a slow consumer too): wait for the reader, not a sleep
            with progress:
                progress.wait_for(lambda i=i: i - len(received) <= 10 or not t.is_alive(), 30)
            if i % 50 == 0:
                peak = max(peak, rss_kb(proc.proc.pid))
        t.join(timeout=60)
        peak = max(peak, rss_kb(proc.proc.pid))
        assert len(received) == count and set(received) == {60_000}
        growth_mb = (peak - before) / 1024
        flood_mb = count * len(frame) / 1e6
        assert growth_mb < 40, f"RSS grew {growth_mb:.0f} MB during a {flood_mb:.0f} MB flood"
        # the stalled client was disconnected: reading now ends in EOF or a reset
        stalled.settimeout(10)
        drained = 0
        try:
            while True:
                chunk = stalled.recv(65536)
                if not chunk:
                    break
                drained += len(chunk)
        except ConnectionResetError:
            pass
        stalled.close()
        assert drained < 8 * 1048576, f"the stalled client still got {drained} bytes"


@pytest.mark.subprocess
def test_dead_peer_that_never_answers_pings_is_dropped(twistd_factory):
    """The server's WebSocket pings find a peer that went silent: it is dropped after
    --ping-interval + --ping-timeout, while a peer that answers pings stays."""
    proc = twistd_factory(
        "--listen",
        "tcp:0:interface=127.0.0.1",
        "--db",
        ":memory:",
        "--ping-interval",
        "1",
        "--ping-timeout",
        "3",
    )
    started = time.monotonic()
    silent = stalled_client(proc.port)  # completes the handshake, never answers a ping
    alive = RawWS(proc.port, path="/", protocols=())  # answers every ping it reads
    assert alive.status == 101, alive.head
    alive_opened = time.monotonic()
    seen = {}  # what the silent peer got, and when it was dropped

    def watch_silent():
        silent.settimeout(10)
        data = b""
        try:
            while True:
                chunk = silent.recv(4096)
                if not chunk:
                    break
                data += chunk
        except ConnectionResetError:
            pass
        except TimeoutError:
            return  # never dropped: the deadline below fails the test
        seen["data"], seen["dropped"] = data, time.monotonic()

    watcher = threading.Thread(target=watch_silent, daemon=True)
    watcher.start()
    try:
        # the answering peer outlives the moment it would have been dropped (it opened
        # a little later than the silent one, +1 s for autobahn's timer buckets): the
        # event waited for is a server ping after that, which only a live peer gets
        while True:
            opcode, _ = alive.recv_frame(pings=True)  # EOFError if it was dropped
            assert opcode == 0x9, opcode  # nobody else talks: only the server's pings
            if "dropped" in seen:
                drop_by = seen["dropped"] + (alive_opened - started) + 1.0
                if time.monotonic() > drop_by:
                    break
            assert time.monotonic() - started < 15, "the silent peer was never dropped"
        waited = seen["dropped"] - started
        # autobahn batches its timers in 1 s buckets, so only an upper bound is meaningful
        assert waited < 8, f"dropped after {waited:.2f} s"
        assert seen["data"][:1] == b"\x89", "the server pinged first"  # opcode 9: ping
        alive.send(text("still here"))
        alive.send(ws_frame(0x9, b"are you there"))
        assert alive.recv_frame() == (0xA, b"are you there")
    finally:
        alive.close()
        silent.close()
        watcher.join(timeout=10)
