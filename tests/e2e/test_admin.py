"""The admin page (/admin) in real headless Chromium against a live ``twistd -n chatd``."""

from __future__ import annotations

import json

import pytest
from websockets.sync.client import connect

pytestmark = pytest.mark.browser

KEY = "admin-key-123"


def test_admin_page_shows_connections_rooms_rates_and_errors(browser, twistd_factory):
    """A wrong key is refused on the page; the right key shows live connections, rooms
    with members, message counts and rates, and recent errors, updating as clients act."""
    proc = twistd_factory(
        "--db", ":memory:", "--listen", "tcp:0:interface=127.0.0.1", "--api-key", KEY
    )
    page = browser.new_context().new_page()
    page.set_default_timeout(10_000)
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(proc.http_url + "/admin")
    page.fill("#key", "wrong")
    page.click("#login button")
    page.wait_for_selector("#login-error:has-text('apikey')")
    assert page.is_hidden("#dash")

    with (
        connect(proc.ws_url + "/ws?name=kim", subprotocols=["chatd.v1"], open_timeout=10) as k,
        connect(proc.ws_url + "/", open_timeout=10),
    ):
        k.recv(timeout=10)
        k.send(json.dumps({"type": "join", "room": "night-shift"}))
        k.recv(timeout=10)
        k.send(json.dumps({"type": "send", "room": "night-shift", "text": "hi", "id": "1"}))
        k.recv(timeout=10)
        k.send(json.dumps({"type": "bogus"}))
        assert json.loads(k.recv(timeout=10))["code"] == "unknown_type"

        page.fill("#key", KEY)
        page.click("#login button")
        page.wait_for_selector("#dash:not([hidden])")
        assert page.text_content("#conn-v1") == "1"
        assert page.text_content("#conn-relay") == "1"
        assert page.text_content("#messages") == "1"
        rooms = page.inner_text("#rooms")
        assert "night-shift" in rooms and "kim" in rooms and "lobby" in rooms
        assert "unknown_type" in page.inner_text("#error-counts")
        assert "unknown_type" in page.inner_text("#recent-errors")
        # the next poll has a rate
        page.wait_for_function(
            "document.getElementById('rate-messages').textContent.match(/^[0-9.]+$/)"
        )
    # clients gone: the page follows within a poll or two
    page.wait_for_function("() => document.getElementById('conn-v1').textContent === '0'")
    assert page.is_hidden("#login")
    assert errors == []
