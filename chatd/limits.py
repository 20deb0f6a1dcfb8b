"""Abuse limits as pure logic: token buckets and connection counters.

Nothing here reads a clock or touches a socket: callers pass ``now`` (seconds),
so the rules are unit-tested with plain numbers.
"""

from __future__ import annotations

from collections import Counter


class TokenBucket:
    """``rate`` tokens per second, holding at most ``burst``; one token per frame."""

    __slots__ = ("rate", "burst", "tokens", "stamp")

    def __init__(self, rate: float, burst: float, now: float):
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.stamp = now

    def take(self, now: float, cost: float = 1.0) -> bool:
        """Take *cost* tokens if there are enough; False means over the limit."""
        tokens = self.tokens + (now - self.stamp) * self.rate
        if tokens > self.burst:
            tokens = self.burst
        self.stamp = now
        if tokens >= cost:
            self.tokens = tokens - cost
            return True
        self.tokens = tokens
        return False


class KeyedBuckets:
    """One :class:`TokenBucket` per key (a client address); a bucket that has filled
    up again is forgotten, so the table holds only keys active lately."""

    def __init__(self, rate: float, burst: float):
        self.rate = rate
        self.burst = burst
        self.buckets: dict = {}
        self._sweep_at = 1024

    def take(self, key, now: float) -> bool:
        """Charge one request to *key*; False means over the limit."""
        bucket = self.buckets.get(key)
        if bucket is None:
            if len(self.buckets) >= self._sweep_at:
                self._sweep(now)
            bucket = self.buckets[key] = TokenBucket(self.rate, self.burst, now)
        return bucket.take(now)

    def retry_after(self, key, now: float) -> float:
        """Seconds until *key* has a token again (0 when it has one)."""
        bucket = self.buckets.get(key)
        if bucket is None or not self.rate:
            return 0.0
        tokens = min(self.burst, bucket.tokens + (now - bucket.stamp) * self.rate)
        return max(0.0, (1.0 - tokens) / self.rate)

    def _sweep(self, now: float) -> None:
        rate, burst = self.rate, self.burst
        for key in [
            k for k, b in self.buckets.items() if b.tokens + (now - b.stamp) * rate >= burst
        ]:
            del self.buckets[key]
        self._sweep_at = max(1024, 2 * len(self.buckets))


class Strikes:
    """Counts refused frames in a sliding window; too many means sustained abuse.

    A limit of 0 turns flood detection off: refused frames are only refused.
    """

    __slots__ = ("limit", "window", "times")

    def __init__(self, limit: int, window: float):
        self.limit = limit
        self.window = window
        #: times of recent strikes (a list from the first strike on)
        self.times: list[float] | tuple = ()

    def strike(self, now: float) -> bool:
        """Record a refused frame; True when the limit within the window is passed."""
        if not self.limit:
            return False
        times = self.times
        if not times:
            times = self.times = []
        times.append(now)
        cutoff = now - self.window
        while times and times[0] < cutoff:
            del times[0]
        return len(times) > self.limit


class RateLimiter:
    """Per-connection and per-user token buckets plus flood detection.

    A rate or a burst of 0 means unlimited; ``strikes=0`` never closes for flooding.

    :meth:`check` answers ``"ok"``, ``"limited"`` (refuse this frame with
    ``rate_limited``) or ``"abuse"`` (close the connection with 1008).
    """

    def __init__(self, rate, burst, user_rate, user_burst, strikes=50, window=10.0):
        self.window = window
        self._users: dict[str, TokenBucket] = {}
        self._user_refs: Counter = Counter()
        self.configure(rate, burst, user_rate, user_burst, strikes)

    def configure(self, rate, burst, user_rate, user_burst, strikes) -> None:
        """Set the limits; the users' shared buckets start afresh with the new rates."""
        self.rate = rate
        self.burst = burst
        self.user_rate = user_rate
        self.user_burst = user_burst
        self.strike_limit = strikes
        self._user_limited = bool(user_rate and user_burst)
        self._conn_stricter = bool(rate and burst) and rate <= user_rate and burst <= user_burst
        self._users = {
            user: TokenBucket(user_rate, user_burst, 0.0)  # a full burst to start with
            for user, refs in self._user_refs.items()
            if self._user_limited and (refs >= 2 or not self._conn_stricter)
        }

    def connection(self, now: float):
        """A bucket (None: unlimited) and strike counter for one new connection."""
        bucket = TokenBucket(self.rate, self.burst, now) if self.rate and self.burst else None
        return bucket, Strikes(self.strike_limit, self.window)

    def add_user(self, user: str, now: float) -> None:
        """A connection of *user* opened (users share one bucket across connections).

        While a user has one connection and the connection's own bucket is at
        least as strict, that bucket is the limit: the user's bucket is made
        with the second connection (it saves memory on every guest).
        """
        refs = self._user_refs[user] = self._user_refs[user] + 1
        if (
            self._user_limited
            and user not in self._users
            and (refs >= 2 or not self._conn_stricter)
        ):
            self._users[user] = TokenBucket(self.user_rate, self.user_burst, now)

    def remove_user(self, user: str) -> None:
        """A connection of *user* closed; the user's bucket goes with its last one."""
        self._user_refs[user] -= 1
        if self._user_refs[user] <= 0:
            del self._user_refs[user]
            self._users.pop(user, None)

    def check(self, bucket, strikes, user, now: float) -> str:
        """Charge one frame to the connection's and the user's buckets."""
        user_bucket = self._users.get(user)
        if (bucket is None or bucket.take(now)) and (user_bucket is None or user_bucket.take(now)):
            return "ok"
        return "abuse" if strikes.strike(now) else "limited"


class ConnectionCounter:
    """Live connections per key (an IP address or a user id) against a maximum."""

    def __init__(self, maximum: int):
        self.maximum = maximum
        self.counts: Counter = Counter()

    def acquire(self, key) -> bool:
        """Count one more connection for *key*; False (and nothing counted) when full."""
        if self.maximum and self.counts[key] >= self.maximum:
            return False
        self.counts[key] += 1
        return True

    def release(self, key) -> None:
        """One connection of *key* closed."""
        self.counts[key] -= 1
        if self.counts[key] <= 0:
            del self.counts[key]
