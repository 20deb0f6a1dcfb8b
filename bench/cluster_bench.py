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
  network bytes (in + out) per message sent, from ``INFO stats`` of every server
  (``redis_in_bytes_per_msg`` / ``redis_out_bytes_per_msg`` apart);
* ``redis_cpu_us_per_msg``: Redis CPU per message from ``INFO cpu``
  (``used_cpu_sys + used_cpu_user``, summed over the servers);
* ``node_cpu_us_per_delivery``: chatd CPU (every node) per delivery.

``cluster1``, ``cluster_workers2`` and ``cluster2`` start a local Redis Cluster of
three masters without replicas (tests/redis_cluster.py) under one node, one node
with two workers and two nodes on ``redis+cluster://``.

``--placement`` measures per-room shard subscriptions instead: two nodes on a
3+3 Redis Cluster, ``--rooms`` rooms of ``--per-room`` subscribers and one
publisher each, every room's connections on one node (``local``) or spread over
both (``spread``), rooms' events on the per-slot bus (``room_bus=0``, every node
gets every event: the layout before per-room subscriptions) or on each room's own
shard channel (``room_bus=1``); it reports the bus events and bytes each node
received per message (``chatd_bus_events_received_total``,
``chatd_bus_bytes_received_total`` of its /metrics), node CPU per message and
Redis bytes out per message::

    python3 bench/cluster_bench.py --placement --rooms 20 --per-room 10 --rate 200

``--costs-out FILE`` writes the capacity model's inputs derived from the rows
(bench/capacity_model.py ``--inputs FILE``): CPU per delivery and Redis CPU per
message from the one-node run, the per-node cost of a message (the part of a
node's CPU that does not shrink when the members are split over two nodes) and
Redis's cost per extra subscribed node from the one- and two-node runs.
``--publish-cost`` (Redis CPU per PUBLISH per subscriber, with redis-benchmark) and
``--append-cost`` (Redis CPU per append script, 20,000 appends through RedisStore)
measure Redis alone at its own rate and replace those two figures.

    python3 bench/cluster_bench.py --S 50 --rate 100 --duration 8 \
        --publish-cost --append-cost --costs-out costs.json
    python3 bench/capacity_model.py --inputs costs.json

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
    # (and the per-user limit, 50 frames/s by default: a publisher above it was closed
    # for flooding although --rate-limit was raised)
    args += ["--user-rate-limit", "0"] if _has_option("--user-rate-limit") else []
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


async def joined(port: int, name: str, room: str):
    """A chatd.v1 connection of *name* (no client pings, unbounded queue) whose
    ``welcome`` was read and that has sent ``join {room}``."""
    import websockets

    ws = await websockets.connect(
        f"ws://127.0.0.1:{port}/ws?name={name}",
        subprotocols=["chatd.v1"],
        max_queue=None,
        ping_interval=None,
    )
    await ws.recv()  # welcome
    await ws.send(json.dumps({"type": "join", "room": room}))
    return ws


def start_nodes(procs, n, name, workdir, redis_url, workers=1, settle=0.0) -> list[int]:
    """Start *n* nodes ``<workdir>/<name>-<i>`` on *redis_url* (appended to *procs* as
    they start, so the caller stops them whatever happens), give them *settle* seconds,
    and wait until each is ready (a node that is not: its log's tail on stderr);
    returns their ports."""
    ports = []
    for i in range(n):
        port = free_port()
        d = os.path.join(workdir, f"{name}-{i}")
        os.makedirs(d, exist_ok=True)
        procs.append(start_node(port, d, redis_url, workers))
        ports.append(port)
    time.sleep(settle)
    for i, port in enumerate(ports):
        try:
            wait_ready(port)
        except RuntimeError:
            with open(os.path.join(workdir, f"{name}-{i}", "chatd.log")) as f:
                print(f.read()[-3000:], file=sys.stderr)
            raise
    return ports


def stop_nodes(procs) -> None:
    """SIGTERM every node, then wait up to 10 s for each (SIGKILL if it does not end)."""
    for p in procs:
        p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()


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
    """Run the load against *ports*; returns (deliveries, latencies_ms, window s, CPU s,
    bytes of the message frames delivered, messages sent while counting).

    *snapshot()* reads the CPU seconds of every process under test; it is
    called when counting starts and when it stops.
    """

    lat: list[float] = []
    counting = {"on": False, "n": 0, "bytes": 0, "sent": 0}

    async def subscriber(i):
        port = ports[i % len(ports)]
        ws = await joined(port, f"s{i}", "bench")
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
                    counting["bytes"] += len(raw.encode("utf-8"))
                    lat.append((time.time() - float(frame["text"].split("~")[1])) * 1000)

        return asyncio.ensure_future(reader())

    ready: list = []
    readers = []
    for start in range(0, S, 50):
        readers += await asyncio.gather(*(subscriber(i) for i in range(start, min(S, start + 50))))
    pubs = []
    for j in range(P):
        port = ports[j % len(ports)]
        ws = await joined(port, f"p{j}", "bench")
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
            counting["sent"] += counting["on"]
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
    return counting["n"], lat, window, spent, counting["bytes"], counting["sent"]


#: what redis_stats() reads, in order
REDIS_STATS = ("ops", "in_bytes", "out_bytes", "cpu_s", "memory")


def redis_stats(ports) -> list[float]:
    """[commands processed, network bytes in, bytes out, CPU s (INFO cpu: sys + user),
    used_memory] summed over the servers on *ports*."""
    total = [0.0] * len(REDIS_STATS)
    for port in ports:
        out = subprocess.run(
            [shutil.which("redis-cli"), "-p", str(port), "INFO", "all"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout
        info = dict(line.strip().split(":", 1) for line in out.splitlines() if ":" in line)
        values = (
            int(info["total_commands_processed"]),
            int(info["total_net_input_bytes"]),
            int(info["total_net_output_bytes"]),
            float(info["used_cpu_sys"]) + float(info["used_cpu_user"]),
            int(info["used_memory"]),
        )
        total = [t + v for t, v in zip(total, values, strict=True)]
    return total


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
            # no persistence, like the single redis-server below (AOF's fsync per write
            # was what made the cluster rows' p99 70-163 ms)
            redis_cluster = RedisCluster(Path(d), masters=3, replicas=0, aof=False).start()
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
        # (settle: the Redis connections up, the workers started)
        settle = 1.0 if workers == 1 else 3.0
        ports = start_nodes(procs, n_nodes, name, workdir, redis_url, workers, settle)
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
            return cpu + (redis_stats(redis_ports) if redis_ports else [0] * len(REDIS_STATS))

        delivered, lat, window, spent, frame_bytes, sent = asyncio.run(
            load(ports, args.S, args.P, args.rate, args.duration, args.warmup, snapshot)
        )
        cut = len(spent) - len(REDIS_STATS)
        spent, stats = spent[:cut], dict(zip(REDIS_STATS, spent[cut:], strict=True))
        messages = max(sent, 1)  # per message sent (not delivered: a run may fall behind)

        def per_msg(value, scale=1):
            return round(value * scale / messages, 1) if redis_ports else None

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
            "redis_ops_per_msg": per_msg(stats["ops"]),
            "redis_bytes_per_msg": per_msg(stats["in_bytes"] + stats["out_bytes"]),
            "redis_in_bytes_per_msg": per_msg(stats["in_bytes"]),
            "redis_out_bytes_per_msg": per_msg(stats["out_bytes"]),
            "redis_cpu_us_per_msg": per_msg(stats["cpu_s"], 1e6),
            "redis_memory_bytes_per_msg": per_msg(stats["memory"]),
            "bytes_per_delivery": round(frame_bytes / max(delivered, 1)),
            "node_cpu_us_per_delivery": round(sum(spent[:n_nodes]) / max(delivered, 1) * 1e6, 2),
            "messages": round(messages),
            "deliveries": delivered,
            "node_cpu_s": [round(s, 3) for s in spent[:n_nodes]],
        }
        print(json.dumps(row), flush=True)
        return row
    finally:
        stop_nodes(procs)
        if redis_proc is not None:
            redis_proc.kill()
            redis_proc.wait()
        if redis_cluster is not None:
            redis_cluster.kill()


def _info(port, section) -> dict:
    out = subprocess.run(
        [shutil.which("redis-cli"), "-p", str(port), "INFO", section],
        capture_output=True,
        text=True,
        timeout=10,
    ).stdout
    return dict(line.strip().split(":", 1) for line in out.splitlines() if ":" in line)


def _redis_cpu(port) -> float:
    info = _info(port, "cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


def _bare_redis(workdir):
    """A redis-server on a free loopback port, no persistence: ``(port, process)``."""
    port = free_port()
    server = subprocess.Popen(
        [shutil.which("redis-server"), "--port", str(port), "--bind", "127.0.0.1"]
        + ["--save", "", "--appendonly", "no", "--dir", workdir],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return port, server


def publish_cost(workdir, counts=(0, 1, 2, 8), n=200_000, size=245) -> dict:
    """Redis CPU per PUBLISH of a *size*-byte payload (a bus event's measured size)
    to each number of subscribers in *counts*, at redis-benchmark's rate (pipelined,
    so the per-wakeup costs are amortised as at high load); each subscriber is a
    ``redis-cli SUBSCRIBE`` writing to /dev/null. Returns ``{"us_per_publish": {k:
    µs}, "us_per_subscriber": slope}``."""
    port, server = _bare_redis(workdir)
    subscribers = []
    out = {}
    try:
        wait_port(port)
        for k in counts:
            while len(subscribers) < k:
                subscribers.append(
                    subprocess.Popen(
                        [shutil.which("redis-cli"), "-p", str(port), "SUBSCRIBE", "bus"],
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )
                )
            deadline = time.monotonic() + 10
            while _info(port, "clients").get("pubsub_clients", str(k)) != str(k):
                if time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            before = _redis_cpu(port)
            subprocess.run(
                [shutil.which("redis-benchmark"), "-p", str(port), "-q", "-n", str(n)]
                + ["-c", "4", "-P", "16", "PUBLISH", "bus", "x" * size],
                capture_output=True,
                timeout=300,
            )
            out[k] = round((_redis_cpu(port) - before) / n * 1e6, 2)
    finally:
        for sub in subscribers:
            sub.kill()
            sub.wait()
        server.kill()
        server.wait()
    ks = list(out)
    mean_k = sum(ks) / len(ks)
    mean_v = sum(out.values()) / len(ks)
    slope = sum((k - mean_k) * (out[k] - mean_v) for k in ks) / sum((k - mean_k) ** 2 for k in ks)
    return {"us_per_publish": out, "us_per_subscriber": round(slope, 2)}


#: run in a child process by append_cost(): n appends through chatd's RedisStore
_APPENDER = """
import sys
from twisted.internet import defer, task
from chatd.cluster.redis import make_node
from chatd.store.redis import RedisStore

@defer.inlineCallbacks
def main(reactor, url, n, batch):
    store = RedisStore(make_node(url), prune_interval=None)
    yield store.start()
    text = "x" * 70
    for start in range(0, n, batch):
        yield defer.gatherResults(
            [store.append(f"r{i % 100}", "u", "U", None, text, i) for i in range(start, start + batch)]
        )
    yield store.stop()

task.react(main, [sys.argv[1], int(sys.argv[2]), int(sys.argv[3])])
"""


def append_cost(workdir, n=20_000, batch=200) -> float:
    """Redis CPU (INFO cpu) per message of chatd's append script, *n* appends of a
    70-byte text over 100 rooms, *batch* in flight at a time (so Redis works at its
    own rate, not the benchmark's 100-200 messages/s); no subscriber."""
    port, server = _bare_redis(workdir)
    try:
        wait_port(port)
        url = f"redis://127.0.0.1:{port}/0?prefix=bench:"
        before = _redis_cpu(port)
        env = dict(os.environ, PYTHONPATH=REPO)
        code = [sys.executable, "-c", _APPENDER, url, str(n), str(batch)]
        subprocess.run(code, env=env, check=True, timeout=600)
        return round((_redis_cpu(port) - before) / n * 1e6, 1)
    finally:
        server.kill()
        server.wait()


#: config -> (label, nodes, Redis?, workers per node, Redis Cluster?)
CONFIGS = {
    "local": ("1 node, no Redis", 1, False, 1, False),
    "redis1": ("1 node + Redis", 1, True, 1, False),
    "workers2": ("1 node, 2 workers", 1, True, 2, False),
    "redis2": ("2 nodes + Redis", 2, True, 1, False),
    "cluster1": ("1 node + Cluster", 1, True, 1, True),
    "cluster_workers2": ("2 workers + Cluster", 1, True, 2, True),
    "cluster2": ("2 nodes + Cluster", 2, True, 1, True),
}


def derived_costs(rows: dict, send_us: float) -> dict:
    """The capacity model's inputs from a one-node and a two-node row (``redis1`` and
    ``redis2``, else ``cluster1`` and ``cluster2``).

    Node CPU of a run is modelled as ``a·deliveries + b·messages·nodes + c·messages``
    (*c* = *send_us*, the sender's cost, given): two runs give *a* (per delivery)
    and *b* (per message per node that has members). Redis CPU per message is
    ``r + p·nodes`` (the script, then one publish per subscribed node): the two runs
    give *r* and *p*. Memory per message is used_memory's growth per message."""
    for one, two in (("redis1", "redis2"), ("cluster1", "cluster2")):
        if one in rows and two in rows:
            break
    else:
        return {}
    r1, r2 = rows[one], rows[two]
    t1 = sum(r1["node_cpu_s"]) * 1e6 - send_us * r1["messages"]
    t2 = sum(r2["node_cpu_s"]) * 1e6 - send_us * r2["messages"]
    # t1 = a·d1 + b·m1, t2 = a·d2 + 2·b·m2
    d1, m1, d2, m2 = r1["deliveries"], r1["messages"], r2["deliveries"], 2 * r2["messages"]
    det = d1 * m2 - d2 * m1
    a = (t1 * m2 - t2 * m1) / det
    b = (d1 * t2 - d2 * t1) / det
    p = r2["redis_cpu_us_per_msg"] - r1["redis_cpu_us_per_msg"]
    return {
        "cpu_us_per_delivery": round(a, 2),
        "cpu_us_per_message_node": round(b, 1),
        "redis_us_per_message": round(r1["redis_cpu_us_per_msg"] - p, 1),
        "redis_us_per_publish": round(p, 1),
        "redis_bytes_per_message": round(r1["redis_memory_bytes_per_msg"]),
        "bytes_per_delivery": r1["bytes_per_delivery"],
        "_from": [one, two],
    }


def _metric(port: int, name: str) -> float:
    """One unlabelled sample of the node's /metrics (0 when absent)."""
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    return 0.0


#: what a placement run reads of each node's /metrics
BUS_METRICS = ("chatd_bus_events_received_total", "chatd_bus_bytes_received_total")


async def room_load(ports, rooms, per_room, placement, rate, duration, warmup, snapshot):
    """*rooms* rooms of *per_room* subscribers and one publisher each; room *i*'s
    connections all on node ``i % len(ports)`` (*placement* ``"local"``) or spread
    round-robin over the nodes (``"spread"``). Messages at *rate* per second over all
    rooms for *duration* s; returns (messages sent while counting, deliveries, the
    snapshots before and after)."""

    counting = {"on": False, "n": 0, "sent": 0}
    conns, readers = [], []

    def port_of(room, k):
        return ports[room % len(ports)] if placement == "local" else ports[k % len(ports)]

    async def member(room, k, publisher=False):
        name = f"r{room}m{k}{'p' if publisher else ''}"
        ws = await joined(port_of(room, k), name, f"room{room}")
        while json.loads(await ws.recv())["type"] != "joined":
            pass
        conns.append(ws)

        async def reader():
            async for raw in ws:
                if counting["on"] and not publisher and '"message"' in raw:
                    counting["n"] += 1

        readers.append(asyncio.ensure_future(reader()))
        return ws

    pubs = []
    for room in range(rooms):
        await asyncio.gather(*(member(room, k) for k in range(per_room)))
        pubs.append(await member(room, room, publisher=True))
    await asyncio.sleep(0.5)

    async def publish(until):
        n, interval, next_at = 0, 1.0 / rate, time.monotonic()
        while time.monotonic() < until:
            room = n % rooms
            await pubs[room].send(
                json.dumps({"type": "send", "room": f"room{room}", "text": "x" * 70})
            )
            n += 1
            counting["sent"] += counting["on"]
            next_at += interval
            await asyncio.sleep(max(0, next_at - time.monotonic()))

    await publish(time.monotonic() + warmup)
    await asyncio.sleep(0.3)
    before = snapshot()
    counting["on"] = True
    await publish(time.monotonic() + duration)
    await asyncio.sleep(0.5)  # deliveries in flight
    counting["on"] = False
    after = snapshot()
    for r in readers:
        r.cancel()
    for ws in conns:
        await ws.close()
    return counting["sent"], counting["n"], before, after


def _pin(pids, cores) -> None:
    """Pin *pids* to *cores* where the machine has them (Linux)."""
    if len(os.sched_getaffinity(0)) < 2:
        return
    for pid in pids:
        try:
            os.sched_setaffinity(pid, cores)
        except OSError:
            pass


def _placement_snapshot(ports, procs, cluster):
    """A snapshot() of a placement run: per node its bus metrics and CPU seconds, the
    masters' bytes out and the cluster's CPU seconds."""
    servers = [p.pid for p in cluster.procs.values()]

    def snapshot():
        nodes = [[_metric(p, m) for m in BUS_METRICS] for p in ports]
        cpu = [cpu_seconds(p.pid) for p in procs]
        out = redis_stats(cluster.master_ports())[2]
        return nodes, cpu, out, sum(cpu_seconds(p) for p in servers)

    return snapshot


def placement_run(args, workdir) -> list[dict]:
    """Two nodes on a local Redis Cluster of three masters and three replicas (nodes
    and Redis pinned to core 0, the load generator to core 1): the
    bus events and bytes each node receives per message sent, with rooms whose
    connections are all on one node (``local``) or spread over both (``spread``),
    publishing rooms' events on the per-slot bus (``room_bus=0``: every node gets
    every event, as before per-room subscriptions) and on the rooms' own shard
    channels (``room_bus=1``)."""
    sys.path.insert(0, REPO)
    from tests.redis_cluster import RedisCluster

    every_core = os.sched_getaffinity(0)
    rows = []
    for room_bus in (0, 1):
        for placement in ("local", "spread"):
            os.sched_setaffinity(0, every_core)  # (children inherit it)
            name = f"rooms-{placement}-bus{room_bus}"
            d = os.path.join(workdir, f"{name}-redis")
            os.makedirs(d, exist_ok=True)
            cluster = RedisCluster(Path(d), masters=3, replicas=1).start()
            procs, ports = [], []
            try:
                url = f"{cluster.url}?prefix=bench:&room_bus={room_bus}&connect_timeout=60"
                ports += start_nodes(procs, 2, name, workdir, url)
                # the nodes and Redis on core 0, the load generator on core 1
                _pin([p.pid for p in procs] + [p.pid for p in cluster.procs.values()], {0})
                _pin([os.getpid()], {1})
                snapshot = _placement_snapshot(ports, procs, cluster)

                sent, delivered, before, after = asyncio.run(
                    room_load(
                        ports,
                        args.rooms,
                        args.per_room,
                        placement,
                        args.rate,
                        args.duration,
                        args.warmup,
                        snapshot,
                    )
                )
                m = max(sent, 1)
                events = [
                    round((a[0] - b[0]) / m, 2) for a, b in zip(after[0], before[0], strict=True)
                ]
                nbytes = [
                    round((a[1] - b[1]) / m) for a, b in zip(after[0], before[0], strict=True)
                ]
                cpu = [round((a - b) / m * 1e6) for a, b in zip(after[1], before[1], strict=True)]
                row = {
                    "config": name,
                    "room_bus": room_bus,
                    "placement": placement,
                    "rooms": args.rooms,
                    "per_room": args.per_room,
                    "rate": args.rate,
                    "messages": sent,
                    "deliveries": delivered,
                    "bus_events_per_msg_per_node": events,
                    "bus_bytes_per_msg_per_node": nbytes,
                    "node_cpu_us_per_msg": cpu,
                    "redis_out_bytes_per_msg": round((after[2] - before[2]) / m),
                    "redis_cpu_us_per_msg": round((after[3] - before[3]) / m * 1e6),
                }
                print(json.dumps(row), flush=True)
                rows.append(row)
            finally:
                stop_nodes(procs)
                cluster.kill()
    print(f"\n{'config':<22}{'events/msg/node':>18}{'bytes/msg/node':>18}{'CPU us/msg/node':>18}")
    for r in rows:
        print(
            f"{r['config']:<22}{str(r['bus_events_per_msg_per_node']):>18}"
            f"{str(r['bus_bytes_per_msg_per_node']):>18}{str(r['node_cpu_us_per_msg']):>18}"
        )
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--S", type=int, default=400, help="subscribers (spread over the nodes)")
    ap.add_argument("--P", type=int, default=4, help="publishers")
    ap.add_argument("--rate", type=float, default=100, help="messages/s over all publishers")
    ap.add_argument("--duration", type=float, default=5)
    ap.add_argument("--warmup", type=float, default=1)
    ap.add_argument("--quick", action="store_true", help="S=40, rate=20, 1 s: a smoke run")
    ap.add_argument("--configs", default=",".join(CONFIGS))
    ap.add_argument("--costs-out", help="write the capacity model's inputs (JSON) here")
    ap.add_argument(
        "--publish-cost",
        action="store_true",
        help="also measure Redis CPU per PUBLISH per subscriber (redis-benchmark); "
        "--costs-out then takes redis_us_per_publish from it",
    )
    ap.add_argument(
        "--append-cost",
        action="store_true",
        help="also measure Redis CPU per append script at Redis's own rate; "
        "--costs-out then takes redis_us_per_message from it",
    )
    ap.add_argument(
        "--send-us",
        type=float,
        default=240.0,
        help="chatd CPU per accepted send, taken as known by --costs-out (capacity_model's)",
    )
    ap.add_argument(
        "--placement",
        action="store_true",
        help="instead: bus events and bytes per node, 2 nodes on a 3+3 Redis Cluster, rooms "
        "on one node vs spread, per-slot bus (room_bus=0) vs per-room channels",
    )
    ap.add_argument("--rooms", type=int, default=20, help="--placement: rooms")
    ap.add_argument("--per-room", type=int, default=10, help="--placement: subscribers per room")
    args = ap.parse_args(argv)
    if args.placement:
        with tempfile.TemporaryDirectory() as workdir:
            placement_run(args, workdir)
        return
    if args.quick:
        args.S, args.rate, args.duration, args.warmup = 40, 20, 1.0, 0.3
    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        for key in args.configs.split(","):
            label, n, use_redis, workers, cluster = CONFIGS[key]
            if use_redis and not shutil.which("redis-server"):
                print(json.dumps({"config": key, "skipped": "no redis-server"}))
                continue
            row = run_config(key, n, use_redis, args, workdir, workers, cluster)
            rows.append((label, row))
    print(f"\n{'config':<18}{'deliv/s':>10}{'p50 ms':>9}{'p99 ms':>9}  CPU s per M deliveries")
    for label, r in rows:
        cpu = ", ".join(str(x) for x in r["cpu_s_per_M_per_node"])
        redis = ""
        if r["redis_cpu_s_per_M"] is not None:
            redis = (
                f"; redis {r['redis_cpu_s_per_M']} ({r['redis_cpu_us_per_msg']} us, "
                f"{r['redis_ops_per_msg']} ops, {r['redis_in_bytes_per_msg']} B in + "
                f"{r['redis_out_bytes_per_msg']} B out per message)"
            )
        print(
            f"{label:<18}{r['deliveries_per_s']:>10}{r['p50_ms']:>9}{r['p99_ms']:>9}  "
            f"node(s) {cpu}{redis}"
        )
    publish = None
    if args.publish_cost:
        with tempfile.TemporaryDirectory() as workdir:
            publish = publish_cost(workdir)
        print(json.dumps({"publish_cost": publish}), flush=True)
    append = None
    if args.append_cost:
        with tempfile.TemporaryDirectory() as workdir:
            append = append_cost(workdir)
        print(json.dumps({"append_cost_us": append}), flush=True)
    if args.costs_out:
        costs = derived_costs({r["config"]: r for _, r in rows}, args.send_us)
        if publish is not None:
            costs["redis_us_per_publish"] = publish["us_per_subscriber"]
        if append is not None:
            costs["redis_us_per_message"] = append
        with open(args.costs_out, "w") as f:
            json.dump(costs, f, indent=1)
        print(json.dumps({"costs": costs}))


if __name__ == "__main__":
    main()
