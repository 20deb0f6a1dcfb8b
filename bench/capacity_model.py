"""Capacity model (issue 20): nodes, cores, Redis shards and memory for a target load,
computed from measured per-unit costs, so the table can be re-run with figures from a
bigger machine.

    python3 bench/capacity_model.py                       # the default scenarios, JSON + table
    python3 bench/capacity_model.py --inputs costs.json   # measured costs from elsewhere
    python3 bench/capacity_model.py --users 1000000 --rooms 100000 --room-size 100 --rate 50000

Inputs (``--inputs`` JSON keys, each overridable on the command line; defaults are the
figures measured on this project's 2-core machine — see docs/cluster.md, "Capacity"):

* ``cpu_us_per_delivery``: chatd CPU per frame written to a connection (bench/fanout.py,
  bench/cluster_bench.py: ``cpu_s_per_M_per_node`` / 1e6 deliveries);
* ``cpu_us_per_message_node``: chatd CPU per message a node receives from the bus and
  routes (decode, room lookup), paid once per node that has members in the room;
* ``cpu_us_per_send``: chatd CPU on the sender's node per accepted send (parse, checks,
  ack; bench/messenger_bench.py sends: ``server_cpu`` / ``acks_per_s``);
* ``redis_us_per_message``: Redis CPU per stored message (the append script) and
  ``redis_us_per_publish``: per pub/sub delivery to one subscribed node;
* ``redis_bytes_per_message``: Redis memory per kept message (history stream entry);
* ``kb_per_connection``: chatd resident memory per idle connection joined to a room:
  46 KB with permessage-deflate (what the SDK asks for: zlib's state per connection),
  6.4 KB without (1,000 connections, RSS before/after, 2026-12-03);
* ``bytes_per_delivery``: bytes on the wire per delivered message frame.

Model (stated assumptions, printed with the table): members spread uniformly over the
nodes, a fraction ``online`` of them connected; a room of *k* members then has members on
``n·(1−(1−1/n)^k)`` of *n* nodes (each such node gets the message once from its shard); one
worker per core, usable to ``core_budget`` of a core; one Redis shard per
``redis_core_budget`` of a core; a message is kept ``history`` times per room.
"""

from __future__ import annotations

import argparse
import json
import math
import sys

#: per-unit costs (2 cores, Python 3.11, SQLite/Redis on loopback); SOURCES says which
#: were measured and how, and which are estimates still to be measured
MEASURED = {
    "cpu_us_per_delivery": 4.45,
    "cpu_us_per_message_node": 228.0,
    "cpu_us_per_send": 240.0,
    "redis_us_per_message": 64.0,
    "redis_us_per_publish": 0.62,
    "redis_bytes_per_message": 240,
    "kb_per_connection": 46.0,
    "bytes_per_delivery": 189,
}
#: bench/cluster_bench.py --costs-out runs of 2026-12-03 (bench/results/
#: 2026-12-03-cluster-costs.jsonl), on the 2-core box shared with other work (load
#: average 2.6-6 over both runs), and of 2026-12-04 on the quiet box (load 0.5-1.2)
_RUNS = "bench/cluster_bench.py 2026-12-03, shared 2-core box (load 2.6-6)"
_QUIET = (
    "bench/cluster_bench.py --S 50 --rate 400 --duration 8 --costs-out, 2026-12-04 05:17-05:21 "
    "UTC, quiet box (load 0.5-1.2), hiredis installed"
)
SOURCES = {
    "cpu_us_per_delivery": f"measured: {_QUIET}: 4.45 us solved from the 1- and 2-node rows "
    "(13.8 and 9.2 + 9.2 s per M deliveries); bench/messenger_bench.py fanout on a quiet "
    f"machine, 3.66 us (2026-12-02); {_RUNS}: 29.6 and 31.6 us (load inflates CPU per unit)",
    "cpu_us_per_message_node": f"measured: {_QUIET}: 228 us, solved 1 vs 2 nodes for the "
    "per-node cost of a message from the bus (decode, route, frame); 456 us on 2026-12-04 "
    "03:19 before hiredis; the 2026-12-03 loaded runs gave 438 and 421 us",
    "cpu_us_per_send": "taken as known (cluster_bench.py --send-us 240, the loaded-machine "
    "messenger_bench figure of a durable send) when the quiet run's per-delivery cost was "
    "solved, so kept with it; bench/send_path_bench.py (2026-12-04) measures 117-133 us per "
    "acked SQLite send in one thread (153-162 us before the send-path work); the Redis-mode "
    "send is not isolated",
    "redis_us_per_message": "measured (INFO cpu): cluster_bench.py --append-cost, chatd's "
    "append script at Redis's own rate (200 in flight, 100 rooms): 61 and 64 us, plus ~1 us "
    f"for its publish; {_RUNS} at 100-200 msg/s: 168-336 us, {_QUIET}: 94 us (per-wakeup "
    "costs not amortised at these rates)",
    "redis_us_per_publish": "measured (INFO cpu): cluster_bench.py --publish-cost, PUBLISH of "
    "245 B (a bus event) to 0/1/2/8 subscribers with redis-benchmark: 0.62 us per subscriber "
    f"(twice); {_RUNS}, 2 nodes minus 1: -9.5 and 25.6 us (below the noise)",
    "redis_bytes_per_message": f"measured (INFO used_memory growth per message): {_RUNS}: "
    "224-256 B on one Redis (a stream entry with a ~70-byte text and its ordinal)",
    "kb_per_connection": "measured: 1,000 idle chatd.v1 connections in 200 rooms, RSS delta: "
    "46 KB with permessage-deflate, 6.4 KB without (2026-12-03)",
    "bytes_per_delivery": f"measured: {_RUNS}: 185 B per message frame (a ~70-byte text) "
    "+ 4 B of WebSocket header",
}

#: the issue's scenarios: (name, concurrent users, rooms, mean room size, messages/s)
SCENARIOS = [
    ("100k users, 10k rooms of 50, 5k msg/s", 100_000, 10_000, 50, 5_000),
    ("1M users, 100k rooms of 100, 50k msg/s", 1_000_000, 100_000, 100, 50_000),
    ("1M users, 1k rooms of 1,000, 50k msg/s", 1_000_000, 1_000, 1_000, 50_000),
]


def nodes_reached(nodes: int, room_size: float) -> float:
    """Expected number of *nodes* holding at least one of a room's members, members
    spread uniformly over the nodes."""
    if nodes <= 1:
        return 1.0
    return nodes * (1 - (1 - 1 / nodes) ** room_size)


def nodes_placed(nodes: int, room_size: float, online_users: float) -> float:
    """Nodes holding a room's online members when the balancer places a room's members
    together (a hash on the room): as few as the per-node connection share allows, and one
    more where a room straddles two nodes' shares."""
    if nodes <= 1:
        return 1.0
    per_node = online_users / nodes
    return min(float(nodes), room_size / per_node + 1.0)


PLACEMENTS = {"uniform": "members spread uniformly", "room": "a room's members placed together"}


def plan(
    costs,
    users,
    rooms,
    room_size,
    rate,
    online=0.5,
    core_budget=0.7,
    redis_core_budget=0.7,
    history=1000,
    nic_gbit=10.0,
    ram_gb=64,
    cores_per_machine=16,
    placement="uniform",
):
    """The resources for one scenario; the nodes count is found by fixed-point iteration
    (more nodes: more bus copies per message). A scenario is **infeasible** when one node's
    share of the bus alone (every message of every room it has members in) exceeds its core
    budget: adding nodes then adds as much work per node as it takes away."""
    deliveries = rate * room_size * online
    online_users = users * online
    k = room_size * online

    def reached(n):
        if placement == "room":
            return nodes_placed(n, k, online_users)
        return nodes_reached(n, k)

    nodes, feasible = 1, True
    for _ in range(200):
        per_msg_nodes = reached(nodes)
        bus_per_node = rate * per_msg_nodes / nodes * costs["cpu_us_per_message_node"] / 1e6
        cpu_us = (
            deliveries * costs["cpu_us_per_delivery"]
            + rate * per_msg_nodes * costs["cpu_us_per_message_node"]
            + rate * costs["cpu_us_per_send"]
        )
        need = max(1, math.ceil(cpu_us / 1e6 / core_budget))
        if need == nodes:
            break
        if nodes > 1 and bus_per_node >= core_budget:
            feasible = False
            break
        nodes = need
    else:
        feasible = False
    per_msg_nodes = reached(nodes)
    bus_per_node = rate * per_msg_nodes / nodes * costs["cpu_us_per_message_node"] / 1e6
    redis_us = rate * (
        costs["redis_us_per_message"] + per_msg_nodes * costs["redis_us_per_publish"]
    )
    shards = max(1, math.ceil(redis_us / 1e6 / redis_core_budget))
    redis_gb = rooms * history * costs["redis_bytes_per_message"] / 1e9
    conn_gb = users * costs["kb_per_connection"] / 1e6
    egress_gbit = deliveries * costs["bytes_per_delivery"] * 8 / 1e9
    machines_cpu = math.ceil(nodes / cores_per_machine)
    machines_ram = math.ceil(conn_gb / (ram_gb * 0.7))
    machines_nic = math.ceil(egress_gbit / (nic_gbit * 0.7))
    machines = max(machines_cpu, machines_ram, machines_nic)
    first = max(
        (("CPU", machines_cpu), ("memory", machines_ram), ("network", machines_nic)),
        key=lambda x: x[1],
    )[0]
    if not feasible:
        first = "infeasible: bus per node"
    return {
        "users": users,
        "rooms": rooms,
        "room_size": room_size,
        "messages_per_s": rate,
        "placement": placement,
        "deliveries_per_s": round(deliveries),
        "chatd_cores": nodes,
        "bus_copies_per_message": round(per_msg_nodes, 1),
        "bus_core_share_per_node": round(bus_per_node, 2),
        "feasible": feasible,
        "redis_shards": shards,
        "redis_memory_gb": round(redis_gb, 1),
        "connection_memory_gb": round(conn_gb, 1),
        "egress_gbit_s": round(egress_gbit, 2),
        "machines": machines,
        "runs_out_first": first,
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--inputs", help="JSON file of measured costs (keys as in MEASURED)")
    for key, value in MEASURED.items():
        ap.add_argument(
            "--" + key.replace("_", "-"), type=float, default=None, help=f"default {value}"
        )
    ap.add_argument("--users", type=int)
    ap.add_argument("--rooms", type=int)
    ap.add_argument("--room-size", type=float)
    ap.add_argument("--rate", type=float, help="messages/s over all rooms")
    ap.add_argument("--online", type=float, default=0.5, help="share of members connected")
    ap.add_argument("--core-budget", type=float, default=0.7)
    ap.add_argument("--history", type=int, default=1000, help="messages kept per room in Redis")
    ap.add_argument("--cores-per-machine", type=int, default=16)
    ap.add_argument("--ram-gb", type=int, default=64)
    ap.add_argument(
        "--placement",
        choices=[*PLACEMENTS, "both"],
        default="both",
        help="how a room's members are spread over the nodes (default: both, a row each)",
    )
    args = ap.parse_args(argv)
    costs = dict(MEASURED)
    if args.inputs:
        with open(args.inputs) as f:
            costs.update(json.load(f))
    for key in MEASURED:
        value = getattr(args, key)
        if value is not None:
            costs[key] = value
    if args.users:
        scenarios = [
            (
                "custom",
                args.users,
                args.rooms or args.users // 10,
                args.room_size or 10,
                args.rate or 1000,
            )
        ]
    else:
        scenarios = SCENARIOS
    placements = list(PLACEMENTS) if args.placement == "both" else [args.placement]
    rows = []
    for name, users, rooms, size, rate in scenarios:
        for placement in placements:
            row = plan(
                costs,
                users,
                rooms,
                size,
                rate,
                online=args.online,
                core_budget=args.core_budget,
                history=args.history,
                ram_gb=args.ram_gb,
                cores_per_machine=args.cores_per_machine,
                placement=placement,
            )
            row["scenario"] = name
            rows.append(row)
            print(json.dumps(row))
    print(
        json.dumps({"costs": costs, "online": args.online, "core_budget": args.core_budget}),
        file=sys.stderr,
    )
    print(
        f"\n{'scenario':<42}{'placement':>10}{'deliv/s':>12}{'cores':>7}{'bus/node':>9}{'shards':>8}{'redis GB':>10}{'conn GB':>9}{'Gbit/s':>8}{'machines':>10}  first limit"
    )
    for r in rows:
        cores = r["chatd_cores"] if r["feasible"] else "-"
        machines = r["machines"] if r["feasible"] else "-"
        print(
            f"{r['scenario']:<42}{r['placement']:>10}{r['deliveries_per_s']:>12,}{cores:>7}{r['bus_core_share_per_node']:>9}{r['redis_shards']:>8}"
            f"{r['redis_memory_gb']:>10}{r['connection_memory_gb']:>9}{r['egress_gbit_s']:>8}{machines:>10}  {r['runs_out_first']}"
        )
    return rows


if __name__ == "__main__":
    main()
