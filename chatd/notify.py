"""systemd readiness (``Type=notify``): ``sd_notify`` in a few lines, no dependency.

systemd passes the address of a datagram socket in ``NOTIFY_SOCKET`` (a path,
or ``@name`` for the abstract namespace); a service writes newline-separated
``KEY=value`` assignments to it: ``READY=1`` once it serves, ``STOPPING=1``
when it begins to shut down, ``WATCHDOG=1`` every so often when the unit sets
``WatchdogSec=`` (systemd then passes ``WATCHDOG_USEC``, and ``WATCHDOG_PID``
naming the process meant to send them).

Without ``NOTIFY_SOCKET`` (not under systemd) every call is a no-op.
"""

from __future__ import annotations

import os
import socket

from twisted.internet.task import LoopingCall
from twisted.logger import Logger

log = Logger()


def notify(state: str, environ=None) -> bool:
    """Send *state* (e.g. ``"READY=1\\nSTATUS=listening"``) to ``NOTIFY_SOCKET``.

    Returns whether a datagram was sent. Failures are logged, never raised: a
    broken notification socket must not take the chat server down.
    """
    environ = os.environ if environ is None else environ
    address = environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(state.encode("utf-8"))
    except OSError as e:
        log.warn("sd_notify to {address} failed: {error}", address=address, error=e)
        return False
    return True


def watchdog_interval(environ=None) -> float | None:
    """Seconds between ``WATCHDOG=1`` pings (half of ``WATCHDOG_USEC``), or None.

    None when the unit has no ``WatchdogSec=`` or ``WATCHDOG_PID`` names
    another process.
    """
    environ = os.environ if environ is None else environ
    usec = environ.get("WATCHDOG_USEC")
    if not usec or not environ.get("NOTIFY_SOCKET"):
        return None
    pid = environ.get("WATCHDOG_PID")
    if pid and pid != str(os.getpid()):
        return None
    try:
        seconds = int(usec) / 1e6
    except ValueError:
        return None
    return seconds / 2 if seconds > 0 else None


class Notifier:
    """READY/STOPPING/WATCHDOG for one chatd process."""

    def __init__(self, clock, environ=None):
        self.clock = clock
        self.environ = os.environ if environ is None else environ
        self._watchdog: LoopingCall | None = None

    def ready(self, status: str) -> None:
        """Say chatd is serving; start the watchdog pings if the unit asks for them."""
        notify(f"READY=1\nSTATUS={status}\nMAINPID={os.getpid()}", self.environ)
        interval = watchdog_interval(self.environ)
        if interval is not None and self._watchdog is None:
            self._watchdog = LoopingCall(notify, "WATCHDOG=1", self.environ)
            self._watchdog.clock = self.clock
            self._watchdog.start(interval, now=True)

    def reloading(self) -> None:
        """Say a configuration reload began (systemd shows 'reloading')."""
        notify("RELOADING=1", self.environ)

    def reloaded(self, status: str) -> None:
        """Say the reload is done."""
        notify(f"READY=1\nSTATUS={status}", self.environ)

    def stopping(self) -> None:
        """Say chatd is shutting down; stop the watchdog pings."""
        if self._watchdog is not None and self._watchdog.running:
            self._watchdog.stop()
        self._watchdog = None
        notify("STOPPING=1\nSTATUS=shutting down", self.environ)
