"""Helpers of the media check tests (tests/integration/test_media_check.py,
tests/e2e/test_media_check_cluster.py): a chatd checking WeChat users' media against
the stand-in of tests/support/wechat.py, uploads and picture messages."""

from __future__ import annotations

from twisted.internet import defer, reactor

from tests import media_samples
from tests.support.http import http
from tests.support.push import token
from tests.support.wechat import login_server
from tests.wsclient import deferLater, wait_for

PUSH_TOKEN = "push-token-xyz"
PUBLIC = "https://chat.example.com"


def checked(server_factory, wechat, media_dir, *extra):
    """A chatd checking WeChat users' text and media, with WeChat's message push URL."""
    return login_server(
        server_factory,
        wechat.url,
        "--wechat-content-check",
        "on",
        "--wechat-push-token",
        PUSH_TOKEN,
        "--public-url",
        PUBLIC,
        "--media-dir",
        str(media_dir),
        *extra,
    )


@defer.inlineCallbacks
def picture(srv, user, data=None, filename="pic.png", mime="image/png"):
    """*user* uploads *data* (default: a PNG); fires with the upload's answer."""
    data = data or media_samples.image("PNG")
    body, ctype = media_samples.form(data, filename, mime)
    headers = {
        b"authorization": [b"Bearer " + token(user).encode()],
        b"content-type": [ctype.encode()],
    }
    status, _, answer = yield http("POST", srv.http_url + "/api/media", body, None, headers)
    assert status == 201, answer
    return answer


@defer.inlineCallbacks
def stored_picture(client, room, media_id, ref, timeout=10.0, to=None):
    """Send a message (to *room*, or a DM *to*) showing *media_id*, again while chatd
    says the upload is still being processed; fires with the ack."""
    deadline = reactor.seconds() + timeout
    where = {"type": "send", "room": room} if to is None else {"type": "dm", "to": to}
    while True:
        client.send(**where, text="look", attachments=[{"media_id": media_id}], id=ref)
        while True:
            frame = yield client.recv()
            if frame.get("type") == "ack" and frame.get("id") == ref:
                return frame
            if frame.get("type") == "error" and frame.get("ref") == ref:
                assert frame["code"] == "bad_attachment", frame
                break
        assert reactor.seconds() < deadline, "the upload was never ready"
        yield deferLater(0.05)


def asked(wechat, n):
    return wait_for(lambda: len(wechat.media_checks) >= n, what=f"{n} media checks asked")


@defer.inlineCallbacks
def wait_for_status(srv, path, status, timeout=10.0):
    """GET *path* until it answers *status* (the recalled upload's removal is not
    waited for by the recall)."""
    deadline = reactor.seconds() + timeout
    while True:
        answer = yield http("GET", srv.http_url + path, key=None)
        if answer[0] == status:
            return answer
        assert reactor.seconds() < deadline, f"{path} still answers {answer[0]}"
        yield deferLater(0.02)
