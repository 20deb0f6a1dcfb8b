"""A private ``redis-server`` for tests: a child process on a free loopback port.

No persistence by default (``--save "" --appendonly no``); ``appendonly=True``
turns on AOF with ``appendfsync always`` in the test's directory, so a
restart (even after SIGKILL) keeps every acknowledged write. ``password`` sets
``requirepass``; ``tls=(cert, key, ca)`` (PEM files) serves TLS only, on the port
(``--tls-port``, no plain port), and :attr:`RedisServer.url` is then a ``rediss://``
URL trusting *ca* (``tls_ca``).
"""

from __future__ import annotations

import socket
import ssl
import subprocess
from urllib.parse import quote

from tests.conftest import need_binary, poll


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """``redis-server`` on 127.0.0.1:*port*; :meth:`start`/:meth:`kill` can repeat."""

    def __init__(self, directory, port=None, appendonly=False, password=None, tls=None):
        self.binary = need_binary("redis-server")
        self.directory = str(directory)
        self.port = port or free_port()
        self._may_move = port is None  # a port we chose may move until the first start
        self.appendonly = appendonly
        self.password = password
        self.tls = tls
        self.proc = None

    @property
    def url(self) -> str:
        auth = f":{quote(self.password, safe='')}@" if self.password is not None else ""
        if self.tls is not None:
            return f"rediss://{auth}127.0.0.1:{self.port}/0?tls_ca={self.tls[2]}"
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self, timeout=10, attempts=5):
        """Start the server and wait until it answers PING."""
        if self.tls is not None:
            cert, key, ca = self.tls
            args = [self.binary, "--port", "0", "--tls-port", str(self.port)]
            args += ["--tls-cert-file", cert, "--tls-key-file", key, "--tls-ca-cert-file", ca]
            args += ["--tls-auth-clients", "no"]
        else:
            args = [self.binary, "--port", str(self.port)]
        args += ["--bind", "127.0.0.1", "--save", "", "--dir", self.directory]
        if self.password is not None:
            args += ["--requirepass", self.password]
        if self.appendonly:
            args += ["--appendonly", "yes", "--appendfsync", "always"]
        else:
            args += ["--appendonly", "no"]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        proc = self.proc
        if poll(lambda: proc.poll() is not None or self._answers_ping(), timeout, 0.05):
            if proc.poll() is None:
                self._may_move = False
                return self
            if self._may_move and attempts > 1:
                # Someone took the port between free_port() and the bind: take another.
                self.port = free_port()
                return self.start(timeout, attempts - 1)
        self.kill()
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def _answers_ping(self) -> bool:
        """Whether it answers a PING (or refuses it for want of the password)."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                if self.tls is not None:
                    context = ssl.create_default_context(cafile=self.tls[2])
                    s = context.wrap_socket(s, server_hostname="127.0.0.1")
                s.sendall(b"PING\r\n")
                return s.recv(64).startswith((b"+PONG", b"-NOAUTH"))
        except OSError:
            return False

    def kill(self):
        """SIGKILL the server and wait for it."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None
