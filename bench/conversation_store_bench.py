"""Benchmark of the SQLite store's conversation side (issue 14); one JSON line per part.

Parts (each on its own store file, ``synchronous`` as chosen, default FULL):

``mark_read``
    ``--readers`` users of one room: rounds of one ``mark_read`` per user, all in
    flight at once, each moving that user's marker one seq forward (so each is a
    real write), for ``--seconds``: markers persisted per second (target >= 20,000/s; they are
    group-committed like appends).
``conversations``
    a user who is a member of ``--rooms`` rooms (1,000), each with a few messages,
    some mentioning the user: ``conversation_page(user, 0, 50)`` as one list request
    does; p50/p99 ms (target p99 <= 10 ms) and the process CPU of it (``cpu_p50_ms``,
    robust to other processes on the machine); ``composed``: ``conversations(user)`` +
    ``summaries(user, the first 50)``, what the request did before (and
    ``conversations_all``: the first alone, which ``sync`` reads).
``catch_up``
    ``--channels`` channels (200) with 50 items the user has not read: one
    ``replay(channel, read_seq, 50)`` per channel, all at once; total ms
    (target <= 50 ms).
``members``
    a room of ``--members`` members (10,000): ``members(room, after, 100)`` at the
    start, the middle and the end, and ``member_count``; p50/p99 ms.

Run: ``PYTHONPATH=. python bench/conversation_store_bench.py`` (about half a
minute, most of it writing the data); ``--parts``, ``--seconds``,
``--synchronous`` and ``--dir`` change it.
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

from history_store_bench import _percentile  # noqa: E402

from chatd.store.sqlite import SQLiteStore  # noqa: E402

PARTS = ("mark_read", "conversations", "catch_up", "members")


def _event(store, room, event, user, ts):
    return store.append(room, user, user, None, "", ts, "event", {"event": event, "user": user})


@defer.inlineCallbacks
def _bulk(calls, in_flight=500):
    """Run the Deferred-returning *calls* with up to *in_flight* at once (group commit)."""
    pending = []
    for call in calls:
        pending.append(call())
        if len(pending) >= in_flight:
            yield defer.gatherResults(pending)
            pending = []
    yield defer.gatherResults(pending)


def _ms(values):
    values = sorted(values)
    return {
        "p50_ms": round(_percentile(values, 0.5) * 1000, 3),
        "p99_ms": round(_percentile(values, 0.99) * 1000, 3),
    }


@defer.inlineCallbacks
def bench_mark_read(store, args):
    n, msgs = args.readers, 2000
    yield _bulk(lambda u=u: _event(store, "r", "joined", f"u{u:04d}", u) for u in range(n))
    yield _bulk(lambda i=i: store.append("r", "w", "W", None, "m", 10_000 + i) for i in range(msgs))
    commits0 = store.commits
    done = 0
    stop_at = time.perf_counter() + args.seconds
    t0 = time.perf_counter()
    seq = n
    # rounds: every reader's marker one seq forward, all in flight at once (as the
    # read frames of many connections arrive), until the time is up
    while time.perf_counter() < stop_at and seq < n + msgs:
        seq += 1
        yield defer.gatherResults([store.mark_read(f"u{u:04d}", "r", seq) for u in range(n)])
        done += n
    elapsed = time.perf_counter() - t0
    commits = store.commits - commits0
    return {
        "marks": done,
        "marks_per_s": round(done / elapsed),
        "commits": commits,
        "mean_batch": round(done / max(commits, 1), 1),
        "target_per_s": 20000,
    }


@defer.inlineCallbacks
def bench_conversations(store, args):
    rooms = [f"room{i:04d}" for i in range(args.rooms)]
    yield _bulk(lambda r=r: _event(store, r, "joined", "me", 1) for r in rooms)
    sends = []
    for i, r in enumerate(rooms):
        for k in range(3):
            data = {"mentions": ["me"]} if k == 2 and i % 5 == 0 else None
            sends.append(
                lambda r=r, k=k, i=i, data=data: store.append(
                    r, "other", "O", None, f"msg {k}", 1000 + i * 3 + k, "message", data
                )
            )
    yield _bulk(sends)
    latencies, cpu, composed, listed = [], [], [], []
    for _ in range(args.repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        page, more = yield store.conversation_page("me", 0, 50)
        latencies.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
        # what the list request did before conversation_page (and what sync reads)
        t0 = time.perf_counter()
        convs = yield store.conversations("me")
        listed.append(time.perf_counter() - t0)
        full = yield store.summaries("me", [c.channel for c in convs[:50]])
        composed.append(time.perf_counter() - t0)
    assert len(convs) == args.rooms and len(full) == 50 and full[0].unread == 3
    assert page == full and more
    return {
        "rooms": args.rooms,
        "shown": 50,
        **_ms(latencies),
        "cpu_p50_ms": _ms(cpu)["p50_ms"],
        "composed": _ms(composed),
        "conversations_all": _ms(listed),
        "target_p99_ms": 10,
    }


@defer.inlineCallbacks
def bench_catch_up(store, args):
    channels = [f"chan{i:03d}" for i in range(args.channels)]
    yield _bulk(lambda c=c: _event(store, c, "joined", "me", 1) for c in channels)
    yield _bulk(
        lambda c=c, k=k: store.append(c, "other", "O", None, f"missed {k}", 10 + k)
        for c in channels
        for k in range(60)
    )
    totals = []
    for _ in range(args.repeats // 10 or 1):
        t0 = time.perf_counter()
        replays = yield defer.gatherResults([store.replay(c, 11, 50) for c in channels])
        totals.append(time.perf_counter() - t0)
    assert all(len(r.messages) == 50 for r in replays)
    return {"channels": args.channels, "items_each": 50, **_ms(totals), "target_total_ms": 50}


@defer.inlineCallbacks
def bench_members(store, args):
    n = args.members
    yield _bulk(lambda u=u: _event(store, "big", "joined", f"user{u:05d}", u) for u in range(n))
    pages = {"first": None, "middle": f"user{n // 2:05d}", "last": f"user{n - 50:05d}"}
    out = {"members": n}
    for label, after in pages.items():
        latencies = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            page, _more = yield store.members("big", after, 100)
            latencies.append(time.perf_counter() - t0)
        assert page
        out[f"page_{label}"] = _ms(latencies)
    latencies = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        count = yield store.member_count("big")
        latencies.append(time.perf_counter() - t0)
    assert count == n
    out["member_count"] = _ms(latencies)
    return out


@defer.inlineCallbacks
def main(reactor, argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    p.add_argument("--seconds", type=float, default=2.0, help="duration of the mark_read part")
    p.add_argument("--readers", type=int, default=1000)
    p.add_argument("--rooms", type=int, default=1000)
    p.add_argument("--channels", type=int, default=200)
    p.add_argument("--members", type=int, default=10_000)
    p.add_argument("--repeats", type=int, default=200)
    p.add_argument("--synchronous", default="FULL")
    p.add_argument("--dir", default=None, help="directory for the database files")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        for part in args.parts:
            path = os.path.join(tmp, f"{part}.db")
            store = SQLiteStore(
                path,
                reactor=reactor,
                synchronous=args.synchronous,
                prune_interval=None,
                history_max=None,
            )
            yield store.start()
            try:
                result = yield globals()[f"bench_{part}"](store, args)
            finally:
                yield store.stop()
            print(json.dumps({"part": part, "synchronous": args.synchronous, **result}), flush=True)


if __name__ == "__main__":
    task.react(main)
