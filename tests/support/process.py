"""Helpers about twistd children: running one to its exit, its memory, its log, its
sd_notify datagrams, the close codes its clients get."""

from __future__ import annotations

import os
import shutil
import subprocess
import time

import pytest
from websockets.exceptions import ConnectionClosed

from tests.conftest import TWISTD, chatd_env


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def wait_log(proc, text, count, timeout=15):
    """Block until *text* appears *count* times in the node's log."""
    assert proc.wait_log(text, count, timeout), f"{text!r} x{count} not in log:\n{proc.log}"


def _wait_log(proc, text, timeout=10):
    """Whether *text* got into the log within *timeout* seconds."""
    return proc.wait_log(text, 1, timeout)


def receive_until(sock, wanted: str, timeout=10.0) -> list[str]:
    """Datagrams received until one contains *wanted* (all of them, in order)."""
    got = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            got.append(sock.recv(4096).decode())
        except TimeoutError:
            break
        if wanted in got[-1]:
            return got
    raise AssertionError(f"no {wanted!r} in {got}")


def twistd_exit(cwd, *args, timeout=30) -> subprocess.CompletedProcess:
    """Run ``twistd *args`` in *cwd* to its exit, its output captured as text."""
    return subprocess.run(
        [*TWISTD, *args],
        cwd=cwd,
        env=chatd_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def close_codes(clients) -> list:
    """Read each (websockets sync) client until the server closes it; the close code
    each got, None where no close frame came."""
    codes = []
    for client in clients:
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                client.recv(timeout=10)
        codes.append(closed.value.rcvd.code if closed.value.rcvd else None)
    return codes


def need_node():
    """Skip without ``node`` (the bench load generator), fail under CI=true."""
    if shutil.which("node"):
        return
    if os.environ.get("CI") == "true":
        pytest.fail("node is required by the bench harness and CI=true")
    pytest.skip("node not installed")
