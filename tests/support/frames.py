"""Reading chatd.v1 frames in tests when the server interleaves frames a step does
not look at (auto-subscription, presence, membership events)."""

from twisted.internet import defer

from tests.wsclient import TIMEOUT

#: frames other parts of the server may interleave that a step does not look at
OTHER = frozenset(("subscribed", "presence", "event", "joined"))


@defer.inlineCallbacks
def next_of(client, frame_type, /, skip=OTHER, timeout=TIMEOUT, **fields):
    """The next frame of type *frame_type* on *client* (a tests.wsclient.Client), with *fields*,
    passing over frames of the *skip* types only: any other frame fails the test; each
    frame must come within *timeout* seconds. (Positional-only, so a frame field may be
    called ``kind``.)"""
    while True:
        frame = yield client.recv(timeout)
        if frame.get("type") == frame_type:
            for key, value in fields.items():
                assert frame.get(key) == value, f"{key}: expected {value!r} in {frame}"
            return frame
        assert frame.get("type") in skip, f"expected {frame_type}, got {frame}"
