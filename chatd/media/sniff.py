"""What an upload is, from its magic numbers only (never its name or Content-Type).

:func:`sniff` looks at the first :data:`HEAD` bytes and answers ``(kind, mime)``:
``image`` (JPEG, PNG, GIF, WebP), ``voice`` (AAC in ADTS, M4A, MP3), ``video``
(MP4) or ``file`` (anything else, ``application/octet-stream``). Pure: bytes in,
answer out.
"""

from __future__ import annotations

#: bytes of the upload :func:`sniff` needs
HEAD = 64

IMAGE, VOICE, VIDEO, FILE = "image", "voice", "video", "file"
OCTET = "application/octet-stream"

#: the MP4 brands (ISO/IEC 14496-12 ``ftyp`` major brand) that are audio only
_AUDIO_BRANDS = {b"M4A ", b"M4B ", b"M4P ", b"F4A ", b"F4B "}
_VIDEO_BRANDS = {b"isom", b"iso2", b"mp41", b"mp42", b"avc1", b"M4V ", b"dash", b"3gp4", b"3gp5"}


def _mp3_frame(head: bytes) -> bool:
    """An MPEG audio layer III frame header: 11 sync bits, a valid version, bitrate and rate."""
    if len(head) < 4 or head[0] != 0xFF or head[1] & 0xE0 != 0xE0:
        return False
    version = (head[1] >> 3) & 3
    layer = (head[1] >> 1) & 3
    bitrate = head[2] >> 4
    rate = (head[2] >> 2) & 3
    return version != 1 and layer == 1 and bitrate not in (0, 15) and rate != 3


def _adts(head: bytes) -> bool:
    """An AAC ADTS header: sync 0xFFF, layer 0."""
    return len(head) >= 7 and head[0] == 0xFF and head[1] & 0xF6 == 0xF0


def sniff(head: bytes) -> tuple[str, str]:
    """``(kind, mime)`` of an upload whose first bytes are *head*."""
    if head.startswith(b"\xff\xd8\xff"):
        return IMAGE, "image/jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return IMAGE, "image/png"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return IMAGE, "image/gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return IMAGE, "image/webp"
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in _AUDIO_BRANDS:
            return VOICE, "audio/mp4"
        if brand in _VIDEO_BRANDS:
            return VIDEO, "video/mp4"
        return FILE, OCTET
    if head.startswith(b"ID3") or _mp3_frame(head):
        return VOICE, "audio/mpeg"
    if _adts(head):
        return VOICE, "audio/aac"
    return FILE, OCTET
