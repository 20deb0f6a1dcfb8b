"""chatd runs as ``twistd -n chatd`` three ways: from a clone, after ``pip install .``
and after ``pip install -e .``.

Each install test builds a throw-away virtualenv (``--system-site-packages`` so
Twisted and Autobahn come from the machine and nothing big is downloaded),
installs a copy of this checkout into it with ``--no-deps``, proves that the
venv's own chatd is the one imported (PYTHONPATH unset, a scratch working
directory), then starts the venv's ``twistd -n chatd --port 0`` from yet another
directory, relays a text frame between two real WebSocket clients and stops it
with SIGTERM.
"""

from __future__ import annotations

import importlib.util
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

from tests.conftest import IN_CI, TwistdProcess

ROOT = Path(__file__).resolve().parent.parent
LISTENING = re.compile(r"chatd listening on ws://(\S+):(\d+)/ \(endpoint ([^)]*)\)")

pytestmark = [pytest.mark.install, pytest.mark.subprocess]

# What pip writes as bin/twistd for Twisted's console_scripts entry point
# ``twistd = twisted.scripts.twistd:run``.
CONSOLE_SCRIPT = """#!{python}
import re
import sys
from twisted.scripts.twistd import run
if __name__ == "__main__":
    sys.argv[0] = re.sub(r"(-script\\.pyw|\\.exe)?$", "", sys.argv[0])
    sys.exit(run())
"""

COPY_IGNORE = shutil.ignore_patterns(
    ".git",
    ".venv",
    "node_modules",
    "miniprogram",
    "bench",
    "build",
    "dist",
    "*.egg-info",
    "__pycache__",
    "*.pyc",
    "dropin.cache",
    ".pytest_cache",
    ".ruff_cache",
    ".hypothesis",
    ".benchmarks",
    "*.pid",
    "*.log",
    "*.sqlite3*",
    "*.so",
)


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


def can_build_offline() -> bool:
    """True when setuptools can build a wheel without pip's isolated build env."""
    if importlib.util.find_spec("wheel") is not None:
        return True
    import setuptools

    major, minor = (int(part) for part in setuptools.__version__.split(".")[:2])
    return (major, minor) >= (70, 1)  # bdist_wheel moved into setuptools in 70.1


@pytest.fixture(scope="module")
def source_tree(tmp_path_factory) -> Path:
    """A copy of the checkout (working tree, not .git), so pip's build files never
    land in the shared tree and the installed code is not found via the repo."""
    dest = tmp_path_factory.mktemp("clone") / "chatd"
    shutil.copytree(ROOT, dest, ignore=COPY_IGNORE)
    return dest


def make_venv(path: Path) -> Path:
    """A virtualenv that sees the machine's site-packages (Twisted, Autobahn, pip)
    and has its own ``bin/twistd``, like a venv where Twisted was pip-installed."""
    subprocess.run(
        [sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(path)],
        check=True,
        timeout=60,
    )
    python = path / "bin" / "python"
    twistd = path / "bin" / "twistd"
    twistd.write_text(CONSOLE_SCRIPT.format(python=python))
    twistd.chmod(0o755)
    return path


def pip_install(venv: Path, *args, cwd: Path) -> subprocess.CompletedProcess:
    """``VENV/bin/python -m pip install --no-deps ARGS``; fails the test with pip's output."""
    flags = ["--no-deps", "--disable-pip-version-check", "--quiet"]
    if can_build_offline():
        flags.append("--no-build-isolation")
    result = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", *flags, *args],
        cwd=cwd,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, f"pip install failed:\n{result.stdout}\n{result.stderr}"
    return result


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

    def start(command, cwd, env):
        proc = TwistdProcess.run(command, cwd, env)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.proc.poll() is None:
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


def run_and_relay(run_twistd, command, cwd, env):
    """Start chatd with *command*, check the logged endpoint, relay, SIGTERM."""
    chatd = run_twistd(command, cwd, env)
    match = LISTENING.search(chatd.log)
    assert match.group(1) == "0.0.0.0" and match.group(3) == "tcp:0", chatd.log
    assert_relay(chatd.port)
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

    where = venv_python(
        venv,
        "import chatd, twisted.plugins.chatd_plugin as p; print(chatd.__file__); print(p.__file__)",
        cwd=elsewhere,
    ).splitlines()
    chatd_file, plugin_file = (Path(line) for line in where)
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
        code = "import chatd.factory as f; print(f._c_send_all())"
        fanout = venv_python(venv, code, cwd=elsewhere)
        assert fanout.startswith("<built-in function send_all>"), fanout

    twistd = venv / "bin" / "twistd"
    assert_help_lists_options(help_text(twistd, elsewhere, clean_env()))
    run_and_relay(run_twistd, [str(twistd), "-n", "chatd", "--port", "0"], elsewhere, clean_env())
