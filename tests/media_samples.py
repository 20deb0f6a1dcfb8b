"""Media files for the media tests, made in-process (Pillow, or bytes written by hand).

No AAC/M4A sample: an MP4 container with a real AAC track cannot be made
in-process without an encoder, so voice is tested with MP3 (a CBR frame
sequence written byte by byte) and M4A only by its magic number.
"""

from __future__ import annotations

import io
import struct
import uuid
import zlib

#: the GPS latitude written into :func:`jpeg_with_gps` (a marker to look for)
GPS_MARK = b"GPSMARK-52.5200N"


def image(fmt: str, size=(640, 480), mode="RGB", **save) -> bytes:
    """A gradient picture in *fmt* (``JPEG``, ``PNG``, ``GIF``, ``WEBP``)."""
    from PIL import Image

    im = Image.new(mode, size)
    px = im.load()
    for x in range(0, size[0], 8):
        for y in range(0, size[1], 8):
            px[x, y] = (x % 256, y % 256, (x + y) % 256) if mode == "RGB" else (x + y) % 256
    out = io.BytesIO()
    im.save(out, fmt, **save)
    return out.getvalue()


def jpeg_with_gps(size=(800, 600)) -> bytes:
    """A JPEG whose EXIF has GPS coordinates, a camera make and :data:`GPS_MARK`."""
    from PIL import Image

    exif = Image.Exif()
    exif[0x010F] = "SpyCam"  # Make
    exif[0x0112] = 1  # Orientation
    gps = exif.get_ifd(0x8825)
    gps[1] = "N"
    gps[2] = (52.0, 31.0, 12.0)
    gps[3] = "E"
    gps[4] = (13.0, 24.0, 36.0)
    exif[0x010E] = GPS_MARK.decode()  # ImageDescription
    return image("JPEG", size, exif=exif.tobytes())


def animated_gif(frames=3, size=(120, 90)) -> bytes:
    from PIL import Image

    ims = [Image.new("RGB", size, color=(i * 60, 255 - i * 60, 90)) for i in range(frames)]
    out = io.BytesIO()
    ims[0].save(out, "GIF", save_all=True, append_images=ims[1:], duration=100, loop=0)
    return out.getvalue()


def png_bomb(width=30000, height=30000) -> bytes:
    """A small PNG whose header declares *width* x *height* pixels (900 Mpx)."""
    tiny = image("PNG", (1, 1))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    patched = struct.pack(">I", 13) + chunk + struct.pack(">I", zlib.crc32(chunk))
    return tiny[:8] + patched + tiny[8 + 25 :]


def mp3(seconds: float = 10.0) -> tuple[bytes, float]:
    """A CBR MPEG-1 layer III stream (128 kb/s, 44.1 kHz, mono) of silence-ish frames;
    returns ``(bytes, exact duration in seconds)``."""
    frame_len = 144 * 128000 // 44100  # 417 bytes, no padding
    header = bytes([0xFF, 0xFB, 0x90, 0xC0])
    count = round(seconds * 44100 / 1152)
    frame = header + bytes(frame_len - 4)
    return frame * count, count * 1152 / 44100


HTML = b"<!doctype html><html><body><script>alert(document.cookie)</script></body></html>"


def polyglot_png() -> bytes:
    """A valid PNG with an HTML document after its IEND chunk."""
    return image("PNG", (64, 64)) + HTML


def form(
    data: bytes,
    filename="upload.bin",
    content_type="application/octet-stream",
    fields=(),
    disposition=None,
):
    """A multipart/form-data body with one ``file`` field: ``(body, content type)``.

    *fields* ``(name, value)`` are text parts after the file (UTF-8, sent as they
    are: hostile values included); *disposition* replaces the file part's whole
    ``Content-Disposition`` value (``filename*=``, no filename at all, ...)."""
    boundary = uuid.uuid4().hex
    if disposition is None:
        disposition = f'form-data; name="file"; filename="{filename}"'
    body = (
        f"--{boundary}\r\n"
        f"Content-Disposition: {disposition}\r\n"
        f"Content-Type: {content_type}\r\n\r\n"
    ).encode() + data
    for name, value in fields:
        body += (
            f'\r\n--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'
        ).encode() + value.encode("utf-8", "surrogatepass")
    body += f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"
