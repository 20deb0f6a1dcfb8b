"""Media: the pure parts -- sniffing, signatures, ranges, the sweep rule, multipart."""

import io

import pytest

from chatd.media import sniff
from chatd.media.multipart import BadForm, TooLarge, boundary_of, extract_file
from chatd.media.signing import Signer, derive_key
from chatd.media.sweep import to_remove
from chatd.media.web import clean_name, parse_range
from tests import media_samples


@pytest.mark.parametrize(
    "data, kind, mime",
    [
        (media_samples.image("JPEG", (8, 8)), "image", "image/jpeg"),
        (media_samples.image("PNG", (8, 8)), "image", "image/png"),
        (media_samples.image("GIF", (8, 8)), "image", "image/gif"),
        (media_samples.image("WEBP", (8, 8)), "image", "image/webp"),
        (media_samples.mp3(0.1)[0], "voice", "audio/mpeg"),
        (b"ID3\x04\x00" + bytes(40), "voice", "audio/mpeg"),
        (b"\x00\x00\x00\x20ftypM4A \x00\x00\x00\x00", "voice", "audio/mp4"),
        (b"\x00\x00\x00\x20ftypisom\x00\x00\x02\x00", "video", "video/mp4"),
        (b"\xff\xf1\x50\x80\x02\x1f\xfc", "voice", "audio/aac"),
        (media_samples.HTML, "file", "application/octet-stream"),
        (b"<svg xmlns='http://www.w3.org/2000/svg'/>", "file", "application/octet-stream"),
        (b"%PDF-1.7\n", "file", "application/octet-stream"),
        (b"", "file", "application/octet-stream"),
    ],
)
def test_sniff_by_magic_numbers_only(data, kind, mime):
    """The kind comes from the first bytes; HTML, SVG and the rest are generic files."""
    assert sniff.sniff(data[: sniff.HEAD]) == (kind, mime)


def test_signature_good_expired_forged_and_bound_to_variant():
    """A URL is valid until it expires, for its id and variant only."""
    signer = Signer(derive_key("secret"), ttl=3600)
    url = signer.url("abc", "", now=1000.0)
    query = dict(p.split("=", 1) for p in url.split("?", 1)[1].split("&"))
    assert url.startswith("/media/abc?")
    assert signer.check("abc", "", query["e"], query["s"], now=4599.0) is None
    assert signer.check("abc", "", query["e"], query["s"], now=4601.0) == "the URL has expired"
    assert signer.check("abd", "", query["e"], query["s"], now=1000.0) == "bad signature"
    assert signer.check("abc", "thumb", query["e"], query["s"], now=1000.0) == "bad signature"
    assert signer.check("abc", "", "99999999", query["s"], now=1000.0) == "bad signature"
    assert signer.check("abc", "", None, None, now=1000.0).startswith("a signed URL")
    other = Signer(derive_key("other-secret"))
    assert other.check("abc", "", query["e"], query["s"], now=1000.0) == "bad signature"


@pytest.mark.parametrize(
    "header, want",
    [
        (None, None),
        (b"bytes=0-99", (0, 100)),
        (b"bytes=100-", (100, 1000)),
        (b"bytes=-10", (990, 1000)),
        (b"bytes=900-5000", (900, 1000)),
        (b"bytes=1000-", "unsatisfiable"),
        (b"bytes=5-2", "unsatisfiable"),
        (b"bytes=-0", "unsatisfiable"),
        (b"bytes=0-1,5-6", None),
        (b"items=0-1", None),
        (b"bytes=x-1", None),
    ],
)
def test_parse_range(header, want):
    """One byte range is served (206), beyond the end is 416, anything else whole."""
    assert parse_range(header, 1000) == want


def test_sweep_removes_unattached_uploads_past_the_grace_period():
    """Never posted and older than the grace period (since the upload and since it was
    last attached): removed; shown by a stored message: kept; every message that
    showed it recalled or pruned: removed at once, however young."""
    rows = [
        {"id": "old", "created": 0.0, "attached": 0},
        {"id": "edge", "created": 1000.0, "attached": 0},
        {"id": "young", "created": 1000.1, "attached": 0},
        {"id": "used", "created": 0.0, "attached": 1.0, "posts": 2, "live": 1},
        {"id": "attaching", "created": 0.0, "attached": 1000.5},
        {"id": "attach-failed", "created": 0.0, "attached": 999.0},
        {"id": "orphaned", "created": 87000.0, "attached": 87000.0, "posts": 2, "live": 0},
    ]
    assert to_remove(rows, now=87400.0, grace=86400.0) == [
        "old",
        "edge",
        "attach-failed",
        "orphaned",
    ]


def test_clean_name():
    assert clean_name("../../etc/pass\x00wd") == "....etcpasswd"
    assert clean_name("\x01") is None
    assert clean_name("a" * 300) == "a" * 255


def _form(boundary, parts):
    out = b""
    for head, body in parts:
        out += b"--" + boundary + b"\r\n" + head + b"\r\n\r\n" + body + b"\r\n"
    return out + b"--" + boundary + b"--\r\n"


def test_multipart_streams_the_file_part_only(tmp_path):
    """The file part is copied out whole across chunk boundaries; other fields skipped."""
    payload = bytes(range(256)) * 1000 + b"\r\n--notquite\r\n"
    body = _form(
        b"XyZ",
        [
            (b'Content-Disposition: form-data; name="note"', b"hello"),
            (
                b'Content-Disposition: form-data; name="upload"; filename="a b.bin"\r\n'
                b"Content-Type: image/png",
                payload,
            ),
        ],
    )
    path, name, size = extract_file(io.BytesIO(body), b"XyZ", str(tmp_path), 1 << 20)
    assert name == "a b.bin" and size == len(payload)
    assert open(path, "rb").read() == payload


def test_multipart_refusals_leave_no_file(tmp_path):
    """Over the limit, cut short or without a file: an error and an empty directory."""
    body = _form(
        b"b", [(b'Content-Disposition: form-data; name="file"; filename="x"', b"x" * 5000)]
    )
    with pytest.raises(TooLarge):
        extract_file(io.BytesIO(body), b"b", str(tmp_path), 4000)
    with pytest.raises(BadForm):
        extract_file(io.BytesIO(body[: len(body) // 2]), b"b", str(tmp_path), 1 << 20)
    with pytest.raises(BadForm):
        extract_file(
            io.BytesIO(_form(b"b", [(b'Content-Disposition: form-data; name="x"', b"1")])),
            b"b",
            str(tmp_path),
            1 << 20,
        )
    assert list(tmp_path.iterdir()) == []


def test_boundary_of():
    assert boundary_of('multipart/form-data; boundary="ab-c"') == b"ab-c"
    for bad in (None, "application/json", "multipart/form-data"):
        with pytest.raises(BadForm):
            boundary_of(bad)


def test_scan_finds_the_newest_message_showing_the_uploads_and_stops_at_since():
    from chatd.media.sweep import pending_groups, scan
    from chatd.store import Message

    def m(seq, ts, ids=(), kind="message"):
        data = {"attachments": [{"media_id": i} for i in ids]} if ids else None
        return Message("r", seq, "alice", "alice", "", ts, None, kind, data)

    page = [m(1, 1000, ["x"]), m(2, 2000), m(3, 3000, ["x", "y"]), m(4, 4000, kind="event")]
    assert scan(page, {"x"}, 500) == ({"x": 3}, True)
    assert scan(page, {"y", "z"}, 500) == ({"y": 3}, True)
    assert scan(page, {"z"}, 500) == ({}, False)  # an older page may hold it
    assert scan(page, {"x"}, 3500) == ({}, True)  # older than the claim: not it
    groups = pending_groups([("t", "x", "r", 5.0), ("t", "y", "r", 4.0), ("u", "x", "d", 1.0)])
    assert groups == {("t", "r"): (4.0, {"x", "y"}), ("u", "d"): (1.0, {"x"})}
