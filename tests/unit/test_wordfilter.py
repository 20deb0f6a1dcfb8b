"""The word filter (chatd/wordfilter.py): substring matching of the operator's words,
folded (NFKC, case, zero-width characters), masking mapped back to the original text,
and the policies in the ``Chat`` realm (send, dm, edit; anonymous and token users)."""

from __future__ import annotations

import pytest
from twisted.internet.task import Clock

from chatd.store import dm_channel
from chatd.wordfilter import WordList, mask
from tests.support.realm import fired, make_chat, member_join, opened, say, token_user


def masked(words, text):
    w = WordList(words)
    return mask(text, w.spans(text))


def test_chinese_substrings_are_found_without_spaces():
    assert masked(["傻瓜", "笨蛋"], "你这个傻瓜和笨蛋！") == "你这个**和**！"
    assert masked(["傻瓜"], "傻瓜傻瓜") == "****"
    assert masked(["傻瓜"], "傻 瓜") == "傻 瓜"  # a space is part of the text


def test_folding_case_fullwidth_and_zero_width():
    assert masked(["bad"], "BAD Ｂａｄ b\u200bad fine") == "*** *** **** fine"
    assert masked(["ＡＢＣ"], "xabcx") == "x***x"
    assert masked(["straße"], "STRASSE") == "*******"


def test_overlapping_and_nested_words_are_all_masked():
    assert masked(["abc", "bcd", "c"], "xabcdx") == "x****x"
    assert WordList(["abc", "bcd"]).spans("abcd") == [(0, 3), (1, 4)]


def test_empty_lists_and_blank_words_match_nothing():
    assert WordList([]).spans("anything") == []
    assert WordList(["", "  ", "\u200b"]).size == 0


def test_read_skips_comments_and_blank_lines(tmp_path):
    path = tmp_path / "words.txt"
    path.write_text("# forbidden\n傻瓜\n\n  bad  \n#not-a-word\n", encoding="utf-8")
    words = WordList.read(str(path))
    assert words.size == 2 and words.spans("not-a-word") == []
    path.write_bytes(b"\xff\xfe")
    with pytest.raises(ValueError):
        WordList.read(str(path))


@pytest.fixture
def chat(tmp_path):
    chat = make_chat(Clock())
    path = tmp_path / "words.txt"
    path.write_text("傻瓜\n", encoding="utf-8")
    chat.words.load(str(path))
    fired(chat.store.add_user("bob", "bob", 0))
    return chat


def test_anonymous_and_token_sends_are_masked_and_stored_masked(chat):
    guest = opened(chat, "guest1")
    say(chat, guest, type="join", room="r")
    say(chat, guest, type="send", room="r", text="你是傻瓜", id="g1")
    (ack,) = guest.of("ack")
    page = fired(chat.store.history("r", None, 10))
    assert [m.text for m in page.messages] == ["你是**"]
    alice = token_user(chat, "alice")
    say(chat, alice, type="dm", to="bob", text="傻瓜!", id="d1")
    assert alice.of("ack")
    page = fired(chat.store.history(dm_channel("alice", "bob"), None, 10))
    assert [m.text for m in page.messages] == ["**!"]
    assert chat.words.masked == 2 and ack["seq"] == 1


def test_block_refuses_and_stores_nothing_edits_included(chat):
    chat.settings.word_filter = "block"
    alice = token_user(chat, "alice")
    member_join(chat, alice, "team")
    say(chat, alice, type="send", room="team", text="傻瓜", id="s1")
    (error,) = alice.of("error")
    assert (error["code"], error["ref"]) == ("content_blocked", "s1")
    say(chat, alice, type="send", room="team", text="fine", id="s2")
    (ack,) = alice.of("ack")
    say(chat, alice, type="edit", room="team", seq=ack["seq"], text="傻瓜", id="e1")
    assert [e["ref"] for e in alice.of("error")] == ["s1", "e1"]
    texts = [m.text for m in fired(chat.store.history("team", None, 10)).messages]
    assert "傻瓜" not in "".join(texts) and "fine" in texts
    assert chat.words.blocked == 2
