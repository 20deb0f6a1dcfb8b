"""The pure parts of ``--workers`` (chatd/workers.py): worker arguments, per-worker
metrics endpoints, and which option sets are refused."""

from __future__ import annotations

import pytest
from twisted.python import usage

from chatd import workers
from chatd.tap import Options


def parsed(*argv):
    options = Options()
    options.parseOptions(list(argv))
    return options


def test_worker_argv_drops_workers_and_adds_the_sockets():
    raw = ["--workers", "4", "--listen", "tcp:8080", "--workers=3", "--redis", "redis://r"]
    assert workers.worker_argv(raw, [5, 6], 2) == [
        "--listen",
        "tcp:8080",
        "--redis",
        "redis://r",
        "--workers",
        "1",
        "--worker-fds",
        "5,6",
        "--worker-index",
        "2",
    ]


@pytest.mark.parametrize(
    ("description", "index", "expected"),
    [
        ("tcp:9100:interface=127.0.0.1", 2, "tcp:9102:interface=127.0.0.1"),
        ("tcp:9100", 0, "tcp:9100"),
        ("tcp:0", 3, "tcp:0"),
        ("unix:/run/chatd-metrics.sock", 1, "unix:/run/chatd-metrics.sock.1"),
        (None, 1, None),
    ],
)
def test_each_worker_gets_its_own_metrics_endpoint(description, index, expected):
    assert workers.metrics_description(description, index) == expected


def test_workers_need_redis_and_a_shareable_endpoint():
    with pytest.raises(usage.UsageError, match="--workers above 1 needs --redis"):
        parsed("--workers", "2")
    with pytest.raises(usage.UsageError, match="cannot share the endpoint"):
        parsed("--workers", "2", "--redis", "redis://localhost", "--listen", "stdio:")
    ok = parsed("--workers", "2", "--redis", "redis://localhost")
    assert ok["workers"] == 2 and ok.raw_argv == ["--workers", "2", "--redis", "redis://localhost"]
    assert parsed("--workers", "1")["workers"] == 1  # one worker: plain chatd, no Redis needed


def test_worker_fds_are_checked():
    with pytest.raises(usage.UsageError, match="one socket per --listen"):
        parsed("--worker-fds", "3,4", "--listen", "tcp:1")
    with pytest.raises(usage.UsageError, match="file descriptors"):
        parsed("--worker-fds", "x")
    assert parsed("--worker-fds", "7", "--listen", "tcp:1")["worker-fds"] == [7]
