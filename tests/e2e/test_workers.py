"""``--workers N`` for real: a twistd parent holding the sockets, worker processes on
a real redis-server, clients spread over them, crashes, signals and systemd.

Which worker takes a connection is the kernel's choice; to put one client on each
worker deterministically, a test stops the other worker (SIGSTOP) while it connects:
a stopped process does not accept, so the running one does.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import urllib.request
from contextlib import ExitStack, contextmanager

import pytest
from websockets.sync.client import connect

from tests.conftest import TWISTD, chatd_env, need_binary, wait_until
from tests.support.process import receive_until, wait_log

pytestmark = pytest.mark.subprocess

STARTED = re.compile(r"worker (\d+) started \(pid (\d+)\)")


def start(twistd_factory, redis, *extra, n=2, env=None, cwd=None):
    kw = {} if cwd is None else {"cwd": cwd}
    proc = twistd_factory(
        "--listen",
        "tcp:0:interface=127.0.0.1",
        "--redis",
        f"{redis.url}?prefix=wk:",
        "--workers",
        str(n),
        *extra,
        env=env,
        **kw,
    )
    wait_log(proc, f"all {n} workers ready", 1, timeout=30)
    return proc


def worker_pids(proc) -> dict[int, int]:
    """index -> pid of the newest start of each worker, from the parent's log."""
    pids = {}
    for index, pid in STARTED.findall(proc.log):
        pids[int(index)] = int(pid)
    return pids


def readyz(http_url) -> dict:
    with urllib.request.urlopen(http_url + "/readyz", timeout=10) as r:
        return json.loads(r.read())


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (exited, not yet reaped) is not alive
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split(")")[-1].split()[0] != "Z"


@contextmanager
def stopped(pid):
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def frames_until(ws, kind, timeout=10):
    while True:
        frame = json.loads(ws.recv(timeout=timeout))
        if frame["type"] == kind:
            return frame


def test_workers_above_one_need_redis(tmp_path):
    """Without --redis, --workers 2 is refused at start-up, saying why."""
    result = subprocess.run(
        [*TWISTD, "-n", "chatd", "--workers", "2", "--listen", "tcp:0"],
        cwd=tmp_path,
        env=chatd_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "--workers above 1 needs --redis" in result.stdout + result.stderr


def test_two_workers_share_the_socket_and_the_bus(twistd_factory, redis):
    """Both workers accept on the parent's socket (each answers /readyz with its own
    index and pid); a client on worker 0 and one on worker 1 share a room."""
    proc = start(twistd_factory, redis)
    pids = worker_pids(proc)
    assert sorted(pids) == [0, 1]
    seen = {}
    wait_until(
        lambda: (
            seen.update({(w := readyz(proc.http_url)["worker"])["index"]: w["pid"]})
            or len(seen) == 2
        ),
        "both workers answering /readyz",
        timeout=30,
    )
    assert seen == pids
    url = proc.ws_url + "/ws?name="
    with ExitStack() as stack:
        with stopped(pids[1]):
            a = stack.enter_context(
                connect(url + "ann", subprotocols=["chatd.v1"], open_timeout=10)
            )
            frames_until(a, "welcome")
        with stopped(pids[0]):
            b = stack.enter_context(
                connect(url + "ben", subprotocols=["chatd.v1"], open_timeout=10)
            )
            frames_until(b, "welcome")
        for ws in (a, b):
            ws.send(json.dumps({"type": "join", "room": "shared"}))
            frames_until(ws, "joined")
        a.send(json.dumps({"type": "send", "room": "shared", "text": "from worker 0", "id": "a1"}))
        assert frames_until(b, "message")["text"] == "from worker 0"
        b.send(json.dumps({"type": "send", "room": "shared", "text": "from worker 1", "id": "b1"}))
        assert frames_until(a, "message")["text"] == "from worker 1"


@pytest.mark.redis
def test_two_nodes_with_two_workers_each_on_a_redis_cluster(
    twistd_factory, redis_cluster, tmp_path
):
    """Two twistd parents with --workers 2 each on the local 3-master Redis Cluster:
    one client pinned to each of the four workers, in one room, each one's message
    reaches the three others."""
    procs = []
    for i in range(2):
        (tmp_path / f"node{i}").mkdir()
        procs.append(start(twistd_factory, redis_cluster, cwd=tmp_path / f"node{i}"))
    with ExitStack() as stack:
        clients = []
        for p, proc in enumerate(procs):
            pids = worker_pids(proc)
            for index in sorted(pids):
                with stopped(pids[1 - index]):
                    ws = stack.enter_context(
                        connect(
                            f"{proc.ws_url}/ws?name=u{p}{index}",
                            subprotocols=["chatd.v1"],
                            open_timeout=10,
                        )
                    )
                    frames_until(ws, "welcome")
                clients.append(ws)
        for ws in clients:
            ws.send(json.dumps({"type": "join", "room": "shared"}))
            frames_until(ws, "joined")
        for i, ws in enumerate(clients):
            ws.send(json.dumps({"type": "send", "room": "shared", "text": f"t{i}", "id": f"c{i}"}))
            for j, other in enumerate(clients):
                if j != i:
                    assert frames_until(other, "message")["text"] == f"t{i}"
    for proc in procs:
        assert sorted(worker_pids(proc)) == [0, 1]


def test_a_crashed_worker_is_started_again_and_sigterm_stops_all(twistd_factory, redis):
    """SIGKILL of a worker: the parent logs it and starts a new one, which serves; SIGHUP
    reaches every worker; SIGTERM of the parent stops every worker, then the parent."""
    proc = start(twistd_factory, redis)
    old = worker_pids(proc)
    os.kill(old[0], signal.SIGKILL)
    wait_log(proc, "worker 0 exited", 1)
    wait_log(proc, "worker 0 ready", 2, timeout=30)
    new = worker_pids(proc)
    assert new[0] != old[0] and new[1] == old[1]
    wait_until(lambda: readyz(proc.http_url)["worker"]["pid"] == new[0], "the new worker 0 serving")

    proc.proc.send_signal(signal.SIGHUP)
    wait_log(proc, "configuration reloaded", 2)

    status = proc.stop(signal.SIGTERM, timeout=30)
    assert status in (0, -signal.SIGTERM), proc.log
    assert not any(alive(pid) for pid in new.values()), proc.log
    assert "Traceback" not in proc.log


def test_socket_activation_with_workers_sends_one_ready(tmp_path, redis):
    """Under systemd-socket-activate (``systemd:`` endpoint) with --workers 2 the parent
    adopts systemd's socket and hands it on; systemd hears READY=1 once, from the
    parent (MAINPID), after both workers listen; clients on the socket are served."""
    binary = need_binary("systemd-socket-activate")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    path = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(path)
        env = chatd_env(NOTIFY_SOCKET=path)
        argv = [
            binary,
            "-l",
            f"127.0.0.1:{port}",
            "--fdname=web",
            *(
                x
                for name in ("PYTHONPATH", "PYTHONUNBUFFERED", "NOTIFY_SOCKET")
                for x in ("-E", name)
            ),
            *TWISTD,
            "-n",
            "--pidfile=",
            "chatd",
            "--listen",
            "systemd:domain=INET:name=web",
            "--redis",
            f"{redis.url}?prefix=sa:",
            "--workers",
            "2",
        ]
        proc = subprocess.Popen(
            argv, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        try:
            assert proc.stdout.readline().startswith("Listening on ")
            # the first connection makes systemd-socket-activate exec chatd
            with connect(f"ws://127.0.0.1:{port}/", open_timeout=30) as early:
                got = receive_until(notify, "READY=1", timeout=60)
                ready = [g for g in got if "READY=1" in g]
                assert len(ready) == 1, got
                assert f"MAINPID={proc.pid}" in ready[0].split("\n")
                assert "2 workers listening" in ready[0]
                with connect(f"ws://127.0.0.1:{port}/", open_timeout=10) as late:
                    early.send("hello workers")
                    assert late.recv(timeout=10) == "hello workers"
            proc.send_signal(signal.SIGTERM)
            # everything sent after the first READY=1, up to STOPPING=1: no second READY=1
            later = receive_until(notify, "STOPPING=1", timeout=30)
            assert "STOPPING=1" in later[-1]
            assert not any("READY=1" in g for g in later), later
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
            output = proc.communicate()[0]
        assert "Traceback" not in output, output


def test_workers_serve_tls_on_an_adopted_ssl_socket(tmp_path, twistd_factory, redis):
    """An ``ssl:`` endpoint: each worker wraps the inherited socket in the endpoint's TLS
    context; both answer https:///readyz with the test CA's certificate."""
    from tests.e2e.test_tls import make_ca_and_leaf, trusting

    paths = make_ca_and_leaf(tmp_path)
    proc = twistd_factory(
        "--listen",
        f"ssl:0:interface=127.0.0.1:privateKey={paths['key']}:certKey={paths['cert']}",
        "--redis",
        f"{redis.url}?prefix=tls:",
        "--workers",
        "2",
    )
    wait_log(proc, "all 2 workers ready", 1, timeout=30)
    assert proc.url.startswith("wss://")
    ctx = trusting(paths)
    seen = set()

    def answer():
        url = f"https://localhost:{proc.port}/readyz"
        with urllib.request.urlopen(url, timeout=10, context=ctx) as r:
            seen.add(json.loads(r.read())["worker"]["index"])
        return seen == {0, 1}

    wait_until(answer, "both workers answering over TLS", timeout=30)


def test_workers_stop_when_the_parent_is_killed(twistd_factory, redis):
    """SIGKILL of the parent (no chance to stop anything): each worker sees its stdin
    pipe end and shuts down by itself, so none outlives the parent."""
    proc = start(twistd_factory, redis)
    pids = worker_pids(proc)
    proc.proc.send_signal(signal.SIGKILL)
    proc.proc.wait(timeout=10)
    wait_until(
        lambda: not any(alive(pid) for pid in pids.values()), "every worker gone", timeout=30
    )
