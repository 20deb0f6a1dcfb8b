"""``--log-format json`` and ``--log-level`` with a real ``twistd -n chatd``."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from websockets.sync.client import connect

from tests.conftest import wait_until

pytestmark = pytest.mark.subprocess

ROOT = Path(__file__).resolve().parents[2]
SECRET_TEXT = "the-launch-code-is-0000"
TOKEN = "tok-ABCDEF123456"


def test_json_lines_with_connection_fields_and_no_bodies_or_tokens(twistd_factory):
    """Every line of the log is one JSON object; connection open/close events carry
    peer, user and mode; errors carry their code; message text and the URL's token
    never appear."""
    proc = twistd_factory(
        "--db", ":memory:", "--listen", "tcp:0:interface=127.0.0.1", "--log-format", "json"
    )
    url = proc.ws_url + f"/ws?name=zoe&token={TOKEN}"
    with connect(url, subprotocols=["chatd.v1"], open_timeout=10) as ws:
        ws.recv(timeout=10)
        ws.send(json.dumps({"type": "join", "room": "r"}))
        ws.recv(timeout=10)
        ws.send(json.dumps({"type": "send", "room": "r", "text": SECRET_TEXT, "id": "1"}))
        ws.recv(timeout=10)
        ws.send(json.dumps({"type": "send", "room": "nope", "text": SECRET_TEXT}))
        ws.recv(timeout=10)
    assert proc.wait_log("connection closed", 1, 10), proc.log
    assert proc.stop() == -signal.SIGTERM
    events = [json.loads(line) for line in proc.log_lines if line.strip()]
    assert len(events) == len([x for x in proc.log_lines if x.strip()])
    for event in events:
        assert {"time", "level", "namespace", "text"} <= event.keys()
    opened = [e for e in events if e["text"].startswith("connection open")]
    closed = [e for e in events if e["text"].startswith("connection closed")]
    assert opened and closed
    assert opened[0]["user"].endswith("zoe") and opened[0]["mode"] == "chatd.v1"
    assert opened[0]["peer"].startswith("tcp4:127.0.0.1:")
    assert opened[0]["namespace"] == "chatd.connections" and opened[0]["level"] == "info"
    errors = [e for e in events if e.get("code") == "not_in_room"]
    assert errors and errors[0]["user"].endswith("zoe")
    assert any("chatd listening on ws://127.0.0.1:" in e["text"] for e in events)
    assert SECRET_TEXT not in proc.log
    assert TOKEN not in proc.log


def free_port() -> int:
    """A TCP port that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_until_connected(tmp_path, port, *args) -> tuple[int, str]:
    """``twistd -n chatd --db :memory: --listen tcp:PORT… ARGS``: connect one chatd.v1
    client, read its welcome, stop with SIGTERM; ``(exit status, output)``. Needs no
    log line to find the port (the level may hide every line)."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from twisted.scripts.twistd import run; run()",
            "-n",
            "chatd",
            "--db",
            ":memory:",
            "--listen",
            f"tcp:{port}:interface=127.0.0.1",
            *args,
        ],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:

        def connected():
            try:
                return connect(
                    f"ws://127.0.0.1:{port}/ws", subprotocols=["chatd.v1"], open_timeout=2
                )
            except OSError:
                return None

        ws = wait_until(connected, "chatd to start", timeout=15, interval=0.1)
        with ws:  # the info events this test looks for come before the welcome
            ws.recv(timeout=10)
        # (the closing handshake is done when the with block ends: nothing to wait for)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return proc.returncode, out


def test_log_level_warn_hides_info(tmp_path):
    """``--log-level warn`` drops info events (connection opens) but keeps warnings and
    the start-up line saying where chatd listens."""
    port = free_port()
    returncode, out = run_until_connected(tmp_path, port, "--log-level", "warn")
    assert returncode == -signal.SIGTERM, out
    assert "connection open" not in out
    assert f"chatd listening on ws://127.0.0.1:{port}/ (endpoint tcp:{port}:" in out
    assert "Received SIGTERM" not in out  # info from twisted itself


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_listening_lines_show_at_every_log_level(tmp_path, fmt):
    """With ``--log-level critical`` (text or JSON) chatd still logs where it listens,
    for the chat and for ``--metrics-listen``, and nothing at info level besides."""
    port, metrics = free_port(), free_port()
    returncode, out = run_until_connected(
        tmp_path,
        port,
        "--metrics-listen",
        f"tcp:{metrics}:interface=127.0.0.1",
        "--log-level",
        "critical",
        "--log-format",
        fmt,
    )
    assert returncode == -signal.SIGTERM, out
    assert f"chatd listening on ws://127.0.0.1:{port}/ (endpoint tcp:{port}:" in out
    assert f"chatd metrics on http://127.0.0.1:{metrics}/metrics" in out
    lines = [line for line in out.splitlines() if line.strip()]
    assert len(lines) == 2, out
    if fmt == "json":
        events = [json.loads(line) for line in lines]
        assert all(e["startup"] is True and e["level"] == "info" for e in events)
