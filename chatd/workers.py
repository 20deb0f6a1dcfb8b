"""``--workers N``: one chatd on every core of a machine.

The parent process (the one twistd runs) binds every ``--listen`` endpoint itself,
stops accepting on them, and starts N worker processes that **share those sockets**:
each worker is ``twistd -n chatd`` with the same options plus ``--worker-fds``,
adopts the inherited listening sockets (``reactor.adoptStreamPort``) and is a full
chatd node on the ``--redis`` bus; the kernel spreads new connections over the
workers accepting on the same socket. The parent

* supervises: a worker that exits while chatd runs is started again (after 0.5 s,
  doubling to 30 s while workers keep dying within a minute of their start);
* forwards SIGHUP (reload) to every worker; on shutdown (SIGTERM/SIGINT) sends
  SIGTERM to every worker, waits for them (each closes its connections with 1001
  and flushes), and SIGKILLs stragglers after ``--close-timeout`` + 10 s;
* tells systemd ``READY=1`` (with its own ``MAINPID``) once every worker listens
  and its store is open, ``STOPPING=1`` when it begins to stop. Workers run without
  ``NOTIFY_SOCKET`` and report readiness to the parent over a pipe.

``--metrics-listen`` is per worker: worker *i* serves ``/metrics`` on the given
TCP port + *i* (a ``unix:`` path gets ``.i`` appended), so each can be scraped.
Without ``--redis`` the workers could not see each other's rooms: ``--workers``
above 1 is refused (:func:`check`).
"""

from __future__ import annotations

import os
import signal
import socket
import sys

from twisted.application.service import Service
from twisted.internet import abstract, defer, fdesc, protocol
from twisted.internet.endpoints import serverFromString
from twisted.logger import Logger

from chatd.service import describe_address

#: the environment variable naming a worker's readiness pipe (a file descriptor)
READY_FD = "CHATD_WORKER_READY_FD"
#: a worker that ran at least this long before it exited restarts without delay growth
STABLE = 60.0
RESTART_DELAY = 0.5
RESTART_DELAY_MAX = 30.0
#: started in each worker: twistd's own entry point (works wherever chatd's plugin does)
BOOT = "import sys; from twisted.scripts.twistd import run; sys.argv[0] = 'twistd'; run()"


def check(options) -> str | None:
    """Why ``--workers`` cannot be used with these options, or None."""
    if options["workers"] <= 1 or options["worker-fds"]:
        return None
    if options["redis"] is None:
        return (
            "--workers above 1 needs --redis: each worker is a full chatd node, and only "
            "the Redis bus lets workers share rooms, history, presence and names "
            "(without it a client would see only the clients of its own worker)"
        )
    for description in options["listen"]:
        if description.split(":", 1)[0] not in ("tcp", "tcp6", "unix", "systemd", "ssl"):
            return f"--workers cannot share the endpoint {description!r} (tcp, ssl, unix, systemd only)"
    return None


def worker_argv(raw: list[str], fds: list[int], index: int) -> list[str]:
    """The chatd arguments of worker *index*: the parent's own (*raw*, as given to
    ``twistd chatd``) without ``--workers``, then ``--workers 1`` (beats a config
    file's value) and the inherited listening sockets."""
    out, skip = [], False
    for arg in raw:
        if skip:
            skip = False
            continue
        if arg == "--workers":
            skip = True
            continue
        if arg.startswith("--workers="):
            continue
        out.append(arg)
    return [
        *out,
        "--workers",
        "1",
        "--worker-fds",
        ",".join(str(fd) for fd in fds),
        "--worker-index",
        str(index),
    ]


def metrics_description(description: str | None, index: int) -> str | None:
    """``--metrics-listen`` for worker *index*: TCP port + index, a unix path + ``.index``."""
    if not description:
        return description
    kind, _, rest = description.partition(":")
    if kind in ("tcp", "tcp6"):
        port, sep, tail = rest.partition(":")
        if port.isdigit() and int(port) != 0:
            return f"{kind}:{int(port) + index}{sep}{tail}"
        return description
    if kind == "unix":
        path, sep, tail = rest.partition(":")
        return f"unix:{path}.{index}{sep}{tail}"
    return description


def socket_family(fd: int) -> int:
    """The address family of the listening socket *fd* (without closing it)."""
    sock = socket.socket(fileno=os.dup(fd))
    try:
        return sock.family
    finally:
        sock.close()


def adopt(reactor, description: str, fd: int, factory):
    """Listen on the inherited socket *fd* (made by the parent from *description*):
    an ``ssl:`` description's TLS context wraps *factory*."""
    if description.split(":", 1)[0] == "ssl":
        from twisted.protocols.tls import TLSMemoryBIOFactory

        endpoint = serverFromString(reactor, description)
        factory = TLSMemoryBIOFactory(endpoint._sslContextFactory, False, factory)
    return reactor.adoptStreamPort(fd, socket_family(fd), factory)


def ready_hook(environ=None):
    """In a worker: a callable telling the parent this worker serves (or None)."""
    environ = os.environ if environ is None else environ
    fd = environ.get(READY_FD)
    if not fd:
        return None

    def ready():
        try:
            os.write(int(fd), b"READY\n")
            os.close(int(fd))
        except OSError:
            pass

    return ready


class ParentWatch(abstract.FileDescriptor):
    """In a worker: stdin is a pipe from the parent, which never writes to it. Its end
    (EOF: the parent is gone, even by SIGKILL) stops this worker, so no worker outlives
    its parent holding the sockets and the Redis connections."""

    def __init__(self, reactor, on_gone, fd=0):
        super().__init__(reactor)
        self.fd = fd
        self.on_gone = on_gone
        fdesc.setNonBlocking(fd)

    def fileno(self):
        return self.fd

    def doRead(self):  # noqa: N802 (Twisted's name)
        return fdesc.readFromFD(self.fd, lambda _data: None)

    def connectionLost(self, reason):  # noqa: N802 (Twisted's name)
        abstract.FileDescriptor.connectionLost(self, reason)
        self.on_gone()


def watch_parent(reactor, log=None):
    """Stop *reactor* (a clean shutdown) when the ``--workers`` parent is gone."""

    def gone():
        (log or Logger()).warn("the --workers parent is gone: stopping this worker")
        if reactor.running:
            reactor.stop()

    watch = ParentWatch(reactor, gone)
    watch.startReading()
    return watch


class _Refuse(protocol.Factory):
    """The parent never accepts: its ports stop reading at once."""

    noisy = False

    def buildProtocol(self, addr):  # noqa: N802 (Twisted's name)
        return None


class _Worker(protocol.ProcessProtocol):
    def __init__(self, supervisor, index, ready_fd):
        self.supervisor = supervisor
        self.index = index
        self.ready_fd = ready_fd
        self.ended = defer.Deferred()
        self.started_at = supervisor.reactor.seconds()

    def childDataReceived(self, fd, data):  # noqa: N802 (Twisted's name)
        if fd == self.ready_fd and b"READY" in data:
            self.supervisor.worker_ready(self)

    def processEnded(self, reason):  # noqa: N802 (Twisted's name)
        self.supervisor.worker_ended(self, reason)
        self.ended.callback(None)


class Supervisor(Service):
    """The parent of ``--workers N`` (see the module docstring)."""

    log = Logger()

    def __init__(self, options, reactor, notifier, raw_argv, environ=None, executable=None):
        self.options = options
        self.reactor = reactor
        self.notifier = notifier
        self.raw_argv = list(raw_argv)
        self.environ = dict(os.environ if environ is None else environ)
        self.executable = executable or sys.executable
        self.count = options["workers"]
        self.ports = []
        self.workers: dict[int, _Worker] = {}
        self.ready: set[int] = set()
        self.announced = False
        self.stopping = False
        self._delays = [RESTART_DELAY] * self.count
        self._restarts = {}
        self._old_hup = None

    def startService(self):  # noqa: N802 (Twisted's name)
        super().startService()
        for description in self.options["listen"]:
            failure = []
            d = serverFromString(self.reactor, description).listen(_Refuse())
            d.addCallbacks(self.ports.append, failure.append)
            if failure:
                failure[0].raiseException()
        for port, description in zip(self.ports, self.options["listen"], strict=True):
            port.stopReading()  # the workers accept; the parent only holds the socket
            self.log.info(
                "chatd listening on {url} (endpoint {description}) for {n} workers",
                url=describe_address(description, port.getHost()),
                description=description,
                n=self.count,
                startup=True,
            )
        self._old_hup = signal.signal(signal.SIGHUP, self._on_hup)
        for index in range(self.count):
            self._spawn(index)

    def _on_hup(self, signum, frame):
        self.reactor.callFromThread(self.forward, signal.SIGHUP)

    def forward(self, signum) -> None:
        """Send *signum* to every running worker."""
        for worker in list(self.workers.values()):
            if worker.transport is not None and worker.transport.pid is not None:
                worker.transport.signalProcess(signum)

    def _spawn(self, index: int) -> None:
        fds = [port.fileno() for port in self.ports]
        ready_fd = max([2, *fds]) + 1
        env = {
            k: v
            for k, v in self.environ.items()
            if not k.startswith(("NOTIFY_SOCKET", "WATCHDOG_"))
        }
        env[READY_FD] = str(ready_fd)
        twistd = ["-n", "--pidfile="]
        parent = getattr(self.options, "parent", None)
        logfile = parent.get("logfile") if parent is not None else None
        if logfile and logfile != "-":
            twistd.append(f"--logfile={logfile}")
        args = [
            self.executable,
            "-c",
            BOOT,
            *twistd,
            "chatd",
            *worker_argv(self.raw_argv, fds, index),
        ]
        child_fds = {0: "w", 1: 1, 2: 2, ready_fd: "r"}
        for fd in fds:
            child_fds[fd] = fd
        worker = _Worker(self, index, ready_fd)
        self.workers[index] = worker
        self.reactor.spawnProcess(worker, self.executable, args, env=env, childFDs=child_fds)
        self.log.info("worker {index} started (pid {pid})", index=index, pid=worker.transport.pid)

    def worker_ready(self, worker: _Worker) -> None:
        self.ready.add(worker.index)
        self.log.info("worker {index} ready", index=worker.index)
        if not self.announced and len(self.ready) == self.count:
            self.announced = True
            urls = ", ".join(
                describe_address(d, p.getHost())
                for d, p in zip(self.options["listen"], self.ports, strict=True)
            )
            self.log.info("all {n} workers ready", n=self.count, startup=True)
            self.notifier.ready(f"{self.count} workers listening on {urls}")

    def worker_ended(self, worker: _Worker, reason) -> None:
        if self.workers.get(worker.index) is worker:
            del self.workers[worker.index]
        self.ready.discard(worker.index)
        if self.stopping:
            return
        ran = self.reactor.seconds() - worker.started_at
        index = worker.index
        if ran >= STABLE:
            self._delays[index] = RESTART_DELAY
        delay = self._delays[index]
        self._delays[index] = min(RESTART_DELAY_MAX, delay * 2)
        self.log.warn(
            "worker {index} exited ({reason}); starting it again in {delay} s",
            index=index,
            reason=reason.getErrorMessage(),
            delay=delay,
        )
        self._restarts[index] = self.reactor.callLater(delay, self._restart, index)

    def _restart(self, index):
        self._restarts.pop(index, None)
        if not self.stopping:
            self._spawn(index)

    @defer.inlineCallbacks
    def stopService(self):  # noqa: N802 (Twisted's name)
        super().stopService()
        self.stopping = True
        self.notifier.stopping()
        for call in self._restarts.values():
            if call.active():
                call.cancel()
        self._restarts.clear()
        if self._old_hup is not None:
            signal.signal(signal.SIGHUP, self._old_hup)
        ended = [w.ended for w in self.workers.values()]
        self.forward(signal.SIGTERM)
        grace = self.options["settings"].close_timeout + 10
        kill = self.reactor.callLater(grace, self.forward, signal.SIGKILL)
        yield defer.DeferredList(ended)
        if kill.active():
            kill.cancel()
        for port in self.ports:
            yield defer.maybeDeferred(port.stopListening)
        self.ports = []
