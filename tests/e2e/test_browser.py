"""The web client in real headless Chromium against a live ``twistd -n chatd``.

Two browser contexts (two users, no shared storage) load the page chatd serves at
``/`` and chat with each other through the server, driven by Playwright's sync API
with Debian's ``/usr/bin/chromium`` (no browser download). The server runs as a
subprocess (the ``chatd_process`` fixture), since the Twisted reactor of the test
process and Playwright's event loop do not share a thread well.
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.browser

TIMEOUT_MS = 10_000


class Client:
    """One user's page: a fresh browser context with its own storage."""

    def __init__(self, browser, server):
        self.context = browser.new_context(viewport={"width": 1200, "height": 760})
        self.page = self.context.new_page()
        self.page.set_default_timeout(TIMEOUT_MS)
        self.server = server
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        self.requests: list[str] = []
        self.page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        self.page.on("dialog", self._on_dialog)
        self.page.on("request", lambda req: self.requests.append(req.url))
        self.page.on("websocket", lambda ws: self.requests.append(ws.url))

    def _on_dialog(self, dialog):
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    def sign_in(self, name: str, room: str = "general"):
        """Load the page, enter *name* and *room*, press Enter."""
        self.page.goto(self.server.http_url + "/")
        self.page.fill("#login-name", name)
        self.page.fill("#login-room", room)
        self.page.press("#login-name", "Enter")

    def wait_signed_in(self):
        self.page.wait_for_selector("#app:not([hidden])")
        self.page.wait_for_selector('#conn-dot[data-state="open"]')

    def say(self, text: str):
        """Type *text* in the composer and press Enter."""
        self.page.fill("#composer-input", text)
        self.page.press("#composer-input", "Enter")

    def message(self, text: str, sender: str | None = None):
        """The locator of the message with exactly *text* (from *sender*)."""
        sel = "#messages li.msg" + (f'[data-from="{sender}"]' if sender else "")
        return self.page.locator(sel).filter(has=self.page.locator(".msg-text", has_text=text))

    def texts(self) -> list[str]:
        return self.page.eval_on_selector_all(
            "#messages li.msg .msg-text", "els => els.map(e => e.textContent)"
        )

    def close(self):
        self.context.close()


@pytest.fixture
def clients(browser, chatd_process):
    """A factory of Clients on one live chatd; closes them after the test."""
    made = []

    def make():
        client = Client(browser, chatd_process)
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()
    for client in made:
        assert client.errors == [], client.errors


def test_two_pages_chat_through_a_live_server(clients, chatd_process):
    """Two pages join a room, see each other as members, exchange a message (acked
    for the sender), see typing, render markup as plain text and exchange a DM."""
    alice, bob = clients(), clients()
    alice.sign_in("alice")
    alice.wait_signed_in()
    bob.sign_in("bob")
    bob.wait_signed_in()

    # Presence: each sees the other in the member list of #general.
    alice.page.wait_for_selector('#members li[data-user="bob"][data-presence="online"]')
    bob.page.wait_for_selector('#members li[data-user="alice"][data-presence="online"]')
    assert alice.page.text_content("#conv-title") == "#general"

    # A message from alice reaches bob; alice's copy goes pending -> sent (ack).
    alice.say("hello bob")
    bob.message("hello bob", sender="alice").wait_for()
    mine = alice.message("hello bob", sender="alice")
    mine.and_(alice.page.locator('[data-status="sent"]')).wait_for()
    assert mine.get_attribute("data-seq") == bob.message("hello bob").get_attribute("data-seq")
    assert mine.get_attribute("data-id").startswith("c-")

    # Typing in bob's composer shows "bob is typing…" to alice, then expires.
    bob.page.type("#composer-input", "hi al", delay=20)
    alice.page.wait_for_selector("#typing.on")
    assert alice.page.text_content("#typing") == "bob is typing…"
    alice.page.wait_for_selector("#typing:not(.on)", timeout=6000)
    bob.page.fill("#composer-input", "")

    # Markup in a message is shown literally, never parsed.
    evil = "<img src=x onerror=alert(1)> <b>bold</b>"
    alice.say(evil)
    shown = bob.message("onerror", sender="alice")
    shown.wait_for()
    assert shown.locator(".msg-text").text_content() == evil
    assert shown.locator("img, b").count() == 0
    assert bob.page.locator("#messages img").count() == 0
    assert alice.dialogs == [] and bob.dialogs == []

    # A DM: alice clicks bob in the member list, writes; bob gets a DM conversation.
    alice.page.click('#members li[data-user="bob"] button')
    assert alice.page.text_content("#conv-title") == "bob"
    alice.say("psst, just you")
    alice.message("psst, just you").and_(alice.page.locator('[data-status="sent"]')).wait_for()
    dm_entry = bob.page.locator('#dm-list button[data-id="alice"]')
    dm_entry.wait_for()
    assert dm_entry.locator(".badge").text_content() == "1"
    dm_entry.click()
    bob.message("psst, just you", sender="alice").wait_for()
    assert bob.page.text_content("#conv-title") == "alice"
    # The DM stayed out of the room.
    bob.page.click('#room-list button[data-id="general"]')
    assert "psst, just you" not in bob.texts()
    assert bob.texts() == ["hello bob", evil]

    # Everything the pages loaded came from chatd itself: no external assets.
    origin = chatd_process.http_url.split("://", 1)[1]
    for url in alice.requests + bob.requests:
        assert url.split("://", 1)[1].startswith(origin + "/"), url


def test_taken_name_is_reported_on_the_sign_in_form(clients):
    """Asking for a name that a live connection holds shows name_taken's message
    and keeps the sign-in form up; another name then gets in."""
    alice, impostor = clients(), clients()
    alice.sign_in("alice")
    alice.wait_signed_in()
    impostor.sign_in("alice")
    impostor.page.wait_for_selector("#login-error:has-text('already taken')")
    assert impostor.page.is_visible("#login")
    assert impostor.page.is_hidden("#app")
    assert impostor.page.get_attribute("#login-name", "aria-invalid") == "true"
    impostor.page.fill("#login-name", "alice2")
    impostor.page.press("#login-name", "Enter")
    impostor.wait_signed_in()
    alice.page.wait_for_selector('#members li[data-user="alice2"]')


def test_reconnect_resumes_and_resends_the_outbox(clients):
    """While a page is disconnected it shows the reconnecting banner and keeps its
    own message pending; after it reconnects by itself it gets the messages it
    missed (join with since) exactly once, and its pending message is resent and
    acknowledged and reaches the other page exactly once."""
    alice, bob = clients(), clients()
    alice.sign_in("alice")
    alice.wait_signed_in()
    bob.sign_in("bob")
    bob.wait_signed_in()
    alice.page.wait_for_selector('#members li[data-user="bob"]')
    alice.say("before")
    bob.message("before").wait_for()

    alice.page.evaluate("window.chatd.disconnect(2500)")
    alice.page.wait_for_selector("#banner:not([hidden])")
    assert "Reconnecting" in alice.page.text_content("#banner-text")
    bob.page.wait_for_selector("#messages li.note:has-text('alice left')")
    bob.say("missed one")
    bob.say("missed two")
    bob.message("missed two").and_(bob.page.locator('[data-status="sent"]')).wait_for()
    alice.say("sent while offline")
    assert alice.message("sent while offline").get_attribute("data-status") == "pending"

    alice.page.wait_for_selector('#conn-dot[data-state="open"]')
    alice.page.wait_for_selector("#banner", state="hidden")
    alice.message("sent while offline").and_(alice.page.locator('[data-status="sent"]')).wait_for()
    alice.message("missed two", sender="bob").wait_for()
    bob.message("sent while offline", sender="alice").wait_for()

    assert alice.texts() == ["before", "missed one", "missed two", "sent while offline"]
    assert bob.texts() == ["before", "missed one", "missed two", "sent while offline"]
    seqs = alice.page.eval_on_selector_all(
        "#messages li.msg", "els => els.map(e => Number(e.dataset.seq))"
    )
    assert seqs == [1, 2, 3, 4]


def test_long_room_scrolls_to_newest_pages_back_and_counts_unread(clients):
    """A late joiner sees the newest page of history scrolled to the bottom, loads
    earlier messages with the button (history), and a message in a room it is not
    looking at shows up as an unread count on that room."""
    alice, bob = clients(), clients()
    alice.sign_in("alice")
    alice.wait_signed_in()
    for i in range(60):
        alice.say(f"m{i}")
    alice.message("m59").and_(alice.page.locator('[data-status="sent"]')).wait_for()

    bob.sign_in("bob")
    bob.wait_signed_in()
    bob.message("m59", sender="alice").wait_for()
    assert len(bob.texts()) == 50
    assert bob.texts()[0] == "m10"
    at_bottom = "s => s.scrollHeight - s.scrollTop - s.clientHeight < 48"
    assert bob.page.eval_on_selector("#scroller", at_bottom)

    bob.page.click("#load-older")
    bob.message("m0").wait_for()
    assert bob.texts() == [f"m{i}" for i in range(60)]
    bob.page.wait_for_selector("#history-start:not([hidden])")
    assert bob.page.is_hidden("#load-older")

    # A live message scrolls the reader who is at the bottom to it.
    bob.page.evaluate("document.getElementById('scroller').scrollTop = 1e9")
    alice.say("newest")
    bob.message("newest").wait_for()
    bob.page.wait_for_function(
        "() => { const s = document.getElementById('scroller');"
        " return s.scrollHeight - s.scrollTop - s.clientHeight < 48; }"
    )

    # Unread: bob joins #random but looks at #general; alice writes in #random.
    bob.page.fill("#join-room", "random")
    bob.page.press("#join-room", "Enter")
    bob.page.wait_for_selector('#room-list button[data-id="random"][aria-current="page"]')
    bob.page.click('#room-list button[data-id="general"]')
    alice.page.fill("#join-room", "random")
    alice.page.press("#join-room", "Enter")
    alice.page.wait_for_selector('#members li[data-user="bob"]')
    alice.say("over here")
    badge = bob.page.locator('#room-list button[data-id="random"] .badge')
    badge.wait_for()
    assert badge.text_content() == "1"
    assert bob.page.title() == "(1) chatd"
    bob.page.click('#room-list button[data-id="random"]')
    bob.message("over here", sender="alice").wait_for()
    assert badge.count() == 0
    assert bob.page.title() == "chatd"
