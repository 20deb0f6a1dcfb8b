"""chatd.frames: the unmasking and UTF-8 check that replace autobahn's per-frame helpers."""

import os

import autobahn.websocket.protocol as ab_protocol
import pytest

from chatd import frames

MASK = b"\x12\x34\xab\xcd"


def reference(data: bytes, mask: bytes, offset: int) -> bytes:
    return bytes(b ^ mask[(i + offset) & 3] for i, b in enumerate(data))


@pytest.mark.parametrize("size", [0, 1, 3, 4, 5, 125, 126, 1000, 65537])
@pytest.mark.parametrize("offset", [0, 1, 2, 3, 6])
def test_unmask_matches_rfc6455_for_every_length_and_offset(size, offset):
    data = os.urandom(size)
    want = reference(data, MASK, offset)
    assert frames.unmask_py(data, MASK, offset) == want
    assert frames._unmask(data, MASK, offset) == want


def test_the_c_unmask_is_built_here():
    """CI builds chatd._fanout; the masker must be the C one there, not the fallback."""
    if os.environ.get("CI") != "true":
        pytest.skip("only required under CI=true (a laptop may lack a compiler)")
    from chatd._fanout import unmask

    assert frames._unmask is unmask


def test_c_unmask_refuses_a_key_that_is_not_four_bytes():
    if frames._unmask is frames.unmask_py:
        pytest.skip("chatd._fanout is not built")
    with pytest.raises(ValueError, match="4 bytes"):
        frames._unmask(b"abc", b"12345", 0)


def test_a_masker_fed_in_chunks_keeps_its_place_in_the_key():
    data = os.urandom(1001)
    masker = frames.create_masker(MASK, len(data))
    out = b"".join(masker.process(data[i : i + 7]) for i in range(0, len(data), 7))
    assert out == reference(data, MASK, 0)
    assert masker.pointer() == 1001
    masker.reset()
    assert masker.pointer() == 0
    assert masker.process(data[:9]) == reference(data[:9], MASK, 0)


def test_install_puts_the_masker_where_autobahn_looks_it_up():
    assert frames.install() is True
    assert ab_protocol.create_xor_masker is frames.create_masker
    assert frames.installed()


@pytest.mark.parametrize(
    "payload, ok",
    [
        (b'{"type":"ping"}', True),
        ("你好, мир, 🙂".encode(), True),
        (b"\xff", False),
        (b"\xed\xa0\x80", False),  # an encoded surrogate
        (b"\xc0\xaf", False),  # overlong
        (b"\xe4\xb8", False),  # cut inside a code point
    ],
)
def test_valid_utf8_is_rfc3629(payload, ok):
    assert frames.valid_utf8(payload) is ok


def masked(payload: bytes, opcode: int = 0x1, fin: bool = True, mask: bytes = MASK) -> bytes:
    """One client frame (RFC 6455 5.2), masked with *mask*."""
    n = len(payload)
    if n < 126:
        head = bytes([0x80 * fin | opcode, 0x80 | n])
    elif n < 65536:
        head = bytes([0x80 * fin | opcode, 0x80 | 126]) + n.to_bytes(2, "big")
    else:
        head = bytes([0x80 * fin | opcode, 0x80 | 127]) + n.to_bytes(8, "big")
    return head + mask + reference(payload, mask, 0)


SPLITS = [
    pytest.param(b"", 0, [], 0, id="empty"),
    pytest.param(masked(b"hi"), 0, [b"hi"], 8, id="one"),
    pytest.param(masked(b"") + masked(b"x"), 0, [b"", b"x"], 13, id="empty-payload"),
    pytest.param(
        masked(b"a" * 125) + masked(b"b" * 126), 0, [b"a" * 125, b"b" * 126], 265, id="7-and-16-bit"
    ),
    pytest.param(masked(b"a" * 65536), 0, [], 0, id="64-bit-length-left-to-autobahn"),
    pytest.param(masked(b"hi") + masked(b"ping", opcode=0x9), 0, [b"hi"], 8, id="stops-at-control"),
    pytest.param(masked(b"hi") + masked(b"bin", opcode=0x2), 0, [b"hi"], 8, id="stops-at-binary"),
    pytest.param(masked(b"he", fin=False) + masked(b"y", opcode=0), 0, [], 0, id="fragment"),
    pytest.param(masked(b"hi")[:-1], 0, [], 0, id="cut-payload"),
    pytest.param(masked(b"hi") + masked(b"x" * 300)[:5], 0, [b"hi"], 8, id="cut-header"),
    pytest.param(masked(b"x" * 11) + masked(b"y"), 10, [], 0, id="over-max-payload"),
    pytest.param(masked(b"x" * 10), 10, [b"x" * 10], 16, id="at-max-payload"),
    pytest.param(bytes([0x81, 0x02]) + b"hi", 0, [], 0, id="unmasked"),
    pytest.param(bytes([0xC1, 0x82]) + MASK + b"hi", 0, [], 0, id="rsv1-compressed"),
    pytest.param(bytes([0x81, 0xFE, 0, 5]) + MASK + b"hello", 0, [], 0, id="non-minimal-length"),
]


@pytest.mark.parametrize("data, max_payload, payloads, used", SPLITS)
def test_split_text_frames_takes_only_whole_plain_text_frames(data, max_payload, payloads, used):
    assert frames.split_text_frames_py(data, max_payload) == (payloads, used)
    assert frames.split_text_frames(data, max_payload) == (payloads, used)


def test_split_text_frames_c_and_python_agree_on_random_runs():
    import random

    rng = random.Random(7)
    for _ in range(200):
        data = b"".join(
            masked(os.urandom(rng.choice([0, 1, 5, 125, 126, 300])), mask=os.urandom(4))
            for _ in range(rng.randint(1, 6))
        )
        data = data[: rng.randint(0, len(data))]
        assert frames.split_text_frames(data, 0) == frames.split_text_frames_py(data, 0)
