"""chatd runs as ``twistd -n chatd`` four ways: from a clone, after ``pip install .``,
after ``pip install -e .`` and through the README's first command, word for word.

Each install test builds a throw-away virtualenv **without** ``--system-site-packages``
and installs chatd *with* its declared dependencies from the package index (pip's
cache makes that quick), so a dependency missing from setup.cfg fails here exactly
as it would on a new user's machine. In each venv it imports every module of the
installed ``chatd`` package, then starts the venv's ``twistd -n chatd --port 0`` from
an unrelated directory, relays a text frame between two real WebSocket clients,
exchanges a chatd.v1 message, and stops it with SIGTERM.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from websockets.sync.client import connect

from tests.conftest import IN_CI, ROOT, TwistdProcess
from tests.support.install import COPY_IGNORE

LISTENING = re.compile(r"chatd listening on ws://(\S+):(\d+)/ \(endpoint ([^)]*)\)")

pytestmark = [pytest.mark.install, pytest.mark.subprocess]


def clean_env(**extra) -> dict:
    """The environment minus anything that could put the checkout on sys.path."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def can_compile() -> bool:
    """True when a C compiler and this Python's headers are here (setup.py's accelerator)."""
    include = sysconfig.get_paths()["include"]
    return shutil.which("cc") is not None and os.path.exists(os.path.join(include, "Python.h"))


@pytest.fixture(scope="module")
def source_tree(tmp_path_factory) -> Path:
    """A copy of the checkout (working tree, not .git), so pip's build files never
    land in the shared tree and the installed code is not found via the repo."""
    dest = tmp_path_factory.mktemp("clone") / "chatd"
    shutil.copytree(ROOT, dest, ignore=COPY_IGNORE)
    return dest


def make_venv(path: Path) -> Path:
    """An empty virtualenv of its own (no system site-packages), with pip: it sees only
    what chatd declares."""
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True, timeout=120)
    return path


def pip_install(venv: Path, *args, cwd: Path) -> subprocess.CompletedProcess:
    """``VENV/bin/python -m pip install ARGS`` with dependencies from the index; fails the
    test with pip's output."""
    result = subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-m",
            "pip",
            "install",
            "--disable-pip-version-check",
            "--quiet",
            *args,
        ],
        cwd=cwd,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, f"pip install failed:\n{result.stdout}\n{result.stderr}"
    return result


#: imports every module of the installed chatd package, and says where chatd came from
IMPORT_ALL = """
import importlib, pkgutil, chatd
names = [m.name for m in pkgutil.walk_packages(chatd.__path__, "chatd.")]
for name in names:
    importlib.import_module(name)
print(chatd.__file__)
print(len(names))
"""


def assert_imports_everything(venv: Path, cwd: Path) -> Path:
    """Every module of the venv's chatd imports (optional extras included); returns
    the path of the chatd package that was imported."""
    where, count = venv_python(venv, IMPORT_ALL, cwd=cwd).splitlines()[-2:]
    assert int(count) >= 20, count
    return Path(where)


def venv_python(venv: Path, code: str, cwd: Path) -> str:
    """Run *code* with the venv's interpreter (no PYTHONPATH) and return its stdout."""
    result = subprocess.run(
        [str(venv / "bin" / "python"), "-c", code],
        cwd=cwd,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


@pytest.fixture
def run_twistd():
    """Start ``twistd`` commands; any still running after the test are killed."""
    started = []

    def start(command, cwd, env, **kwargs):
        proc = TwistdProcess.run(command, cwd, env, **kwargs)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.proc.pid, signal.SIGKILL)  # a group leader: its whole group
            proc.stop(signal.SIGKILL)


def assert_relay(port: int):
    """Two relay clients (no subprotocol): a text frame from one reaches the other
    verbatim, and never comes back to the sender."""
    with (
        connect(f"ws://127.0.0.1:{port}/", open_timeout=10) as alice,
        connect(f"ws://127.0.0.1:{port}/ws", open_timeout=10) as bob,
    ):
        assert alice.subprotocol is None
        alice.send("hello from alice")
        assert bob.recv(timeout=10) == "hello from alice"
        bob.send("hi alice")
        assert alice.recv(timeout=10) == "hi alice"
        with pytest.raises(TimeoutError):
            bob.recv(timeout=0.3)


def assert_v1_message(port: int):
    """Two chatd.v1 clients join one room: a ``send`` from one is acked with a seq and
    delivered to the other as a ``message``."""
    url = f"ws://127.0.0.1:{port}/"
    with (
        connect(url + "?name=alice", subprotocols=["chatd.v1"], open_timeout=10) as alice,
        connect(url + "?name=bob", subprotocols=["chatd.v1"], open_timeout=10) as bob,
    ):
        for client in (alice, bob):
            assert json.loads(client.recv(timeout=10))["type"] == "welcome"
            client.send(json.dumps({"type": "join", "room": "install"}))
            until(client, "joined")
        alice.send(json.dumps({"type": "send", "room": "install", "text": "v1 hi", "id": "m1"}))
        ack = until(alice, "ack")
        assert ack["id"] == "m1" and ack["seq"] == 1, ack
        message = until(bob, "message")
        assert (message["from"], message["text"], message["seq"]) == ("alice", "v1 hi", 1)


def until(client, kind: str) -> dict:
    """The next frame of type *kind* from *client* (presence and the like skipped)."""
    while True:
        frame = json.loads(client.recv(timeout=10))
        if frame["type"] == kind:
            return frame
        assert frame["type"] != "error", frame


def run_and_relay(run_twistd, command, cwd, env):
    """Start chatd with *command*, check the logged endpoint, relay and exchange a chatd.v1
    message, SIGTERM."""
    chatd = run_twistd(command, cwd, env)
    match = LISTENING.search(chatd.log)
    assert match.group(1) == "0.0.0.0" and match.group(3) == "tcp:0", chatd.log
    assert_relay(chatd.port)
    assert_v1_message(chatd.port)
    status = chatd.stop()
    # twistd re-raises SIGTERM after a clean shutdown: killed by SIGTERM is a
    # clean stop for systemd and shells alike.
    assert status == -signal.SIGTERM, chatd.log
    assert "Server Shut Down." in chatd.log
    assert "Traceback" not in chatd.log
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", chatd.port), timeout=1).close()
    return chatd


def help_text(twistd: Path, cwd: Path, env: dict) -> str:
    """``twistd chatd --help`` run in *cwd* with *env*; it must exit 0."""
    result = subprocess.run(
        [str(twistd), "chatd", "--help"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def assert_help_lists_options(text: str):
    """The help names chatd's own options, not just twistd's."""
    assert "Usage: twistd [options] chatd [options]" in text
    for option in ("--port=", "--listen=", "--max-message-size=", "--ping-interval="):
        assert option in text, text


def test_clone_root_with_pythonpath(source_tree, tmp_path, run_twistd):
    """From a clone's root, without installing, ``PYTHONPATH=. twistd -n chatd --port 0``
    serves the clone's chatd (the machine's twistd script, PYTHONPATH=. only)."""
    twistd = Path(sys.executable).with_name("twistd")
    assert twistd.exists(), f"no twistd script next to {sys.executable}"
    env = clean_env(PYTHONPATH=".")
    where = subprocess.run(
        [sys.executable, "-P", "-c", "import chatd; print(chatd.__file__)"],
        cwd=source_tree,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert Path(where) == source_tree / "chatd" / "__init__.py"
    assert_help_lists_options(help_text(twistd, source_tree, env))
    run_and_relay(run_twistd, [str(twistd), "-n", "chatd", "--port", "0"], source_tree, env)


@pytest.mark.parametrize("editable", [False, True], ids=["pip-install", "pip-install-e"])
def test_installed_twistd_runs_chatd_from_any_directory(
    editable, source_tree, tmp_path, run_twistd
):
    """After ``pip install .`` / ``pip install -e .`` into a venv, the venv's
    ``twistd -n chatd --port 0`` finds the plugin from an unrelated working
    directory, serves relay clients and stops cleanly on SIGTERM."""
    venv = make_venv(tmp_path / "venv")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    if editable:
        pip_install(venv, "-e", str(source_tree), cwd=elsewhere)
    else:
        pip_install(venv, str(source_tree), cwd=elsewhere)

    chatd_file = assert_imports_everything(venv, cwd=elsewhere)
    plugin_file = Path(
        venv_python(
            venv, "import twisted.plugins.chatd_plugin as p; print(p.__file__)", cwd=elsewhere
        )
    )
    if editable:
        # The editable install points at the source tree, through a plain .pth.
        assert chatd_file == source_tree / "chatd" / "__init__.py"
        assert plugin_file == source_tree / "twisted" / "plugins" / "chatd_plugin.py"
        pth = list((venv / "lib").glob("python3*/site-packages/__editable__*chatd*.pth"))
        assert pth, "no editable .pth written"
        assert pth[0].read_text().strip() == str(source_tree), (
            "editable install uses an import hook"
        )
    else:
        assert chatd_file.is_relative_to(venv), chatd_file
        assert plugin_file.is_relative_to(venv), plugin_file
        # Static files ship in the wheel (GET / serves the web client).
        assert (chatd_file.parent / "static").is_dir()
    assert not chatd_file.is_relative_to(ROOT)
    # pip built the optional C fan-out loop (setup.py). Without a compiler the build
    # only warns and chatd runs its pure-Python loop; .ci/run installs one, so
    # under CI=true it must have been built
    if can_compile() or IN_CI:
        code = "import chatd.fanout as f; print(f.c_send_all())"
        fanout = venv_python(venv, code, cwd=elsewhere)
        assert fanout.startswith("<built-in function send_all>"), fanout

    twistd = venv / "bin" / "twistd"
    assert_help_lists_options(help_text(twistd, elsewhere, clean_env()))
    run_and_relay(run_twistd, [str(twistd), "-n", "chatd", "--port", "0"], elsewhere, clean_env())


def readme_first_command() -> str:
    """The first shell block under the README's "Two commands": install and run."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Two commands") :]
    return re.search(r"```sh\n(.*?)\n```", section, re.S).group(1).strip()


def test_readme_first_command_word_for_word(tmp_path, run_twistd):
    """The README's first command, pasted into a shell in a fresh copy of the clone (only
    ``--port 8080`` becomes ``--port 0``), creates its virtualenv, installs chatd with its
    dependencies and serves relay and chatd.v1 clients until SIGTERM."""
    command = readme_first_command()
    assert "pip install ." in command and "twistd -n chatd --port 8080" in command, command
    tree = tmp_path / "clone"
    shutil.copytree(ROOT, tree, ignore=COPY_IGNORE)
    env = clean_env()
    env.pop("VIRTUAL_ENV", None)
    # the machine's PATH minus any activated virtualenv: a newcomer's shell
    active = os.environ.get("VIRTUAL_ENV")
    if active:
        env["PATH"] = os.pathsep.join(
            p for p in env["PATH"].split(os.pathsep) if not p.startswith(active)
        )
    shell = run_twistd(
        ["bash", "-c", command.replace("--port 8080", "--port 0")],
        tree,
        env,
        timeout=600,
        start_new_session=True,
    )
    assert_relay(shell.port)
    assert_v1_message(shell.port)
    # the shell does not forward signals: stop its process group, as a terminal's ^C
    # would, and wait for the shell to end with twistd (no second signal)
    os.killpg(shell.proc.pid, signal.SIGTERM)
    shell.proc.wait(timeout=30)
    shell.stop()
    assert "Server Shut Down." in shell.log, shell.log
    assert "Traceback" not in shell.log, shell.log
    venv = next(p.parent.parent for p in tree.glob("*/bin/activate"))
    assert_imports_everything(venv, cwd=tmp_path)
