"""Media uploads end to end: a ``twistd -n chatd`` subprocess, real HTTP on loopback.

Upload (``POST /api/media``), know (sniffed kind, EXIF stripped, duration),
store (content-addressed on disk) and serve (signed URLs, Range, safe headers);
and the hostile cases of docs/security.md's media rows: anonymous uploads,
oversize and cut uploads leaving nothing behind, the quota, decompression
bombs, HTML in disguise, forged and expired URLs.
"""

from __future__ import annotations

import functools
import hashlib
import http.client
import io
import json
import os
import socket
import threading
import time
from urllib.parse import quote

import jwt
import pytest
from PIL import Image

from chatd.media.signing import Signer, derive_key
from tests import media_samples
from tests.conftest import wait_until

SECRET = "media-test-secret-32-bytes-long!!!!"
IMAGE_MAX = 400_000
VOICE_MAX = 300_000
FILE_MAX = 500_000
QUOTA = 1_500_000


def token(user: str) -> str:
    return jwt.encode({"sub": user, "exp": int(time.time()) + 600}, SECRET, algorithm="HS256")


class Http:
    """Requests to one chatd on loopback."""

    def __init__(self, port):
        self.port = port

    def request(self, method, path, body=None, headers=None):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
        finally:
            conn.close()

    def upload(self, data, user="alice", filename="upload.bin", content_type="image/png", **form):
        body, ctype = media_samples.form(data, filename, content_type, **form)
        headers = {"Content-Type": ctype}
        if user is not None:
            headers["Authorization"] = f"Bearer {token(user)}"
        status, head, raw = self.request("POST", "/api/media", body, headers)
        return status, head, json.loads(raw)

    def get(self, path, **headers):
        return self.request("GET", path, headers=headers)


def media_args(media_dir, *extra) -> list[str]:
    """``twistd -n chatd`` options of a media-serving chatd on loopback (history in
    memory, uploads under *media_dir*), then *extra*."""
    return [
        "--listen",
        "tcp:0:interface=127.0.0.1",
        "--db",
        ":memory:",
        "--jwt-secret",
        SECRET,
        "--media-dir",
        str(media_dir),
        *extra,
    ]


@pytest.fixture(scope="module")
def media_server(tmp_path_factory):
    from tests.conftest import TwistdProcess

    root = tmp_path_factory.mktemp("media")
    proc = TwistdProcess(
        media_args(
            root / "media",
            "--max-image-bytes",
            str(IMAGE_MAX),
            "--max-voice-bytes",
            str(VOICE_MAX),
            "--max-file-bytes",
            str(FILE_MAX),
            "--media-quota-bytes",
            str(QUOTA),
        ),
        cwd=root,
    )
    yield proc, Http(proc.port), root / "media"
    proc.stop()


def objects(media_dir) -> list[str]:
    found = []
    for base, _, files in os.walk(media_dir / "objects"):
        found += [os.path.join(base, f) for f in files]
    return sorted(found)


def leftovers(media_dir) -> list[str]:
    tmp = media_dir / "tmp"
    return sorted(os.listdir(tmp)) if tmp.exists() else []


def open_deleted_files(pid) -> list[str]:
    """Temporary files the server process still holds open although they are unlinked."""
    out = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.endswith("(deleted)"):
            out.append(target)
    return out


def processes_under(pid) -> dict[int, tuple[str, str]]:
    """``{pid: (start time, command line)}`` of every process below *pid* (its
    children, theirs, ...), from /proc."""
    parents, seen = {}, {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rpartition(")")[2].split()
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue  # gone meanwhile
        parents[int(entry)] = (int(fields[1]), fields[19], cmdline)
    wanted = {pid}
    while True:
        more = {p for p, (ppid, _, _) in parents.items() if ppid in wanted and p not in wanted}
        if not more:
            break
        wanted |= more
    for p in wanted - {pid}:
        seen[p] = parents[p][1:]
    return seen


def still_running(processes: dict[int, tuple[str, str]]) -> list[int]:
    """The pids of *processes* (``processes_under``) still running: the same start time."""
    alive = []
    for p, (start, _) in processes.items():
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rpartition(")")[2].split()
        except OSError:
            continue
        if fields[19] == start and fields[0] != "Z":
            alive.append(p)
    return alive


def test_jpeg_upload_strips_gps_exif_and_serves_signed_urls(media_server):
    """A JPEG with GPS EXIF: 201 with dims and signed URLs; the served image and
    thumbnail carry no EXIF; headers say nosniff, ETag, private immutable caching."""
    _, http_, _ = media_server
    data = media_samples.jpeg_with_gps((800, 600))
    status, _, answer = http_.upload(data, filename="holiday.jpg", content_type="image/jpeg")
    assert status == 201, answer
    assert answer["kind"] == "image" and answer["mime"] == "image/jpeg"
    assert (answer["width"], answer["height"], answer["name"]) == (800, 600, "holiday.jpg")
    assert answer["thumb"]["mime"] == "image/webp" and answer["thumb_url"]
    status, head, body = http_.get(answer["url"])
    assert status == 200 and head["content-type"] == "image/jpeg"
    assert head["x-content-type-options"] == "nosniff"
    assert (
        head["cache-control"].startswith("private, max-age=")
        and "immutable" in head["cache-control"]
    )
    assert head["etag"].startswith('"') and head["content-disposition"] == "inline"
    assert media_samples.GPS_MARK not in body and b"Exif" not in body
    assert not Image.open(io.BytesIO(body)).getexif()
    status, head, thumb = http_.get(answer["thumb_url"])
    assert status == 200 and head["content-type"] == "image/webp"
    assert max(Image.open(io.BytesIO(thumb)).size) == 320 and b"Exif" not in thumb
    status, _, _ = http_.get(answer["url"], **{"If-None-Match": head["etag"]})
    assert status == 200  # the thumbnail's ETag is not the image's
    status, _, _ = http_.get(answer["thumb_url"], **{"If-None-Match": head["etag"]})
    assert status == 304


@pytest.mark.parametrize(
    "fmt, mime", [("PNG", "image/png"), ("GIF", "image/gif"), ("WEBP", "image/webp")]
)
def test_png_gif_webp(media_server, fmt, mime):
    _, http_, _ = media_server
    status, _, answer = http_.upload(media_samples.image(fmt, (400, 300)))
    assert (
        status == 201
        and answer["mime"] == mime
        and (answer["width"], answer["height"]) == (400, 300)
    )
    status, head, body = http_.get(answer["url"])
    assert (
        status == 200
        and head["content-type"] == mime
        and Image.open(io.BytesIO(body)).format == fmt
    )


def test_identical_uploads_are_stored_once(media_server):
    """Two uploads of one PNG: two media ids, one stored object (plus one thumbnail)."""
    _, http_, media_dir = media_server
    data = media_samples.image("PNG", (123, 45))
    before = objects(media_dir)
    first = http_.upload(data)[2]
    second = http_.upload(data)[2]
    assert first["media_id"] != second["media_id"]
    assert len(objects(media_dir)) == len(before) + 2


def test_mp3_duration_and_range_requests(media_server):
    """An MP3 has its duration; Range gives 206 with Content-Range, past the end 416."""
    _, http_, _ = media_server
    data, seconds = media_samples.mp3(10.0)
    status, _, answer = http_.upload(data, filename="voice.mp3", content_type="audio/mpeg")
    assert status == 201 and answer["kind"] == "voice" and answer["mime"] == "audio/mpeg"
    assert abs(answer["duration_ms"] - seconds * 1000) < 300
    status, head, body = http_.get(answer["url"], Range="bytes=100-199")
    assert status == 206 and body == data[100:200]
    assert head["content-range"] == f"bytes 100-199/{len(data)}"
    status, head, body = http_.get(answer["url"], Range="bytes=-50")
    assert status == 206 and body == data[-50:]
    status, head, body = http_.get(answer["url"], Range=f"bytes={len(data)}-")
    assert status == 416 and head["content-range"] == f"bytes */{len(data)}"
    assert json.loads(body)["error"] == "bad_range"
    status, _, body = http_.get(answer["url"])
    assert status == 200 and body == data


def test_anonymous_and_bad_token_uploads_are_refused(media_server):
    """No token or a forged one: 401 unauthorized, answered from the headers."""
    _, http_, media_dir = media_server
    before = objects(media_dir)
    status, head, answer = http_.upload(media_samples.image("PNG", (10, 10)), user=None)
    assert (
        status == 401 and answer["error"] == "unauthorized" and head["www-authenticate"] == "Bearer"
    )
    body, ctype = media_samples.form(b"x")
    forged = jwt.encode({"sub": "alice"}, "not-the-secret-but-long-enough-32b", algorithm="HS256")
    status, _, raw = http_.request(
        "POST", "/api/media", body, {"Content-Type": ctype, "Authorization": f"Bearer {forged}"}
    )
    assert status == 401 and json.loads(raw)["error"] == "unauthorized"
    assert objects(media_dir) == before


def test_decompression_bomb_is_refused(media_server):
    _, http_, media_dir = media_server
    before = objects(media_dir)
    status, _, answer = http_.upload(media_samples.png_bomb())
    assert status == 413 and answer["error"] == "too_many_pixels"
    assert objects(media_dir) == before and leftovers(media_dir) == []


def test_html_named_png_is_never_served_as_html(media_server):
    """HTML sent as x.png with Content-Type image/png: a generic file, served as an
    octet-stream attachment with nosniff."""
    _, http_, _ = media_server
    status, _, answer = http_.upload(
        media_samples.HTML, filename="cat.png", content_type="image/png"
    )
    assert (
        status == 201 and answer["kind"] == "file" and answer["mime"] == "application/octet-stream"
    )
    status, head, body = http_.get(answer["url"])
    assert status == 200 and body == media_samples.HTML
    assert head["content-type"] == "application/octet-stream"
    assert (
        head["content-disposition"].startswith("attachment;")
        and "cat.png" in head["content-disposition"]
    )
    assert (
        head["x-content-type-options"] == "nosniff" and "sandbox" in head["content-security-policy"]
    )


def test_polyglot_png_is_served_without_its_html(media_server):
    _, http_, _ = media_server
    status, _, answer = http_.upload(media_samples.polyglot_png(), filename="p.html")
    assert status == 201 and answer["mime"] == "image/png"
    status, head, body = http_.get(answer["url"])
    assert head["content-type"] == "image/png" and b"<script" not in body


@pytest.mark.parametrize(
    "form, name",
    [
        # wx.uploadFile: the part's filename is the local temp path's; the SDK sends `name`
        ({"filename": "tmp_3f2a9c.pdf", "fields": [("name", "报告 2024.pdf")]}, "报告 2024.pdf"),
        ({"filename": "tmp_3f2a9c.pdf"}, "tmp_3f2a9c.pdf"),  # old clients: as before
        (
            {"disposition": "form-data; name=file; filename*=UTF-8''%E4%B8%AD%E6%96%87.txt"},
            "中文.txt",
        ),
        ({"disposition": 'form-data; name="file"'}, None),  # neither: no name, as before
        ({"fields": [("name", "../../etc/passwd")]}, "passwd"),
        ({"fields": [("name", "pass\x00wd.txt")]}, "passwd.txt"),
        ({"fields": [("name", "invoice\u202efdp.exe")]}, "invoicefdp.exe"),
        ({"fields": [("name", "n" * 1000 + ".txt")]}, "n" * 251 + ".txt"),
        ({"filename": "../x.txt", "fields": [("name", "\u202e\x01")]}, "x.txt"),
    ],
)
def test_the_uploads_name(media_server, form, name):
    """The name shown and downloaded: the `name` field first, else the part's
    filename (filename*= decoded), cleaned (docs/security.md); with neither, no
    name and the download is called "file"."""
    _, http_, _ = media_server
    status, _, answer = http_.upload(b"just some text\n", content_type="text/plain", **form)
    assert status == 201, answer
    assert answer.get("name") == name
    status, head, _ = http_.get(answer["url"])
    want = quote(name or "file", safe="")
    assert status == 200 and head["content-disposition"] == f"attachment; filename*=UTF-8''{want}"


def test_oversize_uploads_are_413_and_leave_nothing(media_server):
    """Over the body limit (from Content-Length, before the body) and over the image
    limit (after sniffing): 413 too_large; no object, no temporary file."""
    proc, http_, media_dir = media_server
    before = objects(media_dir)
    status, _, answer = http_.upload(os.urandom(FILE_MAX + 100_000), filename="big.bin")
    assert status == 413 and answer["error"] == "too_large"
    png = media_samples.image("PNG", (600, 600))
    png += b"\x00" * (IMAGE_MAX + 10 - len(png))  # trailing junk makes it over the image limit
    status, _, answer = http_.upload(png)
    assert status == 413 and answer["error"] == "too_large" and "image" in answer["message"]
    assert objects(media_dir) == before and leftovers(media_dir) == []
    wait_until(lambda: not open_deleted_files(proc.proc.pid), "the spooled bodies to be closed")


def test_upload_cut_half_way_leaves_nothing(media_server):
    """A client that sends half its body and hangs up: nothing stored, no temporary
    file on disk, none held open by the server. The file part is written to
    <media-dir>/tmp as it arrives (no spooled copy of the body first)."""
    proc, http_, media_dir = media_server
    before = objects(media_dir)
    body, ctype = media_samples.form(os.urandom(300_000))
    head = (
        f"POST /api/media HTTP/1.1\r\nHost: x\r\nContent-Type: {ctype}\r\n"
        f"Authorization: Bearer {token('alice')}\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    sock = socket.create_connection(("127.0.0.1", proc.port))
    sock.sendall(head + body[: len(body) // 2])
    wait_until(lambda: leftovers(media_dir), "the file part to be written as it arrives")
    assert not open_deleted_files(proc.proc.pid)  # no spooled copy of the body
    sock.close()
    wait_until(lambda: not leftovers(media_dir), "the half file part to be removed")
    assert objects(media_dir) == before and not open_deleted_files(proc.proc.pid)
    assert http_.get("/healthz")[0] == 200


def test_quota_is_429(media_server):
    """A user past --media-quota-bytes in a day gets 429 quota_exceeded; others do not."""
    _, http_, _ = media_server
    chunk = os.urandom(FILE_MAX - 10_000)
    answers = [http_.upload(chunk + bytes([i]), user="hoarder")[:3:2] for i in range(4)]
    assert [s for s, _ in answers[:3]] == [201, 201, 201]
    status, answer = answers[3]
    assert status == 429 and answer["error"] == "quota_exceeded"
    assert http_.upload(media_samples.image("PNG", (5, 5)), user="someone-else")[0] == 201


def test_signatures_missing_expired_forged_are_403(media_server):
    _, http_, _ = media_server
    answer = http_.upload(media_samples.image("PNG", (20, 20)))[2]
    media_id = answer["media_id"]
    path = f"/media/{media_id}"
    for url, reason in [
        (path, "a signed URL is required (e= and s=)"),
        (answer["url"].replace("s=", "s=A"), "bad signature"),
        (Signer(derive_key("some-other-secret")).url(media_id, "", time.time()), "bad signature"),
        (answer["url"].replace(f"/media/{media_id}", f"/media/{media_id}/thumb"), "bad signature"),
        (
            Signer(derive_key(SECRET), ttl=60).url(media_id, "", time.time() - 120),
            "the URL has expired",
        ),
    ]:
        status, head, body = http_.get(url)
        assert status == 403, url
        assert json.loads(body) == {"error": "bad_signature", "message": reason}


def test_owner_gets_fresh_urls_others_get_404(media_server):
    _, http_, _ = media_server
    answer = http_.upload(media_samples.image("PNG", (20, 20)))[2]
    path = f"/api/media/{answer['media_id']}"
    status, _, raw = http_.get(path, Authorization=f"Bearer {token('alice')}")
    fresh = json.loads(raw)
    assert status == 200 and fresh["media_id"] == answer["media_id"] and fresh["url"]
    assert http_.get(fresh["url"])[0] == 200
    status, _, raw = http_.get(path, Authorization=f"Bearer {token('mallory')}")
    assert status == 404 and json.loads(raw)["error"] == "not_found"
    assert http_.get(path)[0] == 401


@pytest.mark.parametrize(
    "hide, url, line",
    [
        (
            "boto3",
            "s3://bucket/p",
            "--media-s3 needs the Python package boto3, which is not installed: pip install 'boto3'",
        ),
        (
            "-",
            "http://bucket/p",
            "--media-s3: must be s3://bucket/prefix?endpoint=URL&region=REGION",
        ),
    ],
    ids=["no-boto3", "bad-url"],
)
def test_media_s3_refusals_are_one_line(tmp_path, hide, url, line):
    """``--media-s3`` without boto3, or with a URL that is not ``s3://``, stops start-up
    with one line naming the option, never a traceback."""
    import subprocess
    import sys

    from tests.conftest import chatd_env
    from tests.e2e.test_extras import HIDE_AND_RUN

    result = subprocess.run(
        [
            sys.executable,
            "-c",
            HIDE_AND_RUN,
            hide,
            "-n",
            "chatd",
            "--jwt-secret",
            SECRET,
            "--media-s3",
            url,
        ],
        cwd=tmp_path,
        env=chatd_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    out = result.stdout + result.stderr
    assert result.returncode != 0 and line in out and "Traceback" not in out, out


def test_s3_backend_end_to_end(twistd_factory, tmp_path):
    """``--media-s3`` against moto's S3 server on loopback: the upload lands in the
    bucket under the prefix (image and thumbnail), and is served with Range."""
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        creds = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
        s3 = boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        s3.create_bucket(Bucket="chatd")
        proc = twistd_factory(
            *media_args(
                tmp_path / "meta",
                "--media-s3",
                f"s3://chatd/up?endpoint={endpoint}&region=us-east-1",
            ),
            env=creds,
        )
        http_ = Http(proc.port)
        data = media_samples.jpeg_with_gps((640, 480))
        status, _, answer = http_.upload(data, content_type="image/jpeg")
        assert status == 201, answer
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket="chatd")["Contents"]]
        assert len(keys) == 2 and all(k.startswith("up/") for k in keys)
        assert objects(tmp_path / "meta") == []  # bytes in the bucket, not on disk
        status, _, body = http_.get(answer["url"])
        assert status == 200 and media_samples.GPS_MARK not in body
        status, head, part = http_.get(answer["url"], Range="bytes=10-19")
        assert status == 206 and part == body[10:20]
        assert http_.get(answer["thumb_url"])[0] == 200
    finally:
        server.stop()


def test_upload_body_may_take_longer_than_the_handshake_timeout(twistd_factory, tmp_path):
    """Once an authenticated /api/media request's headers are in, its body has 300 s,
    not ``--handshake-timeout`` (1 s here): a slow upload completes."""
    proc = twistd_factory(*media_args(tmp_path / "m", "--handshake-timeout", "1"))
    body, ctype = media_samples.form(media_samples.image("PNG", (64, 64)))
    head = (
        f"POST /api/media HTTP/1.1\r\nHost: x\r\nContent-Type: {ctype}\r\n"
        f"Authorization: Bearer {token('alice')}\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", proc.port), timeout=20) as sock:
        sock.sendall(head + body[:100])
        time.sleep(1.6)  # pacing: the rest of the body comes after the handshake timeout
        sock.sendall(body[100:])
        answer = b""
        while b"\r\n\r\n" not in answer:
            piece = sock.recv(65536)
            assert piece, f"connection closed: {answer!r}"
            answer += piece
    assert answer.startswith(b"HTTP/1.1 201 ")


def test_a_killed_chatd_leaves_no_media_process_behind(twistd_factory, tmp_path):
    """chatd killed with SIGKILL after an upload (its image workers and their
    forkserver running): every process below it -- the forkserver, the workers,
    multiprocessing's resource tracker -- ends by itself within a deadline (the
    forkserver reads EOF on its alive pipe, the workers get SIGKILL when it exits)."""
    proc = twistd_factory(*media_args(tmp_path / "media"))
    status, _, answer = Http(proc.port).upload(media_samples.image("PNG", (64, 64)))
    assert status == 201, answer
    pid = proc.proc.pid
    under = processes_under(pid)
    servers = [p for p, (_, cmd) in under.items() if "multiprocessing.forkserver" in cmd]
    assert len(servers) >= 2, under  # the forkserver and at least one worker forked by it
    proc.proc.kill()
    proc.proc.wait(timeout=10)
    try:
        wait_until(lambda: not still_running(under), "the media processes to end", timeout=15)
    finally:  # never leave them to pile up, even when the test fails
        for p in still_running(under):
            os.kill(p, 9)


def test_a_put_killed_half_way_leaves_no_part_after_the_restart(twistd_factory, tmp_path):
    """chatd SIGKILLed while it copies a 64 MiB upload into ``objects/`` (its
    ``<sha>.part-<random>`` file there, the rename not done) leaves that part file;
    the next start (no ``--media-shared``: nothing else writes into the directory)
    removes it, logs it, and uploads work. The kill comes the moment the part
    appears; a put that beat it (the object complete, no part) is tried again with
    other bytes, at most 5 times."""
    media_dir = tmp_path / "media"
    args = media_args(media_dir, "--max-file-bytes", str(100 << 20))
    for _ in range(5):
        proc = twistd_factory(*args)
        data = os.urandom(64 << 20)
        key = hashlib.sha256(data).hexdigest()
        where = media_dir / "objects" / key[:2] / key[2:4]
        sending = threading.Thread(target=_upload_ignoring_errors, args=(proc.port, data))
        sending.start()
        killed_mid_put = functools.partial(_kill_at_the_part, proc, where, key)
        wait_until(killed_mid_put, "the put's part file", timeout=120, interval=0.001)
        proc.proc.kill()
        proc.proc.wait(timeout=10)
        sending.join(timeout=30)
        parts = [n for n in os.listdir(where) if ".part-" in n]
        if parts and key not in os.listdir(where):
            break
    else:
        pytest.fail("5 puts all finished before the kill")
    restarted = twistd_factory(*args)
    wait_until(lambda: not os.listdir(where), "the start's part sweep", timeout=30)
    assert restarted.wait_log("media sweep removed 1 part files of interrupted puts")
    status, _, answer = Http(restarted.port).upload(media_samples.image("PNG", (64, 64)))
    assert status == 201, answer


def _kill_at_the_part(proc, where, key) -> bool:
    """SIGKILL *proc* if the part file of *key*'s put is in *where*: whether it was,
    or the put already finished (its object there)."""
    try:
        names = os.listdir(where)
    except FileNotFoundError:
        return False
    if any(n.startswith(f"{key}.part-") for n in names):
        proc.proc.kill()
        return True
    return key in names


def _upload_ignoring_errors(port, data):
    """Upload *data* as alice; the server is killed meanwhile, so no answer counts."""
    try:
        Http(port).upload(data, filename="big.bin", content_type="application/octet-stream")
    except (OSError, http.client.HTTPException, ValueError):
        pass
