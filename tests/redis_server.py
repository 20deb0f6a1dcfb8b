"""A private ``redis-server`` for tests: a child process on a free loopback port.

No persistence by default (``--save "" --appendonly no``); ``appendonly=True``
turns on AOF with ``appendfsync always`` in the test's directory, so a
restart (even after SIGKILL) keeps every acknowledged write.
"""

from __future__ import annotations

import socket
import subprocess

from tests.conftest import need_binary, poll


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """``redis-server`` on 127.0.0.1:*port*; :meth:`start`/:meth:`kill` can repeat."""

    def __init__(self, directory, port=None, appendonly=False):
        self.binary = need_binary("redis-server")
        self.directory = str(directory)
        self.port = port or free_port()
        self.appendonly = appendonly
        self.proc = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout=10):
        """Start the server and wait until it answers PING."""
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        args += ["--dir", self.directory]
        if self.appendonly:
            args += ["--appendonly", "yes", "--appendfsync", "always"]
        else:
            args += ["--appendonly", "no"]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if poll(self._answers_ping, timeout, 0.05):
            return self
        self.kill()
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def _answers_ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                return s.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def kill(self):
        """SIGKILL the server and wait for it."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None
