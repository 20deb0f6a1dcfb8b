"""Content security: WeChat's ``msgSecCheck`` (v2) on a WeChat user's text before it
is stored (docs/operations.md, *Content security*).

:class:`ContentChecker` is a part of :class:`chatd.chat.Chat`. With
``--wechat-content-check on`` (and WeChat configured), the text of every
``send``, ``dm`` and ``edit`` of a WeChat user (``wx:<openid>``) goes to
``POST /wxa/msg_sec_check`` (``version 2, openid, scene, content``) in the
connection's turn (:meth:`chatd.inbox.Inbox.serial`), before it is stored:

* ``suggest: "risky"`` (and ``"review"`` with ``--content-check-review block``):
  the sender gets ``error content_blocked`` (ref = the request's id); nothing is
  stored or delivered. Logged with WeChat's ``trace_id`` and ``label``, never the
  text.
* ``"review"`` (default) and ``"pass"``: stored and delivered; a review verdict is
  logged and counted (``flagged``) for the operator.
* WeChat slow or down (no answer within ``--content-check-timeout`` seconds, an
  error, more than :data:`IN_FLIGHT_MAX` checks waiting): ``--content-check-failure
  open`` lets the message through (counted as ``unchecked``), ``closed`` refuses it
  with ``error unavailable`` (resend it with the same id).

Images and voice (``mediaCheckAsync``)
    Once a WeChat user's message with image or voice attachments is stored (same
    switch), each such upload goes to ``POST /wxa/media_check_async`` (v2:
    ``media_url``, ``media_type`` 2 image / 1 voice, ``version 2``, ``scene``,
    ``openid``); ``media_url`` is ``--public-url`` + a signed ``/media/ID`` URL valid for
    :data:`MEDIA_URL_TTL` seconds (WeChat fetches it later). WeChat answers a
    ``trace_id``, kept durably with the message (:class:`chatd.store.IMediaCheckStore`,
    :data:`TRACE_TTL_MS`). The verdict comes later to the message push URL
    (:mod:`chatd.wechatpush`, :meth:`ContentChecker.media_verdict`): ``risky`` recalls
    the message as the system (a ``recalled`` item every node and client sees; its
    uploads go as for any recall), ``review`` queues it (``content_check``), ``pass``
    does nothing. The record is taken when the verdict is handled, so a replayed
    verdict, an unknown or an expired trace id changes nothing (logged, counted
    ``media_unknown``).

Checks of different connections run concurrently: one sender's slow check never
holds up another sender's messages or the room's fan-out; one connection's own
messages keep their order (its later requests wait for its turn). The seq of a
checked message is given when it is stored, after its check.
"""

from __future__ import annotations

from collections import Counter

from twisted.internet import defer
from twisted.logger import Logger

from chatd import errors
from chatd.media.signing import Signer
from chatd.store import IMediaCheckStore

CHECK_PATH = "/wxa/msg_sec_check"
MEDIA_PATH = "/wxa/media_check_async"
#: mediaCheckAsync's media_type of each upload kind checked
MEDIA_TYPES = {"image": 2, "voice": 1}
#: seconds the media URL handed to WeChat stays valid (WeChat fetches it within
#: minutes; the margin covers its retries)
MEDIA_URL_TTL = 6 * 3600.0
#: ms a trace id is kept for its verdict (WeChat answers within 30 minutes)
TRACE_TTL_MS = 24 * 3600 * 1000
#: the user id a media verdict's recall is made as
MEDIA_CHECK_USER = "system"
#: checks waiting for WeChat at once; past that a message counts as unchecked
IN_FLIGHT_MAX = 256
WECHAT_PREFIX = "wx:"


def media_url_maker(base: str, signer, clock):
    """``media_id -> base + a signed /media/ID URL`` valid for :data:`MEDIA_URL_TTL`
    seconds from the moment it is made (*signer*: the uploads' Signer)."""
    long_lived = Signer(signer.key, MEDIA_URL_TTL)
    base = base.rstrip("/")
    return lambda media_id: base + long_lived.url(media_id, "", clock.seconds())


class ContentChecker:
    """msgSecCheck of a chat's WeChat users' text (see the module docstring)."""

    log = Logger()

    def __init__(self, settings, reactor=None, api=None):
        #: the chat's Settings: content_check (on/off), content_check_failure
        #: (open/closed), content_check_timeout, content_check_review (pass/block),
        #: content_check_scene; read for every check (SIGHUP changes them live)
        self.settings = settings
        self.reactor = reactor
        #: chatd.wechat.WeChatApi (None: WeChat is not configured, nothing is checked)
        self.api = api
        self.in_flight = 0
        #: checks by outcome: pass, review, risky, unchecked (WeChat slow/down, open),
        #: refused (WeChat slow/down, closed)
        self.outcomes: Counter = Counter()
        #: the chat (set by chatd.chat.Chat): its store, moderation, media
        self.chat = None
        #: media_id -> an absolute signed URL WeChat can fetch (set by chatd.tap with
        #: --public-url and uploads); None: media is not checked
        self.media_url = None

    def configure(self, api, reactor) -> None:
        self.api, self.reactor = api, reactor

    def applies(self, user: str) -> bool:
        """Whether *user*'s text is checked now."""
        return (
            self.api is not None
            and self.settings.content_check == "on"
            and user.startswith(WECHAT_PREFIX)
            and len(user) > len(WECHAT_PREFIX)
        )

    @defer.inlineCallbacks
    def check(self, user: str, text: str, ref=None):
        """Fires once *text* may be stored -- with WeChat's label when the verdict was
        ``review`` (the message goes to the moderation queue once stored, chatd.moderation),
        else None; fails with :class:`chatd.errors.ContentBlocked` or (WeChat
        unavailable, ``closed``) :class:`chatd.errors.Unavailable`."""
        s = self.settings
        if self.in_flight >= IN_FLIGHT_MAX:
            return self._unchecked("too many checks waiting", ref)
        body = {
            "version": 2,
            "openid": user[len(WECHAT_PREFIX) :],
            "scene": s.content_check_scene,
            "content": text,
        }
        self.in_flight += 1
        try:
            d = self.api.call(CHECK_PATH, body)
            d.addTimeout(s.content_check_timeout, self.reactor)
            reply = yield d
        except Exception as e:  # WeChatError, Unreachable, TimeoutError
            return self._unchecked(type(e).__name__ + ": " + str(e)[:100], ref)
        finally:
            self.in_flight -= 1
        result = reply.get("result") if isinstance(reply.get("result"), dict) else {}
        suggest = result.get("suggest")
        if suggest not in ("pass", "review", "risky"):
            return self._unchecked(f"no verdict in WeChat's answer ({suggest!r})", ref)
        self.outcomes[suggest] += 1
        blocked = suggest == "risky" or (suggest == "review" and s.content_check_review == "block")
        if suggest != "pass":
            self.log.info(
                "content check of {user}: {suggest} (label {label}, trace {trace})",
                user=user,
                suggest=suggest,
                label=result.get("label"),
                trace=reply.get("trace_id"),
            )
        if blocked:
            raise errors.ContentBlocked("the content check refused this text", ref)
        if suggest == "review":
            return str(result.get("label") or "review")
        return None

    def _media_store(self):
        store = getattr(self.chat, "store", None)
        return store if IMediaCheckStore.providedBy(store) else None

    def check_media(self, message) -> None:
        """*message* (committed, of a WeChat user) shows attachments: ask
        ``mediaCheckAsync`` about its images and voice (not waited for; failures are
        logged and counted ``media_unchecked``)."""
        if self.media_url is None or self._media_store() is None:
            return
        for entry in (message.data or {}).get("attachments") or ():
            media_type = MEDIA_TYPES.get(entry.get("kind"))
            if media_type is not None:
                d = self._ask_media(message, entry["media_id"], media_type)
                d.addErrback(self._media_unchecked, entry["media_id"])

    @defer.inlineCallbacks
    def _ask_media(self, message, media_id, media_type):
        body = {
            "media_url": self.media_url(media_id),
            "media_type": media_type,
            "version": 2,
            "scene": self.settings.content_check_scene,
            "openid": message.sender[len(WECHAT_PREFIX) :],
        }
        reply = yield self.api.call(MEDIA_PATH, body)
        trace_id = reply.get("trace_id")
        if not isinstance(trace_id, str) or not trace_id:
            raise ValueError("no trace_id in WeChat's answer")
        record = {
            "ts": self.chat.now_ms(),
            "channel": message.channel,
            "seq": message.seq,
            "media_id": media_id,
            "sender": message.sender,
        }
        yield self._media_store().add_media_check(trace_id, record, TRACE_TTL_MS)
        self.outcomes["media_asked"] += 1

    def _media_unchecked(self, failure, media_id):
        self.outcomes["media_unchecked"] += 1
        self.log.warn(
            "media check of {media_id} could not be asked: {error}",
            media_id=media_id,
            error=failure.getErrorMessage()[:200],
        )

    @defer.inlineCallbacks
    def media_verdict(self, trace_id: str, suggest, label):
        """WeChat's verdict on a ``mediaCheckAsync`` (from the message push URL,
        chatd.wechatpush): ``risky`` recalls the message, ``review`` queues it
        (module docstring); counted (``media_<suggest>``) and logged. Fires with what
        was done: ``recalled``, ``flagged``, ``passed``, ``unknown`` (no such trace
        id, expired, or handled already)."""
        if suggest not in ("pass", "review", "risky"):
            suggest = "unknown"
        trace_id = str(trace_id)[:128]
        store = self._media_store()
        record = None
        if store is not None and trace_id and suggest != "unknown":
            record = yield store.take_media_check(trace_id)  # the record stays for a real one
        now = self.chat.now_ms() if self.chat is not None else 0
        if record is None or now - record.get("ts", 0) > TRACE_TTL_MS or suggest == "unknown":
            self.outcomes["media_unknown"] += 1
            self.log.warn(
                "media check verdict for an unknown, expired or handled trace id {trace} "
                "({suggest}) ignored",
                trace=trace_id[:64],
                suggest=suggest,
            )
            return "unknown"
        self.outcomes["media_" + suggest] += 1
        self.log.info(
            "media check {trace}: {suggest} (label {label}) of {channel} seq {seq}",
            trace=trace_id[:64],
            suggest=suggest,
            label=label,
            channel=record["channel"],
            seq=record["seq"],
        )
        if suggest == "risky":
            return (yield self._recall(record, trace_id))
        if suggest == "review":
            items = yield self.chat.store.items(record["channel"], [record["seq"]])
            message = items.get(record["seq"])
            if message is not None:
                self.chat.moderation.flag(message, str(label or "review"))
            return "flagged"
        return "passed"

    @defer.inlineCallbacks
    def _recall(self, record, trace_id):
        moderation = self.chat.moderation
        try:
            yield moderation.recall(
                record["channel"],
                record["seq"],
                MEDIA_CHECK_USER,
                MEDIA_CHECK_USER,
                f"media-check {trace_id}"[:64],
                media=record["media_id"],
            )
        except errors.ChatError as e:  # recalled already (or gone): nothing more to do
            self.log.info("media check recall of {seq}: {e}", seq=record["seq"], e=str(e))
        return "recalled"

    def _unchecked(self, why: str, ref) -> None:
        if self.settings.content_check_failure == "closed":
            self.outcomes["refused"] += 1
            self.log.warn("content check unavailable ({why}): message refused", why=why)
            raise errors.Unavailable("the content check is unavailable; resend it later", ref)
        self.outcomes["unchecked"] += 1
        self.log.warn("content check unavailable ({why}): message let through", why=why)
