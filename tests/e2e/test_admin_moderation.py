"""The /admin page's Moderation tab in real headless Chromium against a live
``twistd -n chatd``: the queue with a reported message and its context (rendered as
text), the action buttons (recall, mute, dismiss) and the audit log."""

from __future__ import annotations

import json

import pytest
from websockets.sync.client import connect

from tests.support.auth import SECRET, token

pytestmark = pytest.mark.browser

KEY = "admin-key-123"
HOSTILE = '<img src=x onerror="window.pwned=1">'


def _until(ws, frame_type, **fields):
    """Frames of *ws* (each within 10 s) until one of *frame_type* with *fields*."""
    for _ in range(100):
        frame = json.loads(ws.recv(timeout=10))
        if frame.get("type") == frame_type and all(frame.get(k) == v for k, v in fields.items()):
            return frame
    raise AssertionError(f"no {frame_type} {fields}")


def _user(proc, sub):
    return connect(
        proc.ws_url + "/ws?token=" + token(sub), subprotocols=["chatd.v1"], open_timeout=10
    )


def test_the_moderation_tab_works_the_queue_and_shows_the_audit_log(browser, twistd_factory):
    proc = twistd_factory(
        "--db",
        ":memory:",
        "--listen",
        "tcp:0:interface=127.0.0.1",
        "--api-key",
        KEY,
        "--jwt-secret",
        SECRET,
    )
    page = browser.new_context().new_page()
    page.set_default_timeout(10_000)
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    with _user(proc, "olga") as olga, _user(proc, "bob") as bob:
        _until(olga, "welcome")
        _until(bob, "welcome")
        olga.send(json.dumps({"type": "create", "room": "dev", "kind": "public", "id": "c"}))
        _until(olga, "room_info", room="dev")
        bob.send(json.dumps({"type": "join", "room": "dev"}))
        _until(bob, "joined", room="dev")
        seqs = []
        for i, text in enumerate(["hello all", HOSTILE, "bye"]):
            bob.send(json.dumps({"type": "send", "room": "dev", "text": text, "id": f"s{i}"}))
            seqs.append(_until(bob, "ack", id=f"s{i}")["seq"])
        reports = []
        for i, seq in enumerate(seqs[1:]):
            reason = HOSTILE if i == 0 else "rude"
            olga.send(
                json.dumps(
                    {"type": "report", "room": "dev", "seq": seq, "reason": reason, "id": f"r{i}"}
                )
            )
            reports.append(_until(olga, "report", id=f"r{i}")["report"])

        page.goto(proc.http_url + "/admin")
        page.fill("#key", KEY)
        page.click("#login button")
        page.wait_for_selector("#dash:not([hidden])")
        page.click("#tab-moderation")
        page.wait_for_selector("#moderation:not([hidden])")
        page.wait_for_selector("#queue tr >> nth=1")
        rows = page.locator("#queue tr")
        assert rows.count() == 2
        hostile_row = page.locator(f"#queue tr[data-id='{reports[0]}']")
        assert hostile_row.count() == 1
        assert "report by olga" in hostile_row.inner_text()
        # text, not markup: the reported text and the reason show literally
        assert HOSTILE in hostile_row.first.inner_text()
        assert page.locator("#queue img").count() == 0
        assert page.evaluate("window.pwned") is None
        hostile_row.first.locator("summary").click()
        context = hostile_row.first.locator("details").inner_text()
        assert "hello all" in context and "bye" in context

        hostile_row.first.locator("button[data-action=recall]").click()
        recalled = _until(bob, "recalled", target=seqs[1])
        assert recalled["by"] == "system"
        page.wait_for_function("() => document.querySelectorAll('#queue tr').length === 1")

        page.fill("#action-seconds", "600")
        page.locator("#queue tr button[data-action=mute]").click()
        page.wait_for_function("() => document.querySelectorAll('#queue tr').length === 0")
        bob.send(json.dumps({"type": "send", "room": "dev", "text": "again", "id": "s9"}))
        error = _until(bob, "error", ref="s9")
        assert error["code"] == "muted" and 595 <= error["seconds"] <= 600

        page.wait_for_function("() => document.getElementById('audit').rows.length === 2")
        audit = page.inner_text("#audit")
        assert "recall" in audit and "mute" in audit and "bob" in audit
        page.select_option("#queue-state", "closed")
        page.wait_for_function("() => document.querySelectorAll('#queue tr').length === 2")
        assert "recall by system" in page.inner_text("#queue")
        assert page.locator("#queue button").count() == 0
    assert errors == []
