"""Benchmark of the SQLite history store: appends/s and append latency.

Each run starts a :class:`chatd.store.sqlite.SQLiteStore`, then N appenders
each keep one append in flight (append, wait for the commit, append again)
for a fixed time, spread over a few channels, with a client_id on every
message (so the exactly-once index is exercised too). One JSON line per run:

``{"store": "file", "synchronous": "FULL", "appenders": 8, "appends": ...,
"appends_per_s": ..., "p50_ms": ..., "p99_ms": ..., "commits": ...,
"mean_batch": ..., "max_batch": ...}``

Run: ``PYTHONPATH=. python bench/history_store_bench.py`` (a few seconds);
``--seconds``, ``--appenders 1 8 64``, ``--stores file memory``,
``--synchronous FULL NORMAL`` and ``--dir`` (where the file goes) change it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

from twisted.internet import defer, task

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from chatd.store.sqlite import SQLiteStore  # noqa: E402


def _percentile(sorted_values, q):
    if not sorted_values:
        return None
    i = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[i]


@defer.inlineCallbacks
def run_one(reactor, path, kind, synchronous, appenders, seconds, channels, text):
    """Run one configuration and return its result dict."""
    store = SQLiteStore(path, reactor=reactor, synchronous=synchronous, prune_interval=None)
    yield store.start()
    latencies = []
    stop_at = time.perf_counter() + seconds

    @defer.inlineCallbacks
    def appender(k):
        i = 0
        while time.perf_counter() < stop_at:
            t0 = time.perf_counter()
            yield store.append(f"room{k % channels}", f"user{k}", "Bench", f"{k}-{i}", text, i)
            latencies.append(time.perf_counter() - t0)
            i += 1

    t0 = time.perf_counter()
    yield defer.gatherResults([appender(k) for k in range(appenders)])
    elapsed = time.perf_counter() - t0
    yield store.stop()
    latencies.sort()
    batches = store.batch_sizes
    return {
        "store": kind,
        "synchronous": synchronous if kind == "file" else None,
        "appenders": appenders,
        "appends": len(latencies),
        "seconds": round(elapsed, 3),
        "appends_per_s": round(len(latencies) / elapsed),
        "p50_ms": round(_percentile(latencies, 0.50) * 1000, 3),
        "p99_ms": round(_percentile(latencies, 0.99) * 1000, 3),
        "commits": store.commits,
        "mean_batch": round(store.appended / max(store.commits, 1), 2),
        "median_batch": statistics.median_high(list(batches.elements())) if batches else 0,
        "max_batch": max(batches) if batches else 0,
    }


@defer.inlineCallbacks
def main(reactor, argv=None):
    """Run every requested configuration, printing one JSON line each."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=0.5, help="duration of each run")
    p.add_argument("--appenders", type=int, nargs="+", default=[1, 8, 64])
    p.add_argument("--stores", nargs="+", choices=["file", "memory"], default=["file", "memory"])
    p.add_argument("--synchronous", nargs="+", default=["FULL", "NORMAL"])
    p.add_argument("--channels", type=int, default=4)
    p.add_argument("--text-bytes", type=int, default=100)
    p.add_argument("--dir", default=None, help="directory for the database files")
    args = p.parse_args(argv)
    text = "x" * args.text_bytes
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        for kind in args.stores:
            for sync in args.synchronous if kind == "file" else ["NORMAL"]:
                for n in args.appenders:
                    path = ":memory:"
                    if kind == "file":
                        path = os.path.join(tmp, f"bench-{sync}-{n}.db")
                    result = yield run_one(
                        reactor, path, kind, sync, n, args.seconds, args.channels, text
                    )
                    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    task.react(main)
