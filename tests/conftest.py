"""Shared fixtures: real chatd servers on loopback, in-process and as twistd subprocesses."""

from __future__ import annotations

import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import defer, reactor

from chatd import tap

ROOT = Path(__file__).resolve().parent.parent
IN_CI = os.environ.get("CI") == "true"
LISTENING = re.compile(r"chatd listening on (?:ws|wss)://[^\s]+:(\d+)/")


def need(binary_or_reason: str, available: bool):
    """Skip when a dependency is missing on a laptop, but fail under CI=true."""
    if available:
        return
    message = f"{binary_or_reason} is not available"
    if IN_CI:
        pytest.fail(message + " (CI=true: a missing dependency is a failure)")
    pytest.skip(message)


def need_binary(name: str) -> str:
    """The path of *name* on PATH, or skip/fail as :func:`need` says."""
    path = shutil.which(name)
    need(name, path is not None)
    return path


def poll(predicate, timeout=10.0, interval=0.02):
    """*predicate*'s first truthy value, tried every *interval* seconds for at most
    *timeout* seconds (blocking: for tests without a reactor); None if it never came.

    Tests wait for a condition under a deadline like this, never for a fixed sleep
    (Twisted tests use :func:`tests.wsclient.wait_for`)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            return None
        time.sleep(interval)


@pytest.fixture(scope="module")
def moto_endpoint():
    """The URL of moto's S3 server on a loopback port (no network), for a module."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture(params=["local", "s3"])
def media_store(request, tmp_path, monkeypatch):
    """An empty :class:`chatd.media.store.IMediaStore`: on local disk (``tmp_path /
    "media"``), and on S3 (moto's server, a bucket of the test's own)."""
    from chatd.media.store import LocalStore, S3Store

    if request.param == "local":
        return LocalStore(str(tmp_path / "media"))
    endpoint = request.getfixturevalue("moto_endpoint")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    bucket = f"chatd-media-{os.urandom(4).hex()}"  # moto's state is per process
    s3 = S3Store(f"s3://{bucket}/uploads/x?endpoint={endpoint}&region=us-east-1")
    s3.client.create_bucket(Bucket=bucket)
    return s3


def wait_until(predicate, what, timeout=10.0, interval=0.02):
    """Like :func:`poll`, but an AssertionError naming *what* when the deadline passes."""
    value = poll(predicate, timeout, interval)
    if not value:
        raise AssertionError(f"timed out after {timeout} s waiting for {what}")
    return value


class InProcessServer:
    """A chatd service running in the test's own reactor."""

    def __init__(self, service):
        self.service = service
        self.factory = service.factory
        self.chat = self.factory.chat
        self.store = service.store
        self.port = service.listeners[0].port.getHost().port
        self.ws_url = f"ws://127.0.0.1:{self.port}"
        self.http_url = f"http://127.0.0.1:{self.port}"

    def gone(self, *clients, timeout=10.0):
        """Fires once chatd has handled the close of every chatd.v1 client in *clients*
        (:class:`tests.wsclient.Client` with a ``welcome``): their sessions are gone, so
        their names, rooms and connection-cap slots are released."""
        from tests.wsclient import wait_for

        sessions = [c.welcome["session"] for c in clients]
        return wait_for(
            lambda: not any(s in self.chat.sessions for s in sessions),
            timeout,
            what=f"chatd to let go of {sessions}",
        )


@defer.inlineCallbacks
def start_server(*args):
    """Parse ``twistd chatd`` options *args*, build and start the service.

    Fires with an :class:`InProcessServer` once it listens. Unless *args*
    name a ``--db``, history is kept in SQLite ``:memory:``.
    """
    if "--db" not in args:
        args = ("--db", ":memory:", *args)
    options = tap.Options()
    options.parseOptions(["--listen", "tcp:0:interface=127.0.0.1", *args])
    service = tap.makeService(options, reactor=reactor)
    service.startService()
    yield service.ready
    return InProcessServer(service)


@pytest_twisted.async_yield_fixture
async def server():
    """A chatd with default options (history in SQLite :memory:) on 127.0.0.1:<free port>."""
    srv = await start_server()
    yield srv
    await srv.service.stopService()


@pytest_twisted.async_yield_fixture
async def server_factory():
    """Start chatd servers with custom options (fires with the server); stopped after the test."""
    started = []

    def start(*args):
        d = start_server(*args)
        d.addCallback(lambda srv: started.append(srv) or srv)
        return d

    yield start
    for srv in started:
        await srv.service.stopService()


#: this Python's twistd (``-m twisted.scripts.twistd`` does nothing: no ``__main__``)
TWISTD = [
    sys.executable,
    "-c",
    "import sys; from twisted.scripts.twistd import run; sys.exit(run())",
]
#: the start-up line: group 1 the URL, group 2 the endpoint description
LISTENING_LINE = re.compile(r"chatd listening on (\S+) \(endpoint ([^)]*)\)")


def chatd_env(**extra) -> dict:
    """The environment with the checkout on PYTHONPATH (chatd is not installed)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


class TwistdProcess:
    """``twistd -n chatd ARGS`` (this Python's twistd, the checkout's chatd) as a child
    process; knows the port it logged. :meth:`run` starts any other command line."""

    def __init__(self, args, cwd=None, env=None, twistd=None, timeout=20):
        self._spawn(
            [*(twistd or TWISTD), "-n", "chatd", *args], cwd, chatd_env(**(env or {})), timeout
        )

    @classmethod
    def run(cls, command, cwd, env, timeout=30, start_new_session=False):
        """Start *command* (e.g. a venv's ``twistd -n chatd …``) with exactly *env*; with
        *start_new_session* in a process group of its own (stop it with ``os.killpg``)."""
        proc = cls.__new__(cls)
        proc._spawn(command, cwd, env, timeout, start_new_session)
        return proc

    def _spawn(self, command, cwd, env, timeout, start_new_session=False):
        self.log_lines = []
        self.proc = subprocess.Popen(
            command,
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=start_new_session,
        )
        self.port = None
        self.url = None
        # one thread reads the log from the start, so a server that prints nothing (or
        # hangs before its listening line) fails after *timeout* instead of blocking
        # the test in readline()
        self._lines: queue.Queue = queue.Queue()
        self._drain = threading.Thread(target=self._read_all, daemon=True)
        self._drain.start()
        deadline = time.monotonic() + timeout
        while self.url is None:
            try:
                line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if line is None:  # end of output: the process exited
                break
            match = LISTENING_LINE.search(line)
            if match:
                self.url = match.group(1)
                tcp = LISTENING.search(line)
                self.port = int(tcp.group(1)) if tcp else None  # None for unix sockets
        if self.url is None:
            self.stop()
            raise RuntimeError("chatd did not start:\n" + "".join(self.log_lines))
        self.ws_url = f"ws://127.0.0.1:{self.port}"
        self.http_url = f"http://127.0.0.1:{self.port}"

    def _read_all(self):
        for line in self.proc.stdout:
            self.log_lines.append(line)
            if self.url is None:
                self._lines.put(line)
        self._lines.put(None)

    def stop(self, sig=signal.SIGTERM, timeout=15):
        """Signal the process and wait; returns its exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        drain = getattr(self, "_drain", None)
        if drain is not None:
            drain.join(timeout=5)
        return self.proc.returncode

    @property
    def log(self) -> str:
        return "".join(self.log_lines)

    def wait_log(self, text, count=1, timeout=10.0) -> bool:
        """Wait (at most *timeout* s) until *text* is in the log *count* times; whether
        it got there."""
        return poll(lambda: self.log.count(text) >= count, timeout) is not None


@pytest.fixture
def twistd_factory(tmp_path):
    """Start ``twistd -n chatd`` subprocesses; each is stopped after the test."""
    procs = []

    def start(*args, **kwargs):
        kwargs.setdefault("cwd", tmp_path)
        proc = TwistdProcess(list(args), **kwargs)
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        proc.stop(signal.SIGKILL if proc.proc.poll() is None else signal.SIGTERM)


@pytest.fixture
def chatd_process(twistd_factory):
    """One ``twistd -n chatd --listen tcp:0:interface=127.0.0.1`` subprocess."""
    return twistd_factory("--listen", "tcp:0:interface=127.0.0.1")


CHROMIUM = os.environ.get("CHATD_CHROMIUM", "/usr/bin/chromium")
#: Debian's chromium, headless, with nothing that reaches out to the network
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def browser():
    """One headless Chromium per test module, driven by Playwright's sync API (no download)."""
    need(CHROMIUM, os.path.exists(CHROMIUM) or shutil.which(CHROMIUM) is not None)
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        need("the playwright Python package", False)
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()
