"""Redis Cluster routing, the pure part: key slots, the slot map, redirections.

No I/O and no clock: :mod:`chatd.cluster.rediscluster` (the client) uses these.
The rules are Redis's (https://redis.io/docs/reference/cluster-spec/):

* a key's slot is ``CRC16(key) mod 16384``, CRC16 being CRC-16/XMODEM
  (CCITT polynomial 0x1021, initial value 0); ``slot("123456789") == 12739``;
* **hash tags**: if the key has a ``{`` and after it a ``}`` with at least one
  byte between them, only the bytes between the first ``{`` and the first ``}``
  after it are hashed (``{user1000}.following`` and ``{user1000}.followers``
  share a slot; ``foo{}{bar}`` hashes whole, ``foo{{bar}}zap`` hashes ``{bar``);
* a node that does not serve a slot answers ``MOVED <slot> <host>:<port>`` (the
  slot lives there now: update the map, retry there) or, while the slot is being
  migrated, ``ASK <slot> <host>:<port>`` (send ``ASKING`` then the command there,
  once; the map is unchanged);
* ``TRYAGAIN`` (a multi-key command during a migration), ``CLUSTERDOWN`` (the
  cluster is failing over or has lost slots) and ``LOADING`` are refusals: the
  command did not run and may be sent again a little later.
"""

from __future__ import annotations

import bisect
import functools

SLOTS = 16384


def _crc16_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
        table.append(crc & 0xFFFF)
    return table


_TABLE = _crc16_table()


def crc16(data: bytes) -> int:
    """CRC-16/XMODEM of *data* (the one Redis Cluster uses)."""
    crc = 0
    for byte in data:
        crc = ((crc << 8) & 0xFFFF) ^ _TABLE[((crc >> 8) ^ byte) & 0xFF]
    return crc


def hash_part(key: bytes) -> bytes:
    """The part of *key* that is hashed: its hash tag, if it has a non-empty one."""
    start = key.find(b"{")
    if start >= 0:
        end = key.find(b"}", start + 1)
        if end > start + 1:
            return key[start + 1 : end]
    return key


def key_slot(key: str | bytes) -> int:
    """The cluster slot of *key* (str keys as UTF-8, as chatd sends them)."""
    if isinstance(key, str):
        key = key.encode("utf-8")
    return crc16(hash_part(key)) % SLOTS


#: commands whose first key is not their first argument, or that have none
_NO_KEY = frozenset({"PING", "PUBLISH", "SCRIPT", "CLUSTER", "INFO", "ASKING", "READONLY"})
_SCRIPTS = frozenset({"EVAL", "EVALSHA", "EVAL_RO", "EVALSHA_RO", "FCALL", "FCALL_RO"})


def command_key(args) -> str | bytes | None:
    """The key *args* (a command) is routed by: its first key, or None if it has none.

    ``EVAL``/``EVALSHA`` are routed by their first declared key (``KEYS[1]``);
    ``SPUBLISH``/``SSUBSCRIBE`` by their shard channel, which hashes like a key.
    """
    if not args:
        return None
    name = str(args[0]).upper()
    if name in _NO_KEY:
        return None
    if name in _SCRIPTS:
        return args[3] if len(args) > 3 and int(args[2]) > 0 else None
    return args[1] if len(args) > 1 else None


def parse_address(text: str, default_host: str) -> tuple[str, int]:
    """``host:port`` (an IPv6 host may have colons; an empty host is *default_host*)."""
    host, _, port = text.rpartition(":")
    return (host or default_host, int(port))


def redirection(message: str, default_host: str) -> tuple[str, int, tuple[str, int]] | None:
    """``("MOVED" | "ASK", slot, (host, port))`` for a redirection error, else None."""
    parts = message.split()
    if len(parts) == 3 and parts[0] in ("MOVED", "ASK"):
        return parts[0], int(parts[1]), parse_address(parts[2], default_host)
    return None


#: error prefixes of a command the cluster refused for now (it did not run)
RETRY_LATER = ("TRYAGAIN", "CLUSTERDOWN", "LOADING", "MASTERDOWN")


def retry_later(message: str) -> bool:
    """Whether the error *message* means "not now": the command did not run."""
    return message.startswith(RETRY_LATER)


#: the characters of slot_tags()' tags (no braces: a tag must not end a hash tag early)
_TAG_CHARS = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-_"


@functools.cache
def slot_tags() -> tuple[str, ...]:
    """For each slot, a short ASCII string whose slot it is (as a hash tag ``{tag}``
    it puts a key or a shard channel in that slot): the first of the 1-, 2- then
    3-character strings of :data:`_TAG_CHARS` with that slot. Computed once, CRC by
    CRC (each string's from its prefix's), in ~0.1 s."""
    tags: list[str | None] = [None] * SLOTS
    chars = [(chr(b), b) for b in _TAG_CHARS]
    table = _TABLE
    prefixes = [("", 0)]
    for _length in range(3):
        longer = []
        for prefix, crc in prefixes:
            shifted = (crc << 8) & 0xFFFF
            high = crc >> 8
            for char, byte in chars:
                value = shifted ^ table[(high ^ byte) & 0xFF]
                longer.append((prefix + char, value))
                if tags[value % SLOTS] is None:
                    tags[value % SLOTS] = prefix + char
        prefixes = longer
        if None not in tags:
            return tuple(tags)
    raise AssertionError("3 characters of _TAG_CHARS do not cover every slot")


class SlotMap:
    """Which master serves each slot, from a ``CLUSTER SLOTS`` reply.

    A reply is a list of ``[start, end, [host, port, id, …], replica…]``; an empty
    host means the node that was asked (*default_host*). :meth:`moved` patches one
    slot after a ``MOVED`` until the next full refresh.
    """

    def __init__(self, reply=(), default_host: str = "127.0.0.1"):
        ranges = []
        for entry in reply:
            start, end, master = int(entry[0]), int(entry[1]), entry[2]
            host = _text(master[0])
            if host in ("", "?"):
                host = default_host
            ranges.append((start, end, (host, int(master[1]))))
        ranges.sort()
        self._starts = [r[0] for r in ranges]
        self._ranges = ranges
        self._moved: dict[int, tuple[str, int]] = {}

    def master(self, slot: int) -> tuple[str, int] | None:
        """The address of *slot*'s master, or None if no master serves it."""
        if slot in self._moved:
            return self._moved[slot]
        i = bisect.bisect_right(self._starts, slot) - 1
        if i >= 0:
            start, end, address = self._ranges[i]
            if start <= slot <= end:
                return address
        return None

    def moved(self, slot: int, address: tuple[str, int]) -> None:
        self._moved[slot] = address

    def slots_of(self, address: tuple[str, int]) -> list[int]:
        """The slots *address* serves."""
        out = [
            slot
            for start, end, a in self._ranges
            if a == address
            for slot in range(start, end + 1)
            if self._moved.get(slot, a) == address
        ]
        out += [slot for slot, a in self._moved.items() if a == address and slot not in out]
        return sorted(set(out))

    def masters(self) -> set[tuple[str, int]]:
        """Every master's address."""
        return {r[2] for r in self._ranges} | set(self._moved.values())

    @property
    def complete(self) -> bool:
        """Whether every one of the 16384 slots has a master."""
        covered = 0
        expected = 0
        for start, end, _ in self._ranges:
            if start != expected:
                return False
            covered += end - start + 1
            expected = end + 1
        return covered == SLOTS

    def __len__(self):
        return len(self._ranges)


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
