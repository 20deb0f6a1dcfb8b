"""A live chatd with a bystander pair for hostile-input tests (docs/security.md
section 3): :class:`World` runs the after-every-row checks, ``_start`` starts a
``twistd -n chatd`` on loopback, ``_token`` signs a test JWT; ``v1``,
``v1_when_free`` and ``dm_texts`` connect by name and read DM history (the
identity tests, also on a cluster)."""

from __future__ import annotations

import itertools
import time
from urllib.parse import urlencode

import jwt

from tests.conftest import TwistdProcess
from tests.support.rawws import TIMEOUT, RawWS

SECRET = "s3cret-" + "x" * 64  # long enough for HS512 without a key-length warning
_ids = itertools.count(1)


def next_id(prefix="m"):
    """A fresh client message id."""
    return f"{prefix}{next(_ids)}"


class World:
    """A running chatd and the clients that must not notice the attacks.

    ``check(label)`` is the after-every-row assertion: process alive, no
    traceback logged, the bystanders still exchange a message, a fresh client
    gets pong, and every acked message is still in history.
    """

    def __init__(self, proc, connect=None):
        self.proc = proc
        self.port = proc.port
        #: kwargs for RawWS.v1 of the bystanders and probers (e.g. a token header)
        self.connect = connect or (lambda: {})
        #: (room, seq, id, text) of every acknowledged message
        self.acked = []
        #: ids that must never be stored (sent in frames that were refused)
        self.never_stored = set()
        self.alice = RawWS.v1(self.port, **self.connect())
        self.bob = RawWS.v1(self.port, **self.connect())
        for ws in (self.alice, self.bob):
            ws.send_json(type="join", room="calm")
            ws.expect("joined", room="calm")
        self.alice.expect("presence", room="calm", event="join")
        self.turn = 0

    def post(self, ws, room, words):
        """Send *words* to *room* on *ws*, wait for the ack and remember it."""
        mid = next_id("ack-")
        ws.send_json(type="send", room=room, text=words, id=mid)
        ack = ws.expect("ack", id=mid, room=room)
        self.acked.append((room, ack["seq"], mid, words))
        return ack

    def bystanders_talk(self, label):
        """The bystander pair exchanges one message (alternating direction)."""
        self.turn += 1
        sender, receiver = (self.alice, self.bob) if self.turn % 2 else (self.bob, self.alice)
        words = f"still here after {label}"
        ack = self.post(sender, "calm", words)
        msg = receiver.expect("message", room="calm", seq=ack["seq"], text=words)
        assert msg["from"] == sender.welcome["user"]

    def history(self, ws, room):
        """Every stored message of *room*, by seq (pages back with ``before``)."""
        found, before = {}, None
        while True:
            request = {"type": "history", "room": room, "limit": 200}
            if before is not None:
                request["before"] = before
            ws.send_json(**request)
            page = ws.expect("history", room=room)
            for m in page["messages"]:
                found[m["seq"]] = m
            if not page["more"] or not page["messages"]:
                return found
            before = page["messages"][0]["seq"]

    def check(self, label):
        """The server survived *label* and nobody else noticed."""
        assert self.proc.proc.poll() is None, f"chatd died after {label}:\n{self.proc.log}"
        self.bystanders_talk(label)
        probe = RawWS.v1(self.port, **self.connect())
        pid = next_id("ping-")
        probe.send_json(type="ping", id=pid)
        probe.expect("pong", id=pid)
        for room in sorted({room for room, *_ in self.acked}):
            stored = self.history(probe, room)
            for _room, seq, mid, words in self.acked:
                if _room == room:
                    assert seq in stored, f"acked {mid} (seq {seq}) lost after {label}"
                    assert (stored[seq]["id"], stored[seq]["text"]) == (mid, words)
            leaked = self.never_stored & {m["id"] for m in stored.values()}
            assert not leaked, f"refused frames were stored: {leaked}"
        probe.close()
        log = self.proc.log
        assert "Traceback" not in log and "Unhandled" not in log, f"after {label}:\n{log}"

    def attacker(self, **kwargs):
        """A fresh chatd.v1 connection that first gets one message acked in ``den``."""
        ws = RawWS.v1(self.port, **{**self.connect(), **kwargs})
        ws.send_json(type="join", room="den")
        ws.expect("joined", room="den")
        self.post(ws, "den", "acked before the attack")
        return ws

    def close(self):
        """Close the bystanders."""
        self.alice.close()
        self.bob.close()


def _start(tmp_path_factory, *args):
    cwd = tmp_path_factory.mktemp("chatd")
    return TwistdProcess(
        ["--listen", "tcp:0:interface=127.0.0.1", "--db", ":memory:", *args], cwd=cwd
    )


def _world(proc, connect=None):
    """Yield a :class:`World` on *proc*; the process is stopped whatever happens."""
    try:
        world = World(proc, connect)
        yield world
        world.close()
    finally:
        proc.stop()


def _token(claims, secret=SECRET, algorithm="HS256"):
    return jwt.encode(claims, secret, algorithm=algorithm)


def v1(port, **params):
    """A chatd.v1 connection with these query parameters, its ``welcome`` read."""
    return RawWS.v1(port, path="/ws?" + urlencode(params))


def v1_when_free(port, name, **params):
    """Connect as *name* once the server (or the cluster) has let go of it: a
    close not processed yet answers ``name_taken`` (without a ``welcome``). Returns the connection, its name confirmed by a ``pong``."""
    deadline = time.monotonic() + TIMEOUT
    while True:
        ws = RawWS(port, path="/ws?" + urlencode({"name": name, **params}))
        assert ws.status == 101, ws.head
        first = ws.recv()
        if first["type"] == "welcome":
            ws.welcome = first
            ws.send_json(type="ping", id="confirmed")
            first = ws.recv()
            if first["type"] == "pong":
                return ws
        assert (first["type"], first["code"]) == ("error", "name_taken"), first
        ws.until_closed()
        assert time.monotonic() < deadline, f"{name} was never released"
        time.sleep(0.02)


def dm_texts(ws, other, **where):
    """The texts ``dm_history`` gives *ws* for its conversation with *other*."""
    ws.send_json(type="dm_history", **{"with": other}, **where)
    page = ws.expect("dm_history", **{"with": other})
    return [m["text"] for m in page["messages"]], page["more"]
