"""Hostile HTTP thrown at live chatd servers: request bodies, slowloris, login abuse, edges.

The HTTP side of docs/security.md's hostile-input table (its block "Hostile
HTTP: bodies, slow requests, the login endpoint, edges"), one test per row. Each test sends what an attacker would send to a real
chatd over loopback and asserts the documented answer (docs/api.md, "Limits")
and that the server carries on: the twistd-process tests end with the
bystander check of tests/e2e/test_hostile.py (:class:`World`), which also fails on
any logged traceback.

Raw HTTP goes over plain blocking sockets (:func:`http_exchange`); against an
in-process server those run in a thread (``deferToThread``) so the reactor
keeps serving.
"""

from __future__ import annotations

import json
import socket
import time

import pytest
import pytest_twisted
from twisted.internet import defer, reactor, threads
from twisted.web.client import Agent, FileBodyProducer, readBody
from twisted.web.http_headers import Headers
from twisted.web.server import NOT_DONE_YET

from chatd import login, wire
from chatd.httpserver import MAX_HEAD, MAX_REQUEST_LINE
from tests.conftest import TWISTD, TwistdProcess
from tests.support.hostile import SECRET, World, _start, _token, _world
from tests.support.rawws import TIMEOUT, RawWS, handshake_status
from tests.support.wechat import FakeJscode2session, listening, login_server
from tests.wsclient import Client, wait_for

API_KEY = "api-key-for-hostile-http-tests"


def http_exchange(port, data: bytes, source="127.0.0.1", timeout=TIMEOUT):
    """Send *data* on a fresh connection from *source*; ``(status, headers, body)``
    of the answer (status None when the connection ended without one)."""
    sock = socket.socket()
    sock.settimeout(timeout)
    try:
        sock.bind((source, 0))
        sock.connect(("127.0.0.1", port))
        sock.sendall(data)
        return read_answer(sock)
    finally:
        sock.close()


def read_answer(sock):
    """Read one HTTP answer from *sock*: ``(status, headers, body)``."""
    buf = b""
    try:
        while b"\r\n\r\n" not in buf:
            chunk = sock.recv(65536)
            if not chunk:
                return None, {}, buf
            buf += chunk
        head, _, body = buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        status = int(lines[0].split(" ", 2)[1])
        if headers.get("transfer-encoding") == "chunked":
            while not body.endswith(b"0\r\n\r\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                body += chunk
            return status, headers, _dechunk(body)
        length = int(headers.get("content-length", 0))
        while len(body) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            body += chunk
        return status, headers, body
    except ConnectionResetError:
        return None, {}, buf


def _dechunk(data: bytes) -> bytes:
    out = b""
    while True:
        size, _, data = data.partition(b"\r\n")
        n = int(size, 16)
        if n == 0:
            return out
        out, data = out + data[:n], data[n + 2 :]


def post_head(path, length=None, chunked=False, headers=()):
    """The head of a POST to *path* announcing *length* body bytes (or a chunked body)."""
    lines = [f"POST {path} HTTP/1.1", "Host: chatd", "Content-Type: application/json"]
    lines.append("Transfer-Encoding: chunked" if chunked else f"Content-Length: {length}")
    lines += [f"{name}: {value}" for name, value in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def chunks(data: bytes, size=65536) -> bytes:
    """*data* in chunked transfer coding, without the terminating chunk."""
    return b"".join(
        b"%x\r\n" % len(data[i : i + size]) + data[i : i + size] + b"\r\n"
        for i in range(0, len(data), size)
    )


def closed_within(sock, seconds) -> bool:
    """True when the server closes *sock* (EOF or reset) within *seconds*,
    having sent nothing; fails if it answers."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            data = sock.recv(100)
        except TimeoutError:
            return False
        except ConnectionResetError:
            return True
        assert data == b"", f"an unfinished request got an answer: {data!r}"
        return True
    return False


AUTH = ("Authorization", f"apikey {API_KEY}")


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    """chatd with an API key (and --auth optional), and its bystander pair."""
    yield from _world(
        _start(tmp_path_factory, "--api-key", API_KEY, "--jwt-secret", SECRET, "--auth", "optional")
    )


# --------------------------------------------------------------------------
# request bodies (issue 18 item 4)


def test_unauthenticated_body_is_refused_from_the_headers(api):
    """A POST without the API key announcing 300 MB is answered 401 from its
    headers alone: chatd never waits for (or stores) the body."""
    status, headers, body = http_exchange(
        api.port, post_head("/api/rooms/calm/messages", 300 << 20)
    )
    assert status == 401
    assert headers["www-authenticate"] == "apikey" and headers["connection"] == "close"
    assert json.loads(body)["error"] == "unauthorized"
    # the same for a chunked body, and for a path spelled with %-escapes
    status, _, _ = http_exchange(api.port, post_head("/%61pi/rooms/calm/messages", chunked=True))
    assert status == 401
    api.check("an unauthenticated 300 MB body")


def test_oversized_bodies_get_413_before_or_while_reading(api):
    """With the key: Content-Length over 1 MiB is answered 413 at once; a chunked
    body is answered 413 as soon as it passes 1 MiB (no terminating chunk sent)."""
    status, _, body = http_exchange(
        api.port, post_head("/api/rooms/calm/messages", 300 << 20, headers=[AUTH])
    )
    assert status == 413 and json.loads(body)["error"] == "too_large"
    head = post_head("/api/rooms/calm/messages", chunked=True, headers=[AUTH])
    status, _, body = http_exchange(api.port, head + chunks(b"x" * ((1 << 20) + 1)))
    assert status == 413 and json.loads(body)["error"] == "too_large"
    api.check("oversized bodies")


def test_bodies_within_the_limit_still_work_on_one_keep_alive_connection(api):
    """Two API posts on one keep-alive connection (one chunked) are both accepted:
    the limits and the deadline start afresh for every request."""
    payloads = [json.dumps({"from": "bot", "text": f"post {i}", "id": f"ka-{i}"}) for i in (1, 2)]
    sock = socket.create_connection(("127.0.0.1", api.port), TIMEOUT)
    try:
        first = payloads[0].encode()
        sock.sendall(post_head("/api/rooms/keep/messages", len(first), headers=[AUTH]) + first)
        status, _, body = read_answer(sock)
        assert status == 200 and json.loads(body)["seq"] == 1
        second = payloads[1].encode()
        head = post_head("/api/rooms/keep/messages", chunked=True, headers=[AUTH])
        sock.sendall(head + chunks(second) + b"0\r\n\r\n")
        status, _, body = read_answer(sock)
        assert status == 200 and json.loads(body)["seq"] == 2
    finally:
        sock.close()
    api.check("bodies within the limit")


# --------------------------------------------------------------------------
# slowloris (issue 18 item 5)


def test_trickling_request_is_dropped_at_the_deadline(tmp_path_factory):
    """A client that sends its upgrade request one byte every 0.2 s (so an idle
    timeout never fires) is dropped --handshake-timeout after accept, with no
    answer; the server carries on."""
    proc = _start(tmp_path_factory, "--handshake-timeout", "1")
    try:
        world = World(proc)
        request = (
            b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n" + b"X-Slow: " + b"a" * 200
        )
        sock = socket.create_connection(("127.0.0.1", proc.port), TIMEOUT)
        started = time.monotonic()
        try:
            for byte in request:
                try:
                    sock.sendall(bytes([byte]))
                except (BrokenPipeError, ConnectionResetError):
                    break
                if closed_within(sock, 0.2):
                    break
            else:
                pytest.fail("a request trickled in for 40 s without being dropped")
            assert time.monotonic() - started < 3.0, "dropped, but long after the deadline"
        finally:
            sock.close()
        world.check("a trickling request")
        world.close()
    finally:
        proc.stop()


def test_unfinished_requests_count_against_the_per_ip_cap(tmp_path_factory):
    """--max-connections-per-ip 3: three unfinished requests from one address
    fill its quota, so the 4th connection is answered 429 at once; another
    address is not affected; closing them frees the quota."""
    proc = _start(tmp_path_factory, "--max-connections-per-ip", "3", "--handshake-timeout", "30")
    socks = []
    try:
        for _ in range(3):
            sock = socket.create_connection(("127.0.0.1", proc.port), TIMEOUT)
            sock.sendall(b"GET /ws HTTP/1.1\r\nHost: x\r\n")
            socks.append(sock)
        status, _, body = http_exchange(proc.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert status == 429 and json.loads(body)["error"] == "too_many_connections"
        assert handshake_status(proc.port) == 429
        # a legitimate client from another address gets in during the attack
        status, _, body = http_exchange(
            proc.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", source="127.0.0.2"
        )
        assert status == 200 and json.loads(body)["status"] == "ok"
        for sock in socks:
            sock.close()
        socks.clear()
        deadline = time.monotonic() + TIMEOUT
        while (status := handshake_status(proc.port)) != 101:
            assert status == 429 and time.monotonic() < deadline, "the quota was never freed"
            time.sleep(0.05)
        assert "Traceback" not in proc.log
    finally:
        for sock in socks:
            sock.close()
        proc.stop()


def test_300_trickling_sockets_under_a_256_fd_limit(tmp_path_factory):
    """The report's setup: --handshake-timeout 2, RLIMIT_NOFILE 256, 300 sockets
    trickling one header byte per second. They are all dropped (each 2 s after
    it is accepted), the server's open descriptors fall back to where they
    were, and a legitimate client then gets its 101."""
    cwd = tmp_path_factory.mktemp("chatd")
    proc = TwistdProcess(
        ["--listen", "tcp:0:interface=127.0.0.1", "--db", ":memory:", "--handshake-timeout", "2"],
        cwd=cwd,
        twistd=["prlimit", "--nofile=256", *TWISTD],
    )
    fd_dir = f"/proc/{proc.proc.pid}/fd"
    socks = []
    try:
        import os

        baseline = len(os.listdir(fd_dir))
        for _ in range(300):
            sock = socket.socket()
            sock.setblocking(False)
            sock.connect_ex(("127.0.0.1", proc.port))
            socks.append(sock)
        request = b"GET /ws HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 100
        # 2 s per connection once accepted; the listen backlog and the descriptor
        # limit make the last ones wait for their turn (SYN retries)
        started = time.monotonic()
        deadline = started + 20.0
        alive = set(socks)
        for byte in request:
            for sock in list(alive):
                try:
                    sock.send(bytes([byte]))
                    if sock.recv(100) == b"":
                        alive.discard(sock)
                except (BrokenPipeError, ConnectionResetError):
                    alive.discard(sock)
                except OSError:
                    pass  # still connecting (the listen backlog is full), or nothing to read
            if not alive:
                break
            assert time.monotonic() < deadline, f"{len(alive)} of 300 still open after 20 s"
            time.sleep(1.0)
        assert len(os.listdir(fd_dir)) <= baseline + 4
        ws = RawWS.v1(proc.port)
        ws.close()
        assert proc.proc.poll() is None
    finally:
        for sock in socks:
            sock.close()
        proc.stop()


# --------------------------------------------------------------------------
# head limits and edges (issue 18 item 11)


def test_long_request_line_is_414_and_long_headers_are_431(api):
    """A URL over 16 KiB (a huge ?token=) gets 414, a 20 KB header 431 (docs/api.md)."""
    token = "t" * (MAX_REQUEST_LINE + 100)
    status, _, body = http_exchange(api.port, f"GET /ws?token={token} HTTP/1.1\r\n\r\n".encode())
    assert status == 414 and json.loads(body)["error"] == "uri_too_long"
    status, _, body = http_exchange(
        api.port, f"GET /ws HTTP/1.1\r\nHost: x\r\nX-Big: {'h' * 20000}\r\n\r\n".encode()
    )
    assert status == 431 and json.loads(body)["error"] == "headers_too_large"
    many = "".join(f"X-H{i}: {'v' * 200}\r\n" for i in range(MAX_HEAD // 200))
    status, _, _ = http_exchange(api.port, f"GET /ws HTTP/1.1\r\n{many}\r\n".encode())
    assert status == 431
    api.check("long request lines and headers")


@pytest.mark.parametrize(
    "path", ["/static/%00", "/static/a%00b.js", "/static/%ff", "/static/%2e%2e"]
)
def test_static_paths_that_name_no_file_are_404(api, path):
    """``/static/%00`` (and other segments that cannot name a file) is a 404,
    with no traceback in the log (the check fails on one)."""
    status, _, _ = http_exchange(api.port, f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    assert status == 404
    api.check(f"GET {path}")


@pytest.mark.parametrize("value", ["Bearer\ttok", "JWT x", "Basic YTpi", "Bearer", "bearer"])
def test_unrecognised_authorization_header_is_401_under_auth_optional(api, value):
    """--auth optional: an Authorization header chatd cannot read is refused like
    a bad token (401), never admitted anonymously; no header is anonymous."""
    assert handshake_status(api.port, headers=[("Authorization", value)]) == 401
    ws = RawWS.v1(api.port)
    assert ws.welcome["user"].startswith("~")
    ws.close()
    good = _token({"sub": "carol", "exp": time.time() + 600})
    ws = RawWS.v1(api.port, headers=[("Authorization", f"Bearer {good}")])
    assert ws.welcome["user"] == "carol"
    ws.close()
    api.check(f"Authorization: {value!r}")


def test_readyz_is_503_while_commits_fail_on_a_full_disk(tmp_path_factory):
    """A file-size limit (RLIMIT_FSIZE) makes SQLite's writes fail for real: once
    sends get ``unavailable``, /readyz answers 503 naming the failing commits."""
    cwd = tmp_path_factory.mktemp("chatd")
    proc = TwistdProcess(
        ["--listen", "tcp:0:interface=127.0.0.1", "--db", str(cwd / "h.sqlite3")],
        cwd=cwd,
        twistd=["prlimit", f"--fsize={256 * 1024}", *TWISTD],
    )
    try:
        ready = b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n"
        status, _, body = http_exchange(proc.port, ready)
        assert status == 200, body
        ws = RawWS.v1(proc.port)
        ws.send_json(type="join", room="full")
        ws.expect("joined", room="full")
        for i in range(500):
            ws.send_json(type="send", room="full", text="x" * 3900, id=f"f{i}")
            reply = ws.recv()
            if reply["type"] == "error":
                assert reply["code"] == "unavailable"
                break
            assert reply["type"] == "ack"
        else:
            pytest.fail("500 sends of 4 KB were committed under a 256 KiB file-size limit")
        status, _, body = http_exchange(proc.port, ready)
        assert status == 503
        answer = json.loads(body)
        assert answer["status"] == "unavailable" and answer["store"].startswith("commits fail")
        ws.close()
        assert proc.proc.poll() is None
    finally:
        proc.stop()


# --------------------------------------------------------------------------
# WeChat login abuse (issue 18 item 9)


class Upstream(FakeJscode2session):
    """The stand-in jscode2session, also counting the calls still waiting (``slow``)."""

    def __init__(self):
        super().__init__()
        self.waiting = 0

    def render_GET(self, request):
        result = super().render_GET(request)
        if result is NOT_DONE_YET:
            self.waiting += 1
            request.notifyFinish().addBoth(self._gone)
        return result

    def _gone(self, _):
        self.waiting -= 1


@pytest.fixture
def upstream():
    yield from listening(Upstream())


@defer.inlineCallbacks
def login_post(port, body, forwarded_for=None):
    """POST *body* (a dict, or raw bytes) to /api/login/wechat: ``(status, json, headers)``."""
    headers = Headers({b"content-type": [b"application/json"]})
    if forwarded_for is not None:
        headers.addRawHeader(b"x-forwarded-for", forwarded_for.encode())
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = yield Agent(reactor).request(
        b"POST",
        f"http://127.0.0.1:{port}/api/login/wechat".encode(),
        headers,
        FileBodyProducer(__import__("io").BytesIO(data)),
    )
    payload = yield readBody(response)
    return response.code, json.loads(payload), response.headers


@pytest_twisted.inlineCallbacks
def test_junk_code_flood_is_rate_limited_before_wechat(server_factory, upstream):
    """300 junk-code logins from one address in a row cost at most the burst (and
    the refill) in jscode2session calls; the rest are 429 rate_limited with
    Retry-After. Another address still logs in."""
    srv = yield login_server(server_factory, upstream.url, "--trusted-proxy", "127.0.0.1")
    started = reactor.seconds()
    statuses = []
    for i in range(300):
        status, body, headers = yield login_post(srv.port, {"code": f"bad-{i}"}, "10.0.0.1")
        statuses.append(status)
        if status == 429:
            assert body["error"]["code"] == "rate_limited"
            assert int(headers.getRawHeaders(b"retry-after")[0]) >= 1
    elapsed = reactor.seconds() - started
    allowed = login.BURST + login.RATE * elapsed + 1
    assert len(upstream.seen) <= allowed, f"{len(upstream.seen)} upstream calls in {elapsed:.1f}s"
    assert statuses.count(429) >= 300 - allowed
    status, body, _ = yield login_post(srv.port, {"code": "ok1"}, "10.0.0.2")
    assert (status, body["user"]) == (200, "wx:o-ok1")


@pytest_twisted.inlineCallbacks
def test_concurrent_logins_against_a_silent_wechat_are_bounded(server_factory, upstream):
    """40 concurrent logins from one address against a WeChat that never answers:
    at most MAX_PENDING_PER_IP reach WeChat, the others are 429 at once; from 40
    addresses at most MAX_IN_FLIGHT do, the others get 503 overloaded. Clients that
    go away cancel their upstream calls."""
    srv = yield login_server(server_factory, upstream.url, "--trusted-proxy", "127.0.0.1")

    @defer.inlineCallbacks
    def flood(addresses):
        """POST a ``slow`` code from each of *addresses* at once; fires with the
        answers given and the number of calls that reached WeChat; then the
        clients still waiting go away."""
        requests, answered = [], {}
        for i, ip in enumerate(addresses):
            headers = Headers({b"x-forwarded-for": [ip.encode()]})
            d = Agent(reactor).request(
                b"POST",
                f"http://127.0.0.1:{srv.port}/api/login/wechat".encode(),
                headers,
                FileBodyProducer(__import__("io").BytesIO(b'{"code":"slow"}')),
            )
            d.addCallback(lambda response, i=i: answered.__setitem__(i, response))
            d.addErrback(lambda f: None)  # cancelled below
            requests.append(d)
        # every request is either answered or waiting for WeChat
        yield wait_for(lambda: len(answered) + upstream.waiting == len(requests), TIMEOUT)
        waiting = upstream.waiting
        answers = []
        for i, d in enumerate(requests):
            if i in answered:
                body = json.loads((yield readBody(answered[i])))
                answers.append((answered[i].code, body["error"]["code"]))
            else:
                d.cancel()  # the client goes away
        yield wait_for(lambda: upstream.waiting == 0, TIMEOUT)
        return answers, waiting

    answers, waiting = yield flood(["10.1.0.1"] * 40)
    assert waiting == login.MAX_PENDING_PER_IP
    assert answers == [(429, "rate_limited")] * (40 - login.MAX_PENDING_PER_IP)

    answers, waiting = yield flood([f"10.2.0.{i}" for i in range(40)])
    assert waiting == login.MAX_IN_FLIGHT
    assert answers == [(503, "overloaded")] * (40 - login.MAX_IN_FLIGHT)
    status, body, _ = yield login_post(srv.port, {"code": "after"}, "10.3.0.1")
    assert (status, body["user"]) == (200, "wx:o-after")


@pytest_twisted.inlineCallbacks
def test_login_body_is_bounded_and_bad_json_is_400(server_factory, upstream):
    """An 8 MB login body is answered 413 from its headers (or, chunked, once it
    passes the limit); JSON nested too deep is a 400, not a 500 with a traceback."""
    srv = yield login_server(server_factory, upstream.url)
    head = post_head("/api/login/wechat", 8 << 20)
    status, _, body = yield threads.deferToThread(http_exchange, srv.port, head)
    assert status == 413 and json.loads(body)["error"]["code"] == "too_large"
    head = post_head("/api/login/wechat", chunked=True)
    data = head + chunks(b" " * (login.MAX_LOGIN_BODY + 1))
    status, _, body = yield threads.deferToThread(http_exchange, srv.port, data)
    assert status == 413 and json.loads(body)["error"]["code"] == "too_large"
    nested = b'{"code": "abc", "x": ' + b"[" * 1500 + b"]" * 1500 + b"}"
    assert len(nested) <= login.MAX_LOGIN_BODY
    status, body, _ = yield login_post(srv.port, nested)
    assert (status, body["error"]["code"]) == (400, "bad_request")
    assert upstream.seen == []


NAMES = ["\u202eevil", "a\u200bb", "<b>x</b>", "\u0430dmin", "小红", "ok_name", "guest-1", "x" * 33]


@pytest_twisted.inlineCallbacks
def test_login_names_follow_the_name_rule(server_factory, upstream):
    """A login ``name`` is accepted exactly when ``?name=`` would accept it (the
    one rule, :func:`chatd.wire.valid_name`): right-to-left overrides, zero-width
    spaces and HTML are 400 bad_name, before WeChat is asked."""
    srv = yield login_server(server_factory, upstream.url)
    for i, name in enumerate(NAMES):
        status, body, _ = yield login_post(srv.port, {"code": f"n{i}", "name": name})
        c = yield Client.connect(srv.port, "/ws", protocols=["chatd.v1"], name=name)
        first = yield c.recv()
        via_query = first["type"] == "welcome"
        yield c.close()
        assert (status == 200) == via_query == wire.valid_name(name), name
        if status == 200:
            assert body["name"] == name
        else:
            assert (status, body["error"]["code"]) == (400, "bad_name")
    assert len(upstream.seen) == sum(map(wire.valid_name, NAMES))


# --------------------------------------------------------------------------
# the pure parts: the body-rule table and the per-address login buckets


def test_body_rules_match_the_longest_decoded_prefix():
    """Rules match path segments after percent-decoding, as twisted.web routes
    them; the longest prefix wins; other paths get the default limit."""
    from chatd.httpserver import BodyRules

    rules = BodyRules(100)
    rules.add(b"/api/", 50, precheck=print)
    rules.add(b"/api/login/", 10)
    assert rules.rule_for(b"/api/rooms/x/messages?x=1").max_body == 50
    assert rules.rule_for(b"/%61pi/rooms").precheck is print
    assert rules.rule_for(b"/api/login/wechat").max_body == 10
    assert rules.rule_for(b"/api/%6Cogin/wechat").precheck is None
    assert rules.rule_for(b"/api").max_body == 50
    assert rules.rule_for(b"/static/app.js").max_body == 100
    assert rules.rule_for(b"//api/rooms").max_body == 100  # routed to the page, not the API


def test_keyed_buckets_limit_each_key_and_forget_full_ones():
    """One bucket per key with the given rate and burst; retry_after says when
    the next token comes; buckets that filled up again are swept away."""
    from chatd.limits import KeyedBuckets

    buckets = KeyedBuckets(rate=1.0, burst=3)
    assert [buckets.take("a", 0.0) for _ in range(4)] == [True, True, True, False]
    assert buckets.take("b", 0.0)
    assert buckets.retry_after("a", 0.0) == pytest.approx(1.0)
    assert buckets.retry_after("a", 0.5) == pytest.approx(0.5)
    assert buckets.take("a", 1.0) and not buckets.take("a", 1.0)
    for i in range(2000):
        buckets.take(i, 10.0 + i)  # each new key is full again a few seconds later
    assert len(buckets.buckets) < 1100
