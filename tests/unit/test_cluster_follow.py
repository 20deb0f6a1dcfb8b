"""Unit tests of the per-room shard subscription bookkeeping (chatd.cluster.follow) and
of the hub's open/close notices that drive it: task.Clock, no sockets."""

import pytest
from twisted.internet.task import Clock

from chatd.cluster.follow import Follows
from chatd.hub import LOBBY, Hub


class Recorder:
    def __init__(self):
        self.calls = []

    def sub(self, room):
        self.calls.append(("sub", room))

    def unsub(self, room):
        self.calls.append(("unsub", room))


def make(linger=30.0, most=10):
    clock, rec = Clock(), Recorder()
    return clock, rec, Follows(clock, rec.sub, rec.unsub, linger=linger, most_lingering=most)


def test_first_hold_subscribes_and_more_holds_do_not():
    clock, rec, f = make()
    f.hold("r")
    f.hold("r")
    assert rec.calls == [("sub", "r")]
    assert "r" in f and f.held("r") == 2 and len(f) == 1


def test_last_release_lingers_then_unsubscribes():
    clock, rec, f = make(linger=30.0)
    f.hold("r")
    f.hold("r")
    f.release("r")
    f.release("r")
    assert rec.calls == [("sub", "r")]
    assert "r" in f  # lingering: still followed
    clock.advance(29.9)
    assert rec.calls == [("sub", "r")]
    clock.advance(0.2)
    assert rec.calls == [("sub", "r"), ("unsub", "r")]
    assert "r" not in f and len(f) == 0
    assert (f.subscribes, f.unsubscribes) == (1, 1)


def test_hold_during_linger_keeps_the_subscription():
    clock, rec, f = make(linger=30.0)
    f.hold("r")
    f.release("r")
    clock.advance(20)
    f.hold("r")  # back before the linger ended: no round trip
    clock.advance(60)
    assert rec.calls == [("sub", "r")]
    f.release("r")
    clock.advance(30)
    assert rec.calls == [("sub", "r"), ("unsub", "r")]
    f.hold("r")  # after it: subscribed again
    assert rec.calls[-1] == ("sub", "r")


def test_lingering_rooms_are_bounded_oldest_first():
    clock, rec, f = make(linger=30.0, most=2)
    for room in ("a", "b", "c"):
        f.hold(room)
    f.release("a")
    clock.advance(1)
    f.release("b")
    clock.advance(1)
    f.release("c")  # a third lingering room: the oldest ("a") goes at once
    assert rec.calls[-1] == ("unsub", "a")
    assert sorted(f.rooms()) == ["b", "c"]
    clock.advance(30)
    assert rec.calls[-2:] == [("unsub", "b"), ("unsub", "c")]
    assert len(clock.getDelayedCalls()) == 0


def test_release_of_a_room_not_held_is_an_error():
    _, _, f = make()
    with pytest.raises(ValueError):
        f.release("r")


def test_clear_forgets_without_unsubscribing():
    clock, rec, f = make()
    f.hold("a")
    f.hold("b")
    f.release("b")
    f.clear()
    clock.advance(100)
    assert rec.calls == [("sub", "a"), ("sub", "b")]
    assert len(f) == 0 and not clock.getDelayedCalls()


class Conn:
    def __init__(self, user):
        self.user = user
        self.client = self


def test_hub_tells_when_a_room_gets_its_first_and_loses_its_last_connection():
    """The hub's notices drive Follows: opened with the first connection (pending
    included), closed with the last (leave, disconnect); relays open the lobby."""
    clock, rec, f = make(linger=5)
    hub = Hub()
    hub.watch(f.hold, f.release)
    a, b, relay = Conn("a"), Conn("b"), Conn("g")
    hub.connect(a)
    hub.connect(b)
    hub.join(a, "r")
    hub.join(b, "r")
    hub.join(a, "r")  # a join of a room it is in: nothing new
    assert rec.calls == [("sub", "r")] and f.held("r") == 1
    hub.leave(a, "r")
    assert f.held("r") == 1
    hub.disconnect(b)
    assert f.held("r") == 0 and "r" in f  # lingering
    clock.advance(5)
    assert rec.calls == [("sub", "r"), ("unsub", "r")]
    hub.connect_relay(relay)
    assert rec.calls[-1] == ("sub", LOBBY)
    hub.disconnect(relay)
    clock.advance(5)
    assert rec.calls[-1] == ("unsub", LOBBY)
