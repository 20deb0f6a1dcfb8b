"""The longest reactor turn of a benchmarked chatd, measured inside it.

Imported before twistd runs (``bench/media_bench.py`` starts chatd with it): once
the reactor runs, a timer asks to be called every :data:`TICK` seconds and
records how late each call comes -- a call is late by as long as the reactor was
busy with something else (one turn, or several back to back). Every
:data:`WINDOW` seconds it appends ``{"t": wall time, "max_ms": the latest call of
the window, "late_5ms": calls more than 5 ms late, "ticks": calls}`` as one JSON
line to the file named by ``CHATD_REACTOR_PROBE``.
"""

from __future__ import annotations

import json
import os
import time

from twisted.internet import reactor

TICK = 0.005
WINDOW = 0.5


class Probe:
    def __init__(self, path: str):
        self.path = path
        self.reset()

    def reset(self):
        self.start = time.monotonic()
        self.worst = 0.0
        self.late = 0
        self.ticks = 0

    def run(self):
        self.due = time.monotonic() + TICK
        reactor.callLater(TICK, self.tick)

    def tick(self):
        now = time.monotonic()
        lateness = max(0.0, now - self.due)
        self.worst = max(self.worst, lateness)
        self.late += lateness > 0.005
        self.ticks += 1
        if now - self.start >= WINDOW:
            line = {
                "t": time.time(),
                "max_ms": round(self.worst * 1000, 2),
                "late_5ms": self.late,
                "ticks": self.ticks,
            }
            with open(self.path, "a") as f:
                f.write(json.dumps(line) + "\n")
            self.reset()
        self.due = now + TICK
        reactor.callLater(TICK, self.tick)


def read(path: str, start: float, stop: float) -> dict:
    """The probe's windows between wall times *start* and *stop*: the longest lateness
    (ms) and how many calls were more than 5 ms late."""
    rows = []
    try:
        with open(path) as f:
            rows = [json.loads(line) for line in f if line.strip()]
    except FileNotFoundError:
        pass
    rows = [r for r in rows if start <= r["t"] <= stop + WINDOW]
    if not rows:
        return {}
    return {
        "longest_turn_ms": max(r["max_ms"] for r in rows),
        "late_5ms": sum(r["late_5ms"] for r in rows),
        "ticks": sum(r["ticks"] for r in rows),
    }


if os.environ.get("CHATD_REACTOR_PROBE"):
    reactor.callWhenRunning(Probe(os.environ["CHATD_REACTOR_PROBE"]).run)
