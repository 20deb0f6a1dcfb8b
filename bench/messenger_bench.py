"""Messenger benchmarks of issue 14 (item 7): token users over chatd.v1, Node load generator.

The Python side only drives: it starts ``twistd -n chatd`` (pinned to core 0,
``--jwt-secret`` so connections are token users, rate limits off), mints the
tokens with :class:`chatd.auth.TokenVerifier`, runs ``bench/loadgen.js``
(pinned to core 1) and prints its JSON line, with the server's store and
options, then the issue's target for that run.

    python3 bench/messenger_bench.py sends                   # closed loop: max acked sends/s
    python3 bench/messenger_bench.py sends --rate 20000      # open loop: p99 at 20k/s offered
    python3 bench/messenger_bench.py sends --store memory    # --db :memory: for comparison

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
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

BENCH = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH)
sys.path[:0] = [BENCH, REPO]

from chatd_process import start_chatd  # noqa: E402  (bench/)
from fanout import LOADGEN, _raise_nofile, pinned  # noqa: E402  (bench/)

from chatd.auth import TokenVerifier  # noqa: E402

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


def bench_sends(args) -> dict:
    """One durable-send run: chatd (own core) + the generator in ``acks`` mode."""
    with tempfile.TemporaryDirectory(prefix="bench-sends-") as workdir:
        tokens = os.path.join(workdir, "tokens.json")
        mint_tokens(tokens, [f"bench{i}" for i in range(args.N)])
        proc, port = start_chatd(
            chatd_args(args.store, workdir, args.synchronous), cwd=workdir, pin=0
        )
        try:
            cfg = {
                "mode": "acks",
                "protocol": "chatd.v1",
                "port": port,
                "N": args.N,
                "rooms": args.rooms,
                "window": args.window,
                "rate": args.rate,
                "payload": args.payload,
                "duration": args.duration,
                "warmup": args.warmup,
                "tokensFile": tokens,
            }
            result = run_loadgen(cfg, proc.pid, args.N + 1024, 120 + args.duration)
            if proc.poll() is not None:
                result["error"] = result.get("error") or "chatd died during the run"
        finally:
            stop(proc)
    return {
        "bench": "sends",
        "store": args.store,
        "synchronous": args.synchronous if args.store == "sqlite" else None,
        **result,
        **others(result),
    }


def sends_target(row: dict) -> str | None:
    """The issue's durable-send target evaluated on *row*."""
    if "error" in row or row.get("acks_per_s") is None:
        return None
    ok = row["acks_per_s"] >= 20000 and (row.get("ack_p99_ms") or 1e9) <= 20
    return (
        f"durable sends ({row['store']}, synchronous {row['synchronous']}): "
        f"{row['acks_per_s']} acked/s, ack p99 {row['ack_p99_ms']} ms "
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
    for q in (s,):
        q.add_argument("--duration", type=float, default=10.0, help="measured seconds")
        q.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds before")
        q.add_argument("--json-only", action="store_true", help="print only the JSON line")
    args = p.parse_args(argv)
    if not shutil.which("node"):
        print("bench/messenger_bench.py needs node (bench/loadgen.js)", file=sys.stderr)
        return 2
    row = bench_sends(args)
    print(json.dumps(row, sort_keys=True), flush=True)
    target = sends_target(row)
    if target and not args.json_only:
        print("- " + target)
    return 1 if "error" in row else 0


if __name__ == "__main__":
    sys.exit(main())
