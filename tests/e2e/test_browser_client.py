"""The shared chatd.v1 client (``/static/chatd-client.js``) in real headless Chromium.

The web client runs on the same client file as the mini-program
(``miniprogram/utils/chatd.js``) with its browser adapter; these tests drive it
against a live ``twistd -n chatd`` and check what the web client gained from it:
the resume secret, an outbox that survives a reload, and pacing after
``rate_limited``. The page helpers are those of ``tests/e2e/test_browser.py``.
"""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest
from test_browser import Client, clients  # noqa: F401 (clients is a fixture)

pytestmark = pytest.mark.browser

SHARED = Path(__file__).resolve().parents[2] / "miniprogram" / "utils" / "chatd.js"


def sockets(client: Client) -> list[str]:
    """The WebSocket URLs the page opened, in order."""
    return [url for url in client.requests if url.startswith("ws")]


def test_the_page_runs_the_mini_programs_client_file(clients, chatd_process):  # noqa: F811
    """chatd serves miniprogram/utils/chatd.js byte for byte as
    /static/chatd-client.js, and the signed-in page's connection is a ChatClient
    of that file on its browser adapter, with the web client's `c-` ids."""
    with urllib.request.urlopen(chatd_process.http_url + "/static/chatd-client.js") as resp:
        assert resp.read() == SHARED.read_bytes()
        assert "javascript" in resp.headers["Content-Type"]
    alice = clients()
    alice.sign_in("alice")
    alice.wait_signed_in()
    assert alice.page.evaluate(
        "() => window.chatd.state.client instanceof window.ChatdClient.ChatClient"
        " && window.chatd.state.client.idPrefix === 'c-'"
    )
    # (the shared client asks for receipt batching: docs/protocol.md, *Features*)
    assert sockets(alice) == [chatd_process.ws_url + "/ws?name=alice&features=receipts_batch"]


def test_a_reconnect_takes_over_the_name_with_the_resume_secret(clients):  # noqa: F811
    """When the page gives up on a socket the server still holds (here: one that
    is abandoned but never closed), the reconnect presents welcome's resume
    secret and is let in under the same name instead of looping on
    name_taken; messages then flow both ways, each shown once."""
    alice, bob = clients(), clients()
    alice.sign_in("alice")
    alice.wait_signed_in()
    bob.sign_in("bob")
    bob.wait_signed_in()
    alice.page.wait_for_selector('#members li[data-user="bob"]')
    secret = alice.page.evaluate("() => window.chatd.state.client.resumeSecret")
    assert secret

    # Abandon the socket without closing it: chatd keeps "alice" taken.
    alice.page.evaluate(
        "() => { const c = window.chatd.state.client; c._task.close = () => {}; c.drop(0) }"
    )
    alice.page.wait_for_function("() => window.chatd.state.client.connected")
    alice.page.wait_for_selector('#conn-dot[data-state="open"]')
    urls = sockets(alice)
    assert len(urls) == 2, urls
    assert urls[1].endswith("/ws?name=alice&resume=" + secret + "&features=receipts_batch")

    bob.say("still there?")
    alice.message("still there?", sender="bob").wait_for()
    alice.say("yes, resumed")
    alice.message("yes, resumed").and_(alice.page.locator('[data-status="sent"]')).wait_for()
    bob.message("yes, resumed", sender="alice").wait_for()
    assert alice.texts() == ["still there?", "yes, resumed"]
    assert bob.texts() == ["still there?", "yes, resumed"]


def test_a_message_queued_offline_survives_a_reload(clients):  # noqa: F811
    """A message written while disconnected stays in the client's outbox in
    the tab's sessionStorage: after a reload and a new sign-in it is shown pending, resent
    with its id, acknowledged, and reaches the other page exactly once; the new
    page rejoins its room with `since` and presents the stored resume secret."""
    alice, bob = clients(), clients()
    alice.sign_in("alice")
    alice.wait_signed_in()
    bob.sign_in("bob")
    bob.wait_signed_in()
    alice.say("before")
    bob.message("before").wait_for()

    alice.page.evaluate("window.chatd.disconnect(600000)")
    alice.page.wait_for_selector("#banner:not([hidden])")
    alice.say("queued before reload")
    queued = alice.message("queued before reload")
    assert queued.get_attribute("data-status") == "pending"
    queued_id = queued.get_attribute("data-id")
    stored = json.loads(alice.page.evaluate("() => sessionStorage.getItem('chatd.session.alice')"))
    assert [e["id"] for e in stored["outbox"]] == [queued_id]
    secret = stored["resume"]

    alice.sign_in("alice")  # loads the page again
    alice.wait_signed_in()
    alice.message("queued before reload").and_(
        alice.page.locator('[data-status="sent"]')
    ).wait_for()
    bob.message("queued before reload", sender="alice").wait_for()
    assert alice.message("queued before reload").get_attribute("data-id") == queued_id
    assert sockets(alice)[-1].endswith(
        "/ws?name=alice&resume=" + secret + "&features=receipts_batch"
    )
    assert alice.texts() == ["before", "queued before reload"]
    assert bob.texts() == ["before", "queued before reload"]
    stored = json.loads(alice.page.evaluate("() => sessionStorage.getItem('chatd.session.alice')"))
    assert stored["outbox"] == []


def test_a_second_tab_does_not_inherit_the_resume_secret(clients, chatd_process):  # noqa: F811
    """The session (and with it the resume secret) is kept per tab: a second tab
    of the same browser asking for the name the first tab holds gets name_taken
    on its sign-in form, as a second browser does, and the first tab stays."""
    alice = clients()
    alice.sign_in("alice")
    alice.wait_signed_in()
    assert alice.page.evaluate("() => localStorage.getItem('chatd.name')") == '"alice"'
    tab = alice.context.new_page()
    tab.set_default_timeout(10_000)
    errors = []
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    tab.goto(chatd_process.http_url + "/")
    assert tab.input_value("#login-name") == "alice"  # the last name is shared
    tab.fill("#login-room", "general")
    tab.press("#login-name", "Enter")
    tab.wait_for_selector("#login-error:has-text('already taken')")
    assert tab.is_hidden("#app")
    assert alice.page.get_attribute("#conn-dot", "data-state") == "open"
    assert errors == []


@pytest.fixture
def limited(twistd_factory):
    """A chatd that lets each connection send 2 frames a second (burst 2)."""
    return twistd_factory(
        "--listen", "tcp:0:interface=127.0.0.1", "--rate-limit", "2", "--rate-burst", "2"
    )


def test_rate_limited_messages_are_paced_and_all_arrive_in_order(browser, limited):
    """Six messages typed at once on a server that takes two frames a second: the
    refused ones are resent with their ids after a growing delay instead of being
    shown as failed; all six are acknowledged and reach the other page once each
    in order, and the connection is never closed for flooding."""
    alice, bob = Client(browser, limited), Client(browser, limited)
    try:
        bob.sign_in("bob")
        bob.wait_signed_in()
        alice.sign_in("alice")
        alice.wait_signed_in()
        alice.page.evaluate(
            "() => { window.refused = 0; window.chatd.state.client.on('error',"
            " (e) => { if (e.code === 'rate_limited') window.refused++ }) }"
        )
        texts = [f"burst {i}" for i in range(1, 7)]
        for text in texts:
            alice.say(text)
        alice.page.wait_for_function(
            "() => document.querySelectorAll('#messages li.msg[data-status=\"sent\"]').length === 6",
            timeout=30_000,
        )
        bob.message("burst 6", sender="alice").wait_for(timeout=10_000)
        assert alice.page.locator('#messages li.msg[data-status="failed"]').count() == 0
        assert alice.texts() == texts
        assert bob.texts() == texts
        assert alice.page.evaluate("window.refused") > 0  # the limit did bite
        assert len(sockets(alice)) == 1
        assert alice.errors == [] and bob.errors == []
    finally:
        alice.close()
        bob.close()
