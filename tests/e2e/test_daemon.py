"""chatd as a classic Unix daemon and its start-up failures.

``twistd --pidfile chatd.pid --logfile chatd.log chatd --port 0`` must return
at once, leave a daemon that writes its pid file and logs its real port, serve
clients, and on SIGTERM stop cleanly and remove the pid file. A port that is
already taken must make twistd exit non-zero with a log line that names the
address, in the foreground and in daemon mode. The unix-socket endpoint that
docs/deploy.md recommends behind nginx is exercised too.
"""

from __future__ import annotations

import os
import signal
import socket
import stat
import time
from pathlib import Path

import pytest
from websockets.sync.client import connect, unix_connect

from tests.conftest import LISTENING_LINE, TWISTD, TwistdProcess, chatd_env, poll
from tests.support.process import close_codes, twistd_exit

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.subprocess


def process_gone(pid: int) -> bool:
    """True when *pid* no longer runs (an unreaped zombie counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def assert_relay(connect_a, connect_b):
    """A text frame from one relay client reaches the other, not the sender."""
    with connect_a() as alice, connect_b() as bob:
        alice.send("ping from alice")
        assert bob.recv(timeout=10) == "ping from alice"
        # a positive marker, not a 0.3 s wait: alice's next frame is bob's later one,
        # so her own did not come back before it
        bob.send("marker from bob")
        assert alice.recv(timeout=10) == "marker from bob"


@pytest.fixture
def busy_port():
    """A TCP port on 127.0.0.1 held by a listening socket for the whole test."""
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    yield holder.getsockname()[1]
    holder.close()


@pytest.fixture
def daemons():
    """Pids of daemons a test started; any still alive afterwards get SIGKILL."""
    pids = []
    yield pids
    for pid in pids:
        if not process_gone(pid):
            os.kill(pid, signal.SIGKILL)


def test_daemon_mode_pidfile_log_client_and_sigterm(tmp_path, daemons):
    """twistd daemonizes and returns 0; the pid file names the running daemon; the
    log file has the listening line with the real port; a client relays; SIGTERM
    to the pid stops it cleanly and removes the pid file."""
    pidfile = tmp_path / "chatd.pid"
    logfile = tmp_path / "chatd.log"
    started = time.monotonic()
    result = twistd_exit(
        tmp_path, "--pidfile", "chatd.pid", "--logfile", "chatd.log", "chatd", "--port", "0"
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert time.monotonic() - started < 30

    pid_text = poll(lambda: pidfile.exists() and pidfile.read_text().strip(), 20.0)
    assert pid_text and pid_text.isdigit(), f"no pid file; log:\n{logfile.read_text()}"
    pid = int(pid_text)
    daemons.append(pid)
    assert not process_gone(pid)
    # A daemon: detached from the launching twistd, in a session of its own.
    assert os.getsid(pid) != os.getsid(0)

    match = poll(lambda: logfile.exists() and LISTENING_LINE.search(logfile.read_text()), 20.0)
    assert match, logfile.read_text()
    url, endpoint = match.groups()
    assert endpoint == "tcp:0"
    port = int(url.rsplit(":", 1)[1].rstrip("/"))
    assert port > 0

    assert_relay(
        lambda: connect(f"ws://127.0.0.1:{port}/", open_timeout=10),
        lambda: connect(f"ws://127.0.0.1:{port}/ws", open_timeout=10),
    )

    os.kill(pid, signal.SIGTERM)
    assert poll(lambda: process_gone(pid), 20.0), (
        f"daemon ignored SIGTERM; log:\n{logfile.read_text()[-4000:]}"
    )
    assert poll(lambda: not pidfile.exists(), 20.0), "pid file left behind"
    log = logfile.read_text()
    assert "Received SIGTERM, shutting down." in log
    assert "Server Shut Down." in log
    assert "Traceback" not in log
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


def test_port_in_use_foreground_exits_nonzero_with_clear_log(tmp_path, busy_port):
    """``twistd -n chatd`` on a taken port exits with status 1 and logs which
    address could not be bound and why."""
    result = twistd_exit(
        tmp_path, "-n", "chatd", "--listen", f"tcp:{busy_port}:interface=127.0.0.1"
    )
    log = result.stdout + result.stderr
    assert result.returncode == 1, log
    assert f"Couldn't listen on 127.0.0.1:{busy_port}: [Errno 98] Address already in use" in log
    assert "chatd listening on" not in log


def test_port_in_use_daemon_mode_exits_nonzero_and_leaves_no_pidfile(tmp_path, busy_port):
    """In daemon mode the failed bind reaches the launching twistd: it exits 1,
    says so on stderr, the log file has the reason and no pid file is left."""
    result = twistd_exit(
        tmp_path,
        "--pidfile",
        "chatd.pid",
        "--logfile",
        "chatd.log",
        "chatd",
        "--listen",
        f"tcp:{busy_port}:interface=127.0.0.1",
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"Couldn't listen on 127.0.0.1:{busy_port}" in result.stderr
    # the daemonised child reports the failure to the launcher before it has
    # finished writing the traceback to its log: wait for it (bounded)
    expected = f"Couldn't listen on 127.0.0.1:{busy_port}: [Errno 98] Address already in use"
    logfile = tmp_path / "chatd.log"
    assert poll(lambda: expected in logfile.read_text(), timeout=10), logfile.read_text()
    assert not (tmp_path / "chatd.pid").exists()


def test_unix_socket_endpoint(tmp_path):
    """``--listen unix:PATH:mode=660`` (the nginx set-up in docs/deploy.md) creates
    the socket with that mode, relays between clients and removes it on stop."""
    path = tmp_path / "chatd.sock"
    proc = TwistdProcess.run(
        [*TWISTD, "-n", "--pidfile=", "chatd", "--listen", f"unix:{path}:mode=660"],
        tmp_path,
        chatd_env(),
    )
    try:
        assert proc.url == f"unix:{path}"
        mode = path.stat().st_mode
        assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o660
        assert_relay(
            lambda: unix_connect(str(path), "ws://localhost/", open_timeout=10),
            lambda: unix_connect(str(path), "ws://localhost/ws", open_timeout=10),
        )
        assert proc.stop(timeout=20) == -signal.SIGTERM, proc.log
        assert not path.exists()
    finally:
        proc.stop(signal.SIGKILL)


def test_sigterm_closes_clients_with_going_away(tmp_path):
    """On SIGTERM (what ``systemctl stop`` and ``kill`` send) chatd closes every
    WebSocket with 1001 "going away" (docs/protocol.md, close codes) before it
    exits, for relay and chatd.v1 clients alike, instead of dropping the TCP
    connections."""
    proc = TwistdProcess.run(
        [*TWISTD, "-n", "--pidfile=", "chatd", "--listen", "tcp:0:interface=127.0.0.1"],
        tmp_path,
        chatd_env(),
    )
    try:
        url = proc.url
        with (
            connect(url, open_timeout=10) as relay,
            connect(url + "ws", open_timeout=10, subprotocols=["chatd.v1"]) as v1,
        ):
            assert '"welcome"' in v1.recv(timeout=10)
            proc.proc.send_signal(signal.SIGTERM)
            codes = close_codes((relay, v1))
        assert proc.stop(timeout=20) == -signal.SIGTERM
        assert codes == [1001, 1001], proc.log
    finally:
        proc.stop(signal.SIGKILL)


class _RecordingReactor:
    """Stands in for Twisted's reactor: records what is scheduled and which of its
    signal handlers ran; they must never run inside the signal handler itself."""

    def __init__(self):
        self.scheduled = []
        self.ran = []
        self.in_main_loop = False

    def callFromThread(self, f, *args):
        self.scheduled.append((f, args))

    def run_scheduled(self):
        """What the main loop does with the scheduled calls."""
        self.in_main_loop = True
        for f, args in self.scheduled:
            f(*args)

    def sigTerm(self, number, frame=None):
        assert self.in_main_loop, "sigTerm ran inside the signal handler"
        self.ran.append(number)

    def sigInt(self, number, frame=None):
        assert self.in_main_loop, "sigInt ran inside the signal handler"
        self.ran.append(number)


def test_stop_signals_only_schedule_the_reactors_handler():
    """With chatd's handlers installed, a real SIGTERM / SIGINT sent to this process
    only schedules the reactor's own sigTerm / sigInt for the main loop (so their
    log call never runs inside an interrupted log write: the daemon once hung
    that way); only the first stop signal reaches the reactor (a second would make
    Twisted stop a reactor that is already stopping and log a traceback)."""
    from chatd.signals import defer_stop_signals

    reactor = _RecordingReactor()
    previous = defer_stop_signals(reactor)
    try:
        assert set(previous) == {signal.SIGTERM, signal.SIGINT}
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGTERM)
        assert poll(lambda: len(reactor.scheduled) == 3, timeout=5)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    assert reactor.ran == []  # nothing ran inside the signal handlers
    reactor.run_scheduled()
    assert reactor.ran == [signal.SIGTERM]
