"""Media: knowing and cleaning uploads (Pillow, mutagen) -- real files made in-process."""

import io
import os

import pytest
from PIL import Image

from chatd.media.process import MAX_PIXELS, THUMB, Limits, Refused, inspect
from tests import media_samples

LIMITS = Limits(image=20 << 20, voice=2 << 20, file=50 << 20)


def _run(tmp_path, data, limits=LIMITS):
    src = tmp_path / "upload"
    src.write_bytes(data)
    return inspect(str(src), str(tmp_path), limits)


def test_jpeg_gps_exif_is_stripped_from_image_and_thumbnail(tmp_path):
    """The stored JPEG and its thumbnail carry no EXIF: no GPS, no camera, no description."""
    data = media_samples.jpeg_with_gps()
    assert media_samples.GPS_MARK in data and Image.open(io.BytesIO(data)).getexif()
    done = _run(tmp_path, data)
    assert (done.kind, done.mime, done.width, done.height) == ("image", "image/jpeg", 800, 600)
    for path in (done.path, done.thumb_path):
        raw = open(path, "rb").read()
        assert media_samples.GPS_MARK not in raw and b"SpyCam" not in raw and b"Exif" not in raw
        with Image.open(path) as im:
            assert not im.getexif()
            assert 0x8825 not in im.getexif()
    with Image.open(done.thumb_path) as thumb:
        assert thumb.format == "WEBP" and max(thumb.size) == THUMB


@pytest.mark.parametrize(
    "fmt, mime", [("PNG", "image/png"), ("WEBP", "image/webp"), ("GIF", "image/gif")]
)
def test_images_are_reencoded_in_their_format_with_a_thumbnail(tmp_path, fmt, mime):
    done = _run(tmp_path, media_samples.image(fmt, (1000, 250)))
    assert (done.kind, done.mime, done.width, done.height) == ("image", mime, 1000, 250)
    with Image.open(done.path) as im:
        assert im.format == fmt
    with Image.open(done.thumb_path) as thumb:
        assert thumb.size == (320, 80)
    assert done.sha256 != done.thumb_sha256 and len(done.sha256) == 64


def test_animated_gif_keeps_its_frames(tmp_path):
    done = _run(tmp_path, media_samples.animated_gif(frames=4))
    with Image.open(done.path) as im:
        assert im.n_frames == 4


def test_decompression_bomb_is_refused_before_decoding(tmp_path):
    """A 900 Mpx PNG header is refused 413 too_many_pixels; no file is left."""
    bomb = media_samples.png_bomb()
    assert len(bomb) < 200 and 30000 * 30000 > MAX_PIXELS
    with pytest.raises(Refused) as refused:
        _run(tmp_path, bomb)
    assert (refused.value.status, refused.value.code) == (413, "too_many_pixels")
    assert sorted(os.listdir(tmp_path)) == ["upload"]


def test_truncated_image_is_refused(tmp_path):
    data = media_samples.image("PNG", (300, 300))
    with pytest.raises(Refused) as refused:
        _run(tmp_path, data[: len(data) // 2])
    assert refused.value.code == "bad_image"
    assert sorted(os.listdir(tmp_path)) == ["upload"]


def test_mp3_duration_from_the_stream(tmp_path):
    data, seconds = media_samples.mp3(10.0)
    done = _run(tmp_path, data)
    assert (done.kind, done.mime) == ("voice", "audio/mpeg")
    assert abs(done.duration_ms - seconds * 1000) < 0.03 * seconds * 1000


def test_html_named_png_is_a_generic_file(tmp_path):
    """An HTML file (whatever its name or declared type) is a file, octet-stream."""
    done = _run(tmp_path, media_samples.HTML)
    assert (done.kind, done.mime) == ("file", "application/octet-stream")


def test_polyglot_png_loses_its_html_payload(tmp_path):
    """A PNG with HTML after IEND is stored re-encoded: the HTML is gone."""
    done = _run(tmp_path, media_samples.polyglot_png())
    assert done.mime == "image/png"
    assert b"<script" not in open(done.path, "rb").read()


def test_per_kind_limits(tmp_path):
    """Each kind has its limit: a 3 KiB MP3 passes the image limit but not a 2 KiB voice one."""
    limits = Limits(image=1 << 20, voice=2048, file=1 << 20)
    with pytest.raises(Refused) as refused:
        _run(tmp_path, media_samples.mp3(0.2)[0], limits)
    assert (refused.value.status, refused.value.code) == (413, "too_large")
