"""Commands to Redis are packed by hiredis (chatd.cluster.redis._InOneTurn) into the very
bytes txredisapi's own Python packer writes, whatever the argument types."""

import pytest
import txredisapi

from chatd.cluster import redis as cluster_redis

CASES = [
    ("EVALSHA", "0" * 40, 2, "p:ch:{room}", "p:seq:{room}", '{"text":"hi"}', "alice", 17),
    ("SET", "k", 1.25),  # a float: txredisapi's fixed notation
    ("X", True, b"\x00\xff\r\n", "κλ 中文", -5, 0),
    ("SPUBLISH", "p:rbus:{r}", "x" * 100_000),
    ("PING",),
]


def _protocol(cls):
    p = cls.__new__(cls)
    p.charset, p.errors = "utf-8", "strict"
    return p


@pytest.mark.parametrize("args", CASES)
def test_the_same_bytes_as_txredisapi(args):
    ours = _protocol(cluster_redis._Command)._build_command(*args)
    theirs = _protocol(txredisapi.BaseRedisProtocol)._build_command(*args)
    assert ours == theirs


def test_hiredis_packs_the_common_commands():
    assert cluster_redis._pack_command is not None  # a dependency in setup.cfg
    args = CASES[0]
    assert cluster_redis._pack_command(args) == _protocol(cluster_redis._Command)._build_command(
        *args
    )


def test_a_lone_surrogate_is_txredisapis_error():
    with pytest.raises(txredisapi.InvalidData):
        _protocol(cluster_redis._Command)._build_command("SET", "k", "\ud800")
