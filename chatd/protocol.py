"""The autobahn protocol: one instance per WebSocket connection.

It is the thin adapter between autobahn's callbacks and :class:`chatd.chat.Chat`
(the WsServer -> Chat step of the tutorial's Ratchet stack): it chooses the
mode from the offered subprotocol during the handshake, gets its
:class:`chatd.session.Session` from ``Chat.open`` once the handshake is done, then
hands every frame to the chat logic with that session. It holds no chat state (who
the connection is, its limits, its rooms): the session does. How bytes reach the
socket is not its business: that is :class:`chatd.fanout.Writer`'s, which it inherits.
"""

from __future__ import annotations

import time

from autobahn.twisted.websocket import WebSocketServerProtocol
from autobahn.websocket.types import ConnectionDeny
from zope.interface import implementer

from chatd import deflate, frames
from chatd.chat import RELAY, V1
from chatd.fanout import SLOW_CONSUMER, Writer
from chatd.gate import Refused
from chatd.hub import LOBBY
from chatd.interfaces import IChatClient
from chatd.receipts import parse_features

_OPEN = WebSocketServerProtocol.STATE_OPEN
#: chatd unmasks and checks UTF-8 itself (chatd/frames.py)
_CHECK_UTF8 = frames.install()

__all__ = ["IDLE", "SLOW_CONSUMER", "TOKEN_EXPIRED", "ChatProtocol"]
#: close code when the connection's token expires
TOKEN_EXPIRED = 4401
#: close code for a client that sent nothing for --idle-timeout seconds
IDLE = 4408


#: autobahn attributes used only while the opening handshake is processed
_HANDSHAKE_ONLY = (
    "http_request_data",
    "http_response_data",
    "http_headers",
    "http_status_line",
    "http_request_uri",
    "http_request_path",
    "http_request_params",
    "http_request_host",
    "_wskey",
    "websocket_extensions",
    "websocket_origin",
    "websocket_protocols",
    # what the handshake found out for Chat.open (the session holds it after)
    "_mode",
    "_requested_name",
    "_resume",
    "_identity",
    "_features",
)


#: autobahn per-connection state that is None/False/0 for an open, idle connection.
#: They become class attributes of ChatProtocol; an instance keeps its own value
#: only once autobahn sets another one (reads fall back to the class).
_AUTOBAHN_DEFAULTS = {
    **dict.fromkeys(
        (
            "_perMessageCompress",
            "autoPingPending",
            "autoPingPendingSent",
            "autoPingTimeoutCall",
            "closeHandshakeTimeoutCall",
            "current_frame",
            "localCloseCode",
            "localCloseReason",
            "openHandshakeTimeoutCall",
            "remoteCloseCode",
            "remoteCloseReason",
            "trackedTimings",
            "wasNotCleanReason",
            "websocket_protocol_in_use",
        ),
        None,
    ),
    **dict.fromkeys(
        (
            "closedByMe",
            "droppedByMe",
            "failedByMe",
            "inside_message",
            "triggered",
            "wasClean",
            "wasCloseHandshakeTimeout",
            "wasMaxFramePayloadSizeExceeded",
            "wasMaxMessagePayloadSizeExceeded",
            "wasOpenHandshakeTimeout",
            "wasServerConnectionDropTimeout",
            "wasServingFlashSocketPolicyFile",
        ),
        False,
    ),
    "autoPingPendingSeq": 0,
    "send_state": 0,
}


def _peer_host(peer: str) -> str:
    """The host part of an autobahn peer string (``tcp:1.2.3.4:5678`` -> ``1.2.3.4``)."""
    kind, _, rest = peer.partition(":")
    if kind in ("tcp", "tcp4", "tcp6"):
        return rest.rpartition(":")[0] or rest
    return kind


@implementer(IChatClient)
class ChatProtocol(Writer, WebSocketServerProtocol):
    """A relay or chatd.v1 connection."""

    #: the :class:`chatd.session.Session` that ``Chat.open`` made for this connection
    session = None
    #: handshake results, for ``Chat.open``: the mode, the ``name`` and ``resume``
    #: parameters, the verified token's :class:`chatd.auth.Identity` (None: anonymous),
    #: the known names of the ``features`` parameter (None: none given)
    _mode = None
    _requested_name = None
    _resume = None
    _identity = None
    _features = None
    #: the client's address once the gate admitted it (None: nothing to release)
    _ip = None
    _expiry = None
    #: autobahn's list of negotiated extensions, for a connection without any (see _compact)
    websocket_extensions_in_use = ()

    @property
    def last_seen(self) -> float:
        """Reactor time of the last frame from the client (the idle sweep reads it)."""
        return self.session.last_seen

    def onConnect(self, request):
        """Admit or refuse the handshake, and pick the mode.

        The gate checks the Origin, the token (``?token=`` or ``Authorization:
        Bearer``) and the connection caps, refusing with HTTP 401/403/429. No
        subprotocol is relay mode, ``chatd.v1`` is JSON; others are refused.
        """
        gate = self.factory.gate
        headers = request.headers
        tokens = request.params.get("token")
        ip = gate.client_ip(_peer_host(request.peer), headers.get("x-forwarded-for"))
        try:
            token = gate.token_from(tokens[0] if tokens else None, headers.get("authorization"))
            self._identity = gate.admit(ip, headers.get("origin"), token)
        except Refused as e:
            raise ConnectionDeny(e.status, e.reason) from None
        self._ip = ip
        try:
            chosen = self._choose_mode(request)
        except ConnectionDeny:
            self._release()
            raise
        return self._negotiate_deflate(chosen)

    def _negotiate_deflate(self, chosen):
        """Accept the client's first acceptable permessage-deflate offer (chatd/deflate.py)
        when ``--compression`` is on; the subprotocol, plus the extension's response
        header when accepted.

        chatd negotiates permessage-deflate itself: autobahn would fail the whole
        handshake on an offer it cannot parse, where RFC 7692 declines the offer, and it
        would compress per connection. autobahn only inflates what the client sends.
        """
        extensions = self.websocket_extensions
        offers = [params for name, params in extensions if name == deflate.NAME]
        if not offers:
            return chosen
        self.websocket_extensions = [e for e in extensions if e[0] != deflate.NAME]
        if self.factory.settings.compression.lower() != "on":
            return chosen
        agreed = deflate.negotiate(offers)
        if agreed is None:
            return chosen
        self.deflate_bits = agreed.window_bits
        self._perMessageCompress = agreed.inflater()
        return chosen, {"Sec-WebSocket-Extensions": agreed.response}

    def _release(self):
        ip = self._ip
        if ip is not None:
            self._ip = None
            session = self.session
            identity = self._identity if session is None else session.identity
            self.factory.gate.release(ip, identity)

    def _choose_mode(self, request):
        if not request.protocols:
            if self._identity is not None and not self._identity.may_join(LOBBY):
                # relay clients live in the lobby: a token kept out of it stays out
                raise ConnectionDeny(
                    ConnectionDeny.FORBIDDEN,
                    f"your token does not allow room {LOBBY!r} (relay mode)",
                )
            self._mode = RELAY
            chosen = None
        elif V1 in request.protocols:
            self._mode = V1
            chosen = V1
        else:
            raise ConnectionDeny(
                ConnectionDeny.BAD_REQUEST, "unsupported subprotocol: offer chatd.v1 or none"
            )
        names = request.params.get("name")
        self._requested_name = names[0] if names else None
        resumes = request.params.get("resume")
        self._resume = resumes[0] if resumes else None
        features = request.params.get("features")
        self._features = parse_features(features[0] if features else None)
        return chosen

    def _compact(self) -> None:
        """Forget what only the opening handshake needed, leave default-valued state to
        the class (``_AUTOBAHN_DEFAULTS``) and repack the instance dict: that was most
        of an idle connection's memory."""
        d = self.__dict__
        for name in _HANDSHAKE_ONLY:
            d.pop(name, None)
        if hasattr(type(self), "trafficStats"):
            del d["trafficStats"]  # count into the factory's shared counters
        for name, default in _AUTOBAHN_DEFAULTS.items():
            if name in d and d[name] is default:
                del d[name]
        # autobahn's send queue serves chopped or synchronous sends, which chatd
        # never asks for; an empty tuple answers its len() checks
        d["send_queue"] = ()
        # the extensions list is filled during the handshake only; none in use: the
        # class's empty tuple answers for it
        if not d.get("websocket_extensions_in_use", True):
            del d["websocket_extensions_in_use"]
        # (the dict is repacked to its size: 21 keys or fewer fit the small table)
        self.__dict__ = dict(d)

    def onOpen(self):
        handshake = (
            self._mode,
            self._requested_name,
            self._identity,
            self._resume,
            self._features,
        )
        self._compact()
        self.start_writing()
        self.factory.track(self)
        session = self.session = self.factory.chat.open(self, *handshake)
        session.last_seen = self.factory.reactor.seconds()
        identity = session.identity
        exp = identity.exp if identity is not None else None
        if exp is not None and self.state == _OPEN:
            delay = max(0.0, exp - time.time())
            self._expiry = self.factory.reactor.callLater(delay, self._token_expired)

    def _token_expired(self):
        self._expiry = None
        self.close(TOKEN_EXPIRED, "token expired")

    def dataReceived(self, data: bytes) -> None:
        """Bytes from the socket: a run of whole small text frames at their start goes
        straight to :meth:`onMessage` (chatd/frames.py), the rest to autobahn."""
        if (
            not _CHECK_UTF8
            or self.state != _OPEN
            or self.current_frame is not None
            or self.inside_message
            or self._perMessageCompress is not None
            or self.logFrames
            or self.logOctets
        ):
            self._dataReceived(data)  # autobahn's parser
            return
        buffered = self.data
        whole = buffered + data if buffered else data
        payloads, used = frames.split_text_frames(whole, self.maxMessagePayloadSize)
        if not payloads:
            self._dataReceived(data)
            return
        self.data = b""
        count = len(payloads)
        stats = self.trafficStats
        stats.incomingOctetsWireLevel += used - len(buffered)  # (the rest: autobahn's)
        stats.incomingWebSocketFrames += count
        stats.incomingWebSocketMessages += count
        if self.autoPingTimeoutCall and self.autoPingRestartOnAnyTraffic:
            self._cancelAutoPingTimeoutCall()  # as autobahn does for any data frame
        for payload in payloads:
            self.onMessage(payload, False)  # (ignored once the connection is closing)
        if used < len(whole):
            self._dataReceived(whole[used:])

    def onMessage(self, payload, isBinary):
        if self.state != _OPEN:
            return  # closing (e.g. closed for flooding): ignore what was still buffered
        if _CHECK_UTF8 and not isBinary and not frames.valid_utf8(payload):
            self._invalid_payload("encountered invalid UTF-8 in a text message")  # 1007
            return
        session = self.session
        session.last_seen = self.factory.reactor.seconds()
        if session.mode == RELAY:
            self.factory.chat.relay(session, payload, isBinary)
        else:
            self.factory.chat.receive(session, payload, isBinary)

    def connectionLost(self, reason):
        # first, before autobahn's onClose (which also stops direct sends)
        self.stop_writing()
        super().connectionLost(reason)

    def onClose(self, wasClean, code, reason):
        self.go_slow()
        self._release()
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        session = self.__dict__.pop("session", None)
        if session is not None:  # it was opened: the realm lets go of it, once
            self.factory.untrack(self)
            self.factory.chat.close(session)

    # IChatClient

    @property
    def active(self) -> bool:
        """True until the closing handshake starts (or the connection is dropped).
        (Not autobahn's ``is_open``, a future of the opening handshake.)"""
        return self.state == _OPEN

    def send(self, payload: bytes) -> None:
        """Send one text frame holding *payload* (dropped once the connection is closing),
        behind frames the fan-out queued for this connection this turn; compressed when
        the connection negotiated permessage-deflate and *payload* is long enough."""
        if self.state == _OPEN:
            self.write_frame(self.fanout.frame(payload, False, self.deflate_bits))

    def close(self, code, reason):
        """Start the closing handshake with *code* (any valid code, 1001 included);
        every close the server starts is counted here, by code."""
        if self.state == _OPEN:
            self.factory.chat.stats.closes[code] += 1
            # sendClose() only takes 1000 and 3000-4999; the server may also
            # close with protocol codes such as 1001 (going away) or 1008
            self.sendCloseFrame(code=code, reasonUtf8=reason.encode("utf-8")[:123], isReply=False)


for _name, _default in _AUTOBAHN_DEFAULTS.items():
    setattr(ChatProtocol, _name, _default)
