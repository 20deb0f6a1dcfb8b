"""SIGTERM and SIGINT handled from the main loop (see :func:`defer_stop_signals`)."""

from __future__ import annotations

import signal


def defer_stop_signals(reactor) -> dict:
    """Make SIGTERM and SIGINT run the reactor's own handlers (``sigTerm``,
    ``sigInt``) from the main loop instead of inside the signal handler; returns
    the handlers they replace.

    Twisted's handlers log ("Received SIGTERM, shutting down.") right inside the
    interrupted frame. twistd's file log observer is guarded by a pure-Python
    RLock (twisted.python.threadable), so a signal landing between that lock's
    acquire and its owner being recorded made the handler's log call wait for a
    lock its own thread held: the daemon hung instead of stopping (caught with
    py-spy, about one stop in 300). Scheduling the handler with callFromThread
    (what Twisted's handler itself does to stop) keeps the log call out of the
    interrupted frame.

    Only the first stop signal stops the reactor: a second SIGTERM or ^C while
    chatd is shutting down (systemd, a shell's process group, an impatient user)
    would make Twisted's handler call ``reactor.stop()`` again and log a
    ``ReactorNotRunning`` traceback; it is ignored instead.
    """
    previous = {}
    stopping = []

    def stop_once(handler, number):
        if not stopping:
            stopping.append(number)
            handler(number, None)

    for signum, name in ((signal.SIGTERM, "sigTerm"), (signal.SIGINT, "sigInt")):
        handler = getattr(reactor, name, None)
        if handler is not None:

            def on_signal(number, frame, handler=handler):
                reactor.callFromThread(stop_once, handler, number)

            previous[signum] = signal.signal(signum, on_signal)
    return previous
