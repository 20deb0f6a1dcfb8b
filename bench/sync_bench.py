"""Server time of one ``sync`` (issue 14: after missing 50 messages in each of 200
conversations, <= 50 ms), in-process: the real :class:`chatd.chat.Chat` on a real
SQLite file (``synchronous`` FULL), a connection that records what it is sent.

A token user ``me`` is a member of ``--conversations`` rooms with ``--before`` messages
each; a first ``sync`` gives the cursor; then ``--missed`` messages are stored in every
room; then ``sync {since: cursor}`` is asked ``--repeats`` times (the same cursor each
time). Each figure is the time from handing the request to the realm until the reply
frame reached the connection (store reads, the cursor write and its commit, JSON
encoding): p50/p99/max ms, the process's CPU time per sync (p50; both threads, so
less disturbed by other processes than the wall time), and the reply's size. One
JSON line.

    PYTHONPATH=. python3 bench/sync_bench.py [--conversations 200 --missed 50]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

from twisted.internet import defer, task

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from conversation_store_bench import _bulk, _event  # noqa: E402
from history_store_bench import _percentile  # noqa: E402

from chatd.auth import Identity  # noqa: E402
from chatd.chat import V1  # noqa: E402
from chatd.service import build_chat  # noqa: E402
from chatd.settings import Settings  # noqa: E402
from chatd.store.sqlite import SQLiteStore  # noqa: E402
from tests.support.realm import Conn, Fanout  # noqa: E402


class Recorder(Conn):
    """A connection that keeps each frame it is sent (tests/support/realm.py), and
    wakes whoever waits for a ``sync`` reply."""

    waiting: defer.Deferred | None = None

    def send(self, payload: bytes) -> None:
        super().send(payload)
        if self.waiting is not None and payload.startswith(b'{"type":"sync"'):
            d, self.waiting = self.waiting, None
            d.callback(payload)


@defer.inlineCallbacks
def run(reactor, args, path):
    store = SQLiteStore(path, reactor=reactor, prune_interval=None, history_max=None)
    yield store.start()
    try:
        rooms = [f"room{i:04d}" for i in range(args.conversations)]
        yield _bulk(lambda r=r: _event(store, r, "joined", "me", 1) for r in rooms)
        ts = [10]

        def fill(count):
            def one(room, k):
                ts[0] += 1
                return store.append(room, "other", "O", None, f"message {k} " + "x" * 40, ts[0])

            return _bulk(lambda r=r, k=k: one(r, k) for r in rooms for k in range(count))

        yield fill(args.before)
        chat = build_chat(store, Fanout(), Settings(), reactor)
        conn = Recorder()
        conn.session = chat.open(conn, V1, None, identity=Identity("me", "me", None))

        def ask(since=None):
            conn.waiting = d = defer.Deferred()
            frame = {"type": "sync"} if since is None else {"type": "sync", "since": since}
            started, cpu = time.perf_counter(), time.process_time()
            chat.receive(conn.session, json.dumps(frame).encode(), False)
            return d.addCallback(
                lambda payload: (
                    time.perf_counter() - started,
                    time.process_time() - cpu,
                    payload,
                )
            )

        _, _, first = yield ask()
        cursor = json.loads(first)["cursor"]
        yield fill(args.missed)
        times, cpus, size, reply = [], [], 0, None
        for _ in range(args.repeats):
            elapsed, cpu, payload = yield ask(cursor)
            times.append(elapsed)
            cpus.append(cpu)
            size, reply = len(payload), json.loads(payload)
        convs = reply["conversations"]
        assert not reply["reset"], "the cursor was not found"
        missed = [len(c["items"]) for c in convs]
        times.sort()
        cpus.sort()
        return {
            "bench": "sync",
            "conversations": len(convs),
            "items_min": min(missed),
            "items_max": max(missed),
            "more": reply["more"],
            "reply_bytes": size,
            "p50_ms": round(_percentile(times, 0.5) * 1000, 2),
            "p99_ms": round(_percentile(times, 0.99) * 1000, 2),
            "max_ms": round(times[-1] * 1000, 2),
            # the process's CPU (both threads) per sync: robust to other processes
            "cpu_p50_ms": round(_percentile(cpus, 0.5) * 1000, 2),
            "repeats": args.repeats,
            "target_ms": 50,
        }
    finally:
        yield store.stop()


@defer.inlineCallbacks
def main(reactor, argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--conversations", type=int, default=200)
    p.add_argument("--before", type=int, default=10, help="messages before the cursor")
    p.add_argument("--missed", type=int, default=50, help="messages after the cursor")
    # (each sync stores a cursor and a user keeps the newest CURSORS_KEPT = 16: the
    # first cursor must still be there at the last repeat)
    p.add_argument("--repeats", type=int, default=12, choices=range(1, 16))
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        result = yield run(reactor, args, os.path.join(tmp, "sync.db"))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    task.react(main)
