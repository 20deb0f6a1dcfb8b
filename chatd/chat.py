"""The chat logic (the tutorial's ``Chat`` component, grown up).

:class:`Chat` receives what connections say and decides who gets what. It
talks to the world only through three seams:

* connections (:class:`chatd.interfaces.IChatClient`): ``send(payload)``,
  ``close(code, reason)``; :meth:`Chat.open` makes each one's
  :class:`chatd.session.Session` (:class:`chatd.interfaces.ISession`), the one
  object that holds the connection's chat state;
* the fan-out (:class:`chatd.interfaces.IFanout`, :class:`chatd.fanout.Fanout` in a server):
  sends one pre-encoded frame to many connections;
* the history store (:class:`chatd.store.IHistoryStore`), read for replay and
  history, and the message log (:class:`chatd.interfaces.IMessageLog`) that
  commits and publishes what is posted;
* the broker (:class:`chatd.cluster.IBroker`) and the directory
  (:class:`chatd.cluster.presence.IDirectory`).

It keeps no socket, reads the time from an injected clock and leaves rooms and
presence bookkeeping to :class:`chatd.hub.Hub`.
"""

from __future__ import annotations

import secrets
from collections import Counter

from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger

from chatd import errors, wire
from chatd.anonymous import AnonymousNames
from chatd.cluster.presence import CLAIMED, SUPERSEDED, TAKEN
from chatd.contentcheck import ContentChecker
from chatd.fanout import SLOW_CONSUMER
from chatd.hub import LOBBY, Hub
from chatd.inbox import Inbox
from chatd.limits import RateLimiter
from chatd.membership import Membership
from chatd.moderation import Moderation
from chatd.push import Push
from chatd.receipts import RECEIPTS_BATCH, ReceiptBatcher
from chatd.replay import Replayer
from chatd.session import CLOSED, LIVE, REFUSED, SendOrder, Session
from chatd.settings import Settings
from chatd.stats import Stats
from chatd.store import StoreUnavailable, dm_channel, dm_users
from chatd.wordfilter import WordFilter

RELAY = "relay"
V1 = wire.PROTOCOL
#: close code for sustained flooding (1008, policy violation)
FLOOD = 1008
#: close code when the cluster cannot confirm an anonymous name (1013, try again later)
TRY_AGAIN_LATER = 1013
#: frames held per connection while its name claim is pending; more close it with 1008
HOLD_MAX = 64
#: seconds before each new ask for an anonymous name the cluster said another node
#: holds (its holder may be closing there): about half a second in all
CLAIM_RETRIES = (0.05, 0.1, 0.15, 0.2)


class Chat:
    """Routes requests of chatd.v1 and relay connections."""

    log = Logger()

    def __init__(
        self,
        store,
        fanout,
        settings: Settings,
        clock,
        *,
        broker,
        directory,
        messages,
        stats: Stats,
        server: str = "chatd",
        anonymous_prefix: str = "",
    ):
        self.broker = broker
        #: commits and publishes room messages and DMs (chatd.interfaces.IMessageLog)
        self.messages = messages
        #: presence and online users, of this process or of the cluster
        #: (chatd.cluster.presence.IDirectory)
        self.directory = directory
        #: counters shared with the fan-out (deliveries, closes) and read by /metrics
        self.stats = stats
        self.hub = Hub()
        #: join replays and history reads: paged, paced by each client (chatd.replay)
        self.replayer = Replayer(self)
        #: session id -> open session (relay and chatd.v1)
        self.sessions: dict[str, Session] = {}
        self.store = store
        self.fanout = fanout
        self.settings = settings
        self.clock = clock
        self.server = server
        #: anonymous sessions (relay guests included): live ones by display name, and
        #: released ones their resume secret may still take back (chatd.anonymous)
        self.names = AnonymousNames()
        #: the sessions whose name the cluster has not yet confirmed (see open; their
        #: held frames are the sessions' own)
        self._opening: dict[Session, None] = {}
        #: anonymous user ids are this prefix + the name; "~" while tokens are
        #: accepted, so no anonymous name can pass for a token's user
        self.anonymous_prefix = anonymous_prefix
        s = self.settings
        self.limiter = RateLimiter(
            s.rate_limit, s.rate_burst, s.user_rate_limit, s.user_rate_burst, s.flood_strikes
        )
        #: durable rooms (chatd.membership) and the inbox (chatd.inbox) of token users
        self.membership = Membership(self)
        self.inbox = Inbox(self)
        #: offline push: push_subscribe, and (once configured) an observer (chatd.push)
        self.push = Push(self)
        #: mutes, global bans, reports, the queue, the audit log (chatd.moderation)
        self.moderation = Moderation(self)
        #: the operator's forbidden words (--word-list), masked or refused first of all
        self.words = WordFilter(settings)
        #: WeChat msgSecCheck of WeChat users' text before it is stored (once configured)
        self.content = ContentChecker(settings, clock)
        self.content.chat = self  # media verdicts recall and flag (chatd.contentcheck)
        #: request type -> handler ``_on_<type>`` of this chat, its membership, its inbox
        #: or its push
        self._handlers = {kind: self._handler(kind) for kind in wire.SCHEMAS}
        #: the clients of this node's sessions that take small rooms' receipts in
        #: batches (``receipts_batch``), and the rooms' open windows (chatd.receipts)
        self.batching: set = set()
        self.receipts = ReceiptBatcher(clock, self._receipts_due)
        #: callables ``observer(event, **fields)`` told about ``connect``/``disconnect``
        #: (session), ``online``/``offline`` (user, mode: first/last connection of a user),
        #: ``error`` (session, code), committed ``message``/``dm`` (message, to) and
        #: ``push`` (user, message, reason, preview: chatd.push decided to notify user)
        self.observers: list = []
        #: the uploads (chatd.media.web.Media) messages may attach, when they are on
        #: (set by Media.attach); None: ``attachments`` are refused
        self.media = None
        #: store writes begun and not yet finished, and who waits for none (drain)
        self._in_flight = 0
        self._drained: list = []
        broker.attach(self)
        directory.attach(self)

    def _handler(self, kind: str):
        for part in (self, self.membership, self.inbox, self.push, self.moderation):
            handler = getattr(part, "_on_" + kind, None)
            if handler is not None:
                return handler
        raise TypeError(f"no handler for request type {kind!r}")

    def _emit(self, event: str, **fields) -> None:
        for observer in self.observers:
            try:
                observer(event, **fields)
            except Exception:
                self.log.failure("chat observer failed on {event}", event=event)

    def _track(self, d):
        """Count *d* (a post on its way to the store) as in flight until it fires."""
        self._in_flight += 1
        return d.addBoth(self._untrack)

    def _untrack(self, result):
        self._in_flight -= 1
        if not self._in_flight:
            waiters, self._drained = self._drained, []
            for waiter in waiters:
                waiter.callback(None)
        return result

    def drain(self):
        """Fires once every post already begun has been stored or refused: shutdown
        waits for it before it closes the store (a message whose room was still being
        looked up is not refused for a store that stopped meanwhile)."""
        if not self._in_flight:
            return succeed(None)
        d = Deferred()
        self._drained.append(d)
        return d

    def now_ms(self) -> int:
        """Server time in milliseconds."""
        return int(self.clock.seconds() * 1000)

    def urls(self):
        """How the frames made now show attachments (:data:`chatd.wire.Sign`: URLs
        signed now); None without uploads (attachments are shown without URLs)."""
        media = self.media
        return None if media is None else media.urls()

    def may_read(self, identity, channel: str):
        """Fires with True when *identity* (a token's) may read *channel*: a DM of
        its user, a room its token allows that is public or has it as a member."""
        users = dm_users(channel)
        if users is not None:
            return succeed(identity.user in users)
        if not identity.may_join(channel):
            return succeed(False)
        return self.membership.may_read(identity.user, channel)

    # connection lifecycle

    def _guest_name(self) -> str:
        while True:
            name = wire.GUEST_PREFIX + secrets.token_hex(3)
            if name not in self.names:
                return name

    def open(
        self,
        client,
        mode: str,
        requested_name: str | None,
        identity=None,
        resume=None,
        features=None,
    ):
        """A connection (*client*, :class:`chatd.interfaces.IChatClient`) finished its
        handshake in *mode*: returns its :class:`chatd.session.Session`, which the
        connection hands to every later call (:meth:`relay`, :meth:`receive`, :meth:`close`).

        A connection with a verified token (*identity*) is that user; a user may
        have several connections. Anonymous relay connections join the lobby
        under a guest name. Anonymous chatd.v1 connections get the name they
        asked for (or a guest name) and a ``welcome``; a bad name, or one held
        by a live connection that did not give its ``resume`` secret, gets an
        error and a close (the session is ``REFUSED``). *features* are the known
        features the client named in ``?features=`` (:func:`chatd.receipts.parse_features`;
        None: it named none): ``welcome`` lists those this server grants.

        When the directory has to confirm the name cluster-wide, or a token user
        is being recorded as known (:meth:`chatd.membership.Membership.record`),
        the connection gets its ``welcome`` only once both are done: until then
        it is not registered (it receives nothing addressed to its user) and its
        frames are held, not executed. So once a client has its ``welcome``, a
        request naming its user (``dm``, ``invite``, ``create {members}``)
        finds the user on every node. A name held on another node is asked for
        again for about half a second (:data:`CLAIM_RETRIES`: a client that
        dropped there and reconnected here), then the connection gets
        ``name_taken`` and a close and the held frames are dropped.
        """
        self.stats.connections_opened[mode] += 1
        now = self.clock.seconds()
        session = Session(secrets.token_hex(8), mode, client, identity, now)
        if features is not None:
            # receipts come in batches only while the window is on (0: today's receipts)
            off = () if self.settings.receipt_window else (RECEIPTS_BATCH,)
            session.features = features.difference(off)
        anonymous = None
        if identity is not None:
            session.user, session.name = identity.user, identity.name
        elif mode == V1 and requested_name:
            if not wire.valid_name(requested_name):
                self._refuse(session, errors.BadName("names are 1-32 letters, digits or _ - ."))
                return session
            # in cluster mode a secret this node does not know may be another node's
            # session's: the directory's claim compares the epochs (chatd.anonymous)
            adopt = getattr(self.directory, "cluster_wide", False)
            anonymous = self.names.claim(requested_name, resume, now, adopt=adopt)
            if anonymous is None:
                self._refuse(session, errors.NameTaken(f"the name {requested_name!r} is in use"))
                return session
        else:
            anonymous = self.names.claim(self._guest_name(), None, now, resumable=False)
        if anonymous is not None:
            session.anonymous = anonymous
            session.name = anonymous.name
            session.user = self.anonymous_prefix + anonymous.name
        session.bucket, session.strikes = self.limiter.connection(now)
        self.limiter.add_user(session.user, now)
        self.sessions[session.id] = session
        if mode == RELAY:
            session.state = LIVE
            if self.hub.connect_relay(session):
                self.directory.joined(LOBBY, session.user, session.id)
            self._emit("connect", session=session)
            self._emit("online", user=session.user, mode=RELAY)
            return session
        claim = self._ask_name(session)
        # a token user is recorded as known (a DM, invite or create naming it finds it)
        recorded = self.membership.record(session)
        if claim is None and recorded is None:
            self._welcome(session)
            self._admit(session)
            return session
        # welcome waits for the claim and the record: once a client has its welcome,
        # every request naming its user succeeds, on any node
        session.held = []
        self._opening[session] = None
        if claim is None:
            claim = succeed(CLAIMED)
        if recorded is not None:
            claim.addBoth(lambda outcome: recorded.addCallback(lambda _: outcome))
        self._await_claim(session, claim, 0)
        return session

    def _await_claim(self, session, claim, attempt: int) -> None:
        claim.addCallbacks(self._claimed, self._claim_failed, (session, attempt), None, (session,))

    def _reclaim(self, session, attempt: int) -> None:
        """Ask the cluster for *session*'s name again (it was held on another node)."""
        if session.held is None or self.sessions.get(session.id) is not session:
            return  # closed meanwhile
        claim = self._ask_name(session)
        self._await_claim(session, claim if claim is not None else succeed(CLAIMED), attempt)

    def _ask_name(self, session):
        """The directory's claim of *session*'s name (None: this node alone decides)."""
        anonymous = session.anonymous
        return self.directory.connected(session, anonymous.epoch if anonymous else None)

    def _welcome(self, session) -> None:
        s = self.settings
        anonymous = session.anonymous
        session.send(
            wire.frame(
                "welcome",
                user=session.user,
                name=session.name,
                session=session.id,
                protocol=V1,
                server=self.server,
                max_text_length=s.max_text_length,
                max_message_size=s.max_message_size,
                ping_interval=s.ping_interval,
                max_rooms=s.max_rooms,
                authenticated=session.identity is not None,
                **({} if anonymous is None else {"resume": anonymous.secret}),
                # a messenger user's client shows "recall" only inside the window
                **({} if session.identity is None else {"recall_window": s.recall_window}),
                # what the client asked for in ?features= and gets (docs/protocol.md)
                **({} if session.features is None else {"features": sorted(session.features)}),
            )
        )

    def _admit(self, session) -> None:
        """Register a chatd.v1 session: from now on it receives its user's DMs (and a
        token user's connection is subscribed to the user's rooms)."""
        session.state = LIVE
        self.hub.connect(session)
        if session.features and RECEIPTS_BATCH in session.features:
            self.batching.add(session.client)
        self._emit("connect", session=session)
        if len(self.hub.connections.get(session.user, ())) == 1:
            self._emit("online", user=session.user, mode=V1)
        if session.identity is not None:
            self.membership.admitted(session)
            self.moderation.admitted(session)

    def _unhold(self, session):
        """End *session*'s wait for its name claim; returns the frames it held (None:
        it was not waiting, e.g. closed meanwhile)."""
        held, session.held = session.held, None
        self._opening.pop(session, None)
        return held

    def _claimed(self, result, session, attempt: int = 0) -> None:
        """The cluster answered a session's name claim (see open). A name held on
        another node is asked for again a few times (:data:`CLAIM_RETRIES`): its
        holder there may be closing (a client that dropped and reconnected here)."""
        if session.held is None or self.sessions.get(session.id) is not session:
            self._unhold(session)
            return  # closed meanwhile
        if result == TAKEN and attempt < len(CLAIM_RETRIES):
            self.clock.callLater(CLAIM_RETRIES[attempt], self._reclaim, session, attempt + 1)
            return
        held = self._unhold(session)
        anonymous = session.anonymous
        if result == TAKEN:
            # (its session stays resumable here: the epoch check of the next claim
            # tells whether the other node's holder came in between)
            err = errors.NameTaken(f"the name {session.user!r} is in use on another node")
            return self.send_error(session, err)
        if result == SUPERSEDED and anonymous is not None:
            anonymous.restart()  # another node gave the name to someone else meanwhile
        self._welcome(session)
        self._admit(session)
        for payload, is_binary in held:
            if not self._live(session):
                break
            self.receive(session, payload, is_binary)

    def _claim_failed(self, failure, session) -> None:
        """The cluster could not be asked (Redis down): a token user is admitted, an
        anonymous name is refused (``unavailable``, close 1013) rather than risk
        two holders of one name."""
        self.log.warn("name claim for {user} failed: {e}", user=session.user, e=failure.value)
        if session.anonymous is None:
            return self._claimed(CLAIMED, session)
        if self._unhold(session) is None or not self._live(session):
            return
        self.send_error(
            session, errors.Unavailable("the name cannot be checked now; reconnect later")
        )
        session.close(TRY_AGAIN_LATER, "try again later")

    def opening_users(self) -> set[str]:
        """Users with a session here whose name claim the cluster has not answered."""
        return {session.user for session in self._opening}

    def holds(self, user: str) -> bool:
        """True while *user* has a connection on this node (confirmed or not yet)."""
        return self.hub.is_online(user) or user in self.opening_users()

    def _live(self, session) -> bool:
        """True while *session* is open and registered: its requests may still take effect."""
        return session.active and self.sessions.get(session.id) is session

    def _refuse(self, session, error: errors.ChatError) -> None:
        session.state = REFUSED
        self.send_error(session, error)

    def close(self, session) -> None:
        """A connection went away: it leaves every room, its name is free again."""
        state = session.state
        if state is REFUSED or state is CLOSED:
            return
        session.state = CLOSED
        anonymous = session.anonymous
        if anonymous is not None:
            session.anonymous = None
            self.names.release(anonymous, self.clock.seconds())
        self._unhold(session)
        self.limiter.remove_user(session.user)
        self.sessions.pop(session.id, None)
        self.batching.discard(session.client)
        self.replayer.cancel(session)
        for room in self.hub.disconnect(session):
            self.directory.left(room, session.user, session.id)
            self.membership.forget(room)
        self.directory.disconnected(session, session.user)
        # a session whose name the cluster never confirmed was never announced
        if state is LIVE:
            self._emit("disconnect", session=session)
            if not self.hub.is_online(session.user):
                self.moderation.forget(session.user)
                self._emit("offline", user=session.user, mode=session.mode)

    # incoming frames

    def relay(self, session, payload: bytes, is_binary: bool) -> None:
        """A relay client's frame: verbatim to every other relay client.

        Text that fits the chatd.v1 rules also becomes a lobby message.
        """
        self.stats.frames_in[RELAY] += 1
        if self._limit(session) != "ok":
            return  # relay clients get no error frames: the tutorial would show them as chat
        self.broker.publish("relay", payload, is_binary, session.id)
        if is_binary:
            return
        text = payload.decode("utf-8")
        if 0 < len(text) <= self.settings.max_text_length:
            d = self.post(LOBBY, session.user, session.name, text, from_relay=True)
            d.addErrback(self._store_failed, "relay bridge")

    def receive(self, session, payload: bytes, is_binary: bool) -> None:
        """A chatd.v1 frame: parse, dispatch, and answer errors with ``error``."""
        if session.state is REFUSED or session.state is CLOSED:
            return
        held = session.held
        if held is not None:  # the name is not confirmed yet: execute it after (see open)
            if len(held) >= HOLD_MAX:
                session.close(FLOOD, "flooding: too many frames before the name was confirmed")
            else:
                held.append((payload, is_binary))
            return
        self.stats.frames_in[V1] += 1
        verdict = self._limit(session)
        if verdict == "abuse":
            return
        try:
            if is_binary:
                raise errors.BadRequest("chatd.v1 frames are JSON text frames")
            request = wire.parse(payload, self.settings.max_text_length)
            if verdict == "limited":
                self._hold_back(session, request)
                raise errors.RateLimited(
                    "too many frames: this one was dropped, slow down and resend it", request.id
                )
            if session.order is not None:
                self._in_order(session, request)
            request.received = self.clock.seconds()
            if self.membership.waits(session, request):
                return  # about a room this connection is being checked into: run after
            self._handlers[request.type](session, request, request.fields)
        except errors.ChatError as e:
            self.send_error(session, e)

    def _hold_back(self, session, request) -> None:
        """A ``send``/``dm`` with an id was refused (rate_limited): the connection's
        later messages to its conversation wait for it (:class:`chatd.session.SendOrder`)."""
        key = _conversation(request)
        if key is not None:
            if session.order is None:
                session.order = SendOrder()
            session.order.refused(key, request.id, self.clock.seconds())

    def _in_order(self, session, request) -> None:
        """Refuse (rate_limited) a ``send``/``dm`` to a conversation held back by an
        earlier refused message of the connection that has not come back yet."""
        key = _conversation(request)
        if key is None:
            return
        order = session.order
        admitted = order.admits(key, request.id, self.clock.seconds())
        if not order:
            session.order = None
        if not admitted:
            raise errors.RateLimited(
                "an earlier message to this conversation was dropped: resend it first, "
                "then this one",
                request.id,
            )

    def dispatch(self, session, request) -> None:
        """Run a parsed *request* of *session* that had to wait; refusals as ``error``."""
        try:
            self._handlers[request.type](session, request, request.fields)
        except errors.ChatError as e:
            self.send_error(session, e)

    def _limit(self, session) -> str:
        """Charge one frame to the connection's and its user's rate limits.

        Sustained flooding (``flood_strikes`` refused frames within 10 s)
        closes the connection with 1008 (policy violation).
        """
        verdict = self.limiter.check(
            session.bucket, session.strikes, session.user, self.clock.seconds()
        )
        if verdict == "limited":
            self.stats.rate_limited += 1
        elif verdict == "abuse":
            self.stats.rate_limited += 1
            self.log.warn(
                "closing {user} ({session}): flooding", user=session.user, session=session.id
            )
            session.close(FLOOD, "flooding: too many frames over the rate limit")
        return verdict

    def send_error(self, session, error: errors.ChatError) -> None:
        """Send ``error`` to *session*, and close it when the error says so."""
        self.stats.error(self.now_ms(), error.code, error.message)
        self._emit("error", session=session, code=error.code)
        session.send(wire.error_frame(error))
        if error.close_code is not None:
            session.close(error.close_code, error.code)

    def _store_failed(self, failure, what, session=None, ref=None):
        if session is not None and failure.check(errors.ChatError):
            if self._live(session):  # a refusal found after a store read
                self.send_error(session, failure.value)
            return None
        self.log.failure("history store failed ({what})", failure, what=what)
        if session is not None:
            reason = "the message could not be stored; resend it with the same id"
            if not failure.check(StoreUnavailable):
                reason = "internal error while storing; resend it with the same id"
            self.send_error(session, errors.Unavailable(reason, ref))

    def apply_limits(self, settings: Settings) -> None:
        """Take new limits (a reload): rooms, rate limits, flood strikes, queue bytes,
        idle timeout. Open connections get the new rates at once."""
        s = self.settings
        for name in (
            "max_rooms",
            "rate_limit",
            "rate_burst",
            "user_rate_limit",
            "user_rate_burst",
            "flood_strikes",
            "max_queue_bytes",
            "idle_timeout",
        ):
            setattr(s, name, getattr(settings, name))
        self.limiter.configure(
            s.rate_limit, s.rate_burst, s.user_rate_limit, s.user_rate_burst, s.flood_strikes
        )
        now = self.clock.seconds()
        for session in self.sessions.values():
            session.bucket, session.strikes = self.limiter.connection(now)

    # administration (the HTTP API and the admin page)

    def disconnect_user(self, user: str, code: int = 4403, reason: str = "disconnected") -> int:
        """Close every connection of *user* with *code*; returns how many were closed."""
        sessions = [s for s in self.sessions.values() if s.user == user]
        for session in sessions:
            session.close(code, reason)
        return len(sessions)

    def snapshot(self) -> dict:
        """Live state for operators: connections by mode, rooms with their members."""
        modes = Counter(session.mode for session in self.sessions.values())
        return {
            "connections": {RELAY: modes[RELAY], V1: modes[V1]},
            "users": len(self.hub.connections),
            "rooms": {name: self.hub.members(name) for name in sorted(self.hub.rooms)},
        }

    # delivery: called by the broker on every node that should see an event

    def deliver_message(self, message, origin, from_relay=False) -> None:
        """Fan a stored room message out to this node's members of its room.

        A lobby message also reaches relay clients as bare text, unless it came
        from a relay client (they had the frame verbatim already).
        """
        room = message.channel
        exclude = self.sessions.get(origin) if origin else None
        if message.kind == "event":  # fanned out, then the user's connections follow it
            return self.membership.applied(message, exclude)
        # message_frame for a message, else its item's frame; attachments' URLs are
        # signed once for everyone it goes to (an item without data has none)
        payload = wire.item_frame(message, None if message.data is None else self.urls())
        self.fan_out(room, message.seq, payload, exclude)
        if message.kind != "message":
            return self._recalled(message)
        if not from_relay and room == LOBBY and self.hub.relays:
            self.fanout.broadcast(self.hub.relays, message.text.encode("utf-8"), False, None)

    def fan_out(self, room, seq, payload, exclude) -> None:
        """Send a frame of *room* (its item's *seq*, None for presence) to this node's
        live receivers of the room but *exclude*, and buffer it for its joiners."""
        self.fanout.deliver(self.hub.receivers(room), payload, _client(exclude))
        self._buffer(room, seq, payload, exclude)

    def deliver_dm(self, message, to, origin) -> None:
        """Deliver a stored DM to every connection of both users but the sender's own."""
        self._note(to, message)
        self._note(message.sender, message)
        receivers = dict.fromkeys(s.client for s in self.hub.connections_of(to))
        receivers.update(dict.fromkeys(s.client for s in self.hub.connections_of(message.sender)))
        exclude = self.sessions.get(origin) if origin else None
        sign = None if message.data is None else self.urls()
        if message.kind == "message":
            payload = wire.dm_frame(message, to, sign)
        else:
            payload = wire.item_frame(message, sign)
        self.fanout.deliver(receivers, payload, _client(exclude))
        self._recalled(message)

    def _recalled(self, item) -> None:
        """A delivered ``recalled`` item (on every node): the uploads the recalled
        message showed go unless another message shows them (with ``--redis`` every
        node tries, on the shared metadata; the removal is atomic, so once)."""
        if item.kind == "recalled" and self.media is not None:
            self.media.recalled(item.channel, (item.data or {}).get("target"))

    def deliver_presence(self, room, user, event, origin) -> None:
        """Tell this node's members of *room* that *user* joined or left it."""
        exclude = self.sessions.get(origin) if origin else None
        payload = wire.frame("presence", room=room, user=user, event=event)
        self.fanout.deliver(self.hub.receivers(room), payload, _client(exclude))
        self._buffer(room, None, payload, exclude)

    def _buffer(self, room, seq, payload, exclude) -> None:
        """Buffer a frame for the room's joiners whose replay is still being sent;
        one that has more than --max-queue-bytes buffered reads too slowly: drop it."""
        for session in self.hub.buffer(room, seq, payload, exclude, self.settings.max_queue_bytes):
            self.replayer.cancel(session, room)
            session.close(SLOW_CONSUMER, "slow consumer: too far behind its replay")

    def deliver_typing(self, room, user, origin) -> None:
        """Tell this node's live members of *room* that *user* is typing."""
        exclude = self.sessions.get(origin) if origin else None
        payload = wire.frame("typing", room=room, **{"from": user})
        self.fanout.deliver(self.hub.receivers(room), payload, _client(exclude))

    def deliver_user(self, user, payload, origin) -> None:
        """Send one frame to every connection of *user* on this node (but *origin*)."""
        exclude = self.sessions.get(origin) if origin else None
        receivers = [s.client for s in self.hub.connections_of(user)]
        self.fanout.deliver(receivers, payload, _client(exclude))

    def deliver_room(self, room, payload, origin) -> None:
        """Send one frame to this node's connections subscribed to *room* (but *origin*)."""
        exclude = self.sessions.get(origin) if origin else None
        self.fanout.deliver(self.hub.receivers(room), payload, _client(exclude))

    def deliver_receipt(self, room, user, seq, origin) -> None:
        """*user*'s read marker in the small room *room* moved to *seq* (published while
        ``--receipt-window`` is on): this node's receivers of the room get
        ``receipt {room, user, seq}`` now (but *origin*, which has its ``read``), except
        those that take receipts in batches: the receipt joins the room's window for
        them (:meth:`_receipts_due` sends it)."""
        receivers, batching = self.hub.receivers(room), self.batching
        window = self.settings.receipt_window
        direct = [c for c in receivers if c not in batching] if batching and window else receivers
        if direct:
            payload = wire.frame("receipt", room=room, user=user, seq=seq)
            exclude = self.sessions.get(origin) if origin else None
            self.fanout.deliver(direct, payload, _client(exclude))
        if len(direct) < len(receivers):
            self.stats.receipts_batched += 1
            self.receipts.add(room, user, seq, window)

    def _receipts_due(self, room, receipts) -> None:
        """*room*'s receipt window ended: one ``receipts_batch`` with its markers to
        each of this node's batching receivers of the room (those subscribed now)."""
        batching = self.batching
        receivers = [c for c in self.hub.receivers(room) if c in batching]
        if receivers:
            listed = [{"user": user, "seq": seq} for user, seq in receipts]
            payload = wire.frame("receipts_batch", room=room, receipts=listed)
            self.fanout.deliver(receivers, payload, None)
            self.stats.receipt_batches += len(receivers)

    def deliver_sanction(self, user, origin) -> None:
        """*user*'s mutes or bans changed (on some node): read them again here."""
        self.moderation.changed(user)

    def deliver_relay(self, payload, is_binary, origin) -> None:
        """Relay a relay client's frame verbatim to this node's other relay clients."""
        exclude = self.sessions.get(origin) if origin else None
        self.fanout.broadcast(self.hub.relays, payload, is_binary, _client(exclude))

    # request handlers: one per client -> server type

    def _check_room(self, session, room, ref) -> None:
        identity = session.identity
        if identity is not None and not identity.may_join(room):
            raise errors.Forbidden(f"your token does not allow room {room!r}", ref)

    def _on_join(self, session, request, f) -> None:
        room, since = f["room"], f["since"]
        self._check_room(session, room, request.id)
        if self.hub.in_room(session, room):  # answered with joined, never replayed again
            return self.replayer.rejoin(session, room, since, request.id)
        if self.hub.room_count(session) >= self.settings.max_rooms:
            raise errors.TooManyRooms(
                f"a connection may be in at most {self.settings.max_rooms} rooms", request.id
            )
        # pending (buffered, not announced) until the membership check lets it in
        _already, new_user = self.hub.join(session, room)
        self.membership.join(session, room, since, new_user, request.id)

    def _on_leave(self, session, request, f) -> None:
        room = f["room"]
        if session.identity is not None:  # ends the membership, on every device
            return self.membership.leave(session, room, request.id)
        if not self.hub.in_room(session, room):
            raise errors.NotInRoom(f"not in room {room!r}", request.id)
        self.unsubscribe(session, room)

    def unsubscribe(self, session, room) -> None:
        """*session* stops receiving *room*: it gets ``left {room}``; presence follows."""
        self.replayer.cancel(session, room)
        user_left = self.hub.leave(session, room)
        session.send(wire.frame("left", room=room))
        if user_left:
            self.directory.left(room, session.user, session.id)
            self.membership.forget(room)

    # posting: the one path every room message and DM takes (clients and the HTTP API)

    def _note(self, user: str, message) -> None:
        """*message* was stored by or for *user*: if that is an anonymous session
        with a confirmed connection here, the message is the session's."""
        p = self.anonymous_prefix
        if user.startswith(p) and self.hub.connections.get(user):
            anonymous = self.names.live(user[len(p) :])
            if anonymous is not None:
                anonymous.record(message.channel, message.seq)

    def _committed(self, appended, kind, *args):
        if appended.duplicate:
            self.stats.duplicates += 1
        else:
            self.stats.messages_stored += 1
            self._note(appended.message.sender, appended.message)
            message = appended.message
            if self.observers and message.kind == "message":
                to = args[0] if kind == "dm" else None
                # a private room's message events carry no text (chatd.webhooks)
                private = kind == "message" and self.membership.is_private(message.channel)
                self._emit(kind, message=message, to=to, **({"private": True} if private else {}))
        return appended

    def post(
        self,
        room,
        sender,
        name,
        text,
        client_id=None,
        origin=None,
        from_relay=False,
        data=None,
        kind="message",
    ):
        """Store a room message (or another timeline item of *kind*, e.g. an
        ``event``) and, once committed, fan it out everywhere.

        Fires with :class:`chatd.store.Appended` (``duplicate`` for a resent
        ``client_id``: then nothing is stored or delivered again). *data* is the
        item's stored data (``mentions``, ``reply_to``; see :class:`chatd.store.Message`).
        """
        fields = (room, sender, name, client_id, text, self.now_ms())
        if data is not None:
            fields += (kind, data)
        if kind == "message" and room not in self.membership.kinds:
            # a room this node never looked up (an HTTP API post): learn its kind
            # first, so a private room's message is never announced with its text
            d = self.membership.room(room)
            d.addCallback(lambda _: self.messages.append("message", fields, (origin, from_relay)))
        else:
            d = self.messages.append("message", fields, (origin, from_relay))
        return self._track(d.addCallback(self._committed, "message", origin, from_relay))

    def post_dm(self, sender, name, to, text, client_id=None, origin=None, data=None):
        """Store a direct message and, once committed, deliver it to both users' connections."""
        fields = (dm_channel(sender, to), sender, name, client_id, text, self.now_ms())
        if data is not None:
            fields += ("message", data)
        d = self.messages.append("dm", fields, (to, origin))
        return self._track(d.addCallback(self._committed, "dm", to, origin))

    def _ack(self, appended, session, started, text, room=None, to=None):
        message = appended.message
        if appended.duplicate and not self._resend_of(session, message, room, text):
            # the id is an earlier anonymous session's under this name: say nothing
            # about its message, and do not pretend this one was stored
            return self.send_error(
                session,
                errors.IdReused(
                    "this id was used before under this name; send with a new id",
                    message.client_id,
                ),
            )
        self.stats.ack_latency(self.clock.seconds() - started)
        where = {"to": to} if room is None else {"room": message.channel}
        session.send(wire.ack_frame(message, appended.duplicate, **where))

    def _resend_of(self, session, original, room, text) -> bool:
        """May a request reusing *original*'s id be answered with its ack?

        A token user's ids are its own, an anonymous session's are the session's.
        A later anonymous session of the same name only has an exact repeat of a
        room message acknowledged (same room, same text): it learns nothing that
        room history does not show.
        """
        anonymous = session.anonymous
        if anonymous is None or anonymous.owns(original.channel, original.seq):
            return True
        return room is not None and room == original.channel and original.text == text

    @staticmethod
    def _no_anonymous_attachments(session, request) -> None:
        """Uploads need a token: an anonymous ``send``/``dm`` with ``attachments`` is
        refused (``auth_required``) rather than stored without them."""
        raw = request.raw_extras
        if session.identity is None and raw and wire.ATTACHMENTS in raw:
            raise errors.AuthRequired("attachments are for token users", request.id)

    def _on_send(self, session, request, f) -> None:
        room = f["room"]
        self._no_anonymous_attachments(session, request)
        if not self.hub.in_room(session, room):
            raise errors.NotInRoom(f"join {room!r} before sending to it", request.id)
        f["text"] = self.words.apply(f["text"], request.id)  # masked, or refused
        if session.identity is not None:  # mentions, reply_to: checked, in the connection's turn

            def post(data):
                return self.post(
                    room, session.user, session.name, f["text"], request.id, session.id, data=data
                )

            self.inbox.post(session, request, f, post, room=room)
            return
        d = self.post(room, session.user, session.name, f["text"], request.id, session.id)
        d.addCallback(self._ack, session, request.received, f["text"], room=room)
        d.addErrback(self._store_failed, "send", session, request.id)

    def _on_dm(self, session, request, f) -> None:
        to = f["to"]
        self._no_anonymous_attachments(session, request)
        f["text"] = self.words.apply(f["text"], request.id)  # masked, or refused
        online = self.directory.is_online(to)
        offline_ok = self._offline_dm(session, to)
        if offline_ok:  # a token user's DM to a known user is stored for when they are back
            online.addCallback(lambda on: on or self.store.has_user(to))
        online.addCallback(self._dm, session, request, f, offline_ok)
        online.addErrback(self._store_failed, "dm", session, request.id)

    def _offline_dm(self, session, to: str) -> bool:
        """May *session* DM *to* while *to* is offline? Token users may, to token users
        (anonymous senders and recipients keep the online-only rule)."""
        p = self.anonymous_prefix
        return session.identity is not None and not (p and to.startswith(p))

    def _dm(self, reachable, session, request, f, offline_ok=False) -> None:
        if not self._live(session):
            return  # closed (or closing) while the cluster was asked: nothing it sent counts
        to = f["to"]
        if not reachable:
            why = f"no user {to!r}" if offline_ok else f"no user {to!r} is online"
            return self.send_error(session, errors.NoSuchUser(why, request.id))
        if session.identity is not None:  # mentions, reply_to: checked, in the connection's turn

            def post(data):
                return self.post_dm(
                    session.user, session.name, to, f["text"], request.id, session.id, data=data
                )

            self.inbox.post(session, request, f, post, to=to)
            return
        d = self.post_dm(session.user, session.name, to, f["text"], request.id, session.id)
        d.addCallback(self._ack, session, request.received, f["text"], to=to)
        d.addErrback(self._store_failed, "dm", session, request.id)

    def _on_typing(self, session, request, f) -> None:
        room = f["room"]
        if not self.hub.in_room(session, room):
            raise errors.NotInRoom(f"not in room {room!r}", request.id)
        self.broker.publish("typing", room, session.user, session.id)

    def _on_history(self, session, request, f) -> None:
        room = f["room"]
        self._check_room(session, room, request.id)
        limit = f["limit"] or wire.HISTORY_LIMIT_DEFAULT
        token_user = session.identity is not None

        def read():
            # a private room's history is its members' only
            d = self.membership.readable(session, room, request.id)
            d.addCallback(lambda _: self.store.history(room, f["before"], limit))
            return d.addCallback(
                lambda page: self.inbox.decorate(room, page.messages, session).addCallback(
                    lambda parts: (parts, page.more)
                )
            )

        def deliver(result):
            (messages, events, reactions, quotes), more = result
            frame = wire.history_frame(
                room,
                messages,
                more,
                # token users always get the page's events; anonymous ones when it has some
                events=events if token_user or events else None,
                reactions=reactions,
                quotes=quotes,
                me=session.user,
                sign=self.urls(),
            )
            session.send(frame)

        self.replayer.read(session, read, deliver, "history", request.id)

    def _on_dm_history(self, session, request, f) -> None:
        other = f["with"]
        channel = dm_channel(session.user, other)
        limit = f["limit"] or wire.HISTORY_LIMIT_DEFAULT
        # an anonymous session reads only the DMs of that session, never those of
        # an earlier holder of its name
        anonymous = session.anonymous
        floor = None if anonymous is None else anonymous.floor(channel)
        if anonymous is not None and floor is None:
            session.send(wire.dm_history_frame(session.user, other, [], False))
            return

        def read():
            if f["since"] is not None:
                since = f["since"] if floor is None else max(f["since"], floor)
                d = self.store.replay(channel, since, limit)
                return d.addCallback(lambda r: (r.messages, r.truncated))
            d = self.store.history(channel, f["before"], limit)
            return d.addCallback(lambda page: _above(page.messages, page.more, floor))

        def decorated():
            return read().addCallback(
                lambda r: self.inbox.decorate(channel, r[0], session).addCallback(
                    lambda parts: (parts, r[1])
                )
            )

        def deliver(result):
            (messages, _events, reactions, quotes), more = result
            session.send(
                wire.dm_history_frame(
                    session.user,
                    other,
                    messages,
                    more,
                    reactions=reactions,
                    quotes=quotes,
                    sign=self.urls(),
                )
            )

        self.replayer.read(session, decorated, deliver, "dm_history", request.id)

    def _on_ping(self, session, request, f) -> None:
        pong = {"ts": self.now_ms()}
        if request.id is not None:
            pong["id"] = request.id
        session.send(wire.frame("pong", **pong))


def _conversation(request):
    """The conversation a ``send``/``dm`` with an ``id`` goes to (None: another
    request, or no id to be resent by)."""
    kind = request.type
    if request.id is None or (kind != "send" and kind != "dm"):
        return None
    return ("room", request.fields["room"]) if kind == "send" else ("dm", request.fields["to"])


def _client(session):
    """The connection the fan-out writes to for *session* (None for None)."""
    return None if session is None else session.client


def _above(messages, more, floor):
    """A history page without the messages at or below *floor* (None: all kept)."""
    if floor is None:
        return messages, more
    kept = [m for m in messages if m.seq > floor]
    return kept, bool(more and kept and kept[0].seq > floor + 1)
