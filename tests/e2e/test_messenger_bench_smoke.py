"""Smoke test of the messenger benchmarks (bench/messenger_bench.py), seconds long.

The real harness: chatd started as a twistd child with token auth, the Node load
generator (bench/loadgen.js) as token users over loopback. Only the harness is
checked (it starts, measures something, prints one JSON line per run, the
numbers add up): there is no timing assertion.
"""

import json
import os
import subprocess
import sys

import pytest

from tests.support.process import need_node

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BENCH = os.path.join(REPO, "bench", "messenger_bench.py")
SHORT = ["--duration", "1", "--warmup", "0.5", "--json-only"]

pytestmark = pytest.mark.subprocess


def _rows(*args):
    need_node()
    proc = subprocess.run(
        [sys.executable, BENCH, *args, *SHORT], capture_output=True, text=True, timeout=180
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


def test_durable_sends_are_all_acked_once():
    """10 token users in 5 rooms send for a second: every send is acked (none left
    unacked, none a duplicate, no error frame), each reached the room's other
    member, and the row has latency percentiles and the server's CPU."""
    [row] = _rows("sends", "--N", "10", "--rooms", "5", "--window", "2")
    assert row["bench"] == "sends" and row["store"] == "sqlite" and row["synchronous"] == "FULL"
    assert row["acks_per_s"] > 0 and row["acked"] == row["sent"] and row["unacked"] == 0
    assert row["duplicates"] == 0 and row["errors"] == 0 and row["skipped"] == 0
    assert row["ack_p50_ms"] <= row["ack_p99_ms"] and row["server_cpu"] > 0
    assert row["deliveries_per_s"] > 0  # members_per_room 2: the other one received


def test_read_markers_are_answered():
    """Members of one room move their read markers: every read is answered."""
    [row] = _rows("reads", "--N", "5", "--messages", "6000", "--window", "1")
    assert "error" not in row, row
    assert row["bench"] == "reads" and row["markers_per_s"] > 0 and row["reads_past_end"] == 0
    assert row["acked"] == row["sent"] and row["errors"] == 0
    assert row["receipt_frames_per_s"] > 0  # 5 members: each read sends 4 receipts


def test_batched_receipts_are_counted():
    """``--batch``: the members ask for receipts_batch; reads are answered and the
    batches (at most one per connection per 0.2 s window) are counted."""
    [row] = _rows("reads", "--batch", "--N", "5", "--messages", "6000", "--window", "1")
    assert "error" not in row, row
    assert (
        row["batch"] is True
        and row["reads_past_end"] == 0
        and row["acked"] == row["sent"]
        and row["errors"] == 0
    )
    # 5 connections, one window each per 0.2 s (the receipts flow all the time)
    assert 0 < row["receipt_frames_per_s"] <= 5 * 5 + 5


def test_fanout_to_durable_members_and_the_relay_lose_nothing():
    """A 50-member durable room with 10 online token users, and the relay with 10
    connections: both rows deliver every message to the other 9 connections."""
    rows = _rows("fanout", "--members", "50", "--online", "10", "--P", "2", "--window", "4")
    by = {r["server"]: r for r in rows}
    assert set(by) == {"chatd_v1_sqlite", "chatd_relay"}
    for r in rows:
        assert "error" not in r, r
        assert r["deliveries_per_s"] > 0 and r["loss"] == 0 and r["extra"] == 0
        assert r["invalid"] == 0 and r["us_per_delivery"] > 0
    assert by["chatd_v1_sqlite"]["members"] == 50 and by["chatd_relay"]["members"] == 10


def test_send_path_bench_smoke():
    """bench/send_path_bench.py (the send path in one thread, no sockets) prints one
    JSON line with a CPU figure, having checked that every send was acked."""
    proc = subprocess.run(
        [sys.executable, os.path.join(REPO, "bench", "send_path_bench.py"), "--sends", "300"]
        + ["--rounds", "1", "--users", "10"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    row = json.loads(proc.stdout.strip().splitlines()[-1])
    assert row["bench"] == "send_path" and row["sends"] == 300 and row["us_per_send"] > 0
