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

CHECK_PATH = "/wxa/msg_sec_check"
#: checks waiting for WeChat at once; past that a message counts as unchecked
IN_FLIGHT_MAX = 256
WECHAT_PREFIX = "wx:"


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

    def media_verdict(self, trace_id: str, suggest, label) -> None:
        """WeChat's verdict on a ``mediaCheckAsync`` (from the message push URL,
        chatd.wechatpush): counted (``media_<suggest>``) and logged. (Recalling the
        message it was about comes with media messages.)"""
        if suggest not in ("pass", "review", "risky"):
            suggest = "unknown"
        self.outcomes["media_" + suggest] += 1
        self.log.info(
            "media check {trace}: {suggest} (label {label})",
            trace=trace_id[:64],
            suggest=suggest,
            label=label,
        )

    def _unchecked(self, why: str, ref) -> None:
        if self.settings.content_check_failure == "closed":
            self.outcomes["refused"] += 1
            self.log.warn("content check unavailable ({why}): message refused", why=why)
            raise errors.Unavailable("the content check is unavailable; resend it later", ref)
        self.outcomes["unchecked"] += 1
        self.log.warn("content check unavailable ({why}): message let through", why=why)
