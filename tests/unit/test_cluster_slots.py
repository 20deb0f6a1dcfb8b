"""Redis Cluster routing, the pure part (chatd.cluster.slots): CRC16, key slots with
hash tags, the slot map and redirection errors."""

from __future__ import annotations

import pytest

from chatd.cluster.redis import RedisURL
from chatd.cluster.slots import (
    SLOTS,
    SlotMap,
    command_key,
    crc16,
    hash_part,
    key_slot,
    redirection,
    retry_later,
    slot_tags,
)


def test_crc16_is_xmodem():
    """CRC-16/XMODEM's check value (the Redis Cluster spec's reference implementation)."""
    assert crc16(b"123456789") == 0x31C3
    assert crc16(b"") == 0


@pytest.mark.parametrize(
    "key, slot",
    [("123456789", 12739), ("foo", 12182), ("bar", 5061), ("hello", 866), ("", 0)],
)
def test_key_slot_of_known_keys(key, slot):
    """Slots as Redis's CLUSTER KEYSLOT gives them."""
    assert key_slot(key) == slot
    assert key_slot(key.encode()) == slot


@pytest.mark.parametrize(
    "key, hashed",
    [
        (b"{user1000}.following", b"user1000"),
        (b"{user1000}.followers", b"user1000"),
        (b"foo{}{bar}", b"foo{}{bar}"),  # an empty tag: the whole key
        (b"foo{{bar}}zap", b"{bar"),  # from the first { to the first } after it
        (b"foo{bar}{zap}", b"bar"),  # only the first tag
        (b"no tag}{", b"no tag}{"),
        (b"{unclosed", b"{unclosed"),
    ],
)
def test_hash_tags(key, hashed):
    """The hash tag rules of the spec: only the first non-empty {…} is hashed."""
    assert hash_part(key) == hashed
    assert key_slot(key) == key_slot(hashed)


def test_chatd_keys_of_one_channel_share_a_slot():
    """Every key of a channel, whatever the prefix and kind, is in the channel's slot."""
    keys = [f"chatd:{k}:{{lobby}}" for k in ("s", "m", "w", "o", "c", "mb")]
    keys.append("chatd:mn:{lobby}:alice")
    assert {key_slot(k) for k in keys} == {key_slot("lobby")}
    assert key_slot("chatd:s:{lobby}") != key_slot("chatd:s:{kitchen}")
    assert key_slot("chatd:u:{ünïcode}") == key_slot("ünïcode".encode())


def test_command_key():
    """The routing key: first argument, first declared key of a script, none for some."""
    assert command_key(("GET", "k")) == "k"
    assert command_key(("hget", "h", "f")) == "h"
    assert command_key(("EVALSHA", "sha", 2, "k1", "k2", "a")) == "k1"
    assert command_key(("EVAL", "return 1", 0, "a")) is None
    assert command_key(("EVALSHA", "sha", "1", "k1")) == "k1"
    assert command_key(("SPUBLISH", "bus:{r}", "x")) == "bus:{r}"
    for keyless in (("PING",), ("PUBLISH", "ch", "x"), ("SCRIPT", "LOAD", "s"), ()):
        assert command_key(keyless) is None


def test_redirections_and_refusals():
    """MOVED and ASK name a slot and an address; TRYAGAIN/CLUSTERDOWN say retry later."""
    assert redirection("MOVED 3999 127.0.0.1:6381", "x") == ("MOVED", 3999, ("127.0.0.1", 6381))
    assert redirection("ASK 3999 10.0.0.2:7000", "x") == ("ASK", 3999, ("10.0.0.2", 7000))
    assert redirection("MOVED 1 :7000", "seed") == ("MOVED", 1, ("seed", 7000))
    assert redirection("MOVED 1 ::1:7000", "x") == ("MOVED", 1, ("::1", 7000))
    assert redirection("WRONGTYPE Operation against a key", "x") is None
    assert retry_later("TRYAGAIN Multiple keys request during rehashing of slot")
    assert retry_later("CLUSTERDOWN The cluster is down")
    assert not retry_later("NOSCRIPT No matching script")


REPLY = [
    [0, 5460, ["127.0.0.1", 7000, "id0"], ["127.0.0.1", 7003, "id3"]],
    [10923, 16383, [b"", 7002, b"id2"]],
    [5461, 10922, ["127.0.0.1", 7001, "id1"]],
]


def test_slot_map():
    """Ranges from CLUSTER SLOTS (any order; an empty host is the node asked), MOVED
    patches one slot, complete only when all 16384 slots have a master."""
    m = SlotMap(REPLY, default_host="seed")
    assert m.complete and len(m) == 3
    assert m.master(0) == m.master(5460) == ("127.0.0.1", 7000)
    assert m.master(5461) == ("127.0.0.1", 7001)
    assert m.master(SLOTS - 1) == ("seed", 7002)
    assert m.masters() == {("127.0.0.1", 7000), ("127.0.0.1", 7001), ("seed", 7002)}
    m.moved(7, ("127.0.0.1", 7005))
    assert m.master(7) == ("127.0.0.1", 7005) and m.master(8) == ("127.0.0.1", 7000)
    assert ("127.0.0.1", 7005) in m.masters()
    partial = SlotMap(REPLY[:2])
    assert not partial.complete and partial.master(6000) is None
    assert not SlotMap().complete and SlotMap().master(0) is None


def test_cluster_urls():
    """redis+cluster:// names seeds (default port 6379, IPv6 in brackets), db 0 only;
    rediss+cluster:// is TLS; retry_for bounds the wait for a failing-over slot."""
    u = RedisURL("redis+cluster://:pw%40x@h1:7000,h2,[::1]:7002/?prefix=x:&retry_for=0.5")
    assert u.cluster and not u.tls
    assert u.seeds == [("h1", 7000), ("h2", 6379), ("::1", 7002)]
    assert (u.host, u.port, u.db, u.password, u.prefix, u.retry_for) == (
        "h1",
        7000,
        0,
        "pw@x",
        "x:",
        0.5,
    )
    assert "pw" not in u.redacted() and u.redacted().startswith("redis+cluster://:***@h1:7000,")
    t = RedisURL("rediss+cluster://user:p@a:1/")
    assert t.tls and t.cluster and t.username == "user" and t.retry_for == 2.0
    single = RedisURL("redis://localhost")
    assert not single.cluster and single.seeds == []
    for bad in ("redis+cluster://a:1/2", "redis+cluster://a:1,,b:2/", "redis+sentinel://a/"):
        with pytest.raises(ValueError):
            RedisURL(bad)


def test_slot_tags_and_slots_of_a_master():
    """slot_tags() names one hash tag per slot; slots_of() lists a master's slots."""
    tags = slot_tags()
    assert len(tags) == SLOTS and len(set(tags)) == SLOTS
    assert all(key_slot("{" + tag + "}") == slot for slot, tag in enumerate(tags))
    assert all("{" not in t and "}" not in t for t in tags)
    m = SlotMap(REPLY)
    assert m.slots_of(("127.0.0.1", 7001)) == list(range(5461, 10923))
    m.moved(5461, ("127.0.0.1", 7000))
    assert 5461 in m.slots_of(("127.0.0.1", 7000))
    assert 5461 not in m.slots_of(("127.0.0.1", 7001))
