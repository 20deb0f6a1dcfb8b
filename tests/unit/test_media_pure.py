"""Media: the pure parts -- sniffing, signatures, ranges, the sweep rule, multipart."""

import io
import os

import pytest

from chatd.media import sniff
from chatd.media.multipart import (
    MAX_FIELD,
    MAX_PARTS,
    BadForm,
    FormParser,
    FormSink,
    TooLarge,
    boundary_of,
    extract_file,
)
from chatd.media.names import choose_name, clean_name, download_name
from chatd.media.signing import Signer, derive_key
from chatd.media.sweep import stale_files, stale_parts, stale_retired, to_remove
from chatd.media.web import parse_range
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


@pytest.mark.parametrize(
    "raw, want",
    [
        ("../../etc/passwd", "passwd"),
        ("..\\..\\windows\\win.ini", "win.ini"),
        ("C:\\Users\\a\\报告 2024.pdf", "报告 2024.pdf"),
        ("pass\x00wd\r\n.txt", "passwd.txt"),
        ("photo\u202egpj.exe", "photogpj.exe"),  # RTL override: would read "photoexe.jpg"
        ("\u2066a\u2069\u200f\ufeffb\u2028.txt", "ab.txt"),
        ("會議記錄.docx", "會議記錄.docx"),
        ("e\u0301.txt", "\u00e9.txt"),  # NFC
        ("  spaced  ", "spaced"),
        ("..", None),
        ("a/", None),
        ("\x01", None),
        ("", None),
        (None, None),
    ],
)
def test_clean_name(raw, want):
    assert clean_name(raw) == want


def test_clean_name_cuts_long_names_in_characters_and_bytes_keeping_the_extension():
    assert clean_name("a" * 1000) == "a" * 255
    assert clean_name("a" * 1000 + ".pdf") == "a" * 251 + ".pdf"
    cjk = clean_name("文" * 1000 + ".pdf")
    assert cjk == "文" * 83 + ".pdf" and len(cjk.encode()) <= 255
    assert len(clean_name("x." + "y" * 1000)) == 255  # no short extension: cut as a whole


def test_choose_name_field_first_then_filename_and_download_name():
    assert choose_name("报告.pdf", "tmp_3f2a.pdf") == "报告.pdf"
    assert choose_name(None, "tmp_3f2a.pdf") == "tmp_3f2a.pdf"
    assert choose_name("\u202e", "x.png") == "x.png"  # a field that cleans to nothing
    assert choose_name(None, None) is None
    assert download_name(None, "image/jpeg") == "file.jpg"
    assert download_name(None, "application/octet-stream") == "file"
    assert download_name("a.txt", "application/octet-stream") == "a.txt"


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
    form = extract_file(io.BytesIO(body), b"XyZ", str(tmp_path), 1 << 20)
    assert form.filename == "a b.bin" and form.size == len(payload)
    assert open(form.path, "rb").read() == payload


@pytest.mark.parametrize("step", [1, 7, 100, 65536, 1 << 30])
def test_form_parser_fed_in_any_pieces(tmp_path, step):
    """The push parser gives the same file and fields however the body is cut up
    (one byte at a time included), and keeps a ``name`` field before or after the file."""
    payload = bytes(range(256)) * 300 + b"\r\n--XyNot\r\n--Xy"
    body = _form(
        b"XyZ",
        [
            (b'Content-Disposition: form-data; name="note"', b"skipped"),
            (b'Content-Disposition: form-data; name="file"; filename="tmp_3f.pdf"', payload),
            (b'Content-Disposition: form-data; name="name"', "报告.pdf".encode()),
        ],
    )
    parser = FormParser(b"XyZ", str(tmp_path), 1 << 20)
    for at in range(0, len(body), step):
        parser.feed(body[at : at + step])
    form = parser.end()
    assert (form.filename, form.size, form.fields) == (
        "tmp_3f.pdf",
        len(payload),
        {"name": "报告.pdf"},
    )
    assert open(form.path, "rb").read() == payload
    parser.discard()  # handed over: the caller's file stays
    assert os.path.exists(form.path)


def test_form_parser_bounds_parts_and_fields(tmp_path):
    """At most MAX_PARTS parts (each costs a header parse on the reactor); a field
    is kept up to MAX_FIELD bytes."""
    many = _form(b"b", [(b'Content-Disposition: form-data; name="x"', b"1")] * (MAX_PARTS + 1))
    parser = FormParser(b"b", str(tmp_path), 1 << 20)
    with pytest.raises(BadForm, match="at most"):
        parser.feed(many)
    long_name = _form(
        b"b",
        [
            (b'Content-Disposition: form-data; name="name"', b"n" * (MAX_FIELD * 3)),
            (b'Content-Disposition: form-data; name="file"', b"data"),
        ],
    )
    form = extract_file(io.BytesIO(long_name), b"b", str(tmp_path), 1 << 20)
    assert form.fields["name"] == "n" * MAX_FIELD
    os.unlink(form.path)
    assert list(tmp_path.iterdir()) == []


def test_form_sink_keeps_the_error_and_leaves_nothing(tmp_path):
    """``request.content`` of /api/media: a refused body is discarded as it comes
    (the error answered at the end), a closed sink (connection lost) removes its
    half file, a taken Form is the caller's."""
    body = _form(
        b"b", [(b'Content-Disposition: form-data; name="file"; filename="x"', b"x" * 5000)]
    )
    sink = FormSink(b"b", str(tmp_path), 4000)
    sink.write(body)
    assert sink.tell() == len(body)
    with pytest.raises(TooLarge):
        sink.take()
    assert list(tmp_path.iterdir()) == []
    cut = FormSink(b"b", str(tmp_path), 1 << 20)
    cut.write(body[: len(body) // 2])
    assert len(list(tmp_path.iterdir())) == 1  # the file part, being written
    cut.close()
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(BadForm):
        cut.take()
    whole = FormSink(b"b", str(tmp_path), 1 << 20)
    whole.write(body)
    form = whole.take()
    whole.close()
    assert open(form.path, "rb").read() == b"x" * 5000


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


def test_stale_parts_every_unowned_one_alone_or_past_the_grace_when_shared():
    """A part file a put running here writes is never removed. With no other process
    writing into the store (grace None) every other part is a dead put's, however
    young (even dated after *now*: another clock); shared, only those not written for
    *grace* seconds."""
    listing = [("p-old", 100.0), ("p-new", 199.0), ("p-future", 500.0), ("p-mine", 1.0)]
    owned = {"p-mine"}
    assert stale_parts(listing, 200.0, None, owned) == ["p-old", "p-new", "p-future"]
    assert stale_parts(listing, 200.0, 100.0, owned) == ["p-old"]
    assert stale_parts(listing, 199.0, 100.0, owned) == []
    assert stale_parts(listing, 200.0, 100.0, set()) == ["p-old", "p-mine"]
    assert stale_parts([], 1e12, None, set()) == []


def test_stale_retired_after_the_grace_and_never_an_owned_one():
    """Retired objects are settled once *grace* passed since they were retired, unless
    a removal running here still owns their token."""
    listing = [("a" * 64, "t1", 100.0), ("b" * 64, "t2", 150.0), ("c" * 64, "t3", 90.0)]
    assert stale_retired(listing, 200.0, 100.0, set()) == [("a" * 64, "t1"), ("c" * 64, "t3")]
    assert stale_retired(listing, 200.0, 100.0, {"t1"}) == [("c" * 64, "t3")]
    assert stale_retired(listing, 189.0, 100.0, set()) == []
    assert stale_retired([], 1e12, 0.0, set()) == []


def test_stale_files_once_not_written_for_the_grace():
    listing = [("/t/old", 100.0), ("/t/new", 150.0), ("/t/edge", 110.0)]
    assert stale_files(listing, 210.0, 100.0) == ["/t/old", "/t/edge"]
    assert stale_files(listing, 199.0, 100.0) == []
