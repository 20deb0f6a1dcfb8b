"""What one chatd process does once it is up and when it begins to stop.

:class:`Lifecycle` is built by ``makeService`` and called by
:class:`chatd.service.ChatService`:

* once chatd listens and its store is open (:meth:`Lifecycle.started`): under
  twistd, SIGHUP reloads the configuration (:class:`chatd.reload.Reloader`) and
  SIGTERM/SIGINT are handled from the main loop (:mod:`chatd.signals`); systemd
  hears ``READY=1`` (and watchdog pings start);
* when it begins to stop (:meth:`Lifecycle.stopping`): ``STOPPING=1``, ``/readyz``
  answers 503 (:class:`chatd.readiness.Readiness`), webhook retries stop;
* twistd's log observer: :meth:`Lifecycle.log_observer` (chatd/logs.py).
"""

from __future__ import annotations

from chatd.signals import defer_stop_signals


class Lifecycle:
    """The start and stop hooks of one process (see the module docstring).

    *twistd* is twistd's own parsed options when running under twistd (the parent
    of chatd's options), else None (a service built in-process, e.g. by the tests):
    then no signal handler is touched and twistd's default log observer stays.
    """

    def __init__(self, notifier, readiness, reloader, webhooks, logs, reactor, twistd=None):
        self.notifier = notifier
        self.readiness = readiness
        self.reloader = reloader
        self.webhooks = webhooks
        self.logs = logs
        self.reactor = reactor
        self.twistd = twistd

    def starting(self) -> None:
        """The service starts, before any endpoint listens: SIGHUP reloads from now on
        (under twistd). SIGHUP's default action would end the process, and a client
        (or systemd, the moment it hears READY=1) may ask for a reload as soon as
        chatd answers, which can be before the store is open."""
        if self.twistd is not None:
            self.reloader.listen()

    def started(self, service) -> None:
        """chatd listens and its store is open: stop signals wait for a drain (under
        twistd); READY=1."""
        if self.twistd is not None:
            defer_stop_signals(self.reactor)
        urls = ", ".join(listener.description for listener in service.listeners)
        self.notifier.ready(f"listening on {urls}")

    def stopping(self, service) -> None:
        """Shutdown began: STOPPING=1, /readyz says 503, webhooks stop retrying."""
        self.readiness.stopping = True
        self.notifier.stopping()
        self.reloader.stop_listening()
        self.webhooks.stop()

    def log_observer(self):
        """The observer to put on twistd's application, or None for twistd's default."""
        if self.twistd is None or self.twistd.get("syslog"):
            return None
        if not self.logs.wanted():
            return None
        return self.logs.observer(self.twistd)
