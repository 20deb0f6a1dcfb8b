"""Offline push: subscriptions (``push_subscribe``) and who is notified of what.

:class:`Push` is a part of :class:`chatd.chat.Chat` (like its membership and
inbox): it holds the handler of the chatd.v1 request ``push_subscribe`` (also
reached through ``POST /api/push/subscriptions``, :mod:`chatd.pushweb`), and,
once :meth:`Push.configure`\\ d, it is a chat observer that looks at every
committed message:

1. who might be notified (:func:`chatd.pushrules.recipients`): a DM's recipient,
   the users a room message @mentions, the users who chose the room (read from the
   store and cached for :data:`WATCHERS_TTL` seconds: a choice made on another node
   counts within that time);
2. for each, after the message was delivered and without holding anything up:
   no live connection anywhere (the directory), a member of the conversation
   that did not mute it (:func:`chatd.pushrules.eligible`);
3. the store's claim (:meth:`chatd.store.IPushStore.claim_push`): at most one
   notification per conversation per ``--push-interval`` (the digest), taking one
   message of the user's one-time quota of ``--push-template`` (WeChat users,
   ``wx:<openid>``, when WeChat push is configured);
4. a ``push`` chat event (the ``push`` webhook, chatd.webhooks, for APNs/FCM
   bridges) and, when a message of the quota was taken, a subscribe message for
   :class:`chatd.wechat.PushSender` (page: the conversation; data: the
   ``--push-fields`` mapping).

At most :data:`DECIDING_MAX` such decisions are in progress at once; messages past
that notify no one (counted in ``skipped``), so a burst never piles up work.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from twisted.internet import defer
from twisted.logger import Logger

from chatd import errors, pushrules, wire
from chatd.store import IPushStore, dm_users
from chatd.wechat import PushJob

#: the user-id prefix of WeChat users (chatd.login): the rest is the openid
WECHAT_PREFIX = "wx:"
#: push decisions (recipient lookups) in progress at once, at most
DECIDING_MAX = 10_000
DEFAULT_FIELDS = "thing1=name,thing2=preview,time3=time"
#: seconds a room's watchers (users who chose it) are cached, and rooms cached at most
WATCHERS_TTL = 5.0
WATCHERS_CACHED = 10_000
DEFAULT_PAGE = "pages/chat/chat"


@dataclass(frozen=True)
class PushConfig:
    """What the options say about WeChat subscribe messages (restart to change)."""

    #: the one-time template notifications use (None: no WeChat push)
    template: str | None = None
    page: str = DEFAULT_PAGE
    fields: tuple = pushrules.parse_fields(DEFAULT_FIELDS)
    #: miniprogram_state: formal, trial or developer
    state: str = "formal"
    utc_offset: float = 8.0


def state_fields(state: pushrules.PushState, refused=()) -> dict:
    """The fields of a ``push_subscriptions`` answer (and of the HTTP answer)."""
    return {
        "templates": [{"id": t, "count": n} for t, n in sorted(state.templates.items())],
        "rooms": list(state.rooms),
        "refused": sorted(refused),
    }


def _never() -> bool:
    return False


class Push:
    """Offline push of one :class:`chatd.chat.Chat` (see the module docstring)."""

    log = Logger()

    def __init__(self, chat):
        self.chat = chat
        self.config = PushConfig()
        #: chatd.wechat.PushSender (None: no WeChat push)
        self.sender = None
        #: whether ``push`` events are wanted now (``--webhook-push on`` with a URL)
        self.events = _never
        self._deciding = 0
        #: room -> (expires, users who chose it), least recently used first
        self._watchers: OrderedDict = OrderedDict()
        #: recipients considered; notifications decided (push events); subscribe
        #: messages handed to the sender; messages past DECIDING_MAX
        self.considered = 0
        self.notified = 0
        self.queued = 0
        self.skipped = 0

    def configure(self, config: PushConfig, sender=None, events=None) -> None:
        """Take the options' configuration: *sender* sends WeChat subscribe messages
        (None: none), *events()* says whether ``push`` events are wanted (None: never).
        From now on committed messages are looked at."""
        self.config, self.sender, self.events = config, sender, events or _never
        if self not in self.chat.observers:
            self.chat.observers.append(self)

    @property
    def store(self):
        store = self.chat.store
        return store if IPushStore.providedBy(store) else None

    @property
    def active(self) -> bool:
        """True when a decision can lead anywhere: WeChat push, or push webhooks on."""
        return (self.sender is not None or self.events()) and self.store is not None

    def templates(self) -> frozenset:
        """The templates a subscription may name (the others are refused)."""
        template = self.config.template if self.sender is not None else None
        return frozenset((template,)) if template else frozenset()

    # subscriptions: the request (and POST /api/push/subscriptions)

    def _on_push_subscribe(self, session, request, f) -> None:
        if session.identity is None:
            raise errors.AuthRequired("push_subscribe is for token users", request.id)
        for room in f["rooms"] or ():
            self.chat._check_room(session, room, request.id)
        d = self.subscribe(session.user, f["templates"] or {}, f["rooms"] or (), f["notify"])

        def answer(fields):
            if self.chat._live(session):
                ref = {} if request.id is None else {"id": request.id}
                session.send(wire.frame("push_subscriptions", **ref, **fields))

        d.addCallback(answer)
        d.addErrback(self.chat._store_failed, "push_subscribe", session, request.id)

    def subscribe(self, user: str, templates: dict, rooms, notify=None):
        """Store *user*'s accepted *templates* (``{id: count}``; those not configured
        are refused) and set *rooms* to *notify* (None: on); fires with the answer's
        fields (:func:`state_fields`)."""
        store = self.store
        if store is None:
            return defer.fail(errors.Unavailable("this store keeps no push subscriptions"))
        known = self.templates()
        accepted = {t: n for t, n in templates.items() if t in known}
        refused = [t for t in templates if t not in known]
        choose = {room: notify is not False for room in rooms}
        for room in choose:  # this node sees the change at once (others within WATCHERS_TTL)
            self._watchers.pop(room, None)
        d = store.push_subscribe(user, accepted, choose, self.chat.now_ms())
        return d.addCallback(state_fields, refused)

    # the observer: committed messages

    def __call__(self, event: str, **fields) -> None:
        if event not in ("message", "dm") or not self.active:
            return
        message = fields["message"]
        private = bool(fields.get("private"))
        if event == "dm":
            return self._consider(pushrules.recipients(message, fields.get("to")), message, private)
        d = self._watchers_of(message.channel)
        d.addCallback(lambda users: pushrules.recipients(message, None, users))
        d.addCallback(self._consider, message, private)
        d.addErrback(self._failed, message)

    def _watchers_of(self, channel):
        """The users who chose *channel*: from the store, then cached for
        :data:`WATCHERS_TTL` seconds (a busy room's messages do not each cost a store
        read); at most :data:`WATCHERS_CACHED` rooms are cached."""
        now = self.chat.clock.seconds()
        cached = self._watchers.get(channel)
        if cached is not None and cached[0] > now:
            self._watchers.move_to_end(channel)
            return defer.succeed(cached[1])

        def keep(users):
            self._watchers[channel] = (now + WATCHERS_TTL, users)
            self._watchers.move_to_end(channel)
            while len(self._watchers) > WATCHERS_CACHED:
                self._watchers.popitem(last=False)
            return users

        return self.store.push_watchers(channel, pushrules.WATCHERS_MAX).addCallback(keep)

    def _consider(self, recipients: dict, message, private: bool) -> None:
        for user, reason in recipients.items():
            if self._deciding >= DECIDING_MAX:
                self.skipped += 1
                continue
            self.considered += 1
            self._deciding += 1
            d = self._decide(user, reason, message, private)
            d.addErrback(self._failed, message)
            d.addBoth(self._decided)

    def _decided(self, _):
        self._deciding -= 1

    def _failed(self, failure, message):
        self.log.warn(
            "push for {channel} #{seq} failed: {e}",
            channel=message.channel,
            seq=message.seq,
            e=failure.getErrorMessage(),
        )

    @defer.inlineCallbacks
    def _decide(self, user, reason, message, private):
        chat, store = self.chat, self.store
        if chat.holds(user):
            return
        online = yield chat.directory.is_online(user)
        if online:
            return
        member = yield store.member(message.channel, user)
        if not pushrules.eligible(False, member):
            return
        template = self.config.template if self._wechat_user(user) else None
        settings = chat.settings
        interval = int(settings.push_interval * 1000)
        claim = yield store.claim_push(user, message.channel, template, chat.now_ms(), interval)
        if not claim.notify:
            return
        self.notified += 1
        preview = pushrules.preview_of(message.text, settings.push_previews == "on", private)
        chat._emit("push", user=user, message=message, reason=reason, preview=preview)
        if claim.quota:
            body = yield self._body(user, template, message, preview)
            self.queued += 1
            self.sender.send(PushJob(user, template, body))

    def _wechat_user(self, user: str) -> bool:
        return self.sender is not None and user.startswith(WECHAT_PREFIX) and len(user) > 3

    @defer.inlineCallbacks
    def _body(self, user, template, message, preview):
        """The ``subscribeMessage.send`` request for *user* about *message*."""
        config = self.config
        place = message.name
        if dm_users(message.channel) is None:
            place = message.channel
            if any(source == "room" for _, source in config.fields):
                room = yield self.chat.store.room(message.channel)
                place = (room.title if room is not None else "") or message.channel
        data = pushrules.template_data(
            config.fields,
            name=message.name,
            preview=preview,
            ts_ms=message.ts,
            room=place,
            utc_offset_hours=config.utc_offset,
        )
        return {
            "touser": user[len(WECHAT_PREFIX) :],
            "template_id": template,
            "page": pushrules.page_of(config.page, message),
            "data": data,
            "miniprogram_state": config.state,
            "lang": "zh_CN",
        }

    # the sender's callbacks (chatd.wechat.PushSender)

    def refused(self, job) -> None:
        """WeChat said 43101: the user has no subscription of that template left."""
        d = self.store.drop_push_quota(job.user, job.template)
        d.addErrback(lambda f: self.log.warn("dropping a push quota failed: {e}", e=f.value))

    def given_up(self, job) -> None:
        """A notification was not sent: its message of the quota is given back."""
        d = self.store.push_subscribe(job.user, {job.template: 1}, {}, self.chat.now_ms())
        d.addErrback(lambda f: self.log.warn("giving a push quota back failed: {e}", e=f.value))
