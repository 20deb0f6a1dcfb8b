"""The generic writer thread (chatd.store.writer) with a small list-keeping backend.

A real thread; its hand-backs (``callFromThread``) are collected and run by the
test thread until a condition holds, under a deadline. Jobs submitted before
``start()`` are all in the thread's first drain, which makes drains exact.
"""

from __future__ import annotations

import queue
import time

import pytest
from twisted.internet.defer import CancelledError

from chatd.store import StoreUnavailable
from chatd.store.writer import Requeue, WriterThread


class _Hands:
    """Stands in for the reactor thread: keeps what the writer hands back."""

    def __init__(self):
        self.calls = queue.SimpleQueue()

    def callFromThread(self, f, *args):
        self.calls.put((f, args))

    def run_until(self, condition, timeout=10.0):
        deadline = time.monotonic() + timeout
        while not condition():
            f, args = self.calls.get(timeout=max(0.0, deadline - time.monotonic()))
            f(*args)


class _Backend:
    """Records what the writer asks of it."""

    def __init__(self, fail_open=False, broken_commit=False):
        self.fail_open = fail_open
        self.broken_commit = broken_commit
        self.log = []
        self.finished = False
        self.writer = None

    def run(self, kind, args):
        self.log.append((kind, *args))
        if kind == "open" and self.fail_open:
            raise OSError("cannot open")
        if kind == "long":
            (left,) = args
            while left > 1:
                left -= 1
                if self.writer.others_waiting():
                    return Requeue((left,))
                self.log.append((kind, left))
            return "long done"
        return f"{kind} done"

    def commit(self, batch):
        if self.broken_commit:
            raise RuntimeError("a bug")
        self.log.append(("commit", *[a[0] for a in batch]))
        return [(True, a[0]) for a in batch]

    def closed_result(self, kind, args):
        return (True, f"closed {kind} {args}")

    def error(self, e):
        return StoreUnavailable(str(e))

    def finish(self):
        self.finished = True


def _writer(backend, hands, batch_max=100, batched="append"):
    w = WriterThread(
        name="test store",
        thread_name="test-writer",
        reactor=hands,
        batch_max=batch_max,
        run=backend.run,
        commit=backend.commit,
        closed_result=backend.closed_result,
        error=backend.error,
        finish=backend.finish,
        batched=batched,
        reads=frozenset({"read"}),
    )
    backend.writer = w
    return w


def _outcome(d):
    """What a fired Deferred gave: ``("ok", value)`` or ``("err", exception)``."""
    got = []
    d.addCallbacks(lambda v: got.append(("ok", v)), lambda f: got.append(("err", f.value)))
    return got


def test_consecutive_appends_share_a_commit_and_a_read_splits_them():
    """a1 a2 | read | a3: two commits, the read in between, results in submission order."""
    hands, b = _Hands(), _Backend()
    w = _writer(b, hands)
    order = []
    ds = [
        w.submit("open", ()),
        w.submit("append", ("a1",)),
        w.submit("append", ("a2",)),
        w.submit("read", ("r",)),
        w.submit("append", ("a3",)),
        w.submit("close", ()),
    ]
    for i, d in enumerate(ds):
        d.addCallback(lambda v, i=i: order.append((i, v)))
    w.start()
    hands.run_until(lambda: len(order) == len(ds))
    w.join()
    assert b.log == [("open",), ("commit", "a1", "a2"), ("read", "r"), ("commit", "a3"), ("close",)]
    assert order == [
        (0, "open done"),
        (1, "a1"),
        (2, "a2"),
        (3, "read done"),
        (4, "a3"),
        (5, "close done"),
    ]
    assert (w.reads, w.cancelled_reads) == (1, 0)
    assert b.finished


def test_a_set_of_batched_kinds_share_commits_in_order_with_their_kinds():
    """With batched={append, mark}, consecutive jobs of both kinds share one commit,
    which gets (kind, args) pairs in submission order; a read still splits them."""
    hands, b = _Hands(), _Backend()
    b.commit = lambda batch: b.log.append(("commit", *batch)) or [(True, a[0]) for _, a in batch]
    w = _writer(b, hands, batched=frozenset({"append", "mark"}))
    order = []
    ds = [
        w.submit("open", ()),
        w.submit("append", ("a1",)),
        w.submit("mark", ("m1",)),
        w.submit("read", ("r",)),
        w.submit("mark", ("m2",)),
        w.submit("append", ("a3",)),
        w.submit("close", ()),
    ]
    for i, d in enumerate(ds):
        d.addCallback(lambda v, i=i: order.append((i, v)))
    w.start()
    hands.run_until(lambda: len(order) == len(ds))
    w.join()
    assert b.log == [
        ("open",),
        ("commit", ("append", ("a1",)), ("mark", ("m1",))),
        ("read", "r"),
        ("commit", ("mark", ("m2",)), ("append", ("a3",))),
        ("close",),
    ]
    assert [v for _, v in order] == ["open done", "a1", "m1", "read done", "m2", "a3", "close done"]


def test_batch_max_bounds_a_drain():
    """No commit gets more than batch_max appends."""
    hands, b = _Hands(), _Backend()
    w = _writer(b, hands, batch_max=3)
    w.submit("open", ())
    ds = [w.submit("append", (f"a{i}",)) for i in range(7)]
    close = _outcome(w.submit("close", ()))
    w.start()
    hands.run_until(lambda: close)
    assert all(d.called for d in ds)
    assert [len(e) - 1 for e in b.log if e[0] == "commit"] == [2, 3, 2]


def test_a_cancelled_read_is_skipped_and_counted():
    """A read cancelled before the thread reaches it never runs (cancelled_reads counts
    it, reads does not) and fails with CancelledError; the next read runs."""
    hands, b = _Hands(), _Backend()
    w = _writer(b, hands)
    w.submit("open", ())
    gone_d = w.submit("read", ("gone",))
    gone = _outcome(gone_d)
    kept = _outcome(w.submit("read", ("kept",)))
    close = _outcome(w.submit("close", ()))
    gone_d.cancel()
    assert len(gone) == 1 and isinstance(gone[0][1], CancelledError)
    w.start()
    hands.run_until(lambda: close)
    assert ("read", "gone") not in b.log and ("read", "kept") in b.log
    assert kept == [("ok", "read done")]
    assert (w.reads, w.cancelled_reads) == (1, 1)


def test_a_read_is_handed_back_before_its_drain_ends():
    """The read's rows are handed back as soon as it ran, in a hand-back of its own."""
    hands, b = _Hands(), _Backend()
    w = _writer(b, hands)
    w.submit("open", ())
    w.submit("append", ("a1",))
    w.submit("read", ("r",))
    w.submit("append", ("a2",))
    close = _outcome(w.submit("close", ()))
    w.start()
    handbacks = []
    while not close:
        f, args = hands.calls.get(timeout=10)
        if f != w._hand_over:  # (the hand-over of the submitted jobs is no hand-back)
            handbacks.append([value for _, _, value in args[0]])
        f(*args)
    assert handbacks == [["open done", "a1", "read done"], ["a2", "close done"]]


def test_requeue_lets_waiting_jobs_overtake_and_fires_once_done():
    """A long job that returns Requeue while others wait continues behind them; its one
    Deferred fires when it is done."""
    hands, b = _Hands(), _Backend()
    w = _writer(b, hands)
    w.submit("open", ())
    long = _outcome(w.submit("long", (3,)))
    other = _outcome(w.submit("x", ()))
    w.start()
    hands.run_until(lambda: long and other)
    assert b.log == [("open",), ("long", 3), ("x",), ("long", 2), ("long", 1)]
    assert long == [("ok", "long done")]
    close = _outcome(w.submit("close", ()))
    hands.run_until(lambda: close)


def test_a_continuation_queued_behind_close_gets_its_closed_result():
    """Nothing is silently dropped: a Requeue behind the close ends with closed_result,
    after finish() ran."""
    hands, b = _Hands(), _Backend()
    w = _writer(b, hands)
    w.submit("open", ())
    long = _outcome(w.submit("long", (3,)))
    close = _outcome(w.submit("close", ()))
    w.start()
    hands.run_until(lambda: long and close)
    assert long == [("ok", "closed long (2,)")]
    assert b.finished
    w.join()


def test_a_failed_open_ends_the_thread_and_the_rest_get_closed_results():
    """open raising: its Deferred fails with error(e); the jobs behind it are not run."""
    hands, b = _Hands(), _Backend(fail_open=True)
    w = _writer(b, hands)
    opened = _outcome(w.submit("open", ()))
    appended = _outcome(w.submit("append", ("a",)))
    read = _outcome(w.submit("read", ("r",)))
    w.start()
    hands.run_until(lambda: opened and appended and read)
    w.join()
    assert opened[0][0] == "err" and isinstance(opened[0][1], StoreUnavailable)
    assert appended == [("ok", "closed append ('a',)")]
    assert read == [("ok", "closed read ('r',)")]
    assert b.log == [("open",)] and b.finished


def test_a_bug_fails_its_drain_and_the_thread_carries_on():
    """An exception escaping a drain fails that drain's jobs with StoreUnavailable
    ("internal error"); the next drain runs."""
    hands, b = _Hands(), _Backend(broken_commit=True)
    w = _writer(b, hands)
    opened = _outcome(w.submit("open", ()))
    appended = _outcome(w.submit("append", ("a",)))
    w.start()
    hands.run_until(lambda: opened and appended)
    assert opened[0][0] == "err" and appended[0][0] == "err"
    assert isinstance(appended[0][1], StoreUnavailable)
    assert "test store: internal error" in str(appended[0][1])
    b.broken_commit = False
    again = _outcome(w.submit("append", ("b",)))
    hands.run_until(lambda: again)
    assert again == [("ok", "b")]
    close = _outcome(w.submit("close", ()))
    hands.run_until(lambda: close)


def test_batch_max_must_be_positive():
    """A writer that could never take a job is refused."""
    with pytest.raises(ValueError):
        _writer(_Backend(), _Hands(), batch_max=0)


def test_a_turns_jobs_reach_the_thread_together_once_the_turn_ends():
    """submit() does not wake the thread: the turn's jobs wait until the one hand-over
    the first of them scheduled runs (in the reactor's next turn), then go as one drain;
    a later turn's jobs schedule a hand-over of their own."""
    hands, b = _Hands(), _Backend()
    w = _writer(b, hands)
    w.start()
    opened = _outcome(w.submit("open", ()))
    a = [_outcome(w.submit("append", (f"a{i}",))) for i in range(3)]
    assert hands.calls.qsize() == 1  # one hand-over scheduled for the turn's 4 jobs
    assert b.log == []  # (nothing was put on its queue: it cannot have run anything)
    hands.run_until(lambda: opened and all(a))
    assert b.log == [("open",), ("commit", "a0", "a1", "a2")]
    later = _outcome(w.submit("append", ("a3",)))
    assert hands.calls.qsize() == 1
    hands.run_until(lambda: later)
    close = _outcome(w.submit("close", ()))
    hands.run_until(lambda: close)
    assert b.log[-2:] == [("commit", "a3"), ("close",)]
