"""Cluster fan-out benchmark: 1 node without Redis, 1 node with Redis, 2 nodes on one Redis,
2 nodes on a local Redis Cluster.

One room; S subscribers spread round-robin over the nodes; P publishers (also
spread) send at a fixed total rate for a few seconds. The load generator is
one asyncio process with the ``websockets`` client (its own core when
``taskset`` exists); each node and redis-server run as child processes.

Reported per configuration (one JSON line each, then a table):

* ``deliveries_per_s``: message frames received by subscribers per second;
* ``p50_ms`` / ``p99_ms``: send -> receive latency over all deliveries;
* ``cpu_s_per_M``: CPU seconds per million deliveries, per chatd node
  (``/proc/<pid>/stat`` utime+stime over the measured window), and for
  redis-server (all of a cluster's servers together);
* ``redis_ops_per_msg`` / ``redis_bytes_per_msg``: Redis commands processed and
  network bytes (in + out) per message sent, from ``INFO stats`` of every server.

``cluster2`` starts a local Redis Cluster of three masters without replicas
(tests/redis_cluster.py) and two nodes on ``redis+cluster://``.

    python3 bench/cluster_bench.py                  # S=400, 100 msg/s, 5 s each
    python3 bench/cluster_bench.py --S 1000 --rate 200 --duration 10
    python3 bench/cluster_bench.py --quick          # seconds-long smoke run

This machine has two cores shared by everything, so absolute rates are
bounded by the box; CPU per million deliveries per node is the scaling figure
(see docs/cluster.md).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def wait_port(port: int, timeout=20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def wait_ready(port: int, timeout=90.0) -> None:
    """Wait until the node on *port* answers /readyz with 200 (its Redis is up)."""
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"the node on {port} is not ready")


def start_node(port: int, workdir: str, redis_url: str | None, workers: int = 1):
    args = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]
    args += ["-n", "--pidfile", "", "chatd", "--listen", f"tcp:{port}:interface=127.0.0.1"]
    args += (
        ["--max-connections-per-ip", "100000"] if _has_option("--max-connections-per-ip") else []
    )
    args += ["--rate-limit", "100000"] if _has_option("--rate-limit") else []
    if redis_url:
        args += ["--redis", redis_url]
        if workers > 1:
            args += ["--workers", str(workers)]
    else:
        args += ["--db", ":memory:"]
    env = dict(os.environ, PYTHONPATH=REPO)
    with open(os.path.join(workdir, "chatd.log"), "w") as log:  # shown if it never gets ready
        proc = subprocess.Popen(args, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT)
    wait_port(port)
    return proc


_HELP = None


def _has_option(option: str) -> bool:
    global _HELP
    if _HELP is None:
        env = dict(os.environ, PYTHONPATH=REPO)
        _HELP = subprocess.run(
            [
                sys.executable,
                "-c",
                "from twisted.scripts.twistd import run; run()",
                "chatd",
                "--help",
            ],
            env=env,
            capture_output=True,
            text=True,
        ).stdout
    return option in _HELP


async def load(ports, S, P, rate, duration, warmup, snapshot):
    """Run the load against *ports*; returns (deliveries, latencies_ms, window s, CPU s).

    *snapshot()* reads the CPU seconds of every process under test; it is
    called when counting starts and when it stops.
    """
    import websockets

    lat: list[float] = []
    counting = {"on": False, "n": 0}

    async def subscriber(i):
        port = ports[i % len(ports)]
        ws = await websockets.connect(
            f"ws://127.0.0.1:{port}/ws?name=s{i}",
            subprotocols=["chatd.v1"],
            max_queue=None,
            ping_interval=None,
        )
        await ws.recv()  # welcome
        await ws.send(json.dumps({"type": "join", "room": "bench"}))
        while True:
            frame = json.loads(await ws.recv())
            if frame["type"] == "joined":
                break
        ready.append(ws)

        async def reader():
            async for raw in ws:
                if counting["on"] and '"type":"message"' in raw.replace(" ", ""):
                    frame = json.loads(raw)
                    counting["n"] += 1
                    lat.append((time.time() - float(frame["text"].split("~")[1])) * 1000)

        return asyncio.ensure_future(reader())

    ready: list = []
    readers = []
    for start in range(0, S, 50):
        readers += await asyncio.gather(*(subscriber(i) for i in range(start, min(S, start + 50))))
    pubs = []
    for j in range(P):
        port = ports[j % len(ports)]
        ws = await websockets.connect(
            f"ws://127.0.0.1:{port}/ws?name=p{j}", subprotocols=["chatd.v1"], ping_interval=None
        )
        await ws.recv()
        await ws.send(json.dumps({"type": "join", "room": "bench"}))
        pubs.append(ws)

        async def drain(ws=ws):
            async for _ in ws:
                pass

        readers.append(asyncio.ensure_future(drain()))
    await asyncio.sleep(0.5)

    async def publish(until):
        n = 0
        interval = 1.0 / rate
        next_at = time.monotonic()
        while time.monotonic() < until:
            ws = pubs[n % P]
            await ws.send(
                json.dumps(
                    {"type": "send", "room": "bench", "text": f"~{time.time():.6f}~" + "x" * 60}
                )
            )
            n += 1
            next_at += interval
            await asyncio.sleep(max(0, next_at - time.monotonic()))

    t0 = time.monotonic()
    await publish(t0 + warmup)
    cpu_before = snapshot()
    counting["on"] = True
    started = time.monotonic()
    await publish(started + duration)
    await asyncio.sleep(0.2)  # deliveries in flight
    counting["on"] = False
    window = time.monotonic() - started
    spent = [after - before for after, before in zip(snapshot(), cpu_before, strict=True)]
    await asyncio.sleep(0.5)
    for r in readers:
        r.cancel()
    for ws in [*ready, *pubs]:
        await ws.close()
    return counting["n"], lat, window, spent


def redis_stats(ports) -> list[float]:
    """[commands processed, network bytes in + out] summed over the servers on *ports*."""
    ops = nbytes = 0
    for port in ports:
        out = subprocess.run(
            [shutil.which("redis-cli"), "-p", str(port), "INFO", "stats"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout
        info = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
        ops += int(info["total_commands_processed"])
        nbytes += int(info["total_net_input_bytes"]) + int(info["total_net_output_bytes"])
    return [ops, nbytes]


def children(pid: int) -> list[int]:
    """The child processes of *pid* (the workers of a --workers parent)."""
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(x) for x in f.read().split()]


def run_config(name, n_nodes, use_redis, args, workdir, workers=1, cluster=False):
    redis_proc = None
    redis_url = None
    redis_cluster = None
    redis_ports: list[int] = []
    procs = []
    try:
        if cluster:
            sys.path.insert(0, REPO)
            from tests.redis_cluster import RedisCluster

            d = os.path.join(workdir, f"{name}-redis")
            os.makedirs(d, exist_ok=True)
            redis_cluster = RedisCluster(Path(d), masters=3, replicas=0).start()
            redis_ports = list(redis_cluster.ports)
            redis_url = f"{redis_cluster.url}?prefix=bench:"
        elif use_redis:
            rport = free_port()
            redis_proc = subprocess.Popen(
                [
                    shutil.which("redis-server"),
                    "--port",
                    str(rport),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    workdir,
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            wait_port(rport)
            redis_ports = [rport]
            redis_url = f"redis://127.0.0.1:{rport}/0?prefix=bench:"
        ports = []
        for i in range(n_nodes):
            port = free_port()
            d = os.path.join(workdir, f"{name}-{i}")
            os.makedirs(d, exist_ok=True)
            procs.append(start_node(port, d, redis_url, workers))
            ports.append(port)
        time.sleep(1.0 if workers == 1 else 3.0)  # Redis connections up, workers started
        for i, port in enumerate(ports):
            try:
                wait_ready(port)
            except RuntimeError:
                with open(os.path.join(workdir, f"{name}-{i}", "chatd.log")) as f:
                    print(f.read()[-3000:], file=sys.stderr)
                raise
        nodes = [p.pid for p in procs]
        if workers > 1:  # each worker is a node; the parent only holds the socket
            nodes = [c for p in procs for c in children(p.pid)]
            n_nodes = len(nodes)
        servers = [redis_proc.pid] if redis_proc else []
        if redis_cluster is not None:
            servers = [p.pid for p in redis_cluster.procs.values()]

        def snapshot():
            cpu = [cpu_seconds(pid) for pid in nodes]
            cpu.append(sum(cpu_seconds(pid) for pid in servers))
            return cpu + (redis_stats(redis_ports) if redis_ports else [0, 0])

        delivered, lat, window, spent = asyncio.run(
            load(ports, args.S, args.P, args.rate, args.duration, args.warmup, snapshot)
        )
        spent, (ops, nbytes) = spent[:-2], spent[-2:]
        messages = max(delivered / max(args.S, 1), 1)
        lat.sort()

        def pct(q):
            return round(lat[min(len(lat) - 1, int(q * len(lat)))], 2) if lat else None

        per_m = [round(s / max(delivered, 1) * 1e6, 1) for s in spent]
        row = {
            "config": name,
            "nodes": n_nodes,
            "S": args.S,
            "rate": args.rate,
            "deliveries_per_s": round(delivered / window),
            "p50_ms": pct(0.50),
            "p99_ms": pct(0.99),
            "cpu_s_per_M_per_node": per_m[:n_nodes],
            "redis_cpu_s_per_M": per_m[n_nodes] if redis_ports else None,
            "redis_ops_per_msg": round(ops / messages, 1) if redis_ports else None,
            "redis_bytes_per_msg": round(nbytes / messages) if redis_ports else None,
        }
        print(json.dumps(row), flush=True)
        return row
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        if redis_proc is not None:
            redis_proc.kill()
            redis_proc.wait()
        if redis_cluster is not None:
            redis_cluster.kill()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--S", type=int, default=400, help="subscribers (spread over the nodes)")
    ap.add_argument("--P", type=int, default=4, help="publishers")
    ap.add_argument("--rate", type=float, default=100, help="messages/s over all publishers")
    ap.add_argument("--duration", type=float, default=5)
    ap.add_argument("--warmup", type=float, default=1)
    ap.add_argument("--quick", action="store_true", help="S=40, rate=20, 1 s: a smoke run")
    ap.add_argument("--configs", default="local,redis1,redis2,workers2,cluster2")
    args = ap.parse_args(argv)
    if args.quick:
        args.S, args.rate, args.duration, args.warmup = 40, 20, 1.0, 0.3
    configs = {
        "local": ("1 node, no Redis", 1, False),
        "redis1": ("1 node + Redis", 1, True),
        "redis2": ("2 nodes + Redis", 2, True),
        "workers2": ("1 node, 2 workers", 1, True),
        "cluster2": ("2 nodes + Cluster", 2, True),
    }
    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        for key in args.configs.split(","):
            label, n, use_redis = configs[key]
            workers = 2 if key == "workers2" else 1
            if use_redis and not shutil.which("redis-server"):
                print(json.dumps({"config": key, "skipped": "no redis-server"}))
                continue
            row = run_config(key, n, use_redis, args, workdir, workers, key == "cluster2")
            rows.append((label, row))
    print(f"\n{'config':<18}{'deliv/s':>10}{'p50 ms':>9}{'p99 ms':>9}  CPU s per M deliveries")
    for label, r in rows:
        cpu = ", ".join(str(x) for x in r["cpu_s_per_M_per_node"])
        redis = ""
        if r["redis_cpu_s_per_M"] is not None:
            redis = (
                f"; redis {r['redis_cpu_s_per_M']} "
                f"({r['redis_ops_per_msg']} ops, {r['redis_bytes_per_msg']} B per message)"
            )
        print(
            f"{label:<18}{r['deliveries_per_s']:>10}{r['p50_ms']:>9}{r['p99_ms']:>9}  "
            f"node(s) {cpu}{redis}"
        )


if __name__ == "__main__":
    main()
