"""Smoke test of the fan-out benchmark harness (bench/fanout.py), seconds long.

It runs the real harness: the bare Twisted relay and chatd in relay mode are
started as real processes, the Node load generator connects over loopback,
publishes for two seconds and counts deliveries. Only the harness is checked
(it starts, measures something, prints JSON): there is no timing assertion.
"""

import json
import os
import subprocess
import sys

import pytest

from tests.support.process import need_node

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FANOUT = os.path.join(REPO, "bench", "fanout.py")

pytestmark = pytest.mark.subprocess


def _run(*args):
    proc = subprocess.run(
        [sys.executable, FANOUT, "--json-only", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    return {(r["server"], r["mode"]): r for r in rows}, proc


def test_throughput_smoke_delivers_every_frame_to_every_other_connection():
    """With S=20, P=2 for 2 s, both the bare Twisted relay and chatd relay mode
    get one JSON line each with deliveries > 0, no loss, no extra frames, every
    frame checked by the sampling subscriber carrying the bench marker, and
    ratios against each other."""
    need_node()
    rows, proc = _run(
        "--servers",
        "twisted_bare,chatd_relay",
        "--modes",
        "throughput",
        "--S",
        "20",
        "--P",
        "2",
        "--duration",
        "2",
        "--warmup",
        "0.5",
    )
    for server in ("twisted_bare", "chatd_relay"):
        r = rows.get((server, "throughput"))
        assert r is not None, proc.stdout + proc.stderr[-2000:]
        assert "error" not in r, r
        assert r["deliveries_per_s"] > 0
        assert r["sent"] > 0
        assert r["expected"] == r["sent"] * (20 + 2 - 1)
        assert r["received"] == r["expected"]
        assert r["loss"] == 0 and r["extra"] == 0
        assert r["validated"] > 0 and r["invalid"] == 0
        assert isinstance(r["gen_cpu"], float) and r["gen_cpu"] >= 0
    assert set(rows[("twisted_bare", "throughput")]["ratio_vs"]) == {"chatd_relay"}


def test_latency_and_connection_modes_smoke():
    """A fixed-rate run against the bare relay yields latency percentiles from
    every delivery and no loss, and connection mode reads the server's RSS
    before and after opening idle connections."""
    need_node()
    rows, proc = _run(
        "--servers",
        "twisted_bare",
        "--modes",
        "lat50,conn",
        "--S",
        "20",
        "--P",
        "2",
        "--C",
        "200",
        "--duration",
        "1",
        "--warmup",
        "0.3",
    )
    lat = rows[("twisted_bare", "lat50")]
    assert "error" not in lat, lat
    assert lat["loss"] == 0 and lat["received"] > 0
    assert 0 < lat["samples"] <= lat["received"]
    assert 0 < lat["p50_ms"] <= lat["p99_ms"] <= lat["max_ms"]
    conn = rows[("twisted_bare", "conn")]
    assert "error" not in conn, conn
    assert conn["C"] == 200
    assert conn["rss_after_kb"] > 0 and conn["rss_before_kb"] > 0
    assert conn["kb_per_conn"] is not None


@pytest.mark.parametrize("server", ["chatd_relay", "chatd_v1_memory"])
def test_kernel_timestamp_latency_smoke(server):
    """klat50 (bench/kstamp.py, Python with SO_TIMESTAMPNS) against chatd, relay and
    chatd.v1: every frame arrives, each delivery gives one kernel-timestamped
    sample, and the percentiles are ordered and positive."""
    rows, proc = _run(
        "--servers",
        server,
        "--modes",
        "klat50",
        "--S",
        "20",
        "--P",
        "2",
        "--duration",
        "1",
        "--warmup",
        "0.3",
    )
    r = rows.get((server, "klat50"))
    assert r is not None, proc.stdout + proc.stderr[-2000:]
    assert "error" not in r, r
    assert r["clock"] == "kernel"
    assert r["sent"] > 0 and r["received"] == r["expected"] == r["sent"] * (20 + 2 - 1)
    assert r["loss"] == 0 and r["extra"] == 0
    assert r["validated"] > 0 and r["invalid"] == 0
    assert 0 < r["samples"] <= r["received"]
    assert 0 < r["p50_ms"] <= r["p99_ms"] <= r["max_ms"]
    assert r["read_lag_p99_ms"] is not None and r["read_lag_p99_ms"] >= 0
