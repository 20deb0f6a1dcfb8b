"""The incoming frame path's two per-byte jobs: unmasking and the UTF-8 check.

Every frame a client sends is masked (RFC 6455 section 5.3) and every text
message must be UTF-8 (section 8.1). autobahn does both per frame, with either
its native "NVX" helpers or a pure-Python loop over the bytes. The native
masker builds a C object per frame through cffi, which releases and retakes the
GIL on every call: with the history writer thread running, a small chatd.v1
frame paid ~130 µs there (measured with cProfile in bench/messenger_bench.py
sends, issue 14), more than the rest of the request. The pure-Python loop costs
~0.1 µs per byte.

So chatd unmasks with ``chatd._fanout.unmask`` (C, holds the GIL; falls back to
:func:`unmask_py`, one big-integer XOR, when the accelerator is not built), and
checks UTF-8 once per message with ``bytes.decode`` in
:meth:`chatd.protocol.ChatProtocol.onMessage` instead of autobahn's incremental
validator (turned off with ``utf8validateIncoming=False``): the close code for
invalid UTF-8 stays 1007.

Most of what a connection receives is runs of small, whole, masked text frames
(a window of chatd.v1 requests per TCP read). :func:`split_text_frames` cuts
such a run out of the received bytes in one C call
(``chatd._fanout.split_text_frames``), and
:meth:`chatd.protocol.ChatProtocol.dataReceived` hands each payload straight to
``onMessage``; everything else (control frames, fragments, binary, compressed
or oversize frames, protocol errors, a frame cut by the TCP read) goes through
autobahn's own parser unchanged. autobahn's per-frame Python path (about ten
calls per frame, and a debug log line whose arguments are formatted on every
read) was ~20% of the reactor thread's time in the same bench.

:func:`install` puts :func:`create_masker` where autobahn's protocol module
looks its masker up (``autobahn.websocket.protocol.create_xor_masker``); masking
is symmetric, so autobahn's client side (used by the tests) is served as well.
"""

from __future__ import annotations

import os

import autobahn.websocket.protocol as _ab_protocol

__all__ = [
    "Masker",
    "create_masker",
    "install",
    "installed",
    "split_text_frames",
    "split_text_frames_py",
    "unmask_py",
    "valid_utf8",
]

#: set (to anything) to keep autobahn's own masker and UTF-8 validator (for comparisons)
NO_C_UNMASK = "CHATD_NO_C_UNMASK"


def unmask_py(data: bytes, mask: bytes, offset: int) -> bytes:
    """*data* XOR the 4-byte key *mask*, starting at key byte ``offset % 4``."""
    n = len(data)
    if n == 0:
        return b""
    shift = offset & 3
    key = (mask[shift:] + mask[:shift]) * (n // 4 + 1)
    value = int.from_bytes(data, "little") ^ int.from_bytes(key[:n], "little")
    return value.to_bytes(n, "little")


def split_text_frames_py(data: bytes, max_payload: int) -> tuple[list[bytes], int]:
    """The complete, final, masked, uncompressed text frames (payload < 65536 bytes,
    at most *max_payload* when > 0) at the start of *data*, unmasked, and the number
    of bytes they took; it stops at the first frame that is anything else."""
    payloads, i, n = [], 0, len(data)
    while n - i >= 6:
        if data[i] != 0x81 or not data[i + 1] & 0x80:
            break
        length, head = data[i + 1] & 0x7F, 6
        if length == 127:
            break
        if length == 126:
            if n - i < 8:
                break
            length, head = int.from_bytes(data[i + 2 : i + 4], "big"), 8
            if length < 126:
                break  # not the minimal encoding: autobahn decides
        if 0 < max_payload < length or n - i < head + length:
            break
        start = i + head
        payloads.append(unmask_py(data[start : start + length], data[start - 4 : start], 0))
        i = start + length
    return payloads, i


try:
    from chatd._fanout import split_text_frames as _split
    from chatd._fanout import unmask as _unmask
except ImportError:  # not built, or a build from before these existed
    _unmask, _split = unmask_py, split_text_frames_py


def split_text_frames(data: bytes, max_payload: int) -> tuple[list[bytes], int]:
    """:func:`split_text_frames_py`, in C when ``chatd._fanout`` is built."""
    return _split(data, max_payload)


class Masker:
    """autobahn's masker interface (``process``, ``pointer``, ``reset``) for one
    frame: ``process`` may be called once per chunk of the frame's payload."""

    __slots__ = ("_mask", "_ptr")

    def __init__(self, mask: bytes):
        self._mask = bytes(mask)
        self._ptr = 0

    def pointer(self) -> int:
        return self._ptr

    def reset(self) -> None:
        self._ptr = 0

    def process(self, data: bytes) -> bytes:
        out = _unmask(data, self._mask, self._ptr)
        self._ptr += len(data)
        return out


def create_masker(mask: bytes, length: int | None = None) -> Masker:
    """autobahn's ``create_xor_masker(mask, length)``; one implementation for every
    length (the C loop works a word at a time)."""
    return Masker(mask)


def valid_utf8(payload: bytes) -> bool:
    """Whether a text message's *payload* is UTF-8 (``bytes.decode``, strict)."""
    try:
        payload.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def install() -> bool:
    """Use :func:`create_masker` for every autobahn connection in this process
    (unless ``CHATD_NO_C_UNMASK`` is set); returns :func:`installed`."""
    if not os.environ.get(NO_C_UNMASK):
        _ab_protocol.create_xor_masker = create_masker
    return installed()


def installed() -> bool:
    """Whether autobahn unmasks with :func:`create_masker` (and chatd, not autobahn,
    checks incoming UTF-8)."""
    return _ab_protocol.create_xor_masker is create_masker
