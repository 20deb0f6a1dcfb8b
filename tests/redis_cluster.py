"""A private Redis Cluster for tests: 3 masters + 3 replicas of Debian's ``redis-server``.

Six child processes on free loopback ports (each with its cluster bus on a second
free port, ``cluster-port``), joined with ``redis-cli --cluster create …
--cluster-replicas 1 --cluster-yes``; :meth:`RedisCluster.start` returns once
every node says ``cluster_state:ok`` and every master has its replica in sync.
``cluster-node-timeout`` is short (1 s by default) so a killed master's replica is
promoted within a few seconds. AOF with ``appendfsync always`` is on (``aof=False``:
no persistence, for benchmarks), so what a master acknowledged is on its disk and in
the replication stream.

``tls=(cert, key, ca)`` (PEM files) serves TLS only (``--tls-port``, no plain port,
``tls-cluster`` and ``tls-replication`` on): the cluster bus and the replication
are TLS too, and :attr:`RedisCluster.url` is a ``rediss+cluster://`` URL trusting
*ca* (``tls_ca``).
"""

from __future__ import annotations

import subprocess

from tests.conftest import need_binary, poll
from tests.redis_server import free_port


class RedisCluster:
    """``masters`` masters with ``replicas`` replicas each on 127.0.0.1."""

    def __init__(self, directory, masters=3, replicas=1, node_timeout_ms=1000, tls=None, aof=True):
        self.server = need_binary("redis-server")
        self.cli = need_binary("redis-cli")
        self.directory = directory
        self.masters = masters
        self.replicas = replicas
        self.node_timeout_ms = node_timeout_ms
        self.tls = tls
        #: AOF with appendfsync always (the tests' failover needs it); False: no
        #: persistence at all, like the benchmarks' single redis-server
        self.aof = aof
        self.ports = [free_port() for _ in range(masters * (1 + replicas))]
        self.procs: dict[int, subprocess.Popen] = {}

    @property
    def url(self) -> str:
        """A ``redis+cluster://`` URL naming every node as a seed."""
        hosts = ",".join(f"127.0.0.1:{p}" for p in self.ports)
        if self.tls is not None:
            return f"rediss+cluster://{hosts}/?tls_ca={self.tls[2]}"
        return f"redis+cluster://{hosts}/"

    def _cli_tls(self) -> list[str]:
        return [] if self.tls is None else ["--tls", "--cacert", self.tls[2]]

    def start(self, timeout=30):
        """Start every node, create the cluster and wait until it is ok."""
        for i in range(len(self.ports)):
            self._start_node_retrying(i, timeout)
        create = [self.cli, *self._cli_tls(), "--cluster", "create"]
        create += [f"127.0.0.1:{p}" for p in self.ports]
        create += ["--cluster-replicas", str(self.replicas), "--cluster-yes"]
        done = subprocess.run(create, capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            self.kill()
            raise RuntimeError(f"redis-cli --cluster create failed: {done.stdout}{done.stderr}")
        if not self.wait_ok(timeout) or not poll(self._replicas_in_sync, timeout, 0.05):
            self.kill()
            raise RuntimeError("the Redis Cluster did not become ok")
        return self

    def _start_node_retrying(self, i, timeout, attempts=5):
        """Start node *i* and wait for its PONG; a node that exits at once (its port, or its
        cluster bus port, was taken by someone else between :func:`free_port` and the
        bind) is started again on fresh ports, up to *attempts* times."""
        for _ in range(attempts):
            port = self.ports[i]
            self._start_node(port)
            proc = self.procs[port]

            def answered_or_exited(p=port, proc=proc):
                return proc.poll() is not None or self.command(p, "PING") == "PONG"

            if poll(answered_or_exited, timeout, 0.05) and proc.poll() is None:
                return
            if proc.poll() is None:
                break
            del self.procs[port]
            self.ports[i] = free_port()
        self.kill()
        log = self.directory / str(port) / "redis.log"
        why = log.read_text()[-2000:] if log.exists() else ""
        raise RuntimeError(f"redis-server did not start on port {port}: {why}")

    def _start_node(self, port):
        d = self.directory / str(port)
        d.mkdir(parents=True, exist_ok=True)
        if self.tls is None:
            args = [self.server, "--port", str(port)]
        else:
            cert, key, ca = self.tls
            args = [self.server, "--port", "0", "--tls-port", str(port)]
            args += ["--tls-cert-file", cert, "--tls-key-file", key, "--tls-ca-cert-file", ca]
            args += ["--tls-auth-clients", "no", "--tls-cluster", "yes"]
            args += ["--tls-replication", "yes"]
        args += ["--bind", "127.0.0.1", "--dir", str(d), "--logfile", str(d / "redis.log")]
        args += ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]
        args += ["--cluster-port", str(free_port())]
        args += ["--cluster-node-timeout", str(self.node_timeout_ms)]
        args += ["--save", ""]
        if self.aof:
            args += ["--appendonly", "yes", "--appendfsync", "always"]
        else:
            args += ["--appendonly", "no"]
        self.procs[port] = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

    def command(self, port, *args) -> str | None:
        """One command with ``redis-cli`` on *port*: its output stripped, None on failure."""
        try:
            done = subprocess.run(
                [self.cli, *self._cli_tls(), "-h", "127.0.0.1", "-p", str(port)]
                + [str(a) for a in args],
                capture_output=True,
                text=True,
                timeout=5,
            )
        except subprocess.TimeoutExpired:
            return None
        if done.returncode != 0 or "Could not connect" in done.stdout + done.stderr:
            return None
        return done.stdout.strip()

    def alive(self) -> list[int]:
        """The ports of the nodes running now."""
        return [p for p, proc in self.procs.items() if proc.poll() is None]

    def _is_ok(self, port) -> bool:
        info = self.command(port, "CLUSTER", "INFO") or ""
        return "cluster_state:ok" in info and "cluster_slots_ok:16384" in info

    def wait_ok(self, timeout=30) -> bool:
        """Whether every running node says ``cluster_state:ok`` within *timeout* seconds."""
        return bool(poll(lambda: all(self._is_ok(p) for p in self.alive()), timeout, 0.1))

    def _table(self) -> list[tuple[int, str, list[tuple[int, int]]]]:
        """``(port, "master" | "slave", slot ranges)`` of each running node (CLUSTER NODES)."""
        alive = self.alive()
        out = []
        for line in (self.command(alive[0], "CLUSTER", "NODES") or "").splitlines():
            fields = line.split()
            port = int(fields[1].split("@")[0].rsplit(":", 1)[1])
            flags = fields[2].split(",")
            if port not in alive or "fail" in flags:
                continue
            ranges = []
            for r in fields[8:]:
                if not r.startswith("["):  # not a slot being migrated
                    lo, _, hi = r.partition("-")
                    ranges.append((int(lo), int(hi or lo)))
            out.append((port, "master" if "master" in flags else "slave", ranges))
        return sorted(out)

    def nodes(self) -> list[tuple[int, str]]:
        """``(port, "master" | "slave")`` of each running node, as the cluster says."""
        return [(port, role) for port, role, _ in self._table()]

    def master_ports(self) -> list[int]:
        return [p for p, role in self.nodes() if role == "master"]

    def _replicas_in_sync(self) -> bool:
        if not self.replicas:
            return True
        for port in self.master_ports():
            info = self.command(port, "INFO", "replication") or ""
            if f"connected_slaves:{self.replicas}" not in info or "state=online" not in info:
                return False
        return True

    def master_of(self, key) -> int:
        """The port of the master serving *key*'s slot (as the cluster says)."""
        slot = int(self.command(self.alive()[0], "CLUSTER", "KEYSLOT", key))
        for port, role, ranges in self._table():
            if role == "master" and any(lo <= slot <= hi for lo, hi in ranges):
                return port
        raise LookupError(f"no master serves slot {slot}")

    def replica_of(self, port) -> int:
        """The port of a running replica of the master on *port*."""
        me = self.command(port, "CLUSTER", "MYID")
        for line in (self.command(port, "CLUSTER", "NODES") or "").splitlines():
            fields = line.split()
            replica = int(fields[1].split("@")[0].rsplit(":", 1)[1])
            if fields[3] == me and replica in self.alive():
                return replica
        raise LookupError(f"the master on {port} has no replica")

    def wait_replicated(self, port, timeout=10):
        """Wait until every replica of the master on *port* has all its writes."""

        def caught_up():
            info = dict(
                line.split(":", 1)
                for line in (self.command(port, "INFO", "replication") or "").splitlines()
                if ":" in line
            )
            offset = info.get("master_repl_offset")
            replicas = [v for k, v in info.items() if k.startswith("slave")]
            return replicas and all(f"offset={offset}," in v for v in replicas)

        if not poll(caught_up, timeout, 0.02):
            raise AssertionError(f"the replicas of {port} did not catch up")

    def flush(self):
        """FLUSHALL on every master (a clean cluster for the next test)."""
        for port in self.master_ports():
            self.command(port, "FLUSHALL")

    def kill_node(self, port):
        """SIGKILL the node on *port* (a failover test's master)."""
        proc = self.procs.get(port)
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(10)

    def kill(self):
        """SIGKILL every node and wait for them."""
        for port in list(self.procs):
            self.kill_node(port)
