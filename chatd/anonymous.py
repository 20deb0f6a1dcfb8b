"""Anonymous identities: a display name bound to a secret, for one session.

An anonymous connection (no token) is known by its name alone, and names are
reused: once every connection holding ``alice`` is gone, anybody may ask for
``?name=alice``. Whatever was private to the earlier holder (its direct
messages, its exactly-once ids) must not pass to the next one. So the unit of
an anonymous identity is the *session*, not the name:

* a session is a name bound to a secret (``welcome.resume``). Connections
  presenting the secret share the session (a second tab, a reconnect while the
  old connection still looks alive, or a reconnect within ``grace`` seconds of
  the last connection closing); a connection without it gets a new session, or
  ``name_taken`` while the name is held;
* a session owns only what was stored while it held the name. It remembers,
  per channel (room or DM conversation), the seq just before the first message
  of the session there (its *floor*): a message belongs to the session exactly
  when its seq is above the floor. Names are exclusive while held, so between
  a session's first message in a channel and its end, every message of that
  name in the channel is the session's;
* a new session for a name ends the earlier one for good: its secret no longer
  resumes anything.
* in cluster mode a session may be held on several nodes: its *epoch* (the id the
  cluster's name claims compare) is a hash of its secret, so a connection giving
  the secret to a node that has never seen the session (a reconnect to another
  node while the first still thinks the old connection alive) is claimed as that
  session, and the cluster decides: the same session (shared, like a second
  tab), a later session held the name meanwhile (it owns nothing), or the name is
  held by another session (``name_taken``).

Pure logic: times are passed in (``now``, in seconds).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass, field

#: seconds after its last connection closed during which a session may be resumed
RESUME_GRACE = 300.0
#: at most this many released sessions are kept for resuming (the oldest go first)
MAX_RELEASED = 10000


#: what a ``resume`` secret looks like (chatd issues 16 URL-safe characters)
SECRET = re.compile(r"[A-Za-z0-9_-]{16,64}")


def _same(given: str | None, secret: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), secret.encode())


def epoch_of(secret: str) -> str:
    """The session id the cluster is told for the session of *secret*: whoever
    gives the secret to any node gets the same id, and the id does not give the
    secret away."""
    return hashlib.sha256(b"chatd anonymous session\0" + secret.encode()).hexdigest()[:16]


@dataclass(eq=False, slots=True)
class AnonymousSession:
    """One anonymous identity: *name* bound to *secret* for the life of the session."""

    name: str
    secret: str
    #: the session's id told to the cluster, :func:`epoch_of` its secret (it never
    #: leaves the servers)
    epoch: str = ""
    #: connections holding the session
    refs: int = 0
    #: channel -> the seq just before this session's first message in it
    floors: dict[str, int] = field(default_factory=dict)
    resumable: bool = True

    def __post_init__(self):
        if not self.epoch:
            self.epoch = epoch_of(self.secret)

    def record(self, channel: str, seq: int) -> None:
        """Message *seq* of *channel* was stored for (or delivered to) this session."""
        floor = self.floors.get(channel)
        if floor is None or seq - 1 < floor:
            self.floors[channel] = seq - 1

    def floor(self, channel: str) -> int | None:
        """The seq before this session's first message in *channel* (None: it has none)."""
        return self.floors.get(channel)

    def owns(self, channel: str, seq: int) -> bool:
        """True when message *seq* of *channel* was stored during this session."""
        floor = self.floors.get(channel)
        return floor is not None and seq > floor

    def restart(self) -> None:
        """Own nothing stored so far (another session held the name meanwhile, so
        what is stored under it since is not this session's)."""
        self.floors = {}


class AnonymousNames:
    """The anonymous sessions of this process: live ones by name, and the
    recently released ones that their secret may still resume."""

    def __init__(self, grace: float = RESUME_GRACE, max_released: int = MAX_RELEASED):
        self.grace = grace
        self.max_released = max_released
        self._live: dict[str, AnonymousSession] = {}
        #: name -> (released at, session), oldest first
        self._released: dict[str, tuple[float, AnonymousSession]] = {}

    def __contains__(self, name: str) -> bool:
        return name in self._live

    def __len__(self) -> int:
        return len(self._live)

    def live(self, name: str) -> AnonymousSession | None:
        """The session holding *name* now, if any."""
        return self._live.get(name)

    def claim(
        self,
        name: str,
        resume: str | None,
        now: float,
        resumable: bool = True,
        adopt: bool = False,
    ) -> AnonymousSession | None:
        """A connection asks for *name*, presenting *resume* (or None).

        Returns the session it joins: the live one if *resume* is its secret,
        else the released one if *resume* is its secret, else a new session: with
        *adopt* (cluster mode: the session may be another node's) and a well-formed
        *resume*, the session of that secret (the cluster's claim then tells
        whether it is the one that held the name), else one with a new secret.
        None when the name is held by a live session whose secret was not given.
        """
        self._prune(now)
        session = self._live.get(name)
        if session is not None:
            if not _same(resume, session.secret):
                return None
        else:
            _, session = self._released.pop(name, (None, None))
            if session is None or not _same(resume, session.secret):
                if adopt and resume is not None and SECRET.fullmatch(resume):
                    secret = resume
                else:
                    secret = secrets.token_urlsafe(12)
                session = AnonymousSession(name, secret, resumable=resumable)
            self._live[name] = session
        session.refs += 1
        return session

    def release(self, session: AnonymousSession, now: float, forget: bool = False) -> None:
        """A connection of *session* closed. The last one frees the name; the
        session stays resumable for ``grace`` seconds unless *forget*."""
        session.refs -= 1
        if session.refs > 0 or self._live.get(session.name) is not session:
            return
        del self._live[session.name]
        if session.resumable and not forget and self.grace > 0:
            self._released[session.name] = (now, session)
            self._prune(now)

    def _prune(self, now: float) -> None:
        released = self._released
        while released:
            name, (at, _) = next(iter(released.items()))
            if at > now - self.grace and len(released) <= self.max_released:
                break
            del released[name]
