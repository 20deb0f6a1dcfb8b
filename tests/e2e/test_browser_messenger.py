"""The web client's messenger screen (token users) in real headless Chromium.

Pages opened with ``/?token=<jwt>`` show the conversation list and conversations of
the shared client's conversation store (``static/app-messenger.js``) against a live
``twistd -n chatd --jwt-secret``; two or three users, each in their own browser
context. Screenshots of the list and of a chat with ticks and a reply are written to
``$CHATD_ARTIFACTS`` (default: the test's tmp_path) as artefacts, not compared.
"""

from __future__ import annotations

import base64
import http.client
import io
import json
import os
import time
from pathlib import Path

import pytest
from test_browser import Client

from chatd.auth import TokenVerifier
from tests import media_samples
from tests.conftest import wait_until
from tests.support.auth import SECRET, token

pytestmark = pytest.mark.browser


class Messenger(Client):
    """One token user's page."""

    def open_as(self, sub: str):
        """Load the page with *sub*'s token and wait until it is synced."""
        self.user = sub
        self.page.goto(self.server.http_url + "/?token=" + token(sub, name=sub))
        self.page.wait_for_selector("#messenger:not([hidden])")
        self.wait_synced()
        return self

    def wait_synced(self):
        self.page.wait_for_selector('#m-conn-dot[data-state="open"]')
        self.page.wait_for_function("() => window.chatd.state.client.synced")

    def conv(self, key: str):
        """The list entry of conversation *key* (``d:<user>``, ``r:<room>``)."""
        return self.page.locator(f'#m-convs button[data-key="{key}"]')

    def open_conv(self, key: str):
        self.conv(key).click()
        self.page.wait_for_selector(f'#m-convs button[data-key="{key}"][aria-current="page"]')

    def dm(self, user: str):
        """Opens the DM with *user* from the sidebar's field."""
        self.page.fill("#m-open", user)
        self.page.press("#m-open", "Enter")
        self.page.wait_for_function(
            "u => document.getElementById('m-title').textContent === u", arg=user
        )

    def say(self, text: str):
        self.page.fill("#m-input", text)
        self.page.press("#m-input", "Enter")

    def message(self, text: str, sender: str | None = None):
        sel = "#m-items li.m-msg" + (f'[data-from="{sender}"]' if sender else "")
        return self.page.locator(sel).filter(has=self.page.locator(".msg-text", has_text=text))

    def sent(self, text: str):
        """My message *text*, once acked (sent or read)."""
        mine = self.message(text, self.user).and_(
            self.page.locator('[data-status="sent"], [data-status="read"]')
        )
        mine.wait_for()
        return mine

    def act(self, item, action: str, emoji: str | None = None):
        """Hovers message *item* and clicks one of its actions."""
        item.hover()
        sel = f'.m-actions [data-action="{action}"]'
        if emoji:
            sel += f'[data-emoji="{emoji}"]'
        item.locator(sel).click()

    def events(self) -> list[str]:
        return self.page.eval_on_selector_all(
            "#m-items li.m-event", "els => els.map(e => e.textContent)"
        )

    def texts(self) -> list[str]:
        return self.page.eval_on_selector_all(
            "#m-items li.m-msg .msg-text", "els => els.map(e => e.textContent)"
        )

    def attach(self, name: str, data: bytes, mime: str = "application/octet-stream"):
        """Picks file *name* with the attach button's file input (sent as its own message)."""
        self.page.set_input_files(
            "#m-file", files=[{"name": name, "mimeType": mime, "buffer": data}]
        )

    def loaded(self, selector: str) -> int:
        """Waits until the <img> at *selector* has loaded; its naturalWidth."""
        self.page.wait_for_function(
            "s => { const i = document.querySelector(s); return i && i.complete && i.naturalWidth > 0 }",
            arg=selector,
        )
        return self.page.eval_on_selector(selector, "i => i.naturalWidth")


@pytest.fixture
def server(request, twistd_factory):
    """chatd with tokens; more options through indirect parametrization."""
    extra = getattr(request, "param", [])
    return twistd_factory("--listen", "tcp:0:interface=127.0.0.1", "--jwt-secret", SECRET, *extra)


@pytest.fixture
def users(browser, server):
    """A factory of Messenger pages on one live chatd; checks for page errors after."""
    made = []

    def make(sub: str | None = None):
        page = Messenger(browser, server)
        made.append(page)
        return page.open_as(sub) if sub else page

    yield make
    for page in made:
        page.close()
    for page in made:
        assert page.errors == [], page.errors


@pytest.fixture
def artifacts(tmp_path) -> Path:
    d = Path(os.environ.get("CHATD_ARTIFACTS", tmp_path))
    d.mkdir(parents=True, exist_ok=True)
    return d


def known(users, *subs):
    """Connects each user once (so chatd knows them) and closes their page."""
    for sub in subs:
        users(sub).close()


def test_offline_dm_unread_read_tick_reply_edit_recall_and_reactions(users, artifacts):
    """alice DMs bob while he is offline; bob's page then lists the conversation with
    unread 1 and the tab title "(1) chatd"; opening it reads it and alice's message
    shows "read". A reply carries its quote to both pages, Esc drops a reply being
    written; Up edits my last message (the other page shows the new text, edited);
    a recall leaves "you recalled a message" for the sender and a tombstone for the
    peer (the list previews "[message recalled]"); a reaction shows on both pages."""
    known(users, "bob")
    alice = users("alice")
    alice.dm("bob")
    alice.say("are you there?")
    mine = alice.sent("are you there?")
    assert mine.locator(".m-tick").text_content() == "sent"
    assert alice.page.title() == "chatd"

    bob = users("bob")
    entry = bob.conv("d:alice")
    entry.wait_for()
    assert entry.locator(".badge").text_content() == "1"
    assert entry.locator(".m-preview").text_content() == "are you there?"
    bob.page.wait_for_function("() => document.title === '(1) chatd'")
    bob.page.screenshot(path=str(artifacts / "messenger-list.png"))

    bob.open_conv("d:alice")
    bob.message("are you there?", "alice").wait_for()
    bob.page.wait_for_function("() => document.title === 'chatd'")
    assert entry.locator(".badge").count() == 0
    alice.page.wait_for_selector('#m-items li.m-msg[data-status="read"] .m-tick:text-is("read")')

    # reply: the quote bar, then the quote on both pages
    bob.act(bob.message("are you there?", "alice"), "reply")
    bob.page.wait_for_selector("#m-quote:not([hidden])")
    assert bob.page.text_content("#m-quote-text") == "are you there?"
    bob.say("yes, here")
    reply = bob.sent("yes, here")
    assert reply.locator(".m-quote-ref").text_content() == "alice: are you there?"
    bob.page.wait_for_selector("#m-quote", state="hidden")
    alice.message("yes, here", "bob").locator(".m-quote-ref:has-text('are you there?')").wait_for()
    # Esc cancels a reply being written
    bob.act(bob.message("are you there?", "alice"), "reply")
    bob.page.wait_for_selector("#m-quote:not([hidden])")
    bob.page.press("#m-input", "Escape")
    bob.page.wait_for_selector("#m-quote", state="hidden")

    # Shift+Enter is a newline, Enter sends
    alice.page.fill("#m-input", "line one")
    alice.page.press("#m-input", "Shift+Enter")
    alice.page.keyboard.type("line two")
    assert alice.page.input_value("#m-input") == "line one\nline two"
    alice.page.press("#m-input", "Enter")
    bob.message("line two", "alice").wait_for()
    assert bob.texts()[-1] == "line one\nline two"

    # edit: Up in the empty composer edits my last message
    alice.say("see you at noon")
    alice.sent("see you at noon")
    alice.page.press("#m-input", "ArrowUp")
    alice.page.wait_for_selector("#m-editing:not([hidden])")
    assert alice.page.input_value("#m-input") == "see you at noon"
    alice.page.fill("#m-input", "see you at one")
    alice.page.press("#m-input", "Enter")
    edited = bob.message("see you at one", "alice")
    edited.locator(".m-edited").wait_for()
    alice.message("see you at one", "alice").locator(".m-edited").wait_for()
    assert "see you at noon" not in bob.texts()
    # Esc cancels an edit, the message keeps its text
    alice.page.press("#m-input", "ArrowUp")
    alice.page.wait_for_selector("#m-editing:not([hidden])")
    alice.page.press("#m-input", "Escape")
    alice.page.wait_for_selector("#m-editing", state="hidden")
    assert alice.page.input_value("#m-input") == ""

    # a reaction from bob shows on alice's page
    bob.act(edited, "react", "👍")
    alice.message("see you at one", "alice").locator('.m-react[data-emoji="👍"]').wait_for()
    assert alice.message("see you at one", "alice").locator(".m-react").text_content() == "👍 1"
    bob.page.wait_for_selector('#m-items .m-react.me[data-emoji="👍"]')

    # recall, inside the window
    alice.say("oops, wrong chat")
    oops = alice.sent("oops, wrong chat")
    seq = oops.get_attribute("data-seq")
    bob.message("oops, wrong chat", "alice").wait_for()
    alice.act(oops, "recall")
    alice.page.wait_for_selector(
        f'#m-items li.m-recalled[data-seq="{seq}"] .m-tombstone:has-text("you recalled a message")'
    )
    bob.page.wait_for_selector(
        f'#m-items li.m-recalled[data-seq="{seq}"]:has-text("alice recalled a message")'
    )
    assert "oops, wrong chat" not in bob.texts()
    bob.page.wait_for_function(
        "() => document.querySelector('#m-convs button[data-key=\"d:alice\"] .m-preview')"
        ".textContent === '[message recalled]'"
    )
    alice.page.screenshot(path=str(artifacts / "messenger-chat.png"))
    assert alice.dialogs == [] and bob.dialogs == []


def test_private_room_create_invite_mention_read_by_and_kick(users, artifacts):
    """alice creates a private room with bob, invites carol from the room info; both
    get it in their list, the membership events are grey lines; a message gets unread
    1 on both pages and "read by N" as they open it; an @mention picked from the
    autocomplete marks carol's entry "[@you]"; alice kicks carol, whose page drops the
    room and gets nothing of it any more."""
    known(users, "bob", "carol")
    alice, bob, carol = users("alice"), users("bob"), users("carol")

    alice.page.click("#m-new-room")
    alice.page.fill("#m-create-room", "team")
    alice.page.fill("#m-create-name", "Team")
    alice.page.fill("#m-create-members", "bob")
    alice.page.click("#m-create-submit")
    alice.page.wait_for_function("() => document.getElementById('m-title').textContent === 'Team'")
    assert alice.page.text_content("#m-sub").startswith("Private room")
    # listed at `subscribed`, titled once the client's sync brought the room in
    bob.conv("r:team").locator(".m-conv-title:text-is('Team')").wait_for()

    alice.page.click("#m-info-btn")
    alice.page.wait_for_selector('#m-info-members li[data-user="bob"]')
    assert alice.page.text_content("#m-info-role") == "owner"
    alice.page.fill("#m-invite-user", "carol")
    alice.page.press("#m-invite-user", "Enter")
    alice.page.wait_for_selector('#m-info-members li[data-user="carol"]')
    carol.conv("r:team").wait_for()
    alice.page.wait_for_selector("#m-items li.m-event:has-text('You invited carol')")
    assert "You invited bob" in alice.events()

    alice.say("welcome both")
    alice.sent("welcome both")
    for page in (bob, carol):
        page.conv("r:team").locator(".badge:text-is('1')").wait_for()
        assert page.conv("r:team").locator(".m-preview").text_content() == "alice: welcome both"

    bob.open_conv("r:team")
    alice.page.wait_for_selector("#m-items li.m-msg .m-tick:text-is('read by 1')")
    carol.open_conv("r:team")
    alice.page.wait_for_selector("#m-items li.m-msg .m-tick:text-is('read by 2')")
    carol.page.wait_for_selector("#m-items li.m-event:has-text('alice invited you')")
    alice.page.click("#m-items li.m-msg button.m-tick:text-is('read by 2')")
    alice.page.wait_for_selector("#toast:text-is('Read by bob, carol')")

    # @mention autocomplete: "@ca" offers carol, Enter picks her; bob and carol
    # look at another conversation meanwhile
    bob.dm("alice")
    carol.dm("alice")
    alice.page.click("#m-input")
    alice.page.keyboard.type("@ca")
    alice.page.wait_for_selector('#m-mentions li[data-user="carol"]')
    assert alice.page.locator('#m-mentions li[data-user="bob"]').count() == 0
    alice.page.press("#m-input", "Enter")
    assert alice.page.input_value("#m-input") == "@carol "
    alice.page.keyboard.type("look at this")
    alice.page.press("#m-input", "Enter")
    alice.sent("@carol look at this")
    carol.conv("r:team").locator(".m-mention:text-is('[@you]')").wait_for()
    bob.conv("r:team").locator(".badge:text-is('1')").wait_for()
    assert bob.conv("r:team").locator(".m-mention").count() == 0
    carol.open_conv("r:team")
    carol.message("@carol look at this", "alice").wait_for()
    carol.conv("r:team").locator(".m-mention").wait_for(state="detached")
    alice.page.screenshot(path=str(artifacts / "messenger-room.png"))

    # kick: carol's page drops the room
    alice.page.locator('#m-info-members li[data-user="carol"] [data-action="kick"]').click()
    alice.page.wait_for_selector('#m-info-members li[data-user="carol"]', state="detached")
    alice.page.wait_for_selector("#m-items li.m-event:has-text('You removed carol')")
    carol.conv("r:team").wait_for(state="detached")
    carol.page.wait_for_selector("#toast:has-text('You were removed from #team')")
    assert carol.page.text_content("#m-title") == "chatd"
    alice.say("only for bob now")
    alice.sent("only for bob now")
    bob.conv("r:team").locator(".m-preview:has-text('only for bob now')").wait_for()
    carol.page.wait_for_function("() => window.chatd.state.client.synced")
    assert carol.conv("r:team").count() == 0
    assert carol.page.evaluate("() => window.chatd.state.client.timeline('r:team').length") == 0


@pytest.mark.parametrize("server", [["--recall-window", "1"]], indirect=True)
def test_public_room_join_roles_mute_leave_ban_reload_and_a_late_recall(users):
    """A public room: carol joins it by name; the owner makes bob an admin; bob mutes
    it (the list shows it muted, its unread stays out of the tab title) and a reload
    keeps the token, the list and the mute; carol leaves it from the room info, the
    owner cannot while others remain; a ban drops it from bob's page and the owner
    unbans him from the room info; after chatd's recall window (from `welcome`) the
    Recall button is gone, and a recall sent anyway is refused and said so, the
    message stays."""
    known(users, "bob", "carol")
    alice, bob, carol = users("alice"), users("bob"), users("carol")

    alice.page.click("#m-new-room")
    alice.page.fill("#m-create-room", "club")
    alice.page.check('input[name="m-kind"][value="public"]')
    alice.page.fill("#m-create-members", "bob")
    alice.page.click("#m-create-submit")
    alice.page.wait_for_function("() => document.getElementById('m-title').textContent === '#club'")
    assert alice.page.text_content("#m-sub").startswith("Room")
    bob.conv("r:club").wait_for()

    carol.page.fill("#m-open", "#club")
    carol.page.press("#m-open", "Enter")
    carol.conv("r:club").wait_for()
    carol.page.wait_for_function("() => document.getElementById('m-title').textContent === '#club'")
    alice.page.wait_for_selector("#m-items li.m-event:text-is('carol joined')")

    # roles: the owner makes bob an admin
    alice.page.click("#m-info-btn")
    alice.page.select_option('#m-info-members li[data-user="bob"] select', "admin")
    alice.page.wait_for_selector('#m-info-members li[data-user="bob"][data-role="admin"]')
    alice.page.wait_for_selector("#m-items li.m-event:text-is('You made bob an admin')")
    assert alice.page.is_disabled("#m-leave")  # the owner, with members left

    # title and topic from the room info: a line for all, the new title in the lists
    alice.page.fill("#m-room-title", "Club house")
    alice.page.fill("#m-room-topic", "Fridays")
    alice.page.click("#m-edit-room button[type=submit]")
    alice.page.wait_for_selector(
        "#m-items li.m-event:text-is('You changed the title to “Club house”, the topic to “Fridays”')"
    )
    alice.page.wait_for_selector("#m-info-topic:text-is('Fridays')")
    assert alice.page.text_content("#m-title") == "Club house"
    for page in (bob, carol):
        page.conv("r:club").locator(".m-conv-title:text-is('Club house')").wait_for()

    # bob mutes the room and looks elsewhere: its unread is not in the title
    bob.open_conv("r:club")
    bob.page.wait_for_selector("#m-items li.m-event:text-is('alice made you an admin')")
    bob.page.click("#m-mute")
    bob.conv("r:club").and_(bob.page.locator('[data-muted="true"]')).wait_for()
    assert bob.conv("r:club").locator(".m-muted-icon").count() == 1
    bob.dm("alice")
    alice.say("quiet please")
    alice.sent("quiet please")
    bob.conv("r:club").locator(".badge.m-badge-muted:text-is('1')").wait_for()
    assert bob.page.title() == "chatd"

    # a reload keeps the session: token, list, mute and unread
    bob.page.reload()
    bob.page.wait_for_selector("#messenger:not([hidden])")
    bob.wait_synced()
    bob.conv("r:club").and_(bob.page.locator('[data-muted="true"]')).wait_for()
    assert bob.conv("r:club").locator(".badge").text_content() == "1"
    assert "token=" not in bob.page.url

    # carol leaves from the room info: gone from her list, a line for the others
    carol.page.click("#m-info-btn")
    carol.page.wait_for_selector('#m-info-members li[data-user="carol"]')
    carol.page.click("#m-leave")
    carol.conv("r:club").wait_for(state="detached")
    alice.page.wait_for_selector("#m-items li.m-event:text-is('carol left')")

    # a ban drops the room from bob's page
    alice.page.locator('#m-info-members li[data-user="bob"] [data-action="ban"]').click()
    bob.conv("r:club").wait_for(state="detached")
    bob.page.wait_for_selector("#toast:has-text('You were banned from #club')")
    alice.page.wait_for_selector("#m-items li.m-event:text-is('You banned bob')")

    # unban: bob is listed as banned in the room info; unbanned, he may join again
    alice.page.wait_for_selector('#m-banned:not([hidden]) #m-banned-list li[data-user="bob"]')
    alice.page.click('#m-banned-list li[data-user="bob"] [data-action="unban"]')
    alice.page.wait_for_selector("#m-items li.m-event:text-is('You unbanned bob')")
    alice.page.wait_for_selector('#m-banned-list li[data-user="bob"]', state="detached")
    bob.page.fill("#m-open", "#club")
    bob.page.press("#m-open", "Enter")
    bob.conv("r:club").wait_for()
    # and by user id (carol, who left, banned meanwhile); one not banned is refused
    alice.page.evaluate("() => window.chatd.messenger.ban('r:club', 'carol')")
    alice.page.wait_for_selector('#m-banned-list li[data-user="carol"]')
    alice.page.fill("#m-unban-user", "carol")
    alice.page.press("#m-unban-user", "Enter")
    alice.page.wait_for_selector("#m-items li.m-event:text-is('You unbanned carol')")
    alice.page.wait_for_function("() => document.getElementById('m-unban-user').value === ''")
    alice.page.fill("#m-unban-user", "carol")
    alice.page.press("#m-unban-user", "Enter")
    alice.page.wait_for_selector("#m-info-error:has-text('Refused: ')")

    # after chatd's recall window (1 s here) the Recall button goes; a recall
    # sent anyway is refused: too_late, text kept
    alice.dm("bob")
    alice.say("too late to take back")
    late = alice.sent("too late to take back")
    late.hover()
    late.locator('.m-actions [data-action="recall"]').wait_for()
    late.locator('.m-actions [data-action="recall"]').wait_for(state="detached")
    seq = int(late.get_attribute("data-seq"))
    alice.page.evaluate("seq => window.chatd.state.client.recall('d:bob', seq)", seq)
    alice.page.wait_for_selector("#toast:has-text('Too late to recall')")
    assert alice.message("too late to take back", "alice").count() == 1
    assert alice.page.locator("#m-items li.m-recalled").count() == 0


@pytest.mark.parametrize("server", [["--sync-limit", "5"]], indirect=True)
def test_offline_backlog_pages_back_and_drafts_stay_in_the_list(users):
    """Twelve DMs to offline bob: his page lists unread 12 and shows the newest five
    (chatd's --sync-limit) with "load earlier", which brings the rest up to the
    beginning. A draft left in the composer shows as "[draft]" in the list and comes
    back when the conversation is opened again."""
    known(users, "bob")
    alice = users("alice")
    alice.dm("bob")
    texts = [f"backlog {i}" for i in range(12)]
    for text in texts:
        alice.say(text)
    alice.sent("backlog 11")

    bob = users("bob")
    bob.conv("d:alice").locator(".badge:text-is('12')").wait_for()
    bob.page.wait_for_function("() => document.title === '(12) chatd'")
    bob.open_conv("d:alice")
    bob.message("backlog 11", "alice").wait_for()
    assert bob.texts() == texts[-5:]
    assert bob.page.is_hidden("#m-start")
    # the button does the same (clicked without scrolling to it: that alone would)
    bob.page.eval_on_selector("#m-earlier", "b => b.click()")
    bob.message("backlog 0", "alice").wait_for()
    assert bob.texts() == texts
    bob.page.wait_for_selector("#m-start:not([hidden])")
    assert bob.page.is_hidden("#m-earlier")
    bob.page.wait_for_function("() => document.title === 'chatd'")

    # a draft: typed, left, listed, restored
    bob.page.fill("#m-input", "half a thought")
    bob.dm("carol")
    bob.conv("d:alice").locator(".m-draft").wait_for()
    assert bob.conv("d:alice").locator(".m-preview").text_content() == "half a thought"
    bob.open_conv("d:alice")
    assert bob.page.input_value("#m-input") == "half a thought"
    bob.conv("d:alice").locator(".m-draft").wait_for(state="detached")

    # a cold start with no connection at all shows the cached list and timeline,
    # and the text still in the composer when the page went away as a draft
    bob.page.add_init_script("window.WebSocket = class { constructor() {} send() {} close() {} }")
    bob.page.reload()
    bob.conv("d:alice").wait_for()
    assert bob.page.get_attribute("#m-conn-dot", "data-state") != "open"
    assert bob.conv("d:alice").locator(".m-draft").count() == 1
    assert bob.conv("d:alice").locator(".m-preview").text_content() == "half a thought"
    assert bob.conv("d:alice").locator(".badge").count() == 0
    assert bob.page.title() == "chatd"
    bob.open_conv("d:alice")
    bob.message("backlog 11", "alice").wait_for()
    assert bob.texts() == texts
    assert bob.page.input_value("#m-input") == "half a thought"


def test_markup_is_text_and_a_bad_token_is_reported(users, server):
    """Markup in a message, a reply quote, a room title and a draft is shown as text
    (no element made of it, no dialog); a page opened with a token chatd refuses says
    so instead of looping or showing a sign-in form that cannot work."""
    known(users, "bob")
    alice, bob = users("alice"), users("bob")
    evil = "<img src=x onerror=alert(1)><b>bold</b>"
    alice.dm("bob")
    alice.say(evil)
    alice.sent("onerror")
    bob.conv("d:alice").locator(".m-preview").filter(has_text="onerror").wait_for()
    assert bob.conv("d:alice").locator(".m-preview").text_content() == evil
    bob.open_conv("d:alice")
    shown = bob.message("onerror", "alice")
    assert shown.locator(".msg-text").text_content() == evil
    bob.act(shown, "reply")
    assert bob.page.text_content("#m-quote-text") == evil
    bob.say("quoted")
    bob.sent("quoted").locator(".m-quote-ref:has-text('onerror')").wait_for()

    alice.page.click("#m-new-room")
    alice.page.fill("#m-create-room", "evil")
    alice.page.fill("#m-create-name", "<i>Team</i>")
    alice.page.fill("#m-create-members", "bob")
    alice.page.click("#m-create-submit")
    bob.conv("r:evil").locator(".m-conv-title:text-is('<i>Team</i>')").wait_for()
    for page in (alice, bob):
        made = (
            "#messenger img:not(#m-lightbox-img),"
            " :is(#m-items, #m-convs, #m-title, #m-quote-text) :is(b, i)"
        )
        assert page.page.locator(made).count() == 0
        assert page.dialogs == []

    bad = {
        "not.a-token": "sign-in link is not valid",
        token("bob", now=time.time() - 100_000): "sign-in has expired",
        TokenVerifier(secret="another-secret-that-is-32-bytes!!").issue("bob"): (
            "did not let this sign-in in"
        ),
    }
    for jwt, said in bad.items():
        stranger = Messenger(alice.context.browser, server)
        try:
            stranger.page.goto(server.http_url + "/?token=" + jwt)
            stranger.page.wait_for_selector(f"#m-banner-text:has-text('{said}')")
            assert stranger.page.is_hidden("#login")
            assert stranger.page.is_visible("#messenger")
            assert stranger.page.evaluate("() => window.chatd.state.welcomed") is False
            assert stranger.errors == []
        finally:
            stranger.close()


def test_the_pages_rules(users):
    """The pure rules of static/app-state.js, run in the page: badge and title counts,
    previews (attachments too), ticks, event lines, who may recall (the client's
    canRecall, from welcome's recall_window), @mention parsing, how attachments are
    shown (only chatd's /media/ paths are used as URLs), the rendering window and
    the banned users the timeline shows."""
    page = users("alice").page
    got = page.evaluate(
        """() => {
      const M = window.ChatdWebState.messenger
      const mine = (x) => Object.assign({seq: 5, mine: true, ts: 1000, text: 'x'}, x)
      return {
        badge: [M.badgeText(1), M.badgeText(99), M.badgeText(100)],
        title: [M.tabTitle(0), M.tabTitle(3), M.tabTitle(250)],
        preview: [
          M.preview({key: 'r:t', last: {from: 'bob', name: 'Bob', text: 'hi'}}, 'alice').text,
          M.preview({key: 'r:t', last: {from: 'alice', text: 'hi'}}, 'alice').text,
          M.preview({key: 'd:bob', last: {from: 'bob', text: '', recalled: true}}, 'alice').text,
          M.preview({key: 'd:bob', draft: 'wip', last: null}, 'alice'),
          M.preview({key: 'd:bob', last: null}, 'alice').text,
          M.preview({key: 'd:bob', last: {from: 'bob', text: '', media: 'image'}}, 'alice').text,
          M.preview({key: 'r:t', last: {from: 'bob', name: 'Bob', text: 'hear', media: 'voice'}}, 'alice').text,
          M.preview({key: 'd:bob', last: {from: 'alice', text: '', media: 'file'}}, 'alice').text,
          M.preview({key: 'd:bob', last: {from: 'bob', text: '', media: 'video'}}, 'alice').text],
        tick: [M.tick(mine({status: 'read'}), true), M.tick(mine({status: 'sent'}), true),
               M.tick(mine({status: 'read', readBy: 3}), false), M.tick(mine({status: 'sent', readBy: 0}), false),
               M.tick(mine({status: 'pending'}), true), M.tick({status: 'sent'}, true)],
        events: [
          M.eventText({event: 'invited', user: 'carol', by: 'alice'}, 'alice'),
          M.eventText({event: 'kicked', user: 'alice', by: 'bob'}, 'alice'),
          M.eventText({event: 'role', user: 'bob', by: 'alice', role: 'admin'}, 'carol'),
          M.eventText({event: 'room_updated', by: 'bob', changes: {title: 'T'}}, 'carol'),
          M.eventText({event: 'left', user: 'bob'}, 'carol')],
        recall: ((client) => {
          const now = Date.now()
          const own = (x) => Object.assign({seq: 5, from: 'alice', ts: now - 1000, text: 'x'}, x)
          return [client.canRecall('d:bob', own({})),
                  client.canRecall('d:bob', own({ts: now - 200000})),
                  client.canRecall('d:bob', own({from: 'bob'})),
                  client.canRecall('d:bob', own({recalled: {by: 'alice'}})),
                  client.canRecall('d:bob', own({seq: null})),
                  client.welcome.recall_window]
        })(window.chatd.state.client),
        paths: ['/media/q3Jb6F1xX1l3pR7mWz0P9A?e=1764377520&s=abc_-', '/media/q3Jb/thumb?e=1&s=x',
                'javascript:alert(1)', '//evil.example/media/x', 'https://evil.example/media/x',
                '/media/../api/x', '/media/x?e=1&s=<b>', '/media/x/thumb/../y', null, 42]
          .map(M.mediaPath),
        views: [
          M.attachmentView({kind: 'image', mime: 'image/png', url: '/media/a?s=1', thumb_url: '/media/a/thumb?s=1', name: 'p.png'}),
          M.attachmentView({kind: 'image', url: '/media/a?s=1'}),
          M.attachmentView({kind: 'voice', mime: 'audio/mpeg', url: '/media/v?s=1'}),
          M.attachmentView({kind: 'file', mime: 'application/octet-stream', url: 'javascript:x', name: '<b>x</b>.html'}),
        ].map((v) => [v.show, v.src, v.href, v.name, v.label]),
        boxes: [M.thumbBox(640, 480, 240), M.thumbBox(100, 50, 240), M.thumbBox(0, 10, 240), M.thumbBox(300, 3000, 240)],
        badges: [M.fileBadge('report.pdf'), M.fileBadge('a.tar.gz'), M.fileBadge('README'), M.fileBadge('x.docxx'),
                 M.fileBadge(undefined)],
        uploads: [M.uploadError({code: 'too_large'}), M.uploadError({code: 'quota_exceeded'}),
                  M.uploadError({code: 'bad_image'}), M.uploadError({code: 'weird', message: 'odd'}),
                  M.uploadError(null)],
        windows: [M.windowStart(5000, 200), M.windowStart(150, 200), M.windowStart(5000, 300), M.windowStart(10, 0)],
        banned: M.bannedIn([{seq: 1, event: 'banned', user: 'bob'}, {seq: 2, event: 'banned', user: 'carol'},
                            {seq: 3, event: 'unbanned', user: 'bob'}, {seq: 4, event: 'banned', user: 'dave'},
                            {seq: 5, from: 'x', text: 'hi'}]),
        sizes: [window.ChatdDom.fmtSize(812), window.ChatdDom.fmtSize(4200), window.ChatdDom.fmtSize(12345678),
                window.ChatdDom.fmtSize(undefined)],
        typing: [window.ChatdDom.typingText([]), window.ChatdDom.typingText(['bob']),
                 window.ChatdDom.typingText(['bob', 'carol']), window.ChatdDom.typingText(['a', 'b', 'c'])],
        last: M.lastEditable([mine({seq: 1}), {seq: 2, mine: false}, mine({seq: 3, recalled: {}})]).seq,
        query: [M.mentionQuery('hi @ca', 6), M.mentionQuery('mail@ca', 7), M.mentionQuery('@', 1)],
        cands: M.mentionCandidates([{user: 'carol'}, {user: 'cat', name: 'Kitty'}, {user: 'alice'}],
                                   'ca', 'alice', 'member').map((m) => m.user),
        all: M.mentionCandidates([], '', 'alice', 'admin').map((m) => m.user),
        mentions: M.mentionsIn('@carol hi @cat, not@bob @bobby', ['carol', 'cat', 'bob']),
        outranks: [M.outranks('owner', 'admin'), M.outranks('admin', 'admin'), M.outranks('member', 'member')],
      }
    }"""
    )
    assert got["badge"] == ["1", "99", "99+"]
    assert got["title"] == ["chatd", "(3) chatd", "(99+) chatd"]
    assert got["preview"] == [
        "Bob: hi",
        "You: hi",
        "[message recalled]",
        {"draft": True, "text": "wip"},
        "",
        "[Image]",
        "Bob: [Voice] hear",
        "[File]",
        "[Video]",
    ]
    assert got["tick"] == ["read", "sent", "read by 3", "sent", "sending…", ""]
    assert got["events"] == [
        "You invited carol",
        "bob removed you",
        "alice made bob an admin",
        "bob changed the title to “T”",
        "bob left",
    ]
    assert got["recall"] == [True, False, False, False, False, 120]
    assert got["paths"] == [
        "/media/q3Jb6F1xX1l3pR7mWz0P9A?e=1764377520&s=abc_-",
        "/media/q3Jb/thumb?e=1&s=x",
        *[""] * 8,
    ]
    assert got["views"] == [
        ["image", "/media/a/thumb?s=1", "/media/a?s=1", "p.png", "[Image]"],
        ["image", "/media/a?s=1", "/media/a?s=1", "", "[Image]"],
        ["audio", "/media/v?s=1", "/media/v?s=1", "", "[Voice]"],
        ["file", "", "", "<b>x</b>.html", "[File]"],
    ]
    assert got["boxes"] == [
        {"width": 240, "height": 180},
        {"width": 100, "height": 50},
        None,
        {"width": 24, "height": 240},
    ]
    assert got["badges"] == ["PDF", "GZ", "FILE", "FILE", "FILE"]
    assert got["uploads"] == [
        "The file is too large.",
        "You have uploaded too much today: try again later.",
        "That image could not be read.",
        "odd",
        "The upload failed.",
    ]
    assert got["windows"] == [4800, 0, 4700, 0]
    assert got["banned"] == ["dave", "carol"]
    assert got["sizes"] == ["812 B", "4.2 KB", "12 MB", ""]
    assert got["typing"] == [
        "",
        "bob is typing…",
        "bob and carol are typing…",
        "Several people are typing…",
    ]
    assert got["last"] == 1
    assert got["query"] == [{"start": 3, "prefix": "ca"}, None, {"start": 0, "prefix": ""}]
    assert got["cands"] == ["carol", "cat"]
    assert got["all"] == ["@all"]
    assert got["mentions"] == ["carol", "cat"]
    assert got["outranks"] == [True, False, False]


def test_a_later_page_load_creates_another_room(users):
    """Each page load of alice creates a room from the dialog; both rooms exist."""
    for room in ("first", "second"):
        alice = users("alice")
        alice.page.click("#m-new-room")
        alice.page.fill("#m-create-room", room)
        alice.page.click("#m-create-submit")
        alice.page.wait_for_function(
            "t => document.getElementById('m-title').textContent === t", arg="#" + room
        )
        alice.close()


def test_a_hidden_tab_does_not_mark_read(users):
    """bob has the DM open in a tab that is hidden: alice's new message stays unread
    (badge, "(1) chatd") and her tick says "sent"; when the tab becomes visible the
    message is read and alice sees "read"."""
    known(users, "bob")
    alice = users("alice")
    alice.dm("bob")
    alice.say("first")
    alice.sent("first")
    bob = users("bob")
    bob.open_conv("d:alice")
    alice.page.wait_for_selector("#m-items li.m-msg[data-status='read']")
    bob.page.evaluate(
        """() => {
      window.__visibility = 'hidden'
      Object.defineProperty(document, 'visibilityState', {get: () => window.__visibility})
      document.dispatchEvent(new Event('visibilitychange'))
    }"""
    )
    alice.say("while you look away")
    alice.sent("while you look away")
    bob.message("while you look away", "alice").wait_for()
    bob.conv("d:alice").locator(".badge:text-is('1')").wait_for()
    assert bob.page.title() == "(1) chatd"
    assert alice.message("while you look away", "alice").get_attribute("data-status") == "sent"
    bob.page.evaluate(
        "() => { window.__visibility = 'visible';"
        " document.dispatchEvent(new Event('visibilitychange')) }"
    )
    bob.page.wait_for_function("() => document.title === 'chatd'")
    alice.message("while you look away", "alice").and_(
        alice.page.locator("[data-status='read']")
    ).wait_for()


def test_a_network_flap_loses_and_doubles_nothing(users):
    """bob's page loses its connection: it shows the banner, keeps a message he
    writes meanwhile pending, and after it reconnects by itself (sync from its
    cursor) shows what alice sent meanwhile once each, in order, and delivers his
    pending message exactly once."""
    known(users, "bob")
    alice = users("alice")
    alice.dm("bob")
    alice.say("before")
    alice.sent("before")
    bob = users("bob")
    bob.open_conv("d:alice")
    bob.message("before", "alice").wait_for()

    bob.page.evaluate("window.chatd.disconnect(2500)")
    bob.page.wait_for_selector("#m-banner:not([hidden])")
    alice.say("missed one")
    alice.say("missed two")
    alice.sent("missed two")
    bob.say("written offline")
    assert bob.message("written offline", "bob").get_attribute("data-status") == "pending"
    assert bob.message("written offline", "bob").locator(".m-tick").text_content() == "sending…"

    bob.page.wait_for_selector('#m-conn-dot[data-state="open"]', timeout=15_000)
    bob.page.wait_for_selector("#m-banner", state="hidden")
    bob.sent("written offline")
    bob.message("missed two", "alice").wait_for()
    alice.message("written offline", "bob").wait_for()
    assert bob.texts() == ["before", "missed one", "missed two", "written offline"]
    assert alice.texts() == ["before", "missed one", "missed two", "written offline"]
    seqs = bob.page.eval_on_selector_all(
        "#m-items li.m-msg", "els => els.map(e => Number(e.dataset.seq))"
    )
    assert seqs == [1, 2, 3, 4]


@pytest.mark.parametrize("server", [["--max-file-bytes", "100000"]], indirect=True)
def test_pictures_voice_and_files_to_an_offline_user(users, artifacts):
    """alice attaches a voice clip (the text in the composer goes with it), drops a
    file on the conversation, picks a PNG and pastes one, each its own message
    through the shared client's outbox (a pending bubble, then sent), to bob who is
    offline. bob's list previews "[Image]"; his page shows the thumbnail (it loads),
    which opens the original in the lightbox, an audio player and the file as a
    download link with its name and size; the text stays text. A thumbnail whose URL
    stops working is signed again once. An empty file, one over --max-file-bytes and
    a PNG that does not decode are refused with their message and stay "not sent"
    with Retry and Delete; nothing of them is sent."""
    known(users, "bob")
    alice = users("alice")
    alice.dm("bob")

    # a voice clip with the text typed before it (markup in it stays text)
    clip, _seconds = media_samples.mp3(3.0)
    alice.page.fill("#m-input", "listen <b>now</b>")
    alice.attach("hello.mp3", clip, "audio/mpeg")
    alice.sent("listen <b>now</b>").locator(".m-att-audio audio").wait_for()
    assert alice.page.input_value("#m-input") == ""

    # a file dropped on the conversation
    alice.page.evaluate(
        """() => {
      const dt = new DataTransfer()
      dt.items.add(new File(['minutes of the meeting'], '../notes <i>1<i>.txt', {type: 'text/plain'}))
      const main = document.getElementById('m-main')
      main.dispatchEvent(new DragEvent('dragover', {dataTransfer: dt, bubbles: true, cancelable: true}))
      main.dispatchEvent(new DragEvent('drop', {dataTransfer: dt, bubbles: true, cancelable: true}))
    }"""
    )
    alice.page.locator('#m-items li.m-msg[data-status="sent"] .m-att-file').wait_for()

    # a picture, picked with the attach button: a pending bubble, then the thumbnail
    png = picture_png()
    alice.attach("sunset.png", png, "image/png")
    alice.page.wait_for_selector('#m-items li.m-msg[data-status="sent"] img.m-thumb')

    # a picture pasted into the composer is sent too
    alice.page.evaluate(
        """(b64) => {
      const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0))
      const dt = new DataTransfer()
      dt.items.add(new File([bytes], 'pasted.png', {type: 'image/png'}))
      const input = document.getElementById('m-input')
      input.dispatchEvent(new ClipboardEvent('paste', {clipboardData: dt, bubbles: true, cancelable: true}))
    }""",
        base64.b64encode(png).decode(),
    )
    sent_pictures = '#m-items li.m-msg[data-status="sent"] img.m-thumb'
    alice.page.wait_for_function(
        "s => document.querySelectorAll(s).length === 2", arg=sent_pictures
    )

    # refusals: an empty file (400 bad_request), one over --max-file-bytes (413), a
    # PNG that does not decode: each "not sent" with why, Retry and Delete
    failed = '#m-items li.m-msg[data-status="failed"]'

    def refused(name: str, data: bytes, mime: str, why: str):
        alice.attach(name, data, mime)
        bubble = alice.page.locator(failed).filter(
            has=alice.page.locator(".m-att-pending", has_text=name)
        )
        bubble.locator(".m-upload-error").wait_for()
        assert bubble.locator(".m-upload-error").text_content() == why
        assert alice.page.text_content("#m-error") == f"Not uploaded: {name}: {why}"
        return bubble

    octets = "application/octet-stream"
    refused("empty.txt", b"", octets, "The file could not be uploaded (it is empty or broken).")
    big = refused("big.bin", os.urandom(150_000), octets, "The file is too large.")
    bad_png = b"\x89PNG\r\n\x1a\n" + b"not a picture" * 20
    refused("broken.png", bad_png, "image/png", "That image could not be read.")
    # Retry uploads it again (refused again: the file did not change)
    uploads = len([u for u in alice.requests if u.endswith("/api/media")])
    big.locator(".m-upload-retry").click()
    alice.page.wait_for_function(
        "() => window.chatd.state.client.failed.length === 3 &&"
        " !window.chatd.state.client.outbox.length"
    )
    big.locator(".m-upload-error").wait_for()
    assert len([u for u in alice.requests if u.endswith("/api/media")]) == uploads + 1
    for _ in range(3):
        alice.page.click(f"{failed} .m-upload-remove >> nth=0")
    alice.page.wait_for_function("s => !document.querySelector(s)", arg=failed)
    assert alice.page.locator("#m-items li.m-msg").count() == 4

    bob = users("bob")
    entry = bob.conv("d:alice")
    entry.locator(".badge:text-is('4')").wait_for()
    assert entry.locator(".m-preview").text_content() == "[Image]"
    bob.open_conv("d:alice")
    picture = "#m-items li.m-msg[data-from='alice'] img.m-thumb"
    bob.page.wait_for_selector(picture)
    thumb_width = bob.loaded(picture)
    assert 0 < thumb_width <= 320
    src = bob.page.get_attribute(picture, "src")
    assert "/media/" in src and "/thumb?" in src
    assert bob.page.get_attribute(picture, "width") == "240"  # sized before it loads

    # the voice clip: a player of a /media/ URL, and the text as text
    voice = bob.message("listen <b>now</b>", "alice")
    assert voice.locator(".msg-text").text_content() == "listen <b>now</b>"
    assert voice.locator(".msg-text b").count() == 0
    assert "/media/" in voice.locator("audio").get_attribute("src")
    bob.page.wait_for_function(
        "() => document.querySelector('#m-items audio').readyState >= 1"
    )  # its metadata loaded (CSP media-src allows chatd's own host)

    # the file: a download link with its name (as text) and size, served as attachment
    link = bob.page.locator("#m-items a.m-att-file")
    # (chatd keeps the last path component of a name: docs/security.md)
    assert link.locator(".m-att-name").text_content() == "notes <i>1<i>.txt"
    assert link.locator(".m-att-name i").count() == 0
    assert link.locator(".m-att-meta").text_content() == "22 B"
    assert link.get_attribute("download") == "notes <i>1<i>.txt"
    got = bob.page.evaluate(
        """async (href) => { const r = await fetch(href)
      return [r.status, r.headers.get('content-disposition'), await r.text()] }""",
        link.get_attribute("href"),
    )
    assert got[0] == 200 and got[1].startswith("attachment") and got[2] == "minutes of the meeting"
    bob.page.screenshot(path=str(artifacts / "messenger-media.png"))

    # the thumbnail opens the original in the lightbox
    bob.page.click(picture)
    bob.page.wait_for_selector("#m-lightbox[open]")
    assert bob.loaded("#m-lightbox-img") == 640
    assert "/thumb" not in bob.page.get_attribute("#m-lightbox-img", "src")
    bob.page.click("#m-lightbox-close")
    bob.page.wait_for_selector("#m-lightbox:not([open])", state="attached")

    # a thumbnail URL that stops working (here: its signature changed) is signed again
    bob.page.eval_on_selector(picture, "i => { i.src = i.src.replace(/s=[^&]*/, 's=forged') }")
    bob.page.wait_for_function(
        "s => { const i = document.querySelector(s);"
        " return !i.src.includes('s=forged') && i.complete && i.naturalWidth > 0 }",
        arg=picture,
    )
    # once per picture: a second failure only dims it, no further request
    asked = len([u for u in bob.requests if "/api/media/" in u])
    bob.page.eval_on_selector(picture, "i => { i.src = i.src.replace(/s=[^&]*/, 's=forged') }")
    bob.page.wait_for_selector(picture + ".m-att-broken")
    assert len([u for u in bob.requests if "/api/media/" in u]) == asked == 1
    assert alice.dialogs == [] and bob.dialogs == []


def test_a_big_upload_shows_its_progress_and_is_sent_once(users):
    """alice sends a 6 MB file (the browser's upload throttled to 4 MB/s, as on a real
    network): XMLHttpRequest's upload.onprogress reaches the SDK and the pending
    bubble's progress bar with values between 0 and 100, then the message is sent;
    bob gets it exactly once, with the file's name."""
    known(users, "bob")
    alice = users("alice")
    alice.dm("bob")
    alice.page.evaluate(
        """() => {
      window.seenProgress = []
      window.chatd.state.client.on('upload', (e) => {
        const bar = document.querySelector('#m-items progress.m-upload-progress')
        window.seenProgress.push([e.state, e.progress, bar ? bar.value : null])
      })
    }"""
    )
    cdp = alice.page.context.new_cdp_session(alice.page)
    cdp.send("Network.enable")
    conditions = {"offline": False, "latency": 0, "downloadThroughput": -1}
    cdp.send("Network.emulateNetworkConditions", {**conditions, "uploadThroughput": 4 << 20})
    alice.attach("big report.bin", os.urandom(6 << 20))
    alice.page.locator("#m-items li.m-msg progress.m-upload-progress").wait_for()
    done = '#m-items li.m-msg[data-status="sent"] .m-att-file'
    alice.page.locator(done).wait_for(timeout=60_000)
    seen = alice.page.evaluate("() => window.seenProgress")
    middle = [(p, bar) for state, p, bar in seen if state == "uploading" and 0 < p < 100]
    assert middle, seen
    assert any(bar == p for p, bar in middle), seen  # the bar showed them
    assert [state for state, _p, _bar in seen][-1] == "done"
    assert alice.page.evaluate("() => window.chatd.state.client.outbox.length") == 0

    bob = users("bob")
    bob.open_conv("d:alice")
    bob.page.locator("#m-items a.m-att-file").wait_for()
    assert bob.page.locator("#m-items a.m-att-file .m-att-name").all_text_contents() == [
        "big report.bin"
    ]
    got = bob.page.evaluate(
        """() => window.chatd.state.client.timeline('d:alice')
      .filter((m) => m.attachments).map((m) => [m.attachments.length, m.attachments[0].size])"""
    )
    assert got == [[1, 6 << 20]]


def kept_files(page) -> int:
    """How many files the page's SDK keeps in IndexedDB for pending uploads."""
    return page.evaluate(
        """() => new Promise((resolve, reject) => {
      const open = indexedDB.open('chatd-files', 1)
      open.onupgradeneeded = () => open.result.createObjectStore('files')
      open.onerror = () => reject(open.error)
      open.onsuccess = () => {
        const count = open.result.transaction('files').objectStore('files').count()
        count.onsuccess = () => { open.result.close(); resolve(count.result) }
        count.onerror = () => reject(count.error)
      }
    })"""
    )


def conv_list(page) -> list[tuple[str, str]]:
    """The conversation list as shown: ``[(key, preview)]``, top to bottom."""
    rows = page.eval_on_selector_all(
        "#m-convs button.m-conv",
        "bs => bs.map(b => [b.dataset.key, b.querySelector('.m-preview').textContent])",
    )
    return [tuple(row) for row in rows]


def test_an_upload_cut_by_a_reload_resumes_and_is_sent_once(users):
    """alice reloads her page while a 2 MB file is part uploaded (the browser's upload
    throttled to 256 KB/s): after the reload the same outbox entry is back with its
    pending bubble (its new upload held until the bubble is seen), the SDK reads the
    file back from IndexedDB and uploads it again, and bob gets the message exactly
    once; the kept file is removed once it is sent. The DM with bob, which chatd does
    not know until that message is sent, is in alice's list all along (before and
    after the reload, above her older DM with carol), and once sent it is there once."""
    known(users, "bob", "carol")
    alice = users("alice")
    alice.dm("carol")
    alice.say("hello carol")
    alice.sent("hello carol")
    alice.dm("bob")
    cdp = alice.page.context.new_cdp_session(alice.page)
    cdp.send("Network.enable")
    conditions = {"offline": False, "latency": 0, "downloadThroughput": -1}
    cdp.send("Network.emulateNetworkConditions", {**conditions, "uploadThroughput": 256 << 10})
    alice.attach("half way.bin", os.urandom(2 << 20))
    alice.page.wait_for_function(
        """() => { const b = document.querySelector('#m-items progress.m-upload-progress')
      return b && b.value > 5 }"""
    )
    outbox = "() => window.chatd.state.client.outbox.map((e) => [e.id, e.upload && e.upload.file])"
    [(entry, ref)] = alice.page.evaluate(outbox)
    assert ref.startswith("idb:") and kept_files(alice.page) == 1
    assert conv_list(alice.page) == [("d:bob", "[File]"), ("d:carol", "hello carol")]
    held = []  # the upload after the reload waits here until the pending bubble was seen
    alice.page.route("**/api/media", lambda route: held.append(route))
    alice.page.reload()
    alice.wait_synced()
    assert alice.page.evaluate(outbox) == [[entry, ref]]  # the same entry, the same kept file
    # chatd's list has carol only; the page's has the DM only the outbox has, newest first
    assert alice.page.evaluate("() => window.chatd.state.client.conversation('d:bob')") is None
    assert conv_list(alice.page) == [("d:bob", "[File]"), ("d:carol", "hello carol")]
    alice.open_conv("d:bob")
    pending = alice.page.locator("#m-items li.m-msg .m-att-pending")
    pending.wait_for()
    assert [t.split(" · ")[0] for t in pending.all_text_contents()] == ["half way.bin"]
    # (the page's evaluate lets playwright's sync API run the route handler)
    wait_until(lambda: alice.page.evaluate("() => 1") and held, "the upload after the reload")
    [request] = held
    assert request.request.post_data_buffer.count(b"half way.bin") >= 1
    request.continue_()
    done = '#m-items li.m-msg[data-status="sent"] .m-att-file'
    alice.page.locator(done).wait_for(timeout=60_000)
    assert alice.page.evaluate("() => window.chatd.state.client.outbox.length") == 0
    wait_until(lambda: kept_files(alice.page) == 0, "the sent file removed from IndexedDB")
    assert conv_list(alice.page) == [("d:bob", "[File]"), ("d:carol", "hello carol")]
    assert alice.page.evaluate("() => window.chatd.state.client.conversation('d:bob').seq") > 0

    bob = users("bob")
    bob.open_conv("d:alice")
    bob.page.locator("#m-items a.m-att-file").wait_for()
    got = bob.page.evaluate(
        """() => window.chatd.state.client.timeline('d:alice')
      .filter((m) => m.attachments).map((m) => [m.id, m.attachments[0].name, m.attachments[0].size])"""
    )
    assert got == [[entry, "half way.bin", 2 << 20]]
    assert bob.page.locator("#m-items a.m-att-file").count() == 1


def picture_png() -> bytes:
    """A 640x480 PNG: a sky, a sun and a sea (a picture worth a screenshot)."""
    from PIL import Image, ImageDraw

    im = Image.new("RGB", (640, 480), (122, 170, 230))
    draw = ImageDraw.Draw(im)
    draw.ellipse((400, 90, 520, 210), fill=(255, 200, 70))
    draw.rectangle((0, 300, 640, 480), fill=(40, 90, 150))
    out = io.BytesIO()
    im.save(out, "PNG")
    return out.getvalue()


API_KEY = "browser-test-api-key"


@pytest.mark.parametrize(
    "server", [["--sync-limit", "1000", "--api-key", API_KEY, "--db", ":memory:"]], indirect=True
)
def test_a_long_conversation_renders_a_window(users, server):
    """5,000 DMs to offline bob (the HTTP API): his page keeps the newest 1,000 of the
    sync (--sync-limit) but renders only the newest 200; scrolling to the top shows
    100 more from the cache each time, and past the cache pages back from chatd; back
    at the bottom, a new message leaves the window at 200 rows again."""
    known(users, "bob")
    conns = [http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)]
    headers = {"Authorization": "apikey " + API_KEY, "Content-Type": "application/json"}
    broken = []

    def post(text):
        # with an id: a retry on a new connection (chatd closed the kept-alive one) is
        # answered as a duplicate, not stored twice
        body = json.dumps(
            {"from": "alice", "to": "bob", "text": text, "id": text.replace(" ", "-")}
        )
        for _ in range(3):
            try:
                conns[0].request("POST", "/api/dm", body, headers)
                answer = conns[0].getresponse()
                got = answer.read()
                assert answer.status == 200, got
                return
            except (ConnectionError, http.client.HTTPException) as e:
                broken.append(repr(e))
                conns[0].close()
                conns[0] = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        raise AssertionError(broken)

    for i in range(5000):
        post(f"long {i}")

    bob = users("bob")
    bob.conv("d:alice").locator(".badge:text-is('99+')").wait_for()
    bob.open_conv("d:alice")
    bob.message("long 4999", "alice").wait_for()
    rows = "#m-items li.m-msg"

    def count():
        return bob.page.locator(rows).count()

    def first():
        return bob.page.locator(rows).first.locator(".msg-text").text_content()

    assert bob.page.evaluate("() => window.chatd.state.client.timeline('d:alice').length") == 1000
    assert count() == 200
    assert first() == "long 4800"
    assert bob.page.is_visible("#m-earlier")

    def scroll_up(expect):
        bob.page.eval_on_selector("#m-scroller", "s => { s.scrollTop = 0 }")
        bob.page.wait_for_function(
            "([sel, n]) => document.querySelectorAll(sel).length === n", arg=[rows, expect]
        )

    scroll_up(300)
    assert first() == "long 4700"
    # the button does the same (clicked without scrolling to it: that alone would)
    bob.page.eval_on_selector("#m-earlier", "b => b.click()")
    bob.page.wait_for_function(f"() => document.querySelectorAll('{rows}').length === 400")
    for n in range(500, 1001, 100):
        scroll_up(n)
    assert first() == "long 4000"
    # past the cache: a page from chatd (50 items), shown on top
    scroll_up(1050)
    assert first() == "long 3950"
    assert bob.page.evaluate("() => window.chatd.state.client.timeline('d:alice').length") == 1050

    # back at the bottom, the next message leaves the newest 200 in the page
    bob.page.eval_on_selector("#m-scroller", "s => { s.scrollTop = s.scrollHeight }")
    post("long 5000")
    bob.message("long 5000", "alice").wait_for()
    bob.page.wait_for_function(f"() => document.querySelectorAll('{rows}').length === 200")
    assert first() == "long 4801"

    # reading further up, a new message widens the window instead of pushing rows out
    bob.page.eval_on_selector("#m-scroller", "s => { s.scrollTop = s.scrollHeight / 2 }")
    post("long 5001")
    bob.message("long 5001", "alice").wait_for(state="attached")
    assert count() == 201
    assert first() == "long 4801"
    conns[0].close()


def test_typing_in_a_room_shows_on_the_other_pages(users):
    """bob types in a room he got by subscription (alice created it with him): alice's
    page shows "bob is typing…" under the conversation, gone when his message comes;
    nothing shows in another conversation."""
    known(users, "bob")
    alice, bob = users("alice"), users("bob")
    alice.page.click("#m-new-room")
    alice.page.fill("#m-create-room", "crew")
    alice.page.fill("#m-create-members", "bob")
    alice.page.click("#m-create-submit")
    alice.page.wait_for_function("() => document.getElementById('m-title').textContent === '#crew'")
    bob.conv("r:crew").wait_for()
    bob.open_conv("r:crew")

    bob.page.click("#m-input")
    bob.page.keyboard.type("on my way")
    alice.page.wait_for_selector("#m-typing:text-is('bob is typing…')")
    bob.page.press("#m-input", "Enter")
    alice.message("on my way", "bob").wait_for()
    alice.page.wait_for_selector("#m-typing:text-is('')")

    # in another conversation the room's typing is known but not shown
    alice.dm("bob")
    bob.page.wait_for_function(
        "() => Date.now() - window.chatd.state.typingSent.get('r:crew') > 2000"
    )  # past the page's one typing frame per 2 s
    bob.page.keyboard.type("more")
    alice.page.wait_for_function("() => window.chatd.messenger.typingIn('r:crew').includes('bob')")
    assert alice.page.text_content("#m-typing") == ""
    alice.open_conv("r:crew")
    alice.page.wait_for_selector("#m-typing:text-is('bob is typing…')")
