"""End-to-end history benchmark: persisted messages/s and ack latency through a real chatd.

For each store (SQLite file with synchronous=FULL, with NORMAL, and ``:memory:``)
the harness starts ``twistd -n chatd`` pinned to core 0, opens ``--senders``
chatd.v1 connections (core 1) that all join one room and keep ``--window``
sends in flight each, and measures for ``--duration`` seconds:

* ``acks_per_s`` — messages committed and acknowledged per second (an ``ack``
  is sent only after the message is committed, so this is persisted msgs/s);
* ``ack_p50_ms`` / ``ack_p99_ms`` — from sending ``send`` to receiving its ``ack``;
* ``gen_cpu`` — the load generator's CPU share (near 1.0 means it may be the limit).

Prints one JSON line per store, then a small table. Run by hand:

    python3 bench/history_bench.py [--senders 8] [--window 16] [--duration 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import websockets

sys.path.insert(0, str(Path(__file__).resolve().parent))
from chatd_process import start_chatd as start  # noqa: E402  (bench/)


def start_chatd(db: str, extra: list[str], workdir: str):
    args = ["--db", db, "--rate-limit", "0", "--user-rate-limit", "0", *extra]
    return start(args, cwd=workdir, pin=0)


async def sender(url, index, window, stop_at, latencies, counts):
    async with websockets.connect(url, subprotocols=["chatd.v1"], max_queue=None) as ws:
        json.loads(await ws.recv())  # welcome
        await ws.send(json.dumps({"type": "join", "room": "bench"}))
        while True:
            frame = json.loads(await ws.recv())
            if frame["type"] == "joined":
                break
        sent_at = {}
        n = 0

        async def send_one():
            nonlocal n
            cid = f"{index}-{n}"
            n += 1
            sent_at[cid] = time.perf_counter()
            await ws.send(
                json.dumps({"type": "send", "room": "bench", "text": "x" * 80, "id": cid})
            )

        for _ in range(window):
            await send_one()
        while True:
            frame = json.loads(await ws.recv())
            if frame["type"] != "ack":
                continue  # messages of the other senders
            t0 = sent_at.pop(frame["id"], None)
            if t0 is not None:
                now = time.perf_counter()
                if now < stop_at:
                    latencies.append(now - t0)
                    counts[0] += 1
                    await send_one()
                elif not sent_at:
                    return


def percentile(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))] if values else None


async def run_one(port, senders, window, duration, warmup):
    url = f"ws://127.0.0.1:{port}/ws"
    latencies, counts = [], [0]
    stop_at = time.perf_counter() + warmup + duration
    tasks = [
        asyncio.create_task(sender(url, i, window, stop_at, latencies, counts))
        for i in range(senders)
    ]
    await asyncio.sleep(warmup)
    start_count, start_lat = counts[0], len(latencies)
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - t0
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    measured = latencies[start_lat:]
    return {
        "acks_per_s": round((counts[0] - start_count) / elapsed),
        "ack_p50_ms": round(percentile(measured, 0.50) * 1000, 2),
        "ack_p99_ms": round(percentile(measured, 0.99) * 1000, 2),
        "gen_cpu": round(cpu / elapsed, 2),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--senders", type=int, default=8)
    parser.add_argument("--window", type=int, default=16)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    args = parser.parse_args(argv)
    if shutil.which("taskset"):
        os.sched_setaffinity(0, {1})
    rows = []
    for label, db, extra in [
        ("sqlite_full", "bench.sqlite3", ["--db-synchronous", "FULL"]),
        ("sqlite_normal", "bench.sqlite3", ["--db-synchronous", "NORMAL"]),
        ("memory", ":memory:", []),
    ]:
        with tempfile.TemporaryDirectory() as workdir:
            proc, port = start_chatd(db, extra, workdir)
            try:
                result = asyncio.run(
                    run_one(port, args.senders, args.window, args.duration, args.warmup)
                )
            finally:
                proc.terminate()
                proc.wait(timeout=20)
        row = {"store": label, "senders": args.senders, "window": args.window, **result}
        rows.append(row)
        print(json.dumps(row), flush=True)
    print(f"\n{'store':<14}{'acks/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'gen cpu':>9}")
    for r in rows:
        print(
            f"{r['store']:<14}{r['acks_per_s']:>10}{r['ack_p50_ms']:>10}"
            f"{r['ack_p99_ms']:>10}{r['gen_cpu']:>9}"
        )


if __name__ == "__main__":
    main()
