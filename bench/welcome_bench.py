"""Connect → ``welcome`` latency of chatd.v1 (issue 14): what a reconnecting app waits
before it can send, for anonymous connections, token users connecting for the first
time (their user is recorded in the store before ``welcome``) and token users coming
back (recorded already).

chatd (``twistd -n chatd --jwt-secret … --db <tmp>/bench.sqlite3``, ``--db-synchronous``
FULL unless told) runs pinned to core 0, this script on core 1; each arm opens
``--n`` connections one after the other (closed loop: TCP connect, upgrade, read the
``welcome``, close) and reports p50/p90/p99/max ms. One JSON line per arm, then a summary.

    python3 bench/welcome_bench.py [--n 300] [--synchronous FULL] [--repo OTHER_TREE]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from chatd_process import start_chatd  # noqa: E402
from history_store_bench import _percentile  # noqa: E402

from chatd.auth import TokenVerifier  # noqa: E402
from tests.support.rawws import RawWS  # noqa: E402

SECRET = "welcome-bench-secret-of-32-bytes!!"


def connect_times(port, paths) -> list[float]:
    """Seconds from TCP connect to the ``welcome`` frame, one connection per path."""
    took = []
    for path in paths:
        started = time.perf_counter()
        ws = RawWS.v1(port, path=path, timeout=30)
        took.append(time.perf_counter() - started)
        ws.sock.close()
    return took


def summary(arm, took) -> dict:
    ms = sorted(t * 1000 for t in took)
    return {
        "arm": arm,
        "n": len(ms),
        **{f"p{p}_ms": round(_percentile(ms, p / 100), 3) for p in (50, 90, 99)},
        "max_ms": round(ms[-1], 3),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=300, help="connections per arm")
    parser.add_argument("--synchronous", choices=("FULL", "NORMAL"), default="FULL")
    parser.add_argument("--repo", help="run the chatd of this tree (default: this checkout)")
    args = parser.parse_args(argv)
    issuer = TokenVerifier(secret=SECRET)
    if hasattr(os, "sched_setaffinity") and os.cpu_count() and os.cpu_count() > 1:
        os.sched_setaffinity(0, {1})
    with tempfile.TemporaryDirectory() as tmp:
        db = os.path.join(tmp, "bench.sqlite3")
        argv_ = ["--db", db, "--db-synchronous", args.synchronous, "--jwt-secret", SECRET]
        argv_ += ["--max-connections-per-ip", "0", "--rate-limit", "0"]
        repo = {"repo": os.path.abspath(args.repo)} if args.repo else {}
        proc, port = start_chatd(argv_, pin=0, **repo)
        try:
            connect_times(port, ["/ws"] * 20)  # warm up
            users = [f"user{i}" for i in range(args.n)]
            tokens = [issuer.issue(u, ttl=3600) for u in users]
            arms = [
                ("anonymous", ["/ws"] * args.n),
                ("token, first connection", [f"/ws?token={t}" for t in tokens]),
                ("token, returning user", [f"/ws?token={t}" for t in tokens]),
            ]
            results = []
            for arm, paths in arms:
                results.append(summary(arm, connect_times(port, paths)))
                print(json.dumps(results[-1]), flush=True)
        finally:
            proc.terminate()
            proc.wait(10)
    for r in results:
        print(f"- {r['arm']}: welcome p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
