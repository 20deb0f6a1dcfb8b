"""The systemd units in systemd/ and socket activation for real.

chatd.service's own ExecStart arguments are run under ``systemd-socket-activate``
with a listening socket made the way chatd.socket's ``ListenStream=`` makes it:
real clients connect through the adopted socket (the first one before chatd
has even started) and relay works. The unit files are checked with
``systemd-analyze verify`` and ``systemd-analyze security --offline``.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from websockets.sync.client import connect

from tests.conftest import LISTENING_LINE, TWISTD, need, need_binary

ROOT = Path(__file__).resolve().parents[2]
UNITS = ROOT / "systemd"

pytestmark = pytest.mark.subprocess


def parse_unit(path: Path) -> dict[str, list[str]]:
    """``Section.Key`` -> every value assigned, in order (systemd keys repeat)."""
    values: dict[str, list[str]] = {}
    section = None
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        key, _, value = line.partition("=")
        values.setdefault(f"{section}.{key.strip()}", []).append(value.strip())
    return values


def exec_start_chatd_args() -> list[str]:
    """The twistd arguments of chatd.service's ExecStart (after the binary)."""
    unit = parse_unit(UNITS / "chatd.service")
    command = [value for value in unit["Service.ExecStart"] if value][-1]
    argv = shlex.split(command)
    assert Path(argv[0]).name == "twistd", argv
    return argv[1:]


def free_port(family=socket.AF_INET, host="127.0.0.1") -> int:
    """A port number nothing listens on right now."""
    with socket.socket(family) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def ipv6_available() -> bool:
    """True when ::1 can be bound (IPv6 enabled on this machine)."""
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def test_units_have_the_deployment_settings():
    """The socket passes one named socket to one service; the service adopts that
    name, runs in the foreground without a pid file, restarts on failure, keeps
    state in its StateDirectory and is sandboxed."""
    sock = parse_unit(UNITS / "chatd.socket")
    service = parse_unit(UNITS / "chatd.service")
    assert sock["Socket.ListenStream"] == ["8080"]
    assert sock["Socket.FileDescriptorName"] == ["web"]
    assert sock.get("Socket.Accept", ["no"]) == ["no"]
    assert sock["Install.WantedBy"] == ["sockets.target"]

    args = exec_start_chatd_args()
    assert args[:3] == ["--nodaemon", "--pidfile=", "chatd"]
    # ListenStream=<port only> opens a dual-stack AF_INET6 socket.
    assert args[3:] == ["--listen", "systemd:domain=INET6:name=web"]
    assert service["Unit.Requires"] == ["chatd.socket"]
    assert service["Service.Type"] == ["notify"] and service["Service.NotifyAccess"] == ["main"]
    assert service["Service.Restart"] == ["on-failure"]
    assert service["Service.StateDirectory"] == ["chatd"]
    assert service["Service.WorkingDirectory"] == ["/var/lib/chatd"]
    assert service.get("Service.DynamicUser") == ["yes"] or service.get("Service.User")
    for key, value in {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
        "RestrictSUIDSGID": "yes",
        "CapabilityBoundingSet": "",
    }.items():
        assert service[f"Service.{key}"] == [value], key


def verifiable_units(tmp_path: Path) -> Path:
    """Copies of the units whose ExecStart names a twistd that exists here
    (``systemd-analyze verify`` checks that the binary is executable)."""
    twistd = Path(sys.executable).with_name("twistd")
    need(f"a twistd script next to {sys.executable}", twistd.exists())
    out = tmp_path / "units"
    out.mkdir()
    shutil.copy(UNITS / "chatd.socket", out / "chatd.socket")
    text = (UNITS / "chatd.service").read_text()
    assert "ExecStart=/opt/chatd/bin/twistd " in text
    (out / "chatd.service").write_text(
        text.replace("ExecStart=/opt/chatd/bin/twistd ", f"ExecStart={twistd} ")
    )
    return out


def analyze(*args, cwd) -> subprocess.CompletedProcess:
    """Run ``systemd-analyze ARGS`` offline (no systemd manager needed)."""
    binary = need_binary("systemd-analyze")
    return subprocess.run(
        [binary, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "SYSTEMD_LOG_COLOR": "0"},
    )


def test_systemd_analyze_verify_accepts_units(tmp_path):
    """``systemd-analyze verify`` reports nothing about either unit; a misspelt
    key in a copy is reported, so the check is not vacuous."""
    units = verifiable_units(tmp_path)
    result = analyze("verify", "chatd.socket", "chatd.service", cwd=units)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (result.stdout + result.stderr).strip() == ""

    broken = units / "chatd.service"
    broken.write_text(broken.read_text().replace("Restart=on-failure", "Restartt=on-failure"))
    result = analyze("verify", "chatd.socket", "chatd.service", cwd=units)
    assert "Unknown key" in result.stdout + result.stderr
    assert "Restartt" in result.stdout + result.stderr


def test_systemd_analyze_security_exposure_is_low(tmp_path):
    """``systemd-analyze security --offline`` rates chatd.service at most 2.0
    ("OK" on systemd's 0-10 exposure scale)."""
    units = verifiable_units(tmp_path)
    result = analyze(
        "security", "--offline=true", "--threshold=20", "--no-pager", "chatd.service", cwd=units
    )
    report = result.stdout + result.stderr
    match = re.search(r"Overall exposure level for chatd\.service: ([\d.]+)", report)
    assert match, report
    assert float(match.group(1)) <= 2.0, report
    assert result.returncode == 0, report


def socket_activate(listen: str, chatd_args: list[str], cwd: Path):
    """``systemd-socket-activate -l LISTEN --fdname=web twistd ARGS``: systemd's
    socket-passing protocol (LISTEN_FDS, LISTEN_PID, LISTEN_FDNAMES)."""
    binary = need_binary("systemd-socket-activate")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [
            binary,
            "-l",
            listen,
            "--fdname=web",
            "-E",
            "PYTHONPATH",
            "-E",
            "PYTHONUNBUFFERED",
            *TWISTD,
            *chatd_args,
        ],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    # It binds first and says so ("Listening on 127.0.0.1:PORT as 3."), then waits
    # for a connection before it execs chatd.
    first = proc.stdout.readline()
    if not first.startswith("Listening on "):
        proc.kill()
        rest, _ = proc.communicate()
        pytest.fail("systemd-socket-activate did not listen:\n" + first + rest)
    return proc


def wait_listening(proc, timeout=30.0) -> tuple[str, str, str]:
    """Read the activated chatd's output up to its listening line."""
    lines = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        match = LISTENING_LINE.search(line)
        if match:
            return match.group(1), match.group(2), "".join(lines)
    proc.kill()
    rest, _ = proc.communicate()
    pytest.fail("activated chatd did not listen:\n" + "".join(lines) + rest)


def stop(proc) -> tuple[int, str]:
    """SIGTERM (what systemd sends on stop) and wait; exit status and output."""
    proc.send_signal(signal.SIGTERM)
    try:
        rest, _ = proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        rest, _ = proc.communicate()
    return proc.returncode, rest


def relay_through(first_url: str, second_url: str):
    """Two relay clients: text from the first reaches the second, and back."""
    with (
        connect(first_url, open_timeout=30) as alice,
        connect(second_url, open_timeout=10) as bob,
    ):
        alice.send("through the activated socket")
        assert bob.recv(timeout=10) == "through the activated socket"
        bob.send("and back")
        assert alice.recv(timeout=10) == "and back"
        # a positive marker, not a 0.3 s wait: bob's next frame is alice's later one,
        # so his own did not come back before it
        alice.send("marker")
        assert bob.recv(timeout=10) == "marker"


def test_socket_activation_with_the_service_units_command_line(tmp_path):
    """chatd.service's ExecStart arguments adopt a dual-stack socket made like
    ``ListenStream=8080`` (``-l PORT`` binds [::]:PORT): the first client connects
    before chatd runs (systemd starts it on that connection), IPv4 and IPv6
    clients relay to each other, the log names the adopted socket, and SIGTERM
    stops chatd cleanly."""
    need("IPv6 on loopback", ipv6_available())
    port = free_port(socket.AF_INET6, "::")
    proc = socket_activate(str(port), exec_start_chatd_args(), tmp_path)
    try:
        # systemd-socket-activate only execs chatd when the first connection
        # arrives: this client waits in the socket's backlog meanwhile.
        with connect(f"ws://127.0.0.1:{port}/", open_timeout=30) as early:
            url, endpoint, log = wait_listening(proc)
            assert url == f"ws://[::]:{port}/", log
            assert endpoint == "systemd:domain=INET6:name=web"
            relay_through(f"ws://[::1]:{port}/ws", f"ws://127.0.0.1:{port}/ws")
            # The first (early) client is a relay peer like any other.
            assert early.recv(timeout=10) == "through the activated socket"
        status, rest = stop(proc)
        assert status == -signal.SIGTERM, log + rest
        assert "Server Shut Down." in rest
        # The default --db is relative: under the unit it lands in
        # WorkingDirectory=/var/lib/chatd, here in the test's working directory.
        assert (tmp_path / "chatd.sqlite3").is_file()
        assert "Traceback" not in log + rest
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_socket_activation_ipv4_by_index(tmp_path):
    """The STACK.md form: an IPv4 socket (``ListenStream=127.0.0.1:PORT``) adopted
    with ``--listen systemd:domain=INET:index=0`` relays too."""
    port = free_port()
    proc = socket_activate(
        f"127.0.0.1:{port}",
        ["-n", "--pidfile=", "chatd", "--listen", "systemd:domain=INET:index=0"],
        tmp_path,
    )
    try:
        with connect(f"ws://127.0.0.1:{port}/", open_timeout=30) as early:
            url, endpoint, log = wait_listening(proc)
            assert url == f"ws://127.0.0.1:{port}/", log
            assert endpoint == "systemd:domain=INET:index=0"
            relay_through(f"ws://127.0.0.1:{port}/ws", f"ws://127.0.0.1:{port}/")
            assert early.recv(timeout=10) == "through the activated socket"
        status, rest = stop(proc)
        assert status == -signal.SIGTERM, log + rest
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
