"""The user's inbox: conversation list, sync, read markers and receipts, mute,
recall, edit, reactions (docs/protocol.md, *Conversations*).

:class:`Inbox` holds the request handlers ``_on_<type>`` that
:class:`chatd.chat.Chat` dispatches to; the pure parts (sync snapshots and diffs,
who may recall/edit/react/reply) are :mod:`chatd.conversations`.

Every timeline item (a message with mentions or a reply, a recall, an edit, a
reaction) is appended through the chat's message log, like ``send``: committed
(exactly-once by ``(user, id)``), then published on the bus, so every node
delivers each conversation's items in seq order. The requests of one connection
that first read the store (to check the target message, the role) run one at a
time, in the order they came (:meth:`Inbox.serial`), with that connection's
plain sends, so no message overtakes an earlier one.
"""

from __future__ import annotations

import secrets

from twisted.internet.defer import (
    Deferred,
    inlineCallbacks,
    maybeDeferred,
    succeed,
)

from chatd import conversations as conv
from chatd import errors, wire
from chatd.permissions import may
from chatd.store import IConversationStore, dm_channel

#: most distinct emoji one user may have on one message (a reactions flood is refused)
REACTIONS_PER_USER = 20
#: characters of a sync cursor (random, opaque; the protocol allows up to 64)
CURSOR_BYTES = 18
#: conversations whose items one sync reads at once
SYNC_READ_BATCH = 16
#: characters of item text after which a sync reply takes no further batch of
#: conversations (``more: true``): a reply holds at most this plus one batch's
#: (16 x --sync-limit items: 6.4 M characters at the defaults), not the 200 x 100
#: items of 4,000 characters (80 M) the conversation limit alone would allow
SYNC_TEXT = 1 << 20


class _Where:
    """The conversation a request names, as the requesting user sees it."""

    __slots__ = ("channel", "room", "peer", "kind", "role", "member")

    def __init__(self, channel, room, peer):
        self.channel = channel
        self.room = room
        self.peer = peer
        self.kind = "dm" if room is None else "public"
        self.role = None
        self.member = None

    def frame_fields(self) -> dict:
        """``{"room": …}`` or ``{"with": …}`` for the frames to the user."""
        return {"room": self.room} if self.room is not None else {"with": self.peer}

    def ack_fields(self) -> dict:
        """``{"room": …}`` or ``{"to": …}``, as in ``ack``."""
        return {"room": self.room} if self.room is not None else {"to": self.peer}


def _is_member(member) -> bool:
    return member is not None and member.state == "member"


class Inbox:
    """Conversations of token users (one per :class:`chatd.chat.Chat`)."""

    def __init__(self, chat):
        self.chat = chat
        #: session -> the lock its checked requests and sends take turns on
        self._turns: dict = {}

    # plumbing

    @staticmethod
    def _token_user(session, request) -> None:
        if session.identity is None:
            raise errors.AuthRequired(
                f"{request.type} is for token users (connect with a token)", request.id
            )

    def _where(self, session, f, ref) -> _Where:
        room = f["room"]
        if room is not None:
            self.chat._check_room(session, room, ref)
            return _Where(room, room, None)
        return _Where(dm_channel(session.user, f["with"]), None, f["with"])

    @inlineCallbacks
    def _membership(self, session, where: _Where, ref, kind=True):
        """Fill in *where*'s member row, role and (with *kind*) room kind; the user must
        be a member (else ``no_such_room``: nothing is said about a conversation one is
        not in)."""
        store = self.chat.store
        member = yield store.member(where.channel, session.user)
        if not _is_member(member):
            raise errors.NoSuchRoom("you have no such conversation", ref)
        where.member, where.role = member, member.role
        if kind and where.room is not None:
            room = yield store.room(where.room)
            where.kind = "public" if room is None else room.kind
        return where

    def serial(self, session, run):
        """Run ``run()`` (which may return a Deferred) once *session*'s earlier checked
        requests and sends are done: at once (synchronously) when none is pending.
        A refusal (:class:`chatd.errors.ChatError`) goes to the session as ``error``.

        (A list of waiting turns per busy session, not a ``DeferredLock``: the lock's
        acquire/``maybeDeferred``/release chain was a tenth of a ``read``'s CPU.)"""
        waiting = self._turns.get(session)
        if waiting is None:  # idle: its turn is now
            self._turns[session] = []
            d = self._turn(session, run)
        else:
            d = Deferred()
            waiting.append((run, d))
        d.addErrback(self._failed, session, "request")
        return d

    def _turn(self, session, run) -> Deferred:
        return maybeDeferred(run).addBoth(self._turn_done, session)

    def _turn_done(self, result, session):
        """*session*'s turn ended with *result*: the waiting turns start (before
        *result* goes on, as a released ``DeferredLock`` would); those that end at
        once are chained in this loop, not by recursion."""
        waiting = self._turns.get(session)
        while waiting:
            run, d = waiting.pop(0)
            nxt = maybeDeferred(run)
            if not nxt.called or nxt.paused:  # (paused: waiting on another Deferred)
                nxt.addBoth(self._turn_done, session).chainDeferred(d)
                return result
            nxt.chainDeferred(d)
        if waiting is not None and self._turns.get(session) is waiting:
            del self._turns[session]
        return result

    def _failed(self, failure, session, what, ref=None):
        """A refusal found after a store read goes to the session as ``error``; a store
        failure as ``unavailable`` (Chat._store_failed does both)."""
        return self.chat._store_failed(failure, what, session, ref)

    def _read(self, session, request, read, deliver):
        """A store read answered to *session* in its turn (the replayer's pacing); a
        refusal it finds is the ``error`` answer."""
        self.chat.replayer.read(session, read, deliver, request.type, request.id)

    def _content_check(self, session, text, ref):
        """Fires once *text* of *session*'s user may be stored (chatd.contentcheck);
        a refusal fails it (``content_blocked``, or ``unavailable`` failing closed)."""
        content = self.chat.content
        if not content.applies(session.user):
            return succeed(None)
        return content.check(session.user, text, ref)

    def _user_frame(self, user, payload) -> None:
        self.chat.broker.publish("user", user, payload, None)

    def _append(self, session, request, where: _Where, kind, text, data) -> None:
        """Commit one timeline item of *kind* (exactly-once by the request's id), then
        ``ack`` it; the message log publishes it to every node in seq order. Returns
        once the append is issued (the connection's next request need not wait for the
        commit: appends keep their order)."""
        chat = self.chat
        if not chat._live(session):
            return  # closed while its checks were read: nothing it sent takes effect
        fields = (where.channel, session.user, session.name, request.id, text, chat.now_ms())
        fields += (kind, data)
        if where.room is None:
            args = ("dm", (where.peer, session.id))
        else:
            args = ("message", (session.id, False))
        d = chat.messages.append(args[0], fields, args[1])
        d.addCallback(self._appended, session, request, where)
        d.addErrback(self._failed, session, request.type, request.id)

    def _appended(self, appended, session, request, where: _Where) -> None:
        chat = self.chat
        if appended.duplicate:
            chat.stats.duplicates += 1
        else:
            chat.stats.messages_stored += 1
        chat._ack(appended, session, request.received, None, **where.ack_fields())

    @inlineCallbacks
    def _target(self, where: _Where, seq):
        items = yield self.chat.store.items(where.channel, [seq])
        return items.get(seq)

    # sending with mentions and replies (from Chat._on_send / Chat._on_dm)

    def post(self, session, request, f, post, room=None, to=None):
        """A token user's ``send``/``dm``: ``mentions`` and ``reply_to`` checked (and
        stored with the message), and the text checked by the content check when it
        applies (chatd.contentcheck), in the connection's turn. *post(data)* stores it
        and fires with the Appended; it is then acked."""

        try:
            given = wire.extras(request, self.chat.settings.max_text_length)
        except errors.ChatError as e:
            return self.chat.send_error(session, e)
        chat = self.chat
        if not given and not chat.content.applies(session.user) and chat.moderation.clear(session):
            if session not in self._turns:  # nothing of this connection is being checked
                self._posted(post(None), session, request, f, room, to)
                return
            self.serial(session, lambda: self._posted(post(None), session, request, f, room, to))
            return
        self.serial(session, lambda: self._post_checked(session, request, f, given, post, room, to))

    @inlineCallbacks
    def _post_checked(self, session, request, f, given, post, room, to):
        ref = request.id
        yield self.chat.moderation.check(session, room, ref)
        review = yield self._content_check(session, f["text"], ref)
        if room is not None:
            where = _Where(room, room, None)
        else:
            where = _Where(dm_channel(session.user, to), None, to)
        mentions, reply_to = given.get("mentions"), given.get("reply_to")
        ids = given.get(wire.ATTACHMENTS)
        if ids and self.chat.media is None:
            raise errors.BadAttachment("this server takes no uploads", ref)
        if mentions and wire.MENTION_ALL in mentions:
            store = self.chat.store
            member = yield store.member(where.channel, session.user)
            if room is not None:
                row = yield store.room(room)
                where.kind = "public" if row is None else row.kind
            conv.check_mentions(mentions, where.kind, member and member.role, ref)
        if reply_to is not None:
            conv.check_reply((yield self._target(where, reply_to)), ref)
        claim = None
        if ids:
            # marked in use (a pending post) before the commit: see Media.claim
            claim = yield self.chat.media.claim(session.user, ids, where.channel, ref)
        data = conv.message_data(mentions, reply_to, claim and claim.entries)
        if not self.chat._live(session):
            if claim is not None:
                self._media_done(self.chat.media.released(claim))
            return
        d = post(data)
        if review is not None:  # stored, and flagged for the moderation queue
            d.addCallback(self._flagged, review)
        if claim is not None:
            # the pending posts become posts (not waited for: the sweep settles them
            # from the history if this never happens)
            d.addCallbacks(
                self._attached, self._not_attached, callbackArgs=(claim,), errbackArgs=(claim,)
            )
            if self.chat.content.applies(session.user):  # WeChat's mediaCheckAsync
                d.addCallback(self._media_check)
        self._posted(d, session, request, f, room, to)

    def _flagged(self, appended, label):
        if not appended.duplicate:
            self.chat.moderation.flag(appended.message, label)
        return appended

    def _media_check(self, appended):
        if not appended.duplicate:
            self.chat.content.check_media(appended.message)
        return appended

    def _attached(self, appended, claim):
        self._media_done(self.chat.media.posted(appended.message, claim))
        return appended

    def _not_attached(self, failure, claim):
        self._media_done(self.chat.media.released(claim))
        return failure

    def _media_done(self, d):
        d.addErrback(lambda f: self.chat.log.failure("recording attachments failed", f))

    def _posted(self, d, session, request, f, room, to):
        chat = self.chat
        where = {"room": room} if room is not None else {"to": to}
        d.addCallback(chat._ack, session, request.received, f["text"], **where)
        d.addErrback(self._failed, session, request.type, request.id)
        # (returns nothing: the connection's turn ends once the append is issued)

    # recall, edit, react

    def _on_recall(self, session, request, f) -> None:
        self._token_user(session, request)
        where = self._where(session, f, request.id)
        self.serial(session, lambda: self._recall(session, request, f, where))

    @inlineCallbacks
    def _recall(self, session, request, f, where):
        chat = self.chat
        if session.identity.moderator and where.room is not None:
            # a global moderator recalls any room message, member or not (audited)
            moderation = chat.moderation
            appended = yield moderation.recall(
                where.channel, f["seq"], session.user, session.name, request.id
            )
            chat._ack(appended, session, request.received, None, room=where.room)
            return
        yield self._membership(session, where, request.id)
        target = yield self._target(where, f["seq"])
        conv.check_recall(
            target,
            session.user,
            where.kind,
            where.role,
            chat.now_ms(),
            chat.settings.recall_window,
            request.id,
        )
        data = {"target": f["seq"], "by": session.user}
        self._append(session, request, where, "recalled", "", data)

    def _on_edit(self, session, request, f) -> None:
        self._token_user(session, request)
        f["text"] = self.chat.words.apply(f["text"], request.id)  # masked, or refused
        where = self._where(session, f, request.id)
        self.serial(session, lambda: self._edit(session, request, f, where))

    @inlineCallbacks
    def _edit(self, session, request, f, where):
        yield self._membership(session, where, request.id)
        yield self.chat.moderation.check(session, where.room, request.id)
        conv.check_edit((yield self._target(where, f["seq"])), session.user, request.id)
        yield self._content_check(session, f["text"], request.id)
        self._append(session, request, where, "edited", f["text"], {"target": f["seq"]})

    def _on_react(self, session, request, f) -> None:
        self._token_user(session, request)
        where = self._where(session, f, request.id)
        self.serial(session, lambda: self._react(session, request, f, where))

    @inlineCallbacks
    def _react(self, session, request, f, where):
        yield self._membership(session, where, request.id)
        yield self.chat.moderation.check(session, where.room, request.id)
        seq, emoji = f["seq"], f["emoji"]
        conv.check_react((yield self._target(where, seq)), request.id)
        on = (yield self.chat.store.reactions(where.channel, [seq])).get(seq, {})
        mine = [e for e, users in on.items() if session.user in users]
        if emoji not in mine and len(mine) >= REACTIONS_PER_USER:
            raise errors.TooLarge(
                f"at most {REACTIONS_PER_USER} reactions of one user on one message", request.id
            )
        data = {"target": seq, "emoji": emoji, "on": emoji not in mine}
        self._append(session, request, where, "reaction", "", data)

    # read markers and receipts

    def _on_read(self, session, request, f) -> None:
        self._token_user(session, request)
        where = self._where(session, f, request.id)
        self.serial(session, lambda: self._mark(session, request, f, where))

    def _mark(self, session, request, f, where):
        chat = self.chat
        if not chat._live(session):
            return None  # closed meanwhile: nothing it sent takes effect any more
        # one store round trip: member check, marker, counts (docs/protocol.md, "read")
        small = chat.settings.receipt_members
        d = chat.store.read_marker(session.user, where.channel, f["seq"], small)
        # (callbacks, not inlineCallbacks: this is the read path's hot spot)
        return d.addCallback(self._marked, session, request, where, small)

    def _marked(self, done, session, request, where, small) -> None:
        chat, user = self.chat, session.user
        if done is None:
            raise errors.NoSuchRoom("you have no such conversation", request.id)
        marker = done.marker
        frame = wire.frame(
            "read", **where.frame_fields(), seq=marker, unread=done.unread, mentions=done.mentions
        )
        if marker <= done.before:  # not forward: only the asker hears where the marker is
            session.send(frame)
            return
        self._user_frame(user, frame)
        if where.peer is not None:
            if where.peer != user:
                receipt = wire.frame("receipt", **{"with": user}, user=user, seq=marker)
                self._user_frame(where.peer, receipt)
            return
        if done.members <= small:
            # (the reading connection has its read frame already)
            if chat.settings.receipt_window:  # each node batches for its batching clients
                chat.broker.publish("receipt", where.room, user, marker, session.id)
                return
            receipt = wire.frame("receipt", room=where.room, user=user, seq=marker)
            chat.broker.publish("room", where.room, receipt, session.id)

    def _on_receipts(self, session, request, f) -> None:
        self._token_user(session, request)
        where = self._where(session, f, request.id)
        self._read(
            session, request, lambda: self._receipts(session, request, f, where), session.send
        )

    @inlineCallbacks
    def _receipts(self, session, request, f, where):
        store, user, seq = self.chat.store, session.user, f["seq"]
        small_max = self.chat.settings.receipt_members
        member = yield store.member(where.channel, user)
        if where.room is None:
            if not _is_member(member):
                raise errors.NoSuchRoom("you have no such conversation", request.id)
        else:
            room = yield store.room(where.room)
            kind = "public" if room is None else room.kind
            if not may("read", kind, member.role if _is_member(member) else None):
                raise errors.Forbidden("receipts of a private room are for its members", request.id)
        small = (yield store.member_count(where.channel)) <= small_max
        count, users = yield store.readers(where.channel, seq, small_max + 1 if small else 0)
        if _is_member(member) and member.read_seq >= seq:
            count -= 1
        listed = [u for u in users if u != user][:small_max] if small else None
        return wire.frame(
            "receipts", **where.frame_fields(), seq=seq, count=max(0, count), users=listed
        )

    # mute

    def _on_mute(self, session, request, f) -> None:
        self._token_user(session, request)
        where = self._where(session, f, request.id)
        self.serial(session, lambda: self._mute(session, request, f, where))

    @inlineCallbacks
    def _mute(self, session, request, f, where):
        yield self._membership(session, where, request.id, kind=False)  # not a left row
        ok = yield self.chat.store.set_muted(session.user, where.channel, f["muted"])
        if not ok:
            raise errors.NoSuchRoom("you have no such conversation", request.id)
        self._user_frame(
            session.user, wire.frame("muted", **where.frame_fields(), muted=f["muted"])
        )

    # the conversation list and sync

    def _on_conversations(self, session, request, f) -> None:
        self._token_user(session, request)
        cursor, limit = f["cursor"], f["limit"] or CONVERSATIONS_LIMIT_DEFAULT
        try:
            start = conv.page_start(cursor)
        except ValueError:
            raise errors.BadRequest(
                "'cursor' is not from a conversations reply", request.id
            ) from None
        self._read(
            session, request, lambda: self._conversations(session, start, limit), session.send
        )

    @inlineCallbacks
    def _conversations(self, session, start, limit):
        page, more = yield self.chat.store.conversation_page(session.user, start, limit)
        return wire.frame(
            "conversations",
            conversations=[wire.conversation_dict(c) for c in page],
            cursor=conv.next_page(start, limit, more),
        )

    def _on_sync(self, session, request, f) -> None:
        self._token_user(session, request)
        self._read(session, request, lambda: self._sync(session, f["since"]), session.send)

    @inlineCallbacks
    def _sync(self, session, since):
        chat, store, user = self.chat, self.chat.store, session.user
        snapshot = None
        if since is not None:
            snapshot = conv.decode_snapshot((yield store.load_cursor(user, since)))
        cheap = yield store.conversations(user)
        wanted = conv.needs_summary(snapshot, cheap)
        full = (yield store.summaries(user, wanted)) if wanted else []
        plan = conv.plan(snapshot, cheap, {c.channel: c for c in full})
        snap = dict(plan.keep)
        out = []
        more = plan.more
        limit = chat.settings.sync_limit
        text = 0  # characters of item text in the reply so far
        changed = plan.changed
        for start in range(0, len(changed), SYNC_READ_BATCH):
            batch = changed[start : start + SYNC_READ_BATCH]
            if text >= SYNC_TEXT:  # the reply is full: the rest is for the next sync
                more = True
                for summary, after in batch:
                    if after is not None:
                        snap[summary.channel] = snapshot[summary.channel]
                continue
            # a batch of conversations' items asked for at once (SQLite: one read job)
            wanted = [after is None or after < summary.last_seq for summary, after in batch]
            reading = [
                (summary.channel, after or 0)
                for (summary, after), want in zip(batch, wanted, strict=True)
                if want
            ]
            found = iter((yield store.sync_replay(reading, limit)) if reading else ())
            replays = [next(found) if want else None for want in wanted]
            for (summary, _after), r in zip(batch, replays, strict=True):
                items, truncated, last = [], False, summary.last_seq
                if r is not None:
                    items, truncated, last = r.items, r.truncated, max(last, r.last_seq)
                    text += r.text
                snap[summary.channel] = conv.entry(summary, last)
                out.append(
                    {
                        **wire.conversation_dict(summary),
                        "items": items,
                        "truncated": truncated,
                    }
                )
        sign = chat.urls()  # attachments' URLs signed once for the whole reply
        for entry in out:
            entry["items"] = wire.sync_items(entry["items"], sign)
        removed = []
        for channel in plan.removed:
            member = yield store.member(channel, user)
            state = member.state if member is not None and member.state != "member" else "left"
            removed.append({"room": channel, "kind": state})
        cursor = secrets.token_urlsafe(CURSOR_BYTES)
        yield store.save_cursor(user, cursor, conv.encode_snapshot(snap), chat.now_ms())
        return wire.encode_with_raw(
            {
                "type": "sync",
                "cursor": cursor,
                "reset": since is not None and snapshot is None,
                "more": more,
                "conversations": out,
                "removed": removed,
            }
        )

    # history decoration (from Chat._on_history / Chat._on_dm_history)

    def decorate(self, channel, items, session):
        """Split a history page's *items* into messages and events and read what the
        messages show: their reactions and the originals they reply to. Fires with
        ``(messages, events, reactions, quotes)``. A server that accepts no tokens has
        no reactions or replies: its pages cost no read more than in chatd 0.1."""
        messages = [m for m in items if m.kind == "message"]
        events = [m for m in items if m.kind == "event"]
        store = self.chat.store
        tokens = session.identity is not None or bool(self.chat.anonymous_prefix)
        if not messages or not tokens or not IConversationStore.providedBy(store):
            return succeed((messages, events, None, None))
        return self._decorations(store, channel, messages, events)

    @inlineCallbacks
    def _decorations(self, store, channel, messages, events):
        reactions = yield store.reactions(channel, [m.seq for m in messages])
        replies = sorted({m.data["reply_to"] for m in messages if m.data and "reply_to" in m.data})
        quotes = (yield store.items(channel, replies)) if replies else None
        return messages, events, reactions, quotes


#: conversations per page when the request gives no limit
CONVERSATIONS_LIMIT_DEFAULT = 50
