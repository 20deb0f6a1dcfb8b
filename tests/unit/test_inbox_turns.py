"""Inbox.serial: one connection's checked requests take turns, in order."""

from __future__ import annotations

from twisted.internet.defer import Deferred

from chatd import errors
from tests.support.realm import token_user


def test_turns_run_in_order_each_after_the_one_before_ended(chat):
    conn = token_user(chat, "alice")
    session, inbox, log = conn.session, chat.inbox, []
    first = Deferred()

    def one():
        log.append("one starts")
        return first

    inbox.serial(session, one)
    inbox.serial(session, lambda: log.append("two"))
    inbox.serial(session, lambda: log.append("three"))
    assert log == ["one starts"]  # the others wait for its Deferred
    first.callback(None)
    assert log == ["one starts", "two", "three"]
    assert session not in inbox._turns  # idle again: the next turn runs at once
    inbox.serial(session, lambda: log.append("four"))
    assert log[-1] == "four" and session not in inbox._turns


def test_a_long_queue_of_turns_that_end_at_once_does_not_recurse(chat):
    conn = token_user(chat, "alice")
    session, inbox, ran = conn.session, chat.inbox, []
    gate = Deferred()
    inbox.serial(session, lambda: gate)
    for i in range(5000):  # far past the recursion limit, were each turn a frame deeper
        inbox.serial(session, lambda i=i: ran.append(i))
    gate.callback(None)
    assert ran == list(range(5000))
    assert session not in inbox._turns


def test_a_refused_turn_answers_error_and_the_next_still_runs(chat):
    conn = token_user(chat, "alice")
    session, inbox, ran = conn.session, chat.inbox, []
    gate = Deferred()
    inbox.serial(session, lambda: gate)

    def refused():
        raise errors.Forbidden("not you", "r1")

    inbox.serial(session, refused)
    inbox.serial(session, lambda: ran.append("after"))
    gate.callback(None)
    assert ran == ["after"]
    assert [(f["code"], f["ref"]) for f in conn.of("error")] == [("forbidden", "r1")]


def test_other_connections_do_not_wait(chat):
    a, b = token_user(chat, "alice"), token_user(chat, "bob")
    inbox, log = chat.inbox, []
    inbox.serial(a.session, Deferred)  # never ends
    inbox.serial(b.session, lambda: log.append("bob"))
    assert log == ["bob"]
