"""Rooms as memberships: join, leave, create, invite, kick, ban, roles, room info, members.

The realm's part for durable membership (docs/protocol.md, *Conversations*:
*Membership*, *Room kinds and roles*, *Timeline events*). :class:`Membership`
holds the request handlers ``_on_<type>`` that :class:`chatd.chat.Chat`
dispatches to; who may do what is :func:`chatd.permissions.may`.

Every membership or room change is an ``event`` item of the room's timeline,
appended through the chat's message log like a message: the store applies it
to the member and room rows in the same transaction (exactly-once by the
request's id), and the bus hands it to every node, where :meth:`Membership.applied`
fans it out and then (un)subscribes that node's connections of the user it is
about. So a kicked user's connections stop receiving the room on every node,
right after the ``event`` that says so.

Rooms never ``create``-d (the rooms of chatd 0.1) keep their live behaviour:
their ``joined``/``left`` events are stored (replay, ``sync``, ``history``) but
not pushed (arrivals and departures are ``presence`` there, as before), and each
connection subscribes itself with ``join`` (no subscription at welcome or from
another device's join); the membership itself is durable (the conversation
list, ``sync``, unread) and ``leave`` ends it on every device.

A join looks the room up before the connection is subscribed. While that
answer is out (an asynchronous store), the connection's later requests about
the same room wait (:meth:`Membership.waits`) and then run in order, so a
pipelined ``join`` + ``send`` of a private room by a non-member stores nothing.
"""

from __future__ import annotations

from collections import OrderedDict

from twisted.internet.defer import inlineCallbacks, succeed
from twisted.logger import Logger

from chatd import errors, wire
from chatd.hub import LOBBY
from chatd.permissions import OWNER, PRIVATE, PUBLIC, may
from chatd.store import Appended

#: room kinds remembered per node (an LRU: lookups of random room names cannot grow it)
KINDS_MAX = 10000
#: token users this node has recorded as known (the store's record is permanent): their
#: later connections are welcomed without waiting for the store (LRU, bounded)
RECORDED_MAX = 100_000
#: the remembered kind of a room never created (a chatd 0.1 room: public, no row)
LEGACY = "0.1"
#: requests one connection may have waiting for one room's join check
WAITING_MAX = 64
#: events after which the user's connections leave the room, and those that subscribe them
_GONE = frozenset(("left", "kicked", "banned"))
_ENTERED = frozenset(("created", "joined", "invited"))
MEMBERS_LIMIT_DEFAULT = 100


def _role(row) -> str | None:
    """The role of a member row in state ``member`` (None: not a member)."""
    return row.role if row is not None and row.state == "member" else None


class Membership:
    """Durable room membership for token users (one per :class:`chatd.chat.Chat`)."""

    log = Logger()

    def __init__(self, chat):
        self.chat = chat
        #: room -> "public" | "private" | LEGACY, for the rooms this node has looked up (LRU)
        self.kinds: OrderedDict[str, str] = OrderedDict()
        #: (session, room) -> requests waiting for that join check
        self._entering: dict[tuple, list] = {}
        #: users recorded by this node (see record): user -> None, oldest first
        self._recorded: OrderedDict[str, None] = OrderedDict()

    # room kinds

    def _remember(self, room: str, kind: str) -> None:
        if kind == LEGACY and room not in self.chat.hub.rooms:
            return  # a 0.1 room is remembered while it has receivers here (see forget)
        self.kinds[room] = kind
        self.kinds.move_to_end(room)
        while len(self.kinds) > KINDS_MAX:
            self.kinds.popitem(last=False)

    def forget(self, room: str) -> None:
        """*room* may have lost its last receiver here: a chatd 0.1 room is forgotten
        then (lookups and join/leave of random rooms leave nothing behind)."""
        if room not in self.chat.hub.rooms and self.kinds.get(room) == LEGACY:
            del self.kinds[room]

    def is_private(self, room: str) -> bool:
        """True when this node knows *room* to be private (cached, no I/O)."""
        return self.kinds.get(room) == PRIVATE

    def room(self, room: str):
        """The store's :class:`chatd.store.Room` of *room* (None: never created); its
        kind is remembered."""

        def found(row):
            self._remember(room, LEGACY if row is None else row.kind)
            return row

        return self.chat.store.room(room).addCallback(found)

    def kind(self, room: str):
        """A Deferred firing with *room*'s kind (from the cache when known)."""
        kind = self.kinds.get(room)
        if kind is not None:
            self.kinds.move_to_end(room)
            return succeed(PUBLIC if kind == LEGACY else kind)
        return self.room(room).addCallback(lambda row: PUBLIC if row is None else row.kind)

    @inlineCallbacks
    def readable(self, session, room: str, ref):
        """Fires when *session* may read *room* (history, info, members); fails with
        ``forbidden`` for a private room it is not a member of."""
        user = session.user if session.identity is not None else None
        if not (yield self.may_read(user, room)):
            raise errors.Forbidden(f"room {room!r} is private", ref)

    @inlineCallbacks
    def may_read(self, user: str | None, room: str):
        """Fires with True when token user *user* (None: an anonymous reader) may read
        *room*: a public room anyone, a private one its members."""
        kind = yield self.kind(room)
        if kind != PRIVATE:
            return True
        row = None if user is None else (yield self.chat.store.member(room, user))
        return may("read", kind, _role(row))

    # requests about a room that is being joined wait for the join's check

    def waits(self, session, request) -> bool:
        """True when *request* names a room *session* is being checked into: it is
        kept and run (:meth:`chatd.chat.Chat.dispatch`) once the check is done."""
        room = request.fields.get("room")
        if room is None or not self._entering:
            return False
        waiting = self._entering.get((session, room))
        if waiting is None:
            return False
        if len(waiting) >= WAITING_MAX:
            raise errors.RateLimited(
                f"too many requests while joining {room!r}: this one was dropped", request.id
            )
        waiting.append(request)
        return True

    def _gate(self, session, room, d) -> None:
        """Hold *session*'s requests about *room* until *d* has fired."""
        if d.called:
            return
        key = (session, room)
        self._entering[key] = []

        def release(result):
            for request in self._entering.pop(key, ()):
                if self.chat._live(session):
                    self.chat.dispatch(session, request)
            return result

        d.addBoth(release)

    # join and leave (from Chat._on_join / Chat._on_leave)

    def join(self, session, room: str, since, new_user: bool, ref) -> None:
        """*session* is pending in *room* (Chat._on_join): check it may enter (a
        token user becomes a member), then announce it and replay (or refuse)."""
        chat = self.chat
        d = self._enter(session, room, ref)

        def entered(_):
            if not chat.hub.in_room(session, room):
                return  # it left or closed meanwhile
            if new_user:
                chat.directory.joined(room, session.user, session.id)
            chat.replayer.join(session, room, since, ref)

        def refused(failure):
            if chat.hub.in_room(session, room):
                chat.hub.leave(session, room)  # never announced: no presence to take back
                self.forget(room)
            return failure

        d.addCallbacks(entered, refused)
        d.addErrback(chat._store_failed, "join", session, ref)
        self._gate(session, room, d)

    @inlineCallbacks
    def _enter(self, session, room, ref):
        row = yield self.room(room)
        kind = PUBLIC if row is None else row.kind
        if session.identity is None:
            if not may("join", kind, None):
                raise errors.Forbidden(f"room {room!r} is private", ref)
            return
        me = yield self.chat.store.member(room, session.user)
        if _role(me) is not None:
            return  # a member: this connection is only subscribed
        if me is not None and me.state == "banned":
            raise errors.Forbidden(f"you are banned from room {room!r}", ref)
        if not may("join", kind, None):
            raise errors.Forbidden(f"room {room!r} is private", ref)
        extra = {"role": "member"} if row is not None else {"role": "member", "quiet": True}
        yield self._event(session, room, "joined", session.user, ref, **extra)

    def leave(self, session, room: str, ref) -> None:
        """A token user's ``leave``: the membership ends (a ``left`` event), and every
        connection of the user on every node gets ``left`` (see :meth:`applied`). A
        user who is no member (or an anonymous one) leaves with this connection only."""
        chat = self.chat

        @inlineCallbacks
        def run():
            me = yield chat.store.member(room, session.user)
            if _role(me) is None:
                if chat.hub.in_room(session, room):
                    return chat.unsubscribe(session, room)
                yield self._refuse(
                    errors.NotInRoom(f"not in room {room!r}", ref), room, me, session, ref
                )
                return session.send(wire.frame("left", room=room))  # a resend: done already
            if me.role == OWNER:
                count = yield chat.store.member_count(room)
                if count > 1:
                    raise errors.Forbidden(
                        "the owner cannot leave while others remain: hand the room over "
                        "with set_role first",
                        ref,
                    )
            row = yield self.room(room)
            quiet = {"quiet": True} if row is None else {}
            yield self._event(session, room, "left", session.user, ref, **quiet)

        chat.inbox.serial(session, run)

    # after welcome (from Chat._admit)

    def record(self, session):
        """Record a token user's connecting *session*'s user as known (a DM to it when
        offline, an ``invite`` or a ``create`` naming it finds it): a Deferred firing
        once it is stored (a failure is logged: the user was recorded at login or an
        earlier connection, or is at the next); None for an anonymous session, and for
        a user this node recorded before (a store's record of a user is never undone,
        so a reconnect does not wait for a store write).
        :meth:`chatd.chat.Chat.open` sends ``welcome`` only after it."""
        if session.identity is None:
            return None
        user = session.user
        recorded = self._recorded
        if user in recorded:
            recorded.move_to_end(user)
            return None
        chat = self.chat
        d = chat.store.add_user(user, session.name, chat.now_ms())

        def stored(_):
            recorded[user] = None
            while len(recorded) > RECORDED_MAX:
                recorded.popitem(last=False)

        d.addCallback(stored)
        return d.addErrback(self._failed, "recording user {user}", user=user)

    def admitted(self, session) -> None:
        """A token user's connection is admitted (its user recorded by :meth:`record`):
        subscribe the connection to the user's rooms (most recently active first, up to
        ``--max-rooms``) and tell it with ``subscribed`` (when there are any)."""
        chat = self.chat
        d = chat.store.conversations(session.user)
        d.addCallback(self._subscribe_all, session)
        d.addErrback(self._failed, "subscribing {user}", user=session.user)

    def _failed(self, failure, format: str, **kw) -> None:
        """An errback: log *failure* with *format* (``log.failure`` takes the format
        first; handed to ``addErrback`` directly it got the failure as its format,
        and Twisted logged "Log format must be str" instead)."""
        self.log.failure(format, failure, **kw)

    @inlineCallbacks
    def _subscribe_all(self, conversations, session):
        chat = self.chat
        rooms, more = [], False
        for c in conversations:
            if c.kind == "dm":
                continue
            known = self.kinds.get(c.channel)
            if known is None:
                known = LEGACY if (yield self.room(c.channel)) is None else c.kind
            if known == LEGACY:
                continue  # a chatd 0.1 room: joined by each connection, as before
            if not chat._live(session):
                return
            if chat.hub.in_room(session, c.channel) or self.subscribe(
                session, c.channel, c.last_seq
            ):
                rooms.append(c.channel)
            else:
                more = True
        if (rooms or more) and chat._live(session):
            session.send(wire.frame("subscribed", rooms=rooms, more=more))

    def subscribe(self, session, room: str, since: int) -> bool:
        """Make *session* a live receiver of *room* (no replay: it is told with
        ``subscribed``; it has every item up to *since*); False when it is in
        ``--max-rooms`` rooms already. When this node has only just started following
        the room (a Redis Cluster), the connection stays pending until it does and
        is sent the items after *since* committed meanwhile (Replayer.catch_up)."""
        chat = self.chat
        if chat.hub.room_count(session) >= chat.settings.max_rooms:
            return False
        _already, new_user = chat.hub.join(session, room)
        ready = chat.broker.ready(room)
        if ready.called:
            chat.hub.go_live(session, room)
        else:
            ready.addErrback(lambda _: None)  # the catch-up waits for it (and reports)
            chat.replayer.catch_up(session, room, since)
        if new_user:
            chat.directory.joined(room, session.user, session.id)
        return True

    # a committed event, on every node (from Chat.deliver_message)

    def applied(self, message, exclude) -> None:
        """Deliver the ``event`` item *message* to this node's connections of its room
        (but *exclude*), then make the connections of the user it is about follow it:
        subscribed after ``created``/``joined``/``invited`` (told with ``subscribed``
        and the event), unsubscribed with ``left {room}`` after ``left``/``kicked``/
        ``banned``. A room that became private drops its anonymous receivers."""
        chat = self.chat
        room, data = message.channel, message.data or {}
        event, user = data.get("event"), data.get("user")
        kind = (data.get("changes") or {}).get("kind")
        if event in ("created", "room_updated"):  # the room has a row now
            known = self.kinds.get(room)
            self._remember(room, kind or (known if known in (PUBLIC, PRIVATE) else PUBLIC))
        if kind == PRIVATE:  # before the event: its changes are the room's settings
            for session in self._sessions_in(room):
                if session.identity is None:
                    chat.unsubscribe(session, room)
        payload = wire.event_frame(message)
        if not data.get("quiet"):
            chat.fan_out(room, message.seq, payload, exclude)
        if event in _GONE:
            for session in chat.hub.connections_of(user):
                if chat.hub.in_room(session, room):
                    chat.unsubscribe(session, room)
        elif event in _ENTERED and not data.get("quiet"):
            for session in chat.hub.connections_of(user):
                if not chat.hub.in_room(session, room) and self.subscribe(
                    session, room, message.seq
                ):
                    if session is not exclude:
                        session.send(wire.frame("subscribed", rooms=[room], more=False))
                        session.send(payload)

    def _sessions_in(self, room: str) -> list:
        """This node's sessions in *room*, live and pending."""
        r = self.chat.hub.rooms.get(room)
        return [] if r is None else [*r.live.values(), *r.pending]

    # appending events

    def _event(self, session, room, event, user, ref, client_id=None, **extra):
        """Append the ``event`` item *event* about *user* by *session*'s user."""
        data = {"event": event, "user": user, "by": session.user, **extra}
        return self.chat.post(
            room,
            session.user,
            session.name,
            "",
            client_id or ref,
            session.id,
            data=data,
            kind="event",
        )

    @inlineCallbacks
    def _refuse(self, error, room, row, session, ref):
        """Raise *error* -- unless the request is a resend of the one whose event made
        *row* what it is: then fire with that event as a duplicate (exactly-once)."""
        if ref is not None and row is not None and row.since_seq:
            items = yield self.chat.store.items(room, [row.since_seq])
            item = items.get(row.since_seq)
            if item is not None and item.client_id == ref and item.sender == session.user:
                return Appended(item, True)
        raise error

    def _ack(self, appended, session, request):
        self.chat._ack(appended, session, request.received, None, room=appended.message.channel)

    @staticmethod
    def _token_user(session, request) -> None:
        if session.identity is None:
            raise errors.AuthRequired(
                f"{request.type} is for token users (connect with a token)", request.id
            )

    def _run(self, session, request, work) -> None:
        """Run ``work(session, request, fields)`` for a token user, in the connection's
        turn (with its sends, in order); refusals are answered as ``error``."""
        self._token_user(session, request)
        self.chat._check_room(session, request.fields["room"], request.id)
        self.chat.inbox.serial(session, lambda: work(session, request, request.fields))

    @inlineCallbacks
    def _context(self, session, room, ref):
        """``(room row, kind, my member row)``; a private room's non-member gets
        ``forbidden`` (nothing more is said about it)."""
        row = yield self.room(room)
        kind = PUBLIC if row is None else row.kind
        me = yield self.chat.store.member(room, session.user)
        if not may("read", kind, _role(me)):
            raise errors.Forbidden(f"room {room!r} is private", ref)
        return row, kind, me

    # create, room_info, update_room

    def _on_create(self, session, request, f) -> None:
        self._run(session, request, self._create)

    @inlineCallbacks
    def _create(self, session, request, f):
        chat, room, ref = self.chat, f["room"], request.id
        row = yield self.room(room)
        last = (yield chat.store.replay(room, None, 0)).last_seq
        if row is not None or last or room == LOBBY:
            me = yield chat.store.member(room, session.user)
            appended = yield self._refuse(
                errors.RoomExists(f"room {room!r} exists already", ref), room, me, session, ref
            )
        else:
            invitees = [u for u in dict.fromkeys(f["members"] or ()) if u != session.user]
            for user in invitees:
                if not (yield chat.store.has_user(user)):
                    raise errors.NoSuchUser(f"no user {user!r}", ref)
            changes = {"kind": f["kind"] or PUBLIC}
            for key in ("title", "topic", "avatar"):
                changes[key] = f[key] or ""
            appended = yield self._event(
                session, room, "created", session.user, ref, changes=changes
            )
            for user in invitees:
                yield self._event(
                    session,
                    room,
                    "invited",
                    user,
                    ref,
                    f"{ref} {user}" if ref else None,
                    role="member",
                )
        self._ack(appended, session, request)
        yield self._send_info(session, room, ref)

    def _on_room_info(self, session, request, f) -> None:
        self._run(session, request, lambda s, r, f: self._send_info(s, f["room"], r.id))

    @inlineCallbacks
    def _send_info(self, session, room, ref):
        store = self.chat.store
        row, kind, me = yield self._context(session, room, ref)
        last = (yield store.replay(room, None, 0)).last_seq
        if row is None and not last:
            raise errors.NoSuchRoom(f"no room {room!r}", ref)
        count = yield store.member_count(room)
        session.send(
            wire.room_info_frame(
                {
                    "room": room,
                    "kind": kind,
                    "title": row.title if row else "",
                    "topic": row.topic if row else "",
                    "avatar": row.avatar if row else "",
                    "members": count,
                    "role": _role(me),
                    "seq": last,
                    "created_by": row.created_by if row else None,
                }
            )
        )

    def _on_update_room(self, session, request, f) -> None:
        if all(f[key] is None for key in ("title", "topic", "avatar", "kind")):
            raise errors.BadRequest(
                "update_room takes at least one of title, topic, avatar, kind", request.id
            )
        self._run(session, request, self._update_room)

    @inlineCallbacks
    def _update_room(self, session, request, f):
        room, ref = f["room"], request.id
        _row, kind, me = yield self._context(session, room, ref)
        if not may("update_room", kind, _role(me)):
            raise errors.Forbidden("only the room's admins and owner update it", ref)
        changes = {k: f[k] for k in ("title", "topic", "avatar", "kind") if f[k] is not None}
        appended = yield self._event(
            session, room, "room_updated", session.user, ref, changes=changes
        )
        self._ack(appended, session, request)

    # invite, kick, ban, unban, set_role: one shape

    def _on_invite(self, session, request, f) -> None:
        self._run(session, request, self._moderate)

    _on_kick = _on_ban = _on_unban = _on_set_role = _on_invite

    @inlineCallbacks
    def _moderate(self, session, request, f):
        chat, room, target, ref = self.chat, f["room"], f["user"], request.id
        action = request.type
        _row, kind, me = yield self._context(session, room, ref)
        row = yield chat.store.member(room, target)
        problem = yield self._problem(action, kind, _role(me), row, f, session, ref)
        if problem is not None:
            appended = yield self._refuse(problem, room, row, session, ref)
        elif action == "set_role":
            appended = yield self._event(session, room, "role", target, ref, role=f["role"])
            if f["role"] == OWNER:  # handed over: the old owner becomes an admin
                yield self._event(
                    session, room, "role", session.user, ref, f"{ref} owner", role="admin"
                )
        else:
            event = {"invite": "invited", "kick": "kicked", "ban": "banned"}.get(action, "unbanned")
            extra = {"role": "member"} if action == "invite" else {}
            appended = yield self._event(session, room, event, target, ref, **extra)
        self._ack(appended, session, request)

    @inlineCallbacks
    def _problem(self, action, kind, role, row, f, session, ref):
        """Why *action* on ``f["user"]`` (member *row*) is refused (None: it is not)."""
        target, target_role = f["user"], _role(row)
        state = None if row is None else row.state
        if action == "invite":
            if not may("invite", kind, role):
                return errors.Forbidden("you may not invite to this room", ref)
            if target_role is not None:
                return errors.BadRequest(f"{target!r} is a member already", ref)
            if state == "banned":
                return errors.Forbidden(f"{target!r} is banned here: unban first", ref)
            if not (yield self.chat.store.has_user(target)):
                return errors.NoSuchUser(f"no user {target!r}", ref)
            return None
        if target == session.user:
            return errors.Forbidden(f"you cannot {action.replace('_', ' ')} yourself", ref)
        if action in ("kick", "set_role") and target_role is None:
            return errors.BadRequest(f"{target!r} is not a member", ref)
        if action == "ban" and state == "banned":
            return errors.BadRequest(f"{target!r} is banned already", ref)
        if action == "unban" and state != "banned":
            return errors.BadRequest(f"{target!r} is not banned", ref)
        if action == "ban" and row is None and not (yield self.chat.store.has_user(target)):
            return errors.NoSuchUser(f"no user {target!r}", ref)
        if not may(action, kind, role, target_role):
            return errors.Forbidden(f"you may not {action.replace('_', ' ')} {target!r}", ref)
        if action == "set_role" and f["role"] == target_role:
            return errors.BadRequest(f"{target!r} is {target_role} already", ref)
        return None

    # members

    def _on_members(self, session, request, f) -> None:
        self._run(session, request, self._members)

    @inlineCallbacks
    def _members(self, session, request, f):
        chat, room = self.chat, f["room"]
        yield self._context(session, room, request.id)
        limit = f["limit"] or MEMBERS_LIMIT_DEFAULT
        rows, more = yield chat.store.members(room, f["cursor"], limit)
        online = set((yield chat.directory.members(room)))
        names = {s.user: s.name for s in self._sessions_in(room)}
        page = [
            {
                "user": r.user,
                "name": names.get(r.user, r.user),
                "role": r.role,
                "online": r.user in online,
            }
            for r in rows
        ]
        cursor = rows[-1].user if more and rows else None
        session.send(wire.frame("members", room=room, members=page, cursor=cursor))
