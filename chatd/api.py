"""The server HTTP API under ``/api/`` (docs/api.md): push into chatd from outside.

Every request carries ``Authorization: apikey KEY``; the key is compared in
constant time (:func:`hmac.compare_digest`). Without a configured key
(``--api-key``, ``api-key`` in the config file or ``CHATD_API_KEY``) the API
answers 403 to everything.

Posting goes through :meth:`chatd.chat.Chat.post` / ``post_dm``: the very path
a client's ``send``/``dm`` takes (stored, given a seq, fanned out through the
broker, deduplicated by ``id``). JSON in, JSON out; errors are
``{"error": code, "message": text}`` with the wire protocol's codes.

=======  =====================================  ======================================
method   path                                   what
=======  =====================================  ======================================
GET      /api/rooms                             rooms with members, connection counts
GET      /api/rooms/ROOM                        one room's members and newest seq
GET      /api/rooms/ROOM/history                a page of history (``before``, ``limit``)
POST     /api/rooms/ROOM/messages               publish ``{from, name?, text, id?}``
POST     /api/dm                                send ``{from, name?, to, text, id?}``
POST     /api/users/USER/disconnect             close every connection of USER
GET      /api/stats                             counters, rates and recent errors
POST     /api/users                             make ``{user, name?}`` a known user
GET      /api/users/USER/conversations          USER's conversation list with unread counts
POST     /api/rooms/ROOM/recall                 recall message ``{seq, by?, id?}`` (moderation)
POST     /api/rooms                             create ``{room, kind?, owner?, members?, …}``
GET      /api/rooms/ROOM/members                the durable member list (``cursor``, ``limit``)
POST     /api/rooms/ROOM/members                add (invite) ``{user, role?}``
POST     /api/rooms/ROOM/kick|ban|unban         ``{user}``
POST     /api/rooms/ROOM/role                   set a member's role ``{user, role}``
POST     /api/users/USER/mute|unmute            ``{room?, seconds, by?, id?}``: mute (unmute)
POST     /api/users/USER/ban|unban              ``{seconds?, by?}``: global ban (lift it)
GET      /api/users/USER/sanctions              USER's mutes and bans in force
GET      /api/moderation/queue                  reports and flags (``state``, ``before``, ``limit``)
GET      /api/moderation/queue/ID               one queue entry with its context
POST     /api/moderation/queue/ID               act ``{action, seconds?, by?}``: closes it
GET      /api/moderation/audit                  the audit log (``before``, ``limit``)
=======  =====================================  ======================================

The conversation endpoints need a store with conversations
(:class:`chatd.store.IConversationStore`); they read it and append timeline items
through the chat's message log, with the pure rules of :mod:`chatd.conversations`,
exactly as :mod:`chatd.inbox` does for a client's request. The API acts as the
operator: it may post in, read and moderate any room, private ones included.
Membership changes are the room's timeline events, appended with
:class:`chatd.membership.Membership`'s own helpers and checked by its rules with
the operator ranking as the room's owner (so, as for an owner, the owner cannot
be kicked: hand the room over first); the bus then (un)subscribes the users'
connections on every node.
"""

from __future__ import annotations

import hmac
import json
from urllib.parse import unquote

from twisted.internet import defer
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from chatd import conversations as conv
from chatd import errors, modrules, wire
from chatd.httpserver import MAX_BODY, Refusal, flat_error
from chatd.hub import LOBBY
from chatd.moderation import SYSTEM_USER
from chatd.moderation import Actor as _Operator
from chatd.permissions import ADMIN, MEMBER, OWNER, PUBLIC
from chatd.store import IConversationStore

#: conversations per page of GET /api/users/USER/conversations (default, most)
CONVERSATIONS_LIMIT_DEFAULT = 50
CONVERSATIONS_LIMIT_MAX = 200
#: most user ids in ``mentions`` (as for clients)
MENTIONS_MAX = 50
#: member-list page size of GET /api/rooms/ROOM/members (default, most)
MEMBERS_LIMIT_DEFAULT = 100
MEMBERS_LIMIT_MAX = 200
#: POST /api/rooms/ROOM/<path> -> the wire request type it is checked as
MODERATION = {
    "members": "invite",
    "kick": "kick",
    "ban": "ban",
    "unban": "unban",
    "role": "set_role",
}
#: the event each moderation request appends
EVENT_OF = {"invite": "invited", "kick": "kicked", "ban": "banned", "unban": "unbanned"}
#: HTTP status of a refused request, by wire error code (else 400)
REFUSAL_STATUS = {
    "forbidden": 403,
    "no_such_room": 404,
    "no_such_user": 404,
    "no_such_message": 404,
    "room_exists": 409,
    "too_late": 409,
    "too_large": 413,
}


class ApiError(Exception):
    """An error answer: HTTP *status*, wire error *code*, human *message*."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


class ApiKey:
    """The configured API key; ``None`` disables the API. Changeable on reload."""

    def __init__(self, key: str | None = None):
        self.key = key or None

    def check(self, header: bytes | None) -> bool:
        """True when *header* is ``apikey <the key>`` (constant-time comparison)."""
        if self.key is None or header is None:
            return False
        scheme, _, given = header.partition(b" ")
        if scheme.lower() != b"apikey":
            return False
        return hmac.compare_digest(given.strip(), self.key.encode("utf-8"))


class ApiResource(Resource):
    """``/api/…``: routes on the path (see the module docstring).

    Children put with ``putChild`` (e.g. another module's ``/api/login``) take
    precedence; every other path is handled here, with the API key.
    """

    log = Logger()

    def __init__(self, chat, key: ApiKey, clock=None):
        super().__init__()
        self.chat = chat
        self.key = key
        self.clock = clock if clock is not None else chat.clock
        self.started = self.clock.seconds()

    # plumbing

    def getChild(self, path, request):
        return _Endpoint(self, [path, *request.postpath])

    def render(self, request):
        return self.handle(request, [])

    def handle(self, request, raw_parts):
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"cache-control", b"no-store")
        try:
            try:
                self.authorize(request.getHeader(b"authorization"))
            except ApiError as e:
                if e.status == 401:
                    request.setHeader(b"www-authenticate", b"apikey")
                raise
            method = request.method.decode("ascii", "replace")
            parts = [unquote(p.decode("utf-8", "replace")) for p in raw_parts]
            while parts and parts[-1] == "":
                parts.pop()
            result = self._route(request, method, parts)
        except ApiError as e:
            return self._error(request, e)
        if hasattr(result, "addCallbacks"):
            result.addCallbacks(
                lambda body: self._finish(request, 200, body),
                lambda f: self._failed(request, f),
            )
            return NOT_DONE_YET
        return self._body(request, 200, result)

    def authorize(self, authorization: bytes | None) -> None:
        """Raise :class:`ApiError` 403 while the API is off, 401 without the key."""
        if self.key.key is None:
            raise ApiError(403, "forbidden", "the server API is disabled: set --api-key")
        if not self.key.check(authorization):
            raise ApiError(401, "unauthorized", "missing or wrong 'Authorization: apikey KEY'")

    def precheck(self, method: bytes, headers) -> None:
        """:meth:`authorize` from the request headers, before any body byte is
        read (a :class:`chatd.httpserver.BodyRule` precheck)."""
        values = headers.getRawHeaders(b"authorization")
        try:
            self.authorize(values[-1] if values else None)
        except ApiError as e:
            extra = [(b"WWW-Authenticate", b"apikey")] if e.status == 401 else []
            raise Refusal(e.status, e.code, e.message, extra) from None

    def _route(self, request, method, parts):
        match (method, parts):
            case ("GET", ["rooms"]):
                return self.chat.snapshot()
            case ("GET", ["rooms", room]):
                return self.room(self._room(room))
            case ("GET", ["rooms", room, "history"]):
                return self.history(request, self._room(room))
            case ("POST", ["rooms", room, "messages"]):
                return self.publish(self._room(room), self._json(request))
            case ("POST", ["dm"]):
                return self.dm(self._json(request))
            case ("POST", ["users", user, "disconnect"]):
                return {"user": user, "closed": self.chat.disconnect_user(user)}
            case ("GET", ["stats"]):
                return self.stats()
            case ("POST", ["users"]):
                return self.add_user(self._json(request))
            case ("GET", ["users", user, "conversations"]):
                return self.conversations(request, self._user(user))
            case ("POST", ["rooms", room, "recall"]):
                return self.recall(self._room(room), self._json(request))
            case ("POST", ["rooms"]):
                return self.create(self._json(request))
            case ("GET", ["rooms", room, "members"]):
                return self.members(request, self._room(room))
            case ("POST", ["rooms", room, action]) if action in MODERATION:
                return self.moderate(self._room(room), MODERATION[action], self._json(request))
            case ("POST", ["users", user, ("mute" | "unmute") as action]):
                return self.mute(self._user(user), action, self._json(request))
            case ("POST", ["users", user, ("ban" | "unban") as action]):
                return self.ban(self._user(user), action, self._json(request))
            case ("GET", ["users", user, "sanctions"]):
                return self.sanctions(self._user(user))
            case ("GET", ["moderation", "queue"]):
                return self.queue(request)
            case ("GET", ["moderation", "queue", id_]):
                return self.queue_entry(self._id(id_))
            case ("POST", ["moderation", "queue", id_]):
                return self.act(self._id(id_), self._json(request))
            case ("GET", ["moderation", "audit"]):
                return self.audit(request)
        if parts and parts[0] in ("rooms", "dm", "users", "stats", "moderation"):
            raise ApiError(405, "bad_request", f"{method} is not allowed on /api/{'/'.join(parts)}")
        raise ApiError(404, "not_found", "no such API endpoint (see docs/api.md)")

    def _body(self, request, status, body) -> bytes:
        request.setResponseCode(status)
        return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")

    def _finish(self, request, status, body):
        if request._disconnected:
            return
        request.write(self._body(request, status, body))
        request.finish()

    def _error(self, request, e: ApiError) -> bytes:
        return self._body(request, e.status, flat_error(e.code, e.message))

    def _failed(self, request, failure):
        if failure.check(ApiError):
            e = failure.value
        else:
            self.log.failure("API request {uri} failed", failure, uri=request.uri)
            e = ApiError(503, "unavailable", "the history store failed; retry with the same id")
        if not request._disconnected:
            request.write(self._error(request, e))
            request.finish()

    # validation

    def _json(self, request) -> dict:
        body = request.content.read(MAX_BODY + 1)
        if len(body) > MAX_BODY:
            raise ApiError(413, "too_large", "the request body is over 1 MiB")
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise ApiError(400, "bad_json", "the body is not valid JSON") from None
        if not isinstance(data, dict):
            raise ApiError(400, "bad_json", "the body must be a JSON object")
        return data

    @staticmethod
    def _room(room: str) -> str:
        if not wire.ROOM_RULE.fullmatch(room):
            raise ApiError(400, "bad_room", "room names are 1-64 letters, digits or _ - . : #")
        return room

    @staticmethod
    def _user(user: str) -> str:
        if not wire.USER_RULE.fullmatch(user):
            raise ApiError(400, "bad_request", "user ids are 1-128 characters, no control ones")
        return user

    def _conversation_store(self):
        store = self.chat.store
        if not IConversationStore.providedBy(store):
            raise ApiError(503, "unavailable", "this history store keeps no conversations")
        return store

    def _request(self, request_type: str, data: dict, **fields) -> wire.Request:
        """*data* (with *fields* set, e.g. the room of the path) checked by the wire
        protocol's schema for *request_type*: the rules a client's request follows."""
        payload = json.dumps({**data, **fields, "type": request_type}).encode("utf-8")
        try:
            return wire.parse(payload, self.chat.settings.max_text_length)
        except errors.ChatError as e:
            raise self._refusal(e) from None

    def _operator(self, data: dict, field: str) -> _Operator:
        user = self._user_field(data, field, SYSTEM_USER)
        return _Operator(user, self._name(data, user))

    @defer.inlineCallbacks
    def _existing(self, room):
        """*room*'s row (None for a room of chatd 0.1); ``no_such_room`` for a room that
        was never created and holds nothing."""
        row = yield self.chat.membership.room(room)
        if row is None and not (yield self.chat.store.replay(room, None, 0)).last_seq:
            raise ApiError(404, "no_such_room", f"no room {room!r}")
        return row

    @defer.inlineCallbacks
    def _refused(self, error, room, row, operator, ref):
        """The refusal *error* -- or, for a resend of the request whose event made
        *row* what it is, that event as a duplicate (the realm's exactly-once rule)."""
        try:
            return (yield self.chat.membership._refuse(error, room, row, operator, ref))
        except errors.ChatError as e:
            raise self._refusal(e) from None

    @staticmethod
    def _refusal(e: errors.ChatError) -> ApiError:
        """The API answer of a request the chat's rules refuse."""
        return ApiError(REFUSAL_STATUS.get(e.code, 400), e.code, str(e))

    def _mentions(self, data):
        """The message ``data`` of the optional ``mentions`` (user ids or ``@all``)."""
        mentions = data.get("mentions")
        if mentions is None:
            return None
        if (
            type(mentions) is not list
            or len(mentions) > MENTIONS_MAX
            or not all(type(u) is str and wire.USER_RULE.fullmatch(u) for u in mentions)
        ):
            raise ApiError(400, "bad_request", f"'mentions' must be up to {MENTIONS_MAX} user ids")
        return conv.message_data(list(dict.fromkeys(mentions)), None)

    def _known(self, user, name):
        """Record *user* as a known user (the API posted as it), where the store can."""
        store = self.chat.store
        if not IConversationStore.providedBy(store):
            return defer.succeed(None)
        return store.add_user(user, name, self.chat.now_ms())

    @staticmethod
    def _user_field(data, field, default=None) -> str:
        value = data.get(field, default)
        if type(value) is not str or not wire.USER_RULE.fullmatch(value):
            raise ApiError(400, "bad_request", f"'{field}' must be a user id string")
        return value

    @staticmethod
    def _name(data, default) -> str:
        name = data.get("name", default)
        if type(name) is not str or not 1 <= len(name) <= 128:
            raise ApiError(400, "bad_request", "'name' must be a string of 1-128 characters")
        return name

    @staticmethod
    def _client_id(data) -> str | None:
        client_id = data.get("id")
        if client_id is not None and (
            type(client_id) is not str or not wire.ID_RULE.fullmatch(client_id)
        ):
            raise ApiError(400, "bad_request", "'id' must be 1-64 printable ASCII characters")
        return client_id

    def _fields(self, data, *users):
        for field in users:
            self._user_field(data, field)
        name = self._name(data, data[users[0]])
        text = data.get("text")
        if type(text) is not str or not text:
            raise ApiError(400, "bad_request", "'text' must be a non-empty string")
        limit = self.chat.settings.max_text_length
        if len(text) > limit:
            raise ApiError(413, "too_large", f"'text' is longer than {limit} characters")
        return name, text, self._client_id(data)

    # endpoints

    def room(self, room):
        """Members (on every node in cluster mode) and newest seq of *room*."""
        d = defer.gatherResults(
            [
                defer.maybeDeferred(self.chat.directory.members, room),
                self.chat.store.replay(room, None, 0),
            ],
            consumeErrors=True,
        )
        d.addErrback(lambda f: f.value.subFailure)
        return d.addCallback(lambda r: {"room": room, "members": list(r[0]), "seq": r[1].last_seq})

    def history(self, request, room):
        """A page of *room*'s history, oldest first, like the ``history`` request."""
        args = request.args
        try:
            before = int(args[b"before"][0]) if b"before" in args else None
            limit = int(args[b"limit"][0]) if b"limit" in args else wire.HISTORY_LIMIT_DEFAULT
        except ValueError:
            raise ApiError(400, "bad_request", "'before' and 'limit' must be integers") from None
        if not 1 <= limit <= wire.HISTORY_LIMIT_MAX:
            raise ApiError(400, "bad_request", f"'limit' must be 1-{wire.HISTORY_LIMIT_MAX}")
        if before is not None and before < 0:
            raise ApiError(400, "bad_request", "'before' must be >= 0")
        d = self.chat.store.history(room, before, limit)
        return d.addCallback(self._history_page, room)

    def _history_page(self, page, room):
        """The page as the ``history`` frame shows it (messages with their reactions and
        reply quotes, recalled ones as tombstones; the range's events), without ``type``."""

        def answer(parts):
            messages, events, reactions, quotes = parts
            frame = wire.history_frame(
                room,
                messages,
                page.more,
                events=events,
                reactions=reactions,
                quotes=quotes,
                sign=self.chat.urls(),
            )
            body = json.loads(frame)
            del body["type"]
            return body

        operator = _Operator(SYSTEM_USER, SYSTEM_USER)  # reads like a connection without a token
        return self.chat.inbox.decorate(room, page.messages, operator).addCallback(answer)

    def publish(self, room, data):
        """Post to *room* as user ``from``: stored, seq, fanned out like a client's send;
        ``from`` becomes a known user, ``mentions`` are stored with the message."""
        name, text, client_id = self._fields(data, "from")
        mentions = self._mentions(data)
        d = self._known(data["from"], name)
        d.addCallback(
            lambda _: self.chat.post(room, data["from"], name, text, client_id, data=mentions)
        )
        return d.addCallback(
            lambda a: {
                "room": a.message.channel,
                "seq": a.message.seq,
                "ts": a.message.ts,
                "id": a.message.client_id,
                "duplicate": a.duplicate,
            }
        )

    def dm(self, data):
        """A direct message from ``from`` to ``to`` (stored even when ``to`` is offline)."""
        name, text, client_id = self._fields(data, "from", "to")
        mentions = self._mentions(data)
        d = self._known(data["from"], name)
        d.addCallback(
            lambda _: self.chat.post_dm(
                data["from"], name, data["to"], text, client_id, data=mentions
            )
        )

        def answer(appended):
            online = defer.maybeDeferred(self.chat.directory.is_online, data["to"])
            return online.addCallback(
                lambda is_online: {
                    "from": appended.message.sender,
                    "to": data["to"],
                    "seq": appended.message.seq,
                    "ts": appended.message.ts,
                    "id": appended.message.client_id,
                    "duplicate": appended.duplicate,
                    "online": bool(is_online),
                }
            )

        return d.addCallback(answer)

    def add_user(self, data):
        """Make ``user`` a known user (DMs to it are stored, it can be invited)."""
        self._conversation_store()
        user = self._user_field(data, "user")
        name = self._name(data, user)
        return self._known(user, name).addCallback(lambda _: {"user": user, "name": name})

    @defer.inlineCallbacks
    def conversations(self, request, user):
        """A page of *user*'s conversation list (the ``conversations`` reply's entries)."""
        store = self._conversation_store()
        args = request.args
        cursor = args[b"cursor"][0].decode("ascii", "replace") if b"cursor" in args else None
        try:
            limit = int(args[b"limit"][0]) if b"limit" in args else CONVERSATIONS_LIMIT_DEFAULT
            start = conv.page_start(cursor)
        except ValueError:
            raise ApiError(
                400, "bad_request", "'limit' must be an integer, 'cursor' from a previous page"
            ) from None
        if not 1 <= limit <= CONVERSATIONS_LIMIT_MAX:
            raise ApiError(400, "bad_request", f"'limit' must be 1-{CONVERSATIONS_LIMIT_MAX}")
        if not (yield store.has_user(user)):
            raise ApiError(404, "no_such_user", f"no user {user!r} is known")
        page, more = yield store.conversation_page(user, start, limit)
        return {
            "user": user,
            "conversations": [wire.conversation_dict(c) for c in page],
            "cursor": conv.next_page(start, limit, more),
        }

    @defer.inlineCallbacks
    def recall(self, room, data):
        """Recall message ``seq`` of *room* as its moderator ``by`` (any message, any
        time, as a room owner may): the text is removed, members get ``recalled``."""
        self._conversation_store()
        seq = data.get("seq")
        if type(seq) is not int or seq < 1:
            raise ApiError(400, "bad_request", "'seq' must be a positive integer")
        by = self._user_field(data, "by", SYSTEM_USER)
        name, client_id = self._name(data, by), self._client_id(data)
        try:
            # the operator moderates like the owner of a private room: any message, any time
            appended = yield self.chat.moderation.recall(room, seq, by, name, client_id)
        except errors.ChatError as e:
            raise self._refusal(e) from None
        item = appended.message
        return {
            "room": room,
            "seq": item.seq,
            "target": seq,
            "by": item.sender,
            "ts": item.ts,
            "id": item.client_id,
            "duplicate": appended.duplicate,
        }

    @defer.inlineCallbacks
    def create(self, data):
        """Create a room owned by ``owner`` (default ``system``) with ``members``
        invited: a ``created`` event and one ``invited`` event per member."""
        chat, store = self.chat, self._conversation_store()
        owner = self._operator(data, "owner")
        request = self._request("create", data, kind=data.get("kind") or PUBLIC)
        f, ref, room = request.fields, request.id, request.fields["room"]
        membership = chat.membership
        row = yield membership.room(room)
        if row is not None or room == LOBBY or (yield store.replay(room, None, 0)).last_seq:
            me = yield store.member(room, owner.user)
            error = errors.RoomExists(f"room {room!r} exists already", ref)
            appended = yield self._refused(error, room, me, owner, ref)
        else:
            invitees = [u for u in dict.fromkeys(f["members"] or ()) if u != owner.user]
            for user in invitees:
                if not (yield store.has_user(user)):
                    raise ApiError(404, "no_such_user", f"no user {user!r} is known")
            yield self._known(owner.user, owner.name)
            changes = {"kind": f["kind"], **{k: f[k] or "" for k in ("title", "topic", "avatar")}}
            appended = yield membership._event(
                owner, room, "created", owner.user, ref, changes=changes
            )
            for user in invitees:
                each = f"{ref} {user}" if ref else None
                yield membership._event(owner, room, "invited", user, ref, each, role=MEMBER)
        row = yield membership.room(room)
        item = appended.message
        return {
            "room": room,
            "kind": row.kind if row else PUBLIC,
            "title": row.title if row else "",
            "owner": row.created_by if row else None,
            "members": (yield store.member_count(room)),
            "seq": item.seq,
            "ts": item.ts,
            "id": item.client_id,
            "duplicate": appended.duplicate,
        }

    @defer.inlineCallbacks
    def moderate(self, room, action, data):
        """Add (``invite``), ``kick``, ``ban``, ``unban`` a user or ``set_role`` as the
        moderator ``by`` (default ``system``) with a room owner's rights."""
        chat, store = self.chat, self._conversation_store()
        by = self._operator(data, "by")
        request = self._request(action, data, room=room)
        f, ref, target = request.fields, request.id, request.fields["user"]
        role = data.get("role", MEMBER) if action == "invite" else f.get("role")
        if action == "invite" and role not in (MEMBER, ADMIN):
            raise ApiError(400, "bad_request", "'role' of a new member must be member or admin")
        row = yield self._existing(room)
        kind = PUBLIC if row is None else row.kind
        member = yield store.member(room, target)
        membership = chat.membership
        problem = yield membership._problem(action, kind, OWNER, member, f, by, ref)
        if problem is not None:
            appended = yield self._refused(problem, room, member, by, ref)
        elif action == "set_role":
            appended = yield membership._event(by, room, "role", target, ref, role=role)
            if role == OWNER:  # handed over: the old owner becomes an admin
                for old in (yield self._owners(room)):
                    if old != target:
                        each = f"{ref} {old}" if ref else None
                        yield membership._event(by, room, "role", old, ref, each, role=ADMIN)
        else:
            extra = {"role": role} if action == "invite" else {}
            appended = yield membership._event(by, room, EVENT_OF[action], target, ref, **extra)
        item = appended.message
        return {
            "room": room,
            "user": target,
            "event": (item.data or {}).get("event"),
            "role": (item.data or {}).get("role"),
            "by": item.sender,
            "seq": item.seq,
            "ts": item.ts,
            "id": item.client_id,
            "duplicate": appended.duplicate,
        }

    @defer.inlineCallbacks
    def _owners(self, room):
        """The users with role ``owner`` in *room* (paged through, never loaded whole)."""
        owners, after, more = [], None, True
        while more:
            rows, more = yield self.chat.store.members(room, after, MEMBERS_LIMIT_MAX)
            owners += [r.user for r in rows if r.role == OWNER]
            after = rows[-1].user if rows else None
            more = more and after is not None
        return owners

    @defer.inlineCallbacks
    def members(self, request, room):
        """A page of *room*'s durable members (ascending by user id) and its settings."""
        store = self._conversation_store()
        args = request.args
        cursor = args[b"cursor"][0].decode("utf-8", "replace") if b"cursor" in args else None
        if cursor is not None:
            self._user(cursor)
        try:
            limit = int(args[b"limit"][0]) if b"limit" in args else MEMBERS_LIMIT_DEFAULT
        except ValueError:
            raise ApiError(400, "bad_request", "'limit' must be an integer") from None
        if not 1 <= limit <= MEMBERS_LIMIT_MAX:
            raise ApiError(400, "bad_request", f"'limit' must be 1-{MEMBERS_LIMIT_MAX}")
        row = yield self._existing(room)
        rows, more = yield store.members(room, cursor, limit)
        online = set((yield defer.maybeDeferred(self.chat.directory.members, room)))
        return {
            "room": room,
            "kind": row.kind if row else PUBLIC,
            "title": row.title if row else "",
            "topic": row.topic if row else "",
            "avatar": row.avatar if row else "",
            "created_by": row.created_by if row else None,
            "count": (yield store.member_count(room)),
            "members": [{"user": r.user, "role": r.role, "online": r.user in online} for r in rows],
            "cursor": rows[-1].user if more and rows else None,
        }

    def stats(self) -> dict:
        """Everything the admin page shows: live state, counters, recent errors."""
        stats = self.chat.stats
        snap = self.chat.snapshot()
        return {
            "now": self.chat.now_ms(),
            "uptime": round(self.clock.seconds() - self.started, 3),
            "connections": snap["connections"],
            "users": snap["users"],
            "rooms": snap["rooms"],
            "counters": {
                "connections_opened": dict(stats.connections_opened),
                "frames_in": dict(stats.frames_in),
                "messages_stored": stats.messages_stored,
                "duplicates": stats.duplicates,
                "deliveries": stats.deliveries,
                "delivery_bytes": stats.delivery_bytes,
                "errors": dict(stats.errors),
                "closes": {str(k): v for k, v in stats.closes.items()},
            },
            "recent_errors": [
                {"ts": ts, "code": code, "message": message}
                for ts, code, message in stats.recent_errors
            ],
            "broker_healthy": bool(self.chat.broker.healthy),
        }

    # moderation (chatd.moderation): sanctions, the queue, the audit log

    def _moderation_store(self):
        store = self.chat.moderation.store
        if store is None:
            raise ApiError(503, "unavailable", "this history store keeps no moderation data")
        return store

    @staticmethod
    def _id(value: str) -> int:
        if not value.isdigit() or len(value) > 18:
            raise ApiError(404, "not_found", "no such queue entry")
        return int(value)

    @staticmethod
    def _page_args(request) -> tuple:
        """``before`` and ``limit`` of a moderation page (newest first)."""
        args = request.args
        try:
            before = int(args[b"before"][0]) if b"before" in args else None
            limit = int(args[b"limit"][0]) if b"limit" in args else 50
        except ValueError:
            raise ApiError(400, "bad_request", "'before' and 'limit' must be integers") from None
        if not 1 <= limit <= modrules.PAGE_MAX:
            raise ApiError(400, "bad_request", f"'limit' must be 1-{modrules.PAGE_MAX}")
        return before, limit

    @defer.inlineCallbacks
    def mute(self, user, action, data):
        """Mute *user* for ``seconds`` in ``room`` (absent: everywhere), or unmute."""
        self._moderation_store()
        request = self._request(action + "_user", data, user=user)
        f, ref = request.fields, request.id
        by = self._user_field(data, "by", SYSTEM_USER)
        chat, room, until = self.chat, f["room"], 0
        if room is not None:
            yield self._existing(room)
        if action == "mute":
            until = modrules.until_of(f["seconds"], chat.now_ms())
        try:
            until = yield chat.moderation.mute(_Operator(by), user, until, room, ref)
        except errors.ChatError as e:
            raise self._refusal(e) from None
        return {"user": user, "room": room, "muted_until": until}

    @defer.inlineCallbacks
    def ban(self, user, action, data):
        """Ban *user* everywhere for ``seconds`` (absent: for good), or lift the ban."""
        self._moderation_store()
        f = self._request(action + "_user", data, user=user).fields
        by = self._user_field(data, "by", SYSTEM_USER)
        until = 0
        if action == "ban":
            seconds = f["seconds"]
            now = self.chat.now_ms()
            until = modrules.FOREVER if seconds is None else modrules.until_of(seconds, now)
        yield self.chat.moderation.sanction(by, modrules.BAN, user, until)
        return {"user": user, "banned_until": until}

    @defer.inlineCallbacks
    def sanctions(self, user):
        """*user*'s sanctions in force: ``[{kind, scope, until}]``."""
        found = yield self._moderation_store().sanctions(user)
        now = self.chat.now_ms()
        kept = sorted(modrules.prune(found, now).items())
        return {
            "user": user,
            "sanctions": [{"kind": k, "scope": s, "until": u} for (k, s), u in kept],
        }

    @defer.inlineCallbacks
    def queue(self, request):
        state = request.args.get(b"state", [b"open"])[0].decode("ascii", "replace")
        if state not in (*modrules.REPORT_STATES, "all"):
            raise ApiError(400, "bad_request", "'state' is open, closed or all")
        before, limit = self._page_args(request)
        store = self._moderation_store()
        entries = yield store.reports(None if state == "all" else state, before, limit)
        more = len(entries) == limit
        return {"entries": entries, "before": entries[-1]["id"] if more else None}

    @defer.inlineCallbacks
    def queue_entry(self, id_):
        entry = yield self._moderation_store().report(id_)
        if entry is None:
            raise ApiError(404, "not_found", "no such queue entry")
        return entry

    @defer.inlineCallbacks
    def act(self, id_, data):
        """Take ``action`` on open queue entry *id_* (see chatd.modrules.ACTIONS)."""
        store = self._moderation_store()
        problem = modrules.check_action(data)
        if problem is not None:
            raise ApiError(400, "bad_request", problem)
        by = self._user_field(data, "by", SYSTEM_USER)
        entry = yield self.chat.moderation.act(id_, data, by)
        if entry is None:
            if (yield store.report(id_)) is None:
                raise ApiError(404, "not_found", "no such queue entry")
            raise ApiError(409, "closed", "this queue entry was closed already")
        return entry

    @defer.inlineCallbacks
    def audit(self, request):
        before, limit = self._page_args(request)
        entries = yield self._moderation_store().audit_log(before, limit)
        more = len(entries) == limit
        return {"entries": entries, "before": entries[-1]["id"] if more else None}


class _Endpoint(Resource):
    """The leaf for one ``/api/...`` path (handled by its :class:`ApiResource`)."""

    isLeaf = True

    def __init__(self, api: ApiResource, parts):
        super().__init__()
        self.api = api
        self.parts = parts

    def render(self, request):
        return self.api.handle(request, self.parts)
