"""Moderation: mute, global ban, recall by moderators, reports, the queue, the audit log.

:class:`Moderation` is a part of :class:`chatd.chat.Chat` (like its membership,
inbox and push): it holds the handlers of the chatd.v1 requests ``mute_user``,
``unmute_user``, ``ban_user``, ``unban_user`` and ``report``, and the operations
the HTTP API (:mod:`chatd.api`, ``/api/moderation/...``) and the /admin page use.
The rules are pure functions of :mod:`chatd.modrules`; what is stored is
:class:`chatd.store.IModerationStore`.

Who may do what
    Room owners and admins mute members of their room (``mute`` in
    :mod:`chatd.permissions`: the actor outranks the target). Global moderators
    (a token with ``"mod": true`` or ``"roles": ["moderator"]``) and the HTTP API
    mute in any room or globally, ban globally and recall any room message.

Sanctions in force
    Each node keeps the sanctions of the token users connected to it, read from the
    store when a user's first connection is admitted and re-read when any node
    changes them (the bus event ``sanction``). A request that must wait for that
    read (the first requests of a new connection) waits in the connection's turn
    (:meth:`chatd.inbox.Inbox.serial`). A muted user's ``send``, ``dm``, ``edit``
    and ``react`` get ``error muted`` (with ``muted_until`` and ``seconds``);
    everything else keeps working. A mute ends by itself at its ``until``
    (:func:`chatd.modrules.active_until` compares with the chat's clock). When the
    store cannot be read, those requests fail closed: ``error unavailable`` (resend
    with the same id), logged, counted (``chatd_moderation_sanction_reads``); a
    connection is not closed for it, and its other requests keep working. A global
    ban closes the user's connections on every node with :data:`BANNED` and refuses
    the next ones (and WeChat logins, chatd.login) until it ends.

The audit log
    Every mute, unmute, ban, unban, moderator recall and queue action is appended to
    the audit log: ``{ts, by, action, target, scope?, until?, report?, seq?}``.

Retention
    :class:`RetentionSweep` (a child service of chatd) calls :meth:`Moderation.sweep`
    every :data:`chatd.modrules.SWEEP_INTERVAL` seconds of the chat's clock: closed
    queue entries and audit entries older than ``--moderation-retention-days``
    (:func:`chatd.modrules.expired`) are deleted, :data:`chatd.modrules.SWEEP_CHUNK`
    at a time; so are media check traces older than
    :data:`chatd.contentcheck.TRACE_TTL_MS` (SQLite; Redis expires them itself).
"""

from __future__ import annotations

from twisted.application.service import Service
from twisted.internet.defer import Deferred, inlineCallbacks, succeed
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from chatd import conversations as conv
from chatd import errors, modrules, wire
from chatd.contentcheck import TRACE_TTL_MS
from chatd.modrules import BAN, GLOBAL, MUTE
from chatd.permissions import PUBLIC, may
from chatd.store import IMediaCheckStore, IModerationStore, ISharedCounters, dm_users

#: the close code of a globally banned user's connections
BANNED = 4451
#: the ``by`` of what the HTTP API does
SYSTEM_USER = "system"


def _role(row) -> str | None:
    return row.role if row is not None and row.state == "member" else None


class Moderation:
    """Moderation of one :class:`chatd.chat.Chat` (see the module docstring)."""

    log = Logger()

    def __init__(self, chat):
        self.chat = chat
        #: user -> their sanctions (``(kind, scope) -> until``), or the Deferred of the
        #: read, for the token users connected to this node
        self._sanctions: dict = {}
        #: user -> ms of their recent reports (the rate limit, chatd.modrules)
        self._reported: dict[str, list] = {}
        #: reads of a user's sanctions that failed (the store down), and the requests
        #: refused for it (``error unavailable``: mutes fail closed)
        self.unreadable = 0
        self.refused_unreadable = 0
        #: entries retention deleted, by log (chatd.modrules.QUEUE, AUDIT)
        self.pruned = dict.fromkeys((modrules.QUEUE, modrules.AUDIT), 0)

    @property
    def store(self):
        store = self.chat.store
        return store if IModerationStore.providedBy(store) else None

    def _require_store(self, ref):
        store = self.store
        if store is None:
            raise errors.Unavailable("this history store keeps no moderation data", ref)
        return store

    # the sanctions of this node's users

    def admitted(self, session) -> None:
        """A token user's connection is admitted: read the user's sanctions (once per
        user), and close the connection if the user is banned."""
        if self.store is None:
            return
        user = session.user
        if user not in self._sanctions:
            self._load(user)
        self.sanctions(user).addCallback(lambda _: self._enforce_ban(user))

    def _read(self, user):
        """*user*'s sanctions from the store; None when the store could not be read
        (logged and counted: ``unreadable``)."""

        def failed(failure):
            self.unreadable += 1
            self.log.failure("reading the sanctions of {user}", failure, user=user)
            return None

        return self.store.sanctions(user).addErrback(failed)

    def _load(self, user):
        """Read *user*'s sanctions into the cache; fires with them (None: unreadable).

        The read's own Deferred is kept in the cache while it is in flight and is
        never handed out: every reader gets its own :meth:`_waiter`, so a reader's
        callbacks (a ban check's, an ``inlineCallbacks`` yield's, which return None)
        cannot change what the next reader gets.
        """
        d = self._read(user)
        self._sanctions[user] = d

        def loaded(found):
            if self._sanctions.get(user) is d:
                if found is None:
                    del self._sanctions[user]  # unreadable: the next check reads again
                else:
                    self._sanctions[user] = found
            return found

        d.addCallback(loaded)
        return self._waiter(d)

    @staticmethod
    def _waiter(read):
        """A Deferred firing with what the in-flight *read* finds (None: unreadable)."""
        waiter = Deferred()

        def passed(result):
            waiter.callback(result if isinstance(result, dict) else None)
            return result

        read.addBoth(passed)
        return waiter

    def sanctions(self, user):
        """A Deferred firing with *user*'s sanctions (cached while connected here), or
        None when the store could not be read."""
        found = self._sanctions.get(user)
        if isinstance(found, dict):
            return succeed(found)
        if found is None:
            if self.store is None:
                return succeed({})
            if self.chat.hub.connections_of(user):
                return self._load(user)
            return self._read(user)
        return self._waiter(found)  # a read in flight: its answer, for one more reader

    def forget(self, user: str) -> None:
        """*user*'s last connection here closed: its sanctions are no longer kept."""
        self._sanctions.pop(user, None)
        self._reported.pop(user, None)

    def changed(self, user: str) -> None:
        """Some node changed *user*'s sanctions (the bus event ``sanction``)."""
        if user in self._sanctions or self.chat.hub.connections_of(user):
            self._load(user).addCallback(lambda _: self._enforce_ban(user))

    def _enforce_ban(self, user: str) -> None:
        found = self._sanctions.get(user)
        if not isinstance(found, dict):
            return
        until = modrules.active_until(found, BAN, (GLOBAL,), self.chat.now_ms())
        if until:
            for session in list(self.chat.hub.connections_of(user)):
                self.chat.send_error(session, _banned(until, self.chat.now_ms(), None))
                session.close(BANNED, "banned")

    def clear(self, session) -> bool:
        """True when *session*'s user is known (now, without waiting) to be under no
        sanction at all: its sends need no check."""
        if session.identity is None:
            return True
        found = self._sanctions.get(session.user)
        if found == {}:  # (the common case: nothing to prune, no store to ask about)
            return True
        if self.store is None:
            return True
        return isinstance(found, dict) and not modrules.prune(found, self.chat.now_ms())

    @inlineCallbacks
    def check(self, session, room, ref):
        """Fires when *session* may post in *room* (None: a DM); fails with ``muted``
        (or ``forbidden`` for a banned user whose connection is about to close)."""
        if session.identity is None or self.store is None:
            return
        found = yield self.sanctions(session.user)
        if found is None:  # fail closed: an active mute must not leak (docs/security.md)
            self.refused_unreadable += 1
            raise errors.Unavailable("your mutes and bans could not be read; resend it later", ref)
        now = self.chat.now_ms()
        banned = modrules.active_until(found, BAN, (GLOBAL,), now)
        if banned:
            raise _banned(banned, now, ref)
        scopes = (GLOBAL,) if room is None else (GLOBAL, room)
        until = modrules.active_until(found, MUTE, scopes, now)
        if until:
            left = modrules.seconds_left(until, now)
            where = "everywhere" if not room or found.get((MUTE, room), 0) < until else room
            raise errors.Muted(
                f"you are muted ({where}) for {left} more seconds",
                ref,
                muted_until=until,
                seconds=left,
            )

    # applying a sanction (requests, the HTTP API, the queue)

    @inlineCallbacks
    def sanction(self, by: str, kind: str, user: str, until: int, scope: str = GLOBAL, **audit):
        """Store *user*'s sanction, tell every node, write the audit log."""
        store = self._require_store(None)
        yield store.set_sanction(user, kind, scope, until)
        self.chat.broker.publish("sanction", user, None)
        action = kind if until else "un" + kind
        entry = {"ts": self.chat.now_ms(), "by": by, "action": action, "target": user}
        entry["scope"] = scope
        if until:
            entry["until"] = until
        yield self.audit(**entry, **audit)

    def audit(self, **entry):
        """Append *entry* to the audit log (fires with its id)."""
        d = self._require_store(None).add_audit(entry)
        return d.addErrback(self._audit_failed, entry)

    def _audit_failed(self, failure, entry):
        self.log.failure("writing the audit log ({entry})", failure, entry=entry)

    @inlineCallbacks
    def mute(self, actor, user: str, until: int, room=None, ref=None, **audit):
        """Mute (*until* > 0) or unmute (0) *user* in *room* (None: globally) as
        *actor* (a session, or the API's operator); fires with the ``until`` stored
        (*audit*: more fields of the audit entry).

        A room mute is also an ``event`` (``muted`` with ``until``, or ``unmuted``) of
        the room's timeline, exactly-once by *ref*: a resend keeps the first ``until``.
        """
        chat = self.chat
        if room is not None:
            row = yield chat.store.member(room, user)
            if _role(row) is None:
                raise errors.BadRequest(f"{user!r} is not a member of {room!r}", ref)
            event = "muted" if until else "unmuted"
            extra = {"until": until} if until else {}
            appended = yield chat.membership._event(actor, room, event, user, ref, **extra)
            until = (appended.message.data or {}).get("until", 0)
        yield self.sanction(actor.user, MUTE, user, until, room or GLOBAL, **audit)
        return until

    @inlineCallbacks
    def recall(self, channel: str, seq: int, by: str, name: str, client_id=None, **audit):
        """Recall message *seq* of *channel* (a room or a DM) as a moderator *by*: any
        message, any time. Fires with the Appended ``recalled`` item. Both users of a
        DM get ``recalled`` (the message log delivers it to one, the bus to the other)."""
        chat = self.chat
        target = (yield chat.store.items(channel, [seq])).get(seq)
        now = chat.now_ms()
        # a moderator recalls as the owner of a private room: any message, any time
        conv.check_recall(
            target, by, "private", "owner", now, chat.settings.recall_window, client_id
        )
        data = {"target": seq, "by": by}
        users = dm_users(channel)
        if users is None:
            appended = yield chat.post(channel, by, name, "", client_id, data=data, kind="recalled")
        else:
            fields = (channel, by, name, client_id, "", now, "recalled", data)
            appended = yield chat.messages.append("dm", fields, (users[1], None))
            if not appended.duplicate and by not in users:
                frame = wire.item_frame(appended.message, chat.urls())
                chat.broker.publish("user", users[0], frame, None)
        if not appended.duplicate:
            entry = {"ts": now, "by": by, "action": "recall", "target": target.sender}
            yield self.audit(**entry, channel=channel, seq=seq, **audit)
        return appended

    # chatd.v1 requests

    def _run(self, session, request, work) -> None:
        self.chat.membership._token_user(session, request)
        room = request.fields.get("room")
        if room is not None:
            self.chat._check_room(session, room, request.id)
        self.chat.inbox.serial(session, lambda: work(session, request, request.fields))

    def _on_mute_user(self, session, request, f) -> None:
        self._run(session, request, self._mute_user)

    _on_unmute_user = _on_mute_user

    @inlineCallbacks
    def _mute_user(self, session, request, f):
        chat, ref, room, target = self.chat, request.id, f["room"], f["user"]
        self._require_store(ref)
        moderator = session.identity.moderator
        if target == session.user:
            raise errors.Forbidden("you cannot mute yourself", ref)
        if room is None:
            if not moderator:
                raise errors.Forbidden("only moderators mute a user everywhere", ref)
        else:
            row = yield chat.membership.room(room)
            kind = PUBLIC if row is None else row.kind
            me = yield chat.store.member(room, session.user)
            if not moderator:
                if not may("read", kind, _role(me)):
                    raise errors.Forbidden(f"room {room!r} is private", ref)
                them = yield chat.store.member(room, target)
                if not may("mute", kind, _role(me), _role(them)):
                    raise errors.Forbidden(f"you may not mute {target!r} here", ref)
        until = 0
        if request.type == "mute_user":
            until = modrules.until_of(f["seconds"], chat.now_ms())
        until = yield self.mute(session, target, until, room, ref)
        session.send(wire.frame(request.type, id=ref, room=room, user=target, muted_until=until))

    def _on_ban_user(self, session, request, f) -> None:
        self._run(session, request, self._ban_user)

    _on_unban_user = _on_ban_user

    @inlineCallbacks
    def _ban_user(self, session, request, f):
        ref, target = request.id, f["user"]
        self._require_store(ref)
        if not session.identity.moderator:
            raise errors.Forbidden("only moderators ban a user everywhere", ref)
        if target == session.user:
            raise errors.Forbidden("you cannot ban yourself", ref)
        until = 0
        if request.type == "ban_user":
            seconds = f["seconds"]
            now = self.chat.now_ms()
            until = modrules.FOREVER if seconds is None else modrules.until_of(seconds, now)
        yield self.sanction(session.user, BAN, target, until)
        session.send(wire.frame(request.type, id=ref, user=target, banned_until=until))

    def _on_report(self, session, request, f) -> None:
        self.chat.inbox._token_user(session, request)
        where = self.chat.inbox._where(session, f, request.id)
        self.chat.inbox.serial(session, lambda: self._report(session, request, f, where))

    @inlineCallbacks
    def _report(self, session, request, f, where):
        chat, ref, seq, user = self.chat, request.id, f["seq"], session.user
        self._require_store(ref)
        missing = errors.NoSuchMessage("no such message in this conversation", ref)
        readable = True
        if where.room is not None:
            readable = yield chat.membership.may_read(user, where.room)
        item = (yield chat.store.items(where.channel, [seq])).get(seq) if readable else None
        if not conv.is_message(item) or conv.is_recalled(item):
            raise missing  # unreadable, missing or recalled: one answer, nothing leaks
        allowed = yield self._report_allowed(user, chat.now_ms())
        if not allowed:
            raise errors.RateLimited(
                f"at most {modrules.REPORTS_PER_WINDOW} reports a minute; try again later", ref
            )
        entry = yield self.enqueue(
            modrules.report_key(user, ref, where.channel, seq),
            modrules.REPORTED,
            item,
            reporter=user,
            reason=f["reason"],
        )
        session.send(wire.frame("report", id=ref, report=entry[0]["id"], duplicate=entry[1]))

    def _report_allowed(self, user: str, now: int):
        """Fires with whether *user* may file one more report now: the cluster's
        counter in Redis (:class:`chatd.store.ISharedCounters`), else this node's."""
        store = self.chat.store
        if ISharedCounters.providedBy(store):
            window = modrules.report_window(now)
            d = store.count_in_window(user, "report", window, modrules.REPORT_WINDOW_MS)
            return d.addCallback(modrules.report_count_allowed)
        allowed, times = modrules.report_allowed(self._reported.get(user, []), now)
        self._reported[user] = times
        return succeed(allowed)

    @inlineCallbacks
    def enqueue(self, key, source, item, **fields):
        """Put *item* (a stored message) into the moderation queue with its context
        (:func:`chatd.modrules.context_range`); fires with ``(entry, duplicate)``."""
        chat = self.chat
        around = yield chat.store.items(item.channel, modrules.context_range(item.seq))
        users = dm_users(item.channel)
        entry = {
            "source": source,
            "ts": chat.now_ms(),
            "channel": item.channel,
            "room": None if users is not None else item.channel,
            "users": list(users) if users is not None else None,
            "seq": item.seq,
            "sender": item.sender,
            "message": wire.item_object(item),
            "context": [wire.item_object(around[s]) for s in sorted(around)],
            **fields,
        }
        return (yield self._require_store(None).add_report(key, entry))

    def flag(self, message, label=None) -> None:
        """A content check said ``review`` of the committed *message*: queue it."""
        if self.store is None:
            return
        key = f"\n{modrules.FLAGGED}\n{message.channel}\n{message.seq}"
        d = self.enqueue(key, modrules.FLAGGED, message, label=label)
        d.addErrback(lambda f: self.log.failure("queueing a flagged message", f))

    # the queue (HTTP API, /admin)

    @inlineCallbacks
    def act(self, id: int, action: dict, by: str = SYSTEM_USER):
        """Take *action* (:func:`chatd.modrules.check_action`) on the open queue entry
        *id*: closed first (one action wins), then done, then audited. Fires with the
        closed entry; None: no such open entry."""
        chat = self.chat
        store = self._require_store(None)
        now = chat.now_ms()
        kind = action["action"]
        resolution = {"action": kind, "by": by, "ts": now}
        if action.get("seconds") is not None:
            resolution["seconds"] = action["seconds"]
        entry = yield store.close_report(id, resolution)
        if entry is None:
            return None
        sender, room = entry.get("sender"), entry.get("room")
        if kind == modrules.RECALL:
            try:
                yield self.recall(entry["channel"], entry["seq"], by, by, f"queue {id}", report=id)
            except errors.NoSuchMessage:
                pass  # recalled already: the entry is closed all the same
        elif kind == MUTE:  # in the room of a room message (while a member), else everywhere
            until = modrules.until_of(action["seconds"], now)
            member = room is not None and _role((yield chat.store.member(room, sender)))
            if member:
                yield self.mute(Actor(by), sender, until, room, f"queue {id}", report=id)
            else:
                yield self.sanction(by, MUTE, sender, until, report=id)
        elif kind == BAN:
            seconds = action.get("seconds")
            until = modrules.FOREVER if seconds is None else modrules.until_of(seconds, now)
            yield self.sanction(by, BAN, sender, until, report=id)
        else:
            yield self.audit(ts=now, by=by, action=kind, target=sender, report=id)
        return entry

    # retention

    @inlineCallbacks
    def sweep(self):
        """Delete what retention says of the queue and the audit log (module
        docstring); fires with ``{log: entries deleted}``."""
        store = self.store
        cutoff = modrules.retention_cutoff(
            self.chat.settings.moderation_retention_days, self.chat.now_ms()
        )
        deleted = dict.fromkeys((modrules.QUEUE, modrules.AUDIT), 0)
        if store is None or cutoff is None:
            return deleted
        for log in deleted:
            after, done = 0, False
            while not done:
                oldest = yield store.moderation_oldest(log, after, modrules.SWEEP_CHUNK)
                ids, done = modrules.expired(log, oldest, cutoff)
                if ids:
                    deleted[log] += yield store.delete_moderation(log, ids)
                if len(oldest) < modrules.SWEEP_CHUNK:
                    done = True
                elif oldest:
                    after = oldest[-1]["id"]
            self.pruned[log] += deleted[log]
        if IMediaCheckStore.providedBy(store):  # media check traces past their verdict
            yield store.prune_media_checks(self.chat.now_ms() - TRACE_TTL_MS)
        if any(deleted.values()):
            self.log.info(
                "moderation retention: {queue} queue entries and {audit} audit entries deleted",
                queue=deleted[modrules.QUEUE],
                audit=deleted[modrules.AUDIT],
            )
        return deleted


class RetentionSweep(Service):
    """Runs :meth:`Moderation.sweep` every *interval* seconds of the chat's clock."""

    log = Logger()

    def __init__(self, moderation: Moderation, interval: float = modrules.SWEEP_INTERVAL):
        self.moderation = moderation
        self.interval = interval
        self._loop = None

    def startService(self):
        super().startService()
        self._loop = LoopingCall(self._sweep)
        self._loop.clock = self.moderation.chat.clock
        self._loop.start(self.interval, now=False)

    def _sweep(self):
        d = self.moderation.sweep()
        d.addErrback(lambda f: self.log.warn("moderation retention failed: {e}", e=f.value))
        return d

    def stopService(self):
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None


class Actor:
    """Whom the HTTP API or the queue acts as, in the shape
    :class:`chatd.membership.Membership`'s event helpers read a session (``user``,
    ``name``; ``id`` None: no connection of the user is left out of the fan-out)."""

    __slots__ = ("user", "name")
    id = None
    identity = None

    def __init__(self, user: str, name: str | None = None):
        self.user, self.name = user, name or user


def _banned(until, now, ref) -> errors.Forbidden:
    left = modrules.seconds_left(until, now)
    return errors.Forbidden(f"you are banned for {left} more seconds", ref)
