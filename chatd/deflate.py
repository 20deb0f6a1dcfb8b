"""permessage-deflate (RFC 7692) without server context takeover: pure logic.

chatd frames a fan-out message once and hands the same bytes to every recipient
(chatd/fanout.py). A compressor that keeps its window between messages (context
takeover) would make every connection's bytes different, so chatd always answers
``server_no_context_takeover``: a compressed message then depends only on the message
and on the window size the client allowed (``server_max_window_bits``), and the fan-out
compresses it once per window size and shares the bytes, as gorilla/websocket's
PreparedMessage does.

* :func:`negotiate` reads the client's offers (in its order of preference) and returns
  the :class:`Agreement` for the first acceptable one, or None. An offer with an
  unknown, repeated or ill-valued parameter is declined (RFC 7692 §5), never the
  handshake: the connection then simply runs uncompressed.
* :func:`compress` deflates one message with a fresh compressor, sync-flushes and
  strips the trailing ``00 00 ff ff`` (§7.2.1); None when it is not worth it (below
  :data:`MIN_SIZE`, or no smaller).
* Incoming compressed messages are inflated by autobahn's own permessage-deflate
  decompressor (:meth:`Agreement.inflater`), which autobahn bounds by the
  ``--max-message-size``: a deflate bomb is closed with 1009 before it inflates past it.
  The client keeps its context (one decompressor for the connection) unless it offered
  ``client_no_context_takeover``, which chatd then accepts (one per message).
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass

from autobahn.websocket.compress_deflate import PerMessageDeflate

#: the extension's token in Sec-WebSocket-Extensions
NAME = "permessage-deflate"

#: messages shorter than this many bytes go uncompressed (RSV1 off): deflate saves
#: little on them and costs the client an inflate (bench/compression_bytes.py)
MIN_SIZE = 128

#: zlib's raw deflate has no 8-bit window: with server_max_window_bits=8 chatd
#: compresses with 9 bits, which is safe only for messages of at most 256 bytes (no
#: back-reference of a message that short can reach further than 255 bytes)
_SMALL_WINDOW_LIMIT = 256

#: a window-bits value: a decimal integer from 8 to 15 without leading zeros (§7.1.2)
_BITS = re.compile(r"(?:8|9|1[0-5])\Z")

_FLAGS = ("server_no_context_takeover", "client_no_context_takeover")


@dataclass(frozen=True)
class Agreement:
    """The accepted parameters of one connection's permessage-deflate."""

    #: the window the client allowed chatd (None: not offered, which means 15)
    server_max_window_bits: int | None = None
    #: the client promised to reset its compressor per message
    client_no_context_takeover: bool = False
    #: the client's window, when its offer gave one (echoed in the response)
    client_max_window_bits: int | None = None

    @property
    def window_bits(self) -> int:
        """The LZ77 window chatd compresses with."""
        return self.server_max_window_bits or 15

    @property
    def response(self) -> str:
        """The Sec-WebSocket-Extensions value that accepts the offer."""
        parts = [NAME, "server_no_context_takeover"]
        if self.client_no_context_takeover:
            parts.append("client_no_context_takeover")
        if self.server_max_window_bits is not None:  # accepted by echoing it (§7.1.2.1)
            parts.append(f"server_max_window_bits={self.server_max_window_bits}")
        if self.client_max_window_bits is not None:
            parts.append(f"client_max_window_bits={self.client_max_window_bits}")
        return "; ".join(parts)

    def inflater(self) -> PerMessageDeflate:
        """autobahn's permessage-deflate processor, used only to inflate what the client
        sends (chatd never lets autobahn compress). It inflates with a 15-bit window,
        which reads any smaller window too; autobahn bounds the output by the
        connection's maxMessagePayloadSize."""
        return PerMessageDeflate(
            is_server=True,
            server_no_context_takeover=True,
            client_no_context_takeover=self.client_no_context_takeover,
            server_max_window_bits=self.window_bits,
            client_max_window_bits=15,
            mem_level=None,
        )


def parse_offer(params: dict) -> Agreement | None:
    """The agreement accepting one offer (autobahn's parsed parameters: name -> list of
    values, True for a parameter without a value), or None if it must be declined."""
    server_bits = client_bits = None
    flags = {}
    for name, values in params.items():
        if len(values) != 1:
            return None  # a parameter given twice
        (value,) = values
        if name in _FLAGS:
            if value is not True:
                return None
            flags[name] = True
        elif name == "server_max_window_bits":
            if value is True or not _BITS.match(value):
                return None
            server_bits = int(value)
        elif name == "client_max_window_bits":
            if value is not True:
                if not _BITS.match(value):
                    return None
                client_bits = int(value)
        else:
            return None  # a parameter RFC 7692 does not define
    return Agreement(server_bits, flags.get("client_no_context_takeover", False), client_bits)


def negotiate(offers) -> Agreement | None:
    """The agreement for the first acceptable permessage-deflate offer of *offers*
    (each a parsed parameter dict, in the client's order of preference), else None."""
    for params in offers:
        agreed = parse_offer(params)
        if agreed is not None:
            return agreed
    return None


def compress(payload: bytes, window_bits: int, level: int = zlib.Z_DEFAULT_COMPRESSION):
    """*payload* as one permessage-deflate message body for a client that allowed
    *window_bits*, or None when it goes uncompressed: shorter than :data:`MIN_SIZE`,
    too long for an 8-bit window, or not made smaller."""
    size = len(payload)
    if size < MIN_SIZE:
        return None
    if window_bits < 9:
        if size > _SMALL_WINDOW_LIMIT:
            return None
        window_bits = 9
    data = deflate_message(payload, window_bits, level)
    return data if len(data) < size else None


def deflate_message(payload: bytes, window_bits: int = 15, level=zlib.Z_DEFAULT_COMPRESSION):
    """*payload* deflated by a fresh compressor (no context taken over) with a
    *window_bits* window (9 to 15), sync-flushed, without the trailing ``00 00 ff ff``."""
    compressor = zlib.compressobj(level, zlib.DEFLATED, -window_bits)
    data = compressor.compress(payload) + compressor.flush(zlib.Z_SYNC_FLUSH)
    return data[:-4]  # the sync flush's empty stored block, 00 00 ff ff (§7.2.1)
