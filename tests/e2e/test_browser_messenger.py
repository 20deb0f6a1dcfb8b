"""The web client's messenger screen (token users) in real headless Chromium.

Pages opened with ``/?token=<jwt>`` show the conversation list and conversations of
the shared client's conversation store (``static/app-messenger.js``) against a live
``twistd -n chatd --jwt-secret``; two or three users, each in their own browser
context. Screenshots of the list and of a chat with ticks and a reply are written to
``$CHATD_ARTIFACTS`` (default: the test's tmp_path) as artefacts, not compared.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from test_browser import Client

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
    bob.conv("r:team").wait_for()
    assert bob.conv("r:team").locator(".m-conv-title").text_content() == "Team"

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
    owner cannot while others remain; a ban drops it from bob's page; a recall after
    chatd's window is refused and said so, the message stays."""
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

    # a recall after chatd's window (1 s here) is refused: too_late, text kept
    alice.dm("bob")
    alice.say("too late to take back")
    late = alice.sent("too late to take back")
    ts = alice.page.evaluate(
        "() => window.chatd.state.client.timeline('d:bob').filter(m => m.mine).pop().ts"
    )
    alice.page.wait_for_function("ts => Date.now() > ts + 1500", arg=ts)
    alice.act(late, "recall")
    alice.page.wait_for_selector("#toast:has-text('Too late to recall')")
    assert alice.message("too late to take back", "alice").count() == 1
    assert alice.page.locator("#m-items li.m-recalled").count() == 0
