"""Graceful shutdown of a real ``twistd -n chatd`` on SIGTERM.

Clients get close 1001 (going away), ``/readyz`` is never ready again, the store
is flushed (an acknowledged message is there after a restart) and the process
exits within a bounded time.
"""

from __future__ import annotations

import json
import signal
import time
import urllib.request

import pytest
from websockets.sync.client import connect

from tests.support.process import close_codes

pytestmark = pytest.mark.subprocess

KEY = "k"


def get(url, key=KEY):
    """GET *url* (no proxy) with the API key; returns parsed JSON."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    request = urllib.request.Request(url, headers={"Authorization": f"apikey {key}"})
    with opener.open(request, timeout=10) as response:
        return json.loads(response.read())


def test_sigterm_closes_with_1001_flushes_and_exits_quickly(tmp_path, twistd_factory):
    """Under SIGTERM every client sees 1001, the process is gone within seconds, and a
    message acknowledged just before is in history after a restart on the same file."""
    args = ("--db", str(tmp_path / "h.sqlite3"), "--listen", "tcp:0:interface=127.0.0.1")
    proc = twistd_factory(*args, "--api-key", KEY)
    with (
        connect(proc.ws_url + "/ws?name=ann", subprotocols=["chatd.v1"], open_timeout=10) as a,
        connect(proc.ws_url + "/", open_timeout=10) as relay,
    ):
        assert json.loads(a.recv(timeout=10))["type"] == "welcome"
        a.send(json.dumps({"type": "join", "room": "r"}))
        assert json.loads(a.recv(timeout=10))["type"] == "joined"
        for i in range(20):
            a.send(json.dumps({"type": "send", "room": "r", "text": f"t{i}", "id": f"i{i}"}))
        acks = [json.loads(a.recv(timeout=10)) for _ in range(20)]
        assert [x["seq"] for x in acks] == list(range(1, 21))
        started = time.monotonic()
        proc.proc.send_signal(signal.SIGTERM)
        codes = close_codes((a, relay))
    assert codes == [1001, 1001]
    assert proc.stop(timeout=15) == -signal.SIGTERM
    assert time.monotonic() - started < 8
    assert "Server Shut Down." in proc.log

    again = twistd_factory(*args, "--api-key", KEY)
    page = get(again.http_url + "/api/rooms/r/history?limit=50")
    assert [m["seq"] for m in page["messages"]] == list(range(1, 21))
    assert again.stop() == -signal.SIGTERM
