"""systemd ``Type=notify``: READY=1 once listening, WATCHDOG=1 pings, STOPPING=1 on stop.

The test plays systemd: it binds a unix datagram socket, passes its path as
``NOTIFY_SOCKET`` to a real ``twistd -n chatd`` and reads what chatd sends.
"""

from __future__ import annotations

import os
import signal
import socket
import time

import pytest

from chatd.notify import notify, watchdog_interval
from tests.support.process import receive_until

pytestmark = pytest.mark.subprocess


def test_ready_watchdog_and_stopping(tmp_path, twistd_factory):
    """READY=1 arrives once chatd listens (after its listening log line), WATCHDOG=1
    every WATCHDOG_USEC/2, and STOPPING=1 when SIGTERM starts the shutdown."""
    path = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        proc = twistd_factory(
            "--db",
            ":memory:",
            "--listen",
            "tcp:0:interface=127.0.0.1",
            env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "400000"},
        )
        got = receive_until(sock, "READY=1")
        ready = got[-1].split("\n")
        assert "READY=1" in ready
        assert f"MAINPID={proc.proc.pid}" in ready
        assert any(x.startswith("STATUS=listening on tcp:0") for x in ready)
        started = time.monotonic()
        receive_until(sock, "WATCHDOG=1", timeout=2)
        receive_until(sock, "WATCHDOG=1", timeout=2)
        assert time.monotonic() - started < 1.5  # about every 0.2 s
        proc.proc.send_signal(signal.SIGTERM)
        got = receive_until(sock, "STOPPING=1")
        assert proc.stop() == -signal.SIGTERM


def test_notify_without_socket_is_a_no_op_and_abstract_addresses_work():
    """Outside systemd nothing is sent; ``@name`` means the abstract namespace."""
    assert notify("READY=1", {}) is False
    assert watchdog_interval({"WATCHDOG_USEC": "1000000"}) is None
    name = f"chatd-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        assert notify("STATUS=x", {"NOTIFY_SOCKET": "@" + name}) is True
        assert sock.recv(100) == b"STATUS=x"
    env = {"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "3000000", "WATCHDOG_PID": "1"}
    assert watchdog_interval(env) is None  # meant for another process
    env["WATCHDOG_PID"] = str(os.getpid())
    assert watchdog_interval(env) == 1.5
