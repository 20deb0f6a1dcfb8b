"""WeChat's media verdicts in the Chat realm (chatd.contentcheck.ContentChecker.
media_verdict) on a real MemoryStore with time from ``task.Clock``: risky recalls as
``system``, review queues, a trace is handled once and expires after a day."""

from __future__ import annotations

from chatd.contentcheck import MEDIA_CHECK_USER, TRACE_TTL_MS
from tests.support.realm import fired, last, say, team

ALICE, BOB = "wx:o-alice", "wx:o-bob"


def posted(chat, alice, text="look"):
    say(chat, alice, type="send", room="team", text=text, id=text)
    seq = last(alice, "ack")["seq"]
    record = {"ts": chat.now_ms(), "channel": "team", "seq": seq, "media_id": "M" * 22}
    return seq, record


def test_risky_recalls_once_and_review_queues(chat):
    alice, bob = team(chat, ALICE, BOB)
    seq, record = posted(chat, alice)
    fired(chat.store.add_media_check("t-1", record, TRACE_TTL_MS))
    assert fired(chat.content.media_verdict("t-1", "risky", 20002)) == "recalled"
    recalled = last(bob, "recalled")
    assert (recalled["target"], recalled["by"]) == (seq, MEDIA_CHECK_USER)
    assert fired(chat.content.media_verdict("t-1", "risky", 20002)) == "unknown"  # replayed
    assert len(bob.of("recalled")) == 1
    [audit] = fired(chat.store.audit_log(None, 10))
    assert (audit["action"], audit["by"], audit["target"], audit["seq"]) == (
        "recall",
        MEDIA_CHECK_USER,
        ALICE,
        seq,
    )
    seq2, record2 = posted(chat, alice, "second")
    fired(chat.store.add_media_check("t-2", record2, TRACE_TTL_MS))
    assert fired(chat.content.media_verdict("t-2", "review", 10001)) == "flagged"
    [entry] = fired(chat.store.reports("open", None, 10))
    assert (entry["seq"], entry["label"], entry["source"]) == (seq2, "10001", "content_check")
    assert chat.content.outcomes["media_risky"] == 1
    assert chat.content.outcomes["media_unknown"] == 1


def test_a_verdict_after_a_day_or_without_a_verdict_changes_nothing(chat, clock):
    alice, bob = team(chat, ALICE, BOB)
    _seq, record = posted(chat, alice)
    fired(chat.store.add_media_check("late", record, TRACE_TTL_MS))
    fired(chat.store.add_media_check("odd", record, TRACE_TTL_MS))
    assert fired(chat.content.media_verdict("odd", "maybe", None)) == "unknown"
    assert fired(chat.store.take_media_check("odd")) == record  # not used up by it
    clock.advance(TRACE_TTL_MS / 1000 + 1)
    assert fired(chat.content.media_verdict("late", "risky", 20002)) == "unknown"
    assert not bob.of("recalled")
    assert fired(chat.store.reports(None, None, 10)) == []
