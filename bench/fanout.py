"""Side-by-side fan-out benchmark: chatd against the tutorial's stack and its peers.

One command runs the matrix: every selected server is started by this script
(pinned to core 0 with ``taskset``), the load generator ``bench/loadgen.js``
runs pinned to core 1, and each (server, mode) pair prints one JSON line; a
table with ratios between servers follows, then the issue's targets.

    python3 bench/fanout.py                    # full matrix (several minutes)
    python3 bench/fanout.py --quick            # S=200, short runs
    python3 bench/fanout.py --servers twisted_bare,chatd_relay --modes throughput

Modes: ``throughput`` (bounded in-flight window), ``lat50`` / ``lat200``
(fixed rate: 50 and 200 messages/s, i.e. 50k and 200k deliveries/s at S=1000;
percentiles of end-to-end latency), ``klat50`` (50 messages/s again, latency
from kernel receive timestamps by ``bench/kstamp.py``, so the generator's own
read delay does not count) and ``conn`` (C idle connections; server RSS per
connection). See bench/README.md for the methodology.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

BENCH = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH)
PEERS = os.path.join(BENCH, "peers")
LOADGEN = os.path.join(BENCH, "loadgen.js")
KSTAMP = os.path.join(BENCH, "kstamp.py")

ALL_MODES = ["throughput", "lat50", "klat50", "lat200", "conn"]


@dataclass
class Server:
    """A server under test: how to start it and which protocol its clients speak."""

    name: str
    protocol: str  # "relay" or "chatd.v1"
    describe: str
    argv: callable  # (port, workdir) -> list[str]
    env: dict = field(default_factory=dict)
    needs: callable = None  # () -> None if runnable, else the reason it is skipped


def _twistd() -> str:
    return shutil.which("twistd") or "twistd"


_HELP: list[str] = []


def _chatd_help() -> str:
    """``twistd chatd --help``, read once per run (the options chatd has now)."""
    if _HELP:
        return _HELP[0]
    try:
        out = subprocess.run(
            [_twistd(), "chatd", "--help"],
            env={**os.environ, "PYTHONPATH": REPO},
            capture_output=True,
            text=True,
            timeout=30,
            cwd=tempfile.gettempdir(),
        ).stdout
    except (OSError, subprocess.TimeoutExpired) as e:
        return str(e)
    _HELP.append(out)
    return out


def _need_chatd():
    return (
        None if "--listen" in _chatd_help() else "chatd plugin does not load (twistd chatd --help)"
    )


def _need_chatd_db():
    if "--listen" not in _chatd_help():
        return "chatd plugin does not load"
    return None if "--db" in _chatd_help() else "chatd has no --db option yet"


def _need_node_ws():
    if not shutil.which("node"):
        return "node not installed"
    if not os.path.isdir(os.path.join(PEERS, "node_modules", "ws")):
        return "ws missing: run `npm ci --prefix bench/peers`"
    return None


# chatd's abuse limits, off (0 = unlimited) when this chatd has them: the
# benchmark measures fan-out from one address, not the limiters.
UNLIMITED = ("--rate-limit", "--user-rate-limit", "--max-connections-per-ip")


def _no_rate_limits() -> list[str]:
    """The options that switch chatd's limits off, for those chatd has."""
    text = _chatd_help()
    return [arg for opt in UNLIMITED if f"{opt}=" in text for arg in (opt, "0")]


def _chatd_argv(*extra):
    return lambda port, wd: [
        _twistd(),
        "-n",
        "--pidfile=",
        "chatd",
        "--listen",
        f"tcp:{port}:interface=127.0.0.1",
        *_no_rate_limits(),
        *extra,
    ]


def _py_peer(name):
    return lambda port, wd: [sys.executable, os.path.join(PEERS, name), str(port)]


SERVERS = {
    s.name: s
    for s in [
        Server(
            "twisted_bare",
            "relay",
            "bare Twisted Protocol, one pre-encoded frame, transport.write (ceiling)",
            _py_peer("twisted_bare.py"),
        ),
        Server(
            "chatd_relay",
            "relay",
            "chatd relay mode (no subprotocol), default store (SQLite chatd.sqlite3 in a temp dir)",
            _chatd_argv(),
            {"PYTHONPATH": REPO},
            _need_chatd,
        ),
        Server(
            "chatd_relay_memory",
            "relay",
            "chatd relay mode with --db :memory: (no SQLite for the lobby copy)",
            _chatd_argv("--db", ":memory:"),
            {"PYTHONPATH": REPO},
            _need_chatd_db,
        ),
        Server(
            "chatd_v1_sqlite",
            "chatd.v1",
            "chatd.v1 room fan-out, JSON envelope + seq, SQLite history file",
            lambda port, wd: _chatd_argv("--db", os.path.join(wd, "bench.sqlite3"))(port, wd),
            {"PYTHONPATH": REPO},
            _need_chatd_db,
        ),
        Server(
            "chatd_v1_memory",
            "chatd.v1",
            "chatd.v1 room fan-out with --db :memory:",
            _chatd_argv("--db", ":memory:"),
            {"PYTHONPATH": REPO},
            _need_chatd_db,
        ),
        Server(
            "chatd_v1",
            "chatd.v1",
            "chatd.v1 room fan-out, chatd's default store (for a chatd without --db)",
            _chatd_argv(),
            {"PYTHONPATH": REPO},
            _need_chatd,
        ),
        Server(
            "autobahn_tutorial",
            "relay",
            "straight Autobahn port of the tutorial: sendMessage per client",
            _py_peer("autobahn_tutorial.py"),
        ),
        Server(
            "autobahn_prepared",
            "relay",
            "Autobahn prepareMessage once + sendPreparedMessage per client",
            _py_peer("autobahn_prepared.py"),
        ),
        Server(
            "ws_broadcast",
            "relay",
            "Node 20 + ws 8 broadcast",
            lambda port, wd: ["node", os.path.join(PEERS, "ws_broadcast.js"), str(port)],
            {},
            _need_node_ws,
        ),
        Server(
            "websockets_broadcast",
            "relay",
            "python websockets 17 (asyncio) broadcast()",
            _py_peer("websockets_broadcast.py"),
        ),
    ]
}
DEFAULT_SERVERS = [
    "twisted_bare",
    "chatd_relay",
    "chatd_relay_memory",
    "chatd_v1_sqlite",
    "chatd_v1_memory",
    "autobahn_tutorial",
    "autobahn_prepared",
    "ws_broadcast",
    "websockets_broadcast",
]


def free_port() -> int:
    """An unused TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _raise_nofile(n: int):
    def pre():
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        want = max(n, soft)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, max(want, hard)))
        except (ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    return pre


def pinned(core: int, argv: list[str]) -> list[str]:
    """Prefix ``argv`` with ``taskset -c core`` when taskset and two cores exist."""
    if shutil.which("taskset") and (os.cpu_count() or 1) >= 2:
        return ["taskset", "-c", str(core), *argv]
    return argv


class Running:
    """A started server process; ``stop()`` ends exactly this process."""

    def __init__(self, server: Server, nofile: int):
        self.server = server
        self.port = free_port()
        self.workdir = tempfile.mkdtemp(prefix=f"bench-{server.name}-")
        self.log = open(os.path.join(self.workdir, "server.log"), "w+b")
        self.proc = subprocess.Popen(
            pinned(0, server.argv(self.port, self.workdir)),
            cwd=self.workdir,
            env={**os.environ, **server.env},
            stdout=self.log,
            stderr=subprocess.STDOUT,
            preexec_fn=_raise_nofile(nofile),
        )
        deadline = time.monotonic() + 30
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{server.name} exited at start-up: {self.tail()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"{server.name} did not listen within 30 s") from None
                time.sleep(0.1)

    def tail(self) -> str:
        """The last lines of the server's output."""
        self.log.flush()
        self.log.seek(0)
        return self.log.read().decode(errors="replace")[-1500:]

    def stop(self):
        """Terminate the server (SIGTERM, then SIGKILL) and remove its work dir."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        shutil.rmtree(self.workdir, ignore_errors=True)


def mode_config(mode: str, args) -> dict:
    """The load generator's configuration for one matrix mode."""
    base = {
        "S": args.S,
        "P": args.P,
        "payload": args.payload,
        "fill": args.fill,
        "duration": args.duration,
        "warmup": args.warmup,
    }
    if mode == "throughput":
        return {**base, "mode": "throughput", "window": args.window}
    if mode in ("lat50", "klat50"):
        return {**base, "mode": "latency", "rate": args.rate_low}
    if mode == "lat200":
        return {**base, "mode": "latency", "rate": args.rate_high}
    if mode == "conn":
        return {"mode": "connections", "C": args.C}
    raise ValueError(mode)


def run_one(server: Server, mode: str, args, deflate: bool = False) -> dict:
    """Start ``server``, run one load-generator pass in ``mode``, stop the server.

    With *deflate* every generator connection offers permessage-deflate; the row's
    mode is then ``<mode>+deflate``."""
    cfg = {**mode_config(mode, args), "deflate": deflate}
    mode = mode + "+deflate" if deflate else mode
    row = {"server": server.name, "mode": mode}
    nofile = args.C + 1024
    try:
        srv = Running(server, nofile)
    except RuntimeError as e:
        return {**row, "error": str(e)}
    try:
        cfg.update(
            {
                "port": srv.port,
                "protocol": server.protocol,
                "serverPid": srv.proc.pid,
                "path": "/",
            }
        )
        budget = 180 + cfg.get("duration", 0) + cfg.get("warmup", 0)
        generator = [sys.executable, KSTAMP] if mode == "klat50" else ["node", LOADGEN]
        gen = subprocess.run(
            pinned(1, [*generator, json.dumps(cfg)]),
            capture_output=True,
            text=True,
            timeout=budget,
            preexec_fn=_raise_nofile(nofile),
        )
        lines = [ln for ln in gen.stdout.splitlines() if ln.startswith("{")]
        if not lines:
            return {**row, "error": f"load generator printed nothing: {gen.stderr[-800:]}"}
        result = json.loads(lines[-1])
        if "error" in result:
            result["server_log"] = srv.tail()[-600:]
        busy = result.get("core_busy") or {}
        if "0" in busy and result.get("server_cpu") is not None:
            result["core0_other"] = round(max(0.0, busy["0"] - result["server_cpu"]), 3)
        if "1" in busy and result.get("gen_cpu") is not None:
            result["core1_other"] = round(max(0.0, busy["1"] - result["gen_cpu"]), 3)
        if result.get("server_cpu") and result.get("deliveries_per_s") is not None:
            # What the server delivers per second of its own CPU: the throughput
            # it would reach with core 0 to itself, robust to other load.
            result["deliveries_per_cpu_s"] = round(
                result["deliveries_per_s"] / result["server_cpu"]
            )
        if result.get("server_cpu") is not None and result.get("gen_cpu") is not None:
            if result["gen_cpu"] >= 0.9 and result["server_cpu"] >= 0.9:
                result["bound"] = "both"
            elif result["gen_cpu"] >= 0.9:
                result["bound"] = "generator"
            elif result["server_cpu"] >= 0.9:
                result["bound"] = "server"
            else:
                result["bound"] = "neither"
        if srv.proc.poll() is not None:
            result["error"] = result.get("error") or f"server died: {srv.tail()[-600:]}"
        return {**row, **result, "mode": mode}
    except subprocess.TimeoutExpired:
        return {**row, "error": "load generator timed out"}
    finally:
        srv.stop()


def summary(r: dict) -> str:
    """A one-line progress note for stderr."""
    if "error" in r:
        return "error: " + r["error"].splitlines()[0][:200]
    keys = ["deliveries_per_s", "p99_ms", "loss", "kb_per_conn", "gen_cpu", "server_cpu"]
    keys += ["core0_other", "core1_other"]
    return " ".join(f"{k}={r[k]}" for k in keys if r.get(k) is not None)


def least_disturbed(tries: list[dict]) -> dict:
    """Of repeated runs, the one where other processes took the least CPU on both cores."""
    ok = [t for t in tries if "error" not in t] or tries
    best = min(ok, key=lambda t: (t.get("core0_other") or 0) + (t.get("core1_other") or 0))
    return {**best, "runs": len(tries)}


METRIC = {  # (field, higher_is_better)
    "throughput": ("deliveries_per_s", True),
    "throughput_cpu": ("deliveries_per_cpu_s", True),
    "lat50": ("p99_ms", False),
    "klat50": ("p99_ms", False),
    "lat200": ("p99_ms", False),
    "conn": ("kb_per_conn", False),
}


def add_ratios(rows: list[dict]):
    """Give each row ``ratio_vs``: its mode's metric divided by every other server's
    (throughput rows also get ``cpu_ratio_vs`` of deliveries per server CPU second)."""
    for mode, (key, _) in METRIC.items():
        field_name = "ratio_vs"
        if mode == "throughput_cpu":
            mode, field_name = "throughput", "cpu_ratio_vs"
        same = [r for r in rows if r["mode"] == mode and isinstance(r.get(key), (int, float))]
        for r in same:
            r[field_name] = {
                o["server"]: round(r[key] / o[key], 3) if o[key] else None
                for o in same
                if o is not r
            }


def fmt(v, nd=2):
    """Format a table cell."""
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "NO"
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return str(v)


def print_table(rows: list[dict], out):
    """One table per mode, ratios against the bare Twisted relay and against chatd_relay."""
    for mode in ALL_MODES:
        mrows = [r for r in rows if r["mode"] == mode]
        if not mrows:
            continue
        key, _ = METRIC[mode]
        print(f"\n## {mode}", file=out)
        if mode == "conn":
            cols = ["server", "C", "rss_before_kb", "rss_after_kb", "kb_per_conn"]
        else:
            cols = [
                "server",
                "S",
                "P",
                "deliveries_per_s",
                "deliveries_per_cpu_s",
                "offered_per_s",
                "p50_ms",
                "p99_ms",
                "loss",
                "keeps_up",
                "gen_cpu",
                "server_cpu",
                "core0_other",
                "core1_other",
                "bound",
            ]
        cols += [f"{key}/twisted_bare", f"{key}/chatd_relay"]
        if mode == "throughput":
            cols += ["per_cpu/twisted_bare", "per_cpu/chatd_relay"]
        table = [cols]
        for r in mrows:
            if "error" in r:
                table.append([r["server"], "error: " + r["error"].splitlines()[0][:90]])
                continue
            ratios = [
                fmt((r.get("ratio_vs") or {}).get(o)) for o in ("twisted_bare", "chatd_relay")
            ]
            if mode == "throughput":
                cpu = r.get("cpu_ratio_vs") or {}
                ratios += [fmt(cpu.get(o)) for o in ("twisted_bare", "chatd_relay")]
            cells = [fmt(r.get(c)) for c in cols[: len(cols) - len(ratios)]] + ratios
            table.append(cells)
        widths = [max(len(row[i]) for row in table if i < len(row)) for i in range(len(cols))]
        for row in table:
            print("  ".join(c.ljust(widths[i]) for i, c in enumerate(row)).rstrip(), file=out)


def targets(rows: list[dict]) -> list[str]:
    """The issue's targets, evaluated on this run's rows (informational, never an exit code)."""
    by = {(r["server"], r["mode"]): r for r in rows if "error" not in r}
    out = []

    def get(s, m, k):
        return (by.get((s, m)) or {}).get(k)

    a, b = (
        get("chatd_relay", "throughput", "deliveries_per_s"),
        get("twisted_bare", "throughput", "deliveries_per_s"),
    )
    ac = get("chatd_relay", "throughput", "deliveries_per_cpu_s")
    bc = get("twisted_bare", "throughput", "deliveries_per_cpu_s")
    if a and b:
        per_cpu = f", per server CPU s {ac / bc:.2f}" if ac and bc else ""
        out.append(f"chatd_relay / twisted_bare throughput = {a / b:.2f}{per_cpu} (target >= 0.8)")
    for v1 in ("chatd_v1_sqlite", "chatd_v1_memory", "chatd_v1"):
        c = get(v1, "throughput", "deliveries_per_s")
        cc = get(v1, "throughput", "deliveries_per_cpu_s")
        if c and a:
            per_cpu = f", per server CPU s {cc / ac:.2f}" if cc and ac else ""
            out.append(f"{v1} / chatd_relay throughput = {c / a:.2f}{per_cpu} (target >= 0.7)")
    for mode, how in (("lat50", "read by the generator"), ("klat50", "kernel timestamps")):
        w = get("ws_broadcast", mode, "p99_ms")
        for s in ("chatd_relay", "chatd_v1_sqlite", "chatd_v1"):
            p = get(s, mode, "p99_ms")
            if p is not None and w is not None:
                out.append(
                    f"{s} p99 at 50k/s ({how}) = {p:.2f} ms vs ws_broadcast {w:.2f} ms (target <=)"
                )
    for s in ("chatd_relay", "chatd_v1_sqlite", "chatd_v1_memory", "chatd_v1"):
        k = get(s, "lat200", "keeps_up")
        if k is not None:
            d = get(s, "lat200", "deliveries_per_s")
            g = get(s, "lat200", "backlog_growth")
            out.append(f"{s} at 200k/s: keeps_up={k} ({d}/s, backlog growth {g})")
        kb = get(s, "conn", "kb_per_conn")
        if kb is not None:
            out.append(f"{s} memory = {kb:.2f} KB per idle connection (target <= 6)")
    return out


def main(argv=None) -> int:
    """Run the matrix and print JSON lines, the tables and the targets."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--servers", default=",".join(DEFAULT_SERVERS), help="comma-separated")
    p.add_argument(
        "--modes", default=",".join(ALL_MODES), help="comma-separated: " + ",".join(ALL_MODES)
    )
    p.add_argument("--S", type=int, default=1000, help="subscriber connections")
    p.add_argument("--P", type=int, default=4, help="publisher connections")
    p.add_argument("--C", type=int, default=10000, help="idle connections in conn mode")
    p.add_argument("--window", type=int, default=16, help="messages in flight per publisher")
    p.add_argument("--rate-low", type=int, default=50, help="messages/s in lat50")
    p.add_argument("--rate-high", type=int, default=200, help="messages/s in lat200")
    p.add_argument("--payload", type=int, default=80, help="text bytes per message (64-100)")
    p.add_argument("--duration", type=float, default=10.0, help="measured seconds per run")
    p.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds before it")
    p.add_argument(
        "--repeat", type=int, default=1, help="runs per cell; keep the least disturbed one"
    )
    p.add_argument(
        "--deflate",
        choices=("off", "on", "both"),
        default="off",
        help="clients offer permessage-deflate: off, on, or both (each cell twice, one "
        "row each; chatd servers only)",
    )
    p.add_argument(
        "--fill", choices=("x", "text"), default="x", help="pad texts with x or random words"
    )
    p.add_argument("--quick", action="store_true", help="S=200, C=2000, 3 s runs")
    p.add_argument("--json-only", action="store_true", help="print only the JSON lines")
    p.add_argument("--from-json", metavar="FILE", help="print the tables of a saved run")
    args = p.parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so the server and generator of the current run are stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.quick:
        args.S, args.C, args.duration, args.warmup = min(args.S, 200), min(args.C, 2000), 3.0, 1.0
    if args.from_json:
        with open(args.from_json) as f:
            rows = [json.loads(line) for line in f if line.startswith("{")]
        for r in rows:
            if r.get("server_cpu") and r.get("deliveries_per_s") is not None:
                r.setdefault("deliveries_per_cpu_s", round(r["deliveries_per_s"] / r["server_cpu"]))
        add_ratios(rows)
        report(rows, [], args.json_only)
        return 0
    if not shutil.which("node"):
        print(
            "bench/fanout.py needs node (the load generator is bench/loadgen.js)", file=sys.stderr
        )
        return 2
    names = [s for s in args.servers.split(",") if s]
    modes = [m for m in args.modes.split(",") if m]
    for n in names:
        if n not in SERVERS:
            p.error(f"unknown server {n!r}; known: {', '.join(SERVERS)}")
    for m in modes:
        if m not in ALL_MODES:
            p.error(f"unknown mode {m!r}; known: {', '.join(ALL_MODES)}")
    rows, skipped = [], []
    for n in names:
        server = SERVERS[n]
        reason = server.needs() if server.needs else None
        if reason:
            skipped.append(f"{n}: skipped ({reason})")
            continue
        deflates = {"off": [False], "on": [True], "both": [False, True]}[args.deflate]
        for m in modes:
            for deflate in deflates:
                tries = []
                for i in range(max(1, args.repeat)):
                    tag = " +deflate" if deflate else ""
                    print(f"# {n} {m}{tag} (run {i + 1}) ...", file=sys.stderr, flush=True)
                    tries.append(run_one(server, m, args, deflate))
                    print("#   " + summary(tries[-1]), file=sys.stderr, flush=True)
                rows.append(least_disturbed(tries))
    add_ratios(rows)
    report(rows, skipped, args.json_only)
    return 0


def report(rows: list[dict], skipped: list[str], json_only: bool):
    """Print the JSON lines, then (unless ``json_only``) the tables and targets."""
    for r in rows:
        print(json.dumps(r, sort_keys=True), flush=True)
    if json_only:
        return
    print_table(rows, sys.stdout)
    for s in skipped:
        print(f"\n{s}")
    t = targets(rows)
    if t:
        print("\n## targets (this run)")
        for line in t:
            print("- " + line)


if __name__ == "__main__":
    sys.exit(main())
