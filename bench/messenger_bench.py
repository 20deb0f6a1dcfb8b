"""Messenger benchmarks of issue 14 (item 7): token users over chatd.v1, Node load generator.

The Python side only drives: it starts ``twistd -n chatd`` (pinned to core 0,
``--jwt-secret`` so connections are token users, rate limits off), mints the
tokens with :class:`chatd.auth.TokenVerifier`, runs ``bench/loadgen.js``
(pinned to core 1) and prints its JSON line, with the server's store and
options, then the issue's target for that run.

    python3 bench/messenger_bench.py sends                   # closed loop: max acked sends/s
    python3 bench/messenger_bench.py sends --rate 20000      # open loop: p99 at 20k/s offered
    python3 bench/messenger_bench.py sends --store memory    # --db :memory: for comparison
    python3 bench/messenger_bench.py fanout                  # 1,000 members, 100 online, vs relay
    python3 bench/messenger_bench.py reads                   # read markers persisted per second

``sends``: durable sends. N connections (``--N``, one token user each) join
``--rooms`` rooms (``b0`` … round-robin, so ``N / rooms`` members each) and send
``send {room, text, id}``; chatd acks after the group commit (SQLite, the
default ``--db-synchronous FULL``). ``--rate 0`` keeps ``--window`` sends in
flight per connection (the throughput ceiling); ``--rate R`` offers R sends/s
over all connections (the latency at that load; ``keeps_up`` says whether every
send was acked at that rate). ``acks_per_s``, ``ack_p50_ms`` / ``ack_p99_ms``
(send written -> ack read, in the generator), ``deliveries_per_s`` (the
messages the other members received), ``server_cpu`` / ``gen_cpu`` (share of
one core) and ``core_busy`` (each core's busy share, every process: what other
processes took is ``core0_other`` / ``core1_other``).

``fanout``: room fan-out to durable members. Before the run the harness writes,
through :class:`chatd.store.sqlite.SQLiteStore` (the store's own ``append`` of
timeline events, in a child process), a room ``bench`` with ``--members`` members
(``bench0`` its owner, the others ``invited``); ``--online`` of them connect
(token users), ``--P`` of those publish with the fan-out benchmark's bounded
window (``bench/loadgen.js`` mode ``throughput``), the others only receive. In
the same run, chatd's relay mode (default store, a SQLite file) with as many
connections: each message reaches the other ``online - 1`` connections in both.
Rows: ``deliveries_per_s``, ``messages_per_s``, ``server_cpu``,
``us_per_delivery`` (server CPU per delivery), ``loss``; then v1/relay ratios
(issue target: deliveries/s >= 0.8 x relay). ``--baseline DIR`` adds the same
chatd.v1 run against another chatd tree (e.g. the release before issue 14,
unpacked with ``git archive``): its room has only the online members (its store
has no membership), which is what "today" means for CPU per delivery.

``reads``: read markers end to end. A room with ``--N`` durable members and
``--messages`` messages is written first; each member connects and sends
``read {room, seq}`` with seq N + 1, N + 2, ... (past the N membership events,
where the members' markers start, so the marker moves forward each time, a
stored write; before 2026-12-04 the reads began at seq 1, so each member's first
reads, up to its invite's seq, moved nothing and sent no receipt),
``--window`` in flight per connection (or ``--rate`` per second
over all); a read ends with the ``read`` frame chatd sends the user's
connections after the marker is stored; with at most ``--receipt-members``
members (chatd's default 100) every read also sends a ``receipt`` to each
member's connection; with ``--batch`` the connections ask for ``receipts_batch``
and get at most one frame per room per ``--receipt-window`` instead.
``markers_per_s``, ``read_p50_ms`` / ``read_p99_ms``, ``receipt_frames_per_s``
(over all connections) (issue target: >= 20,000 markers/s persisted).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

BENCH = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH)
sys.path[:0] = [BENCH, REPO]

from chatd_process import start_chatd  # noqa: E402  (bench/)
from fanout import LOADGEN, _raise_nofile, least_disturbed, pinned  # noqa: E402  (bench/)

from chatd.auth import TokenVerifier  # noqa: E402

BENCH_ROOM = "bench"

SECRET = "messenger-bench-secret-of-32-bytes!!"
#: chatd's abuse limits off: every benchmark connection comes from 127.0.0.1
UNLIMITED = ["--rate-limit", "0", "--user-rate-limit", "0", "--max-connections-per-ip", "0"]


def mint_tokens(path: str, users: list[str]) -> None:
    """Write a JSON array of one token per user id (the generator reads it)."""
    issuer = TokenVerifier(secret=SECRET)
    with open(path, "w") as f:
        json.dump([issuer.issue(u, ttl=3600) for u in users], f)


def chatd_args(store: str, workdir: str, synchronous: str) -> list[str]:
    """chatd's options for *store* (``sqlite``: a file in *workdir*; ``memory``)."""
    db = os.path.join(workdir, "bench.sqlite3") if store == "sqlite" else ":memory:"
    return ["--db", db, "--db-synchronous", synchronous, "--jwt-secret", SECRET, *UNLIMITED]


def run_loadgen(cfg: dict, server_pid: int, nofile: int, budget: float) -> dict:
    """Run bench/loadgen.js on core 1 with *cfg*; its JSON line (or ``{"error"}``)."""
    cfg = {**cfg, "serverPid": server_pid, "path": "/ws"}
    gen = subprocess.run(
        pinned(1, ["node", LOADGEN, json.dumps(cfg)]),
        capture_output=True,
        text=True,
        timeout=budget,
        preexec_fn=_raise_nofile(nofile),
    )
    lines = [ln for ln in gen.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        return {"error": f"load generator printed nothing: {gen.stderr[-800:]}"}
    return json.loads(lines[-1])


def others(result: dict) -> dict:
    """``core0_other`` / ``core1_other``: busy time of each core not ours."""
    busy = result.get("core_busy") or {}
    out = {}
    if "0" in busy and result.get("server_cpu") is not None:
        out["core0_other"] = round(max(0.0, busy["0"] - result["server_cpu"]), 3)
    if "1" in busy and result.get("gen_cpu") is not None:
        out["core1_other"] = round(max(0.0, busy["1"] - result["gen_cpu"]), 3)
    return out


def stop(proc) -> None:
    """End the chatd we started (SIGTERM, then SIGKILL)."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def bench_sends(args, request: str = "send") -> dict:
    """One durable-send run (or, *request* ``read``, a read-marker run): chatd (own
    core) + the generator in ``acks`` mode."""
    with tempfile.TemporaryDirectory(prefix=f"bench-{request}s-") as workdir:
        tokens = os.path.join(workdir, "tokens.json")
        mint_tokens(tokens, [f"bench{i}" for i in range(args.N)])
        argv = chatd_args(args.store, workdir, args.synchronous)
        if request == "read":  # one room, every connection a member, messages to read
            argv[1] = populated(workdir, "b0", args.N, args.messages)
            if args.receipt_members is not None:
                argv += ["--receipt-members", str(args.receipt_members)]
            if args.receipt_window is not None:
                argv += ["--receipt-window", str(args.receipt_window)]
        proc, port = start_chatd(argv, cwd=workdir, pin=0)
        try:
            cfg = {
                "mode": "acks",
                "request": request,
                "protocol": "chatd.v1",
                "port": port,
                "N": args.N,
                "rooms": args.rooms if request == "send" else 1,
                "window": args.window,
                "rate": args.rate,
                "payload": args.payload,
                "duration": args.duration,
                "warmup": args.warmup,
                "tokensFile": tokens,
                "features": "receipts_batch" if getattr(args, "batch", False) else "",
                # the N membership events are seqs 1..N and a member's marker starts
                # at its own: reads from N + 1 on move every marker, every time
                "seqFrom": args.N if request == "read" else 0,
                # the room's last seq: the N events (created + N - 1 invites), then messages
                "seqTo": args.N + args.messages if request == "read" else 0,
            }
            result = run_loadgen(cfg, proc.pid, args.N + 1024, 120 + args.duration)
            if proc.poll() is not None:
                result["error"] = result.get("error") or "chatd died during the run"
        finally:
            stop(proc)
    row = {
        "bench": request + "s",
        "store": args.store,
        "synchronous": args.synchronous if args.store == "sqlite" else None,
        **(
            {"receipt_window": args.receipt_window, "batch": args.batch}
            if request == "read"
            else {}
        ),
        **result,
        **others(result),
    }
    if request == "read" and "error" not in row and row.get("reads_past_end"):
        # reads past the room's end are answered without moving a marker: not markers
        row["error"] = (
            f"{row['reads_past_end']} reads of the measurement were past the room's last "
            f"seq ({args.N + args.messages}): pass a larger --messages"
        )
    if request == "read" and "error" not in row:
        row["markers_per_s"] = row["acks_per_s"]
        row["read_p50_ms"], row["read_p99_ms"] = row["ack_p50_ms"], row["ack_p99_ms"]
    return row


def populate(path: str, room: str, members: int, messages: int = 0) -> None:
    """Write *room* with *members* durable members (``bench0`` owns it) and then
    *messages* messages of its owner into the SQLite history file *path*, through
    the store's own append (run in a child process: it needs a reactor)."""
    from twisted.internet import defer, task

    from chatd.store.sqlite import SQLiteStore

    @defer.inlineCallbacks
    def main(reactor):
        store = SQLiteStore(path, reactor=reactor, prune_interval=None)
        yield store.start()
        ts = int(time.time() * 1000)
        owner, users = "bench0", [f"bench{i}" for i in range(members)]
        pending = [store.add_user(u, u, ts) for u in users]
        created = {"event": "created", "user": owner, "by": owner, "changes": {"kind": "public"}}
        pending.append(store.append(room, owner, owner, None, "", ts, "event", created))
        for u in users[1:]:
            invited = {"event": "invited", "user": u, "by": owner, "role": "member"}
            pending.append(store.append(room, owner, owner, None, "", ts, "event", invited))
        for n in range(messages):
            pending.append(store.append(room, owner, owner, None, f"m{n}", ts))
        yield defer.gatherResults(pending, consumeErrors=True)
        yield store.stop()

    task.react(main)


def populated(workdir: str, room: str, members: int, messages: int = 0) -> str:
    """The path of a SQLite history file in *workdir* written by :func:`populate`."""
    db = os.path.join(workdir, "bench.sqlite3")
    cmd = [sys.executable, __file__, "populate", db, "--room", room, "--members", str(members)]
    subprocess.run([*cmd, "--messages", str(messages)], check=True, timeout=600, cwd=workdir)
    return db


def fanout_run(name: str, args, repo: str = REPO, members: int = 0) -> dict:
    """One fan-out run: ``chatd_v1`` (token users; *members* durable members written
    first when > 0) or ``chatd_relay`` (relay mode), *args.online* connections."""
    protocol = "relay" if name == "chatd_relay" else "chatd.v1"
    with tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as workdir:
        db = populated(workdir, BENCH_ROOM, members) if members else None
        db = db or os.path.join(workdir, "bench.sqlite3")
        extra = ["--db", db] if protocol == "chatd.v1" else []
        tokens = os.path.join(workdir, "tokens.json")
        mint_tokens(tokens, [f"bench{i}" for i in range(args.online)])
        argv = [*extra, "--jwt-secret", SECRET, *UNLIMITED]
        proc, port = start_chatd(argv, cwd=workdir, pin=0, repo=repo)
        try:
            cfg = {
                "mode": "throughput",
                "protocol": protocol,
                "port": port,
                "S": args.online - args.P,
                "P": args.P,
                "window": args.window,
                "payload": args.payload,
                "duration": args.duration,
                "warmup": args.warmup,
                "tokensFile": tokens if protocol == "chatd.v1" else "",
            }
            result = run_loadgen(cfg, proc.pid, args.online + 1024, 180 + args.duration)
            if proc.poll() is not None:
                result["error"] = result.get("error") or "chatd died during the run"
        finally:
            stop(proc)
    row = {"bench": "fanout", "server": name, "members": members or args.online, **result}
    row.update(others(result))
    if row.get("server_cpu") and row.get("deliveries_per_s"):
        row["us_per_delivery"] = round(1e6 * row["server_cpu"] / row["deliveries_per_s"], 3)
    return row


def repeated(run, times: int) -> dict:
    """*run()* *times* times (alternating with the other rows' runs when called in a
    loop); the least disturbed row (fanout.least_disturbed)."""
    return least_disturbed([run() for _ in range(max(1, times))])


def bench_fanout(args) -> list[dict]:
    """chatd.v1 (durable room) and the relay in one run, plus the optional baseline;
    with ``--repeat N`` the runs alternate N times and each keeps its least disturbed."""
    runs = {
        "chatd_v1_sqlite": lambda: fanout_run("chatd_v1_sqlite", args, members=args.members),
        "chatd_relay": lambda: fanout_run("chatd_relay", args),
    }
    if args.baseline:
        base = os.path.abspath(args.baseline)
        runs["baseline_v1_sqlite"] = lambda: fanout_run("baseline_v1_sqlite", args, repo=base)
    tries = {name: [] for name in runs}
    for i in range(max(1, args.repeat)):
        for name, run in runs.items():
            print(f"# {name} (run {i + 1}) ...", file=sys.stderr, flush=True)
            tries[name].append(run())
    return [least_disturbed(t) for t in tries.values()]


def fanout_targets(rows: list[dict]) -> list[str]:
    """The issue's fan-out targets evaluated on *rows*."""
    by = {r["server"]: r for r in rows if "error" not in r}
    v1, relay, base = (by.get(n) for n in ("chatd_v1_sqlite", "chatd_relay", "baseline_v1_sqlite"))
    out = []
    if v1 and relay and relay.get("deliveries_per_s"):
        ratio = v1["deliveries_per_s"] / relay["deliveries_per_s"]
        out.append(
            f"{v1['members']}-member room, {v1['S'] + v1['P']} online: chatd.v1+SQLite "
            f"{v1['deliveries_per_s']}/s vs relay {relay['deliveries_per_s']}/s = {ratio:.2f}x "
            f"(target >= 0.8: {'met' if ratio >= 0.8 else 'NOT met'})"
        )
    if v1 and base and v1.get("us_per_delivery") and base.get("us_per_delivery"):
        change = v1["us_per_delivery"] / base["us_per_delivery"] - 1
        out.append(
            f"server CPU per delivery {v1['us_per_delivery']} us vs baseline "
            f"{base['us_per_delivery']} us ({change:+.0%}; target within 10%: "
            f"{'met' if abs(change) <= 0.10 else 'NOT met'})"
        )
    return out


def sends_target(row: dict) -> str | None:
    """The issue's durable-send (or read-marker) target evaluated on *row*."""
    if "error" in row or row.get("acks_per_s") is None:
        return None
    where = f"({row['store']}, synchronous {row['synchronous']})"
    if row["bench"] == "reads":
        ok = row["markers_per_s"] >= 20000
        return (
            f"read markers {where}: {row['markers_per_s']}/s persisted, p99 "
            f"{row['read_p99_ms']} ms (target >= 20000/s: {'met' if ok else 'NOT met'})"
        )
    ok = row["acks_per_s"] >= 20000 and (row.get("ack_p99_ms") or 1e9) <= 20
    return (
        f"durable sends {where}: {row['acks_per_s']} acked/s, ack p99 {row['ack_p99_ms']} ms "
        f"(target >= 20000/s with p99 <= 20 ms: {'met' if ok else 'NOT met'})"
    )


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = p.add_subparsers(dest="bench", required=True)
    s = sub.add_parser("sends", help="durable sends: acked messages/s and ack latency")
    s.add_argument("--N", type=int, default=100, help="connections (one token user each)")
    s.add_argument("--rooms", type=int, default=50, help="rooms the connections spread over")
    s.add_argument("--window", type=int, default=8, help="sends in flight per connection")
    s.add_argument("--rate", type=int, default=0, help="sends/s offered (0: closed loop)")
    s.add_argument("--payload", type=int, default=80, help="text bytes per message")
    s.add_argument("--store", choices=("sqlite", "memory"), default="sqlite")
    s.add_argument("--synchronous", choices=("FULL", "NORMAL"), default="FULL")
    r = sub.add_parser("reads", help="read markers: persisted markers/s and latency")
    r.add_argument("--N", type=int, default=100, help="connections (members of one room)")
    r.add_argument("--messages", type=int, default=20000, help="messages in the room to read")
    r.add_argument("--window", type=int, default=8, help="reads in flight per connection")
    r.add_argument("--rate", type=int, default=0, help="reads/s offered (0: closed loop)")
    r.add_argument(
        "--receipt-members",
        type=int,
        help="chatd's --receipt-members (default 100: the room's members get each receipt)",
    )
    r.add_argument(
        "--receipt-window",
        type=float,
        help="chatd's --receipt-window in seconds (default 0.2; 0: every receipt its own frame)",
    )
    r.add_argument(
        "--batch",
        action="store_true",
        help="connect with ?features=receipts_batch (receipts batched per room per window)",
    )
    r.add_argument("--store", choices=("sqlite",), default="sqlite")
    r.add_argument("--synchronous", choices=("FULL", "NORMAL"), default="FULL")
    f = sub.add_parser("fanout", help="durable room fan-out vs the relay")
    f.add_argument("--members", type=int, default=1000, help="durable members of the room")
    f.add_argument("--online", type=int, default=100, help="members connected (and relay conns)")
    f.add_argument("--P", type=int, default=4, help="publishers among the online")
    f.add_argument("--window", type=int, default=16, help="messages in flight per publisher")
    f.add_argument("--payload", type=int, default=80, help="text bytes per message")
    f.add_argument("--baseline", metavar="DIR", help="also run chatd.v1 from this chatd tree")
    pop = sub.add_parser("populate", help="write a room with durable members into a SQLite file")
    pop.add_argument("db")
    pop.add_argument("--members", type=int, default=1000)
    pop.add_argument("--room", default=BENCH_ROOM)
    pop.add_argument("--messages", type=int, default=0)
    for q in (s, r, f):
        q.add_argument("--duration", type=float, default=10.0, help="measured seconds")
        q.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds before")
        q.add_argument("--json-only", action="store_true", help="print only the JSON line")
        q.add_argument("--repeat", type=int, default=1, help="runs; keep the least disturbed")
    args = p.parse_args(argv)
    if args.bench == "populate":
        populate(args.db, args.room, args.members, args.messages)
        return 0
    if not shutil.which("node"):
        print("bench/messenger_bench.py needs node (bench/loadgen.js)", file=sys.stderr)
        return 2
    if args.bench == "fanout":
        rows = bench_fanout(args)
        targets = fanout_targets(rows)
    else:
        if args.bench == "reads":
            args.rooms, args.payload = 1, 0
        request = "read" if args.bench == "reads" else "send"
        rows = [repeated(lambda: bench_sends(args, request), args.repeat)]
        targets = [t for t in [sends_target(rows[0])] if t]
    for row in rows:
        print(json.dumps(row, sort_keys=True), flush=True)
    if not args.json_only:
        for t in targets:
            print("- " + t)
    return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
