"""The tunable limits of one chatd process, in one plain object."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class Settings:
    """Limits and timings shared by the chat logic and the protocol.

    Defaults match the command-line defaults documented in README.md.
    """

    max_message_size: int = 65536
    max_text_length: int = 4000
    ping_interval: float = 30.0
    ping_timeout: float = 30.0
    replay_limit: int = 1000
    open_handshake_timeout: float = 10.0
    max_rooms: int = 100
    #: seconds a sender may recall their own message (owners/admins: always)
    recall_window: float = 120.0
    #: rooms with at most this many members send each read receipt to the members
    receipt_members: int = 100
    #: seconds a small room's receipts are coalesced for the connections that asked
    #: for receipts_batch (0: off, every receipt is its own frame)
    receipt_window: float = 0.2
    #: most timeline items per conversation in one sync reply (beyond: truncated)
    sync_limit: int = 100
    #: per-connection and per-user token buckets (frames per second, burst)
    rate_limit: float = 20.0
    rate_burst: float = 40.0
    user_rate_limit: float = 50.0
    user_rate_burst: float = 100.0
    #: refused frames within 10 s before the connection is closed with 1008
    flood_strikes: int = 50
    #: seconds without any frame from a client before it is closed (0: never)
    idle_timeout: float = 0.0
    #: bytes queued for a peer that stopped reading before it is dropped (4008)
    max_queue_bytes: int = 1 << 20
    #: seconds a shutdown waits for clients to answer the 1001 close
    close_timeout: float = 3.0
    #: permessage-deflate offers are accepted ("on") or ignored ("off")
    compression: str = "on"
    #: seconds between two notifications of one conversation to one user (0: each message)
    push_interval: float = 300.0
    #: notifications show the message text ("on") or a placeholder ("off")
    push_previews: str = "on"
    #: WeChat msgSecCheck of WeChat users' text before it is stored (chatd.contentcheck)
    content_check: str = "off"
    #: WeChat slow or down: let the message through ("open") or refuse it ("closed")
    content_check_failure: str = "open"
    #: seconds a check may take (the latency budget) before it counts as unavailable
    content_check_timeout: float = 2.0
    #: a "review" verdict: stored and delivered ("pass") or refused ("block")
    content_check_review: str = "pass"
    #: msgSecCheck scene: 1 profile, 2 comment, 3 forum, 4 social log
    content_check_scene: int = 2
    #: days closed moderation queue entries and audit entries are kept (0: for good)
    moderation_retention_days: float = 180.0
    #: a text holding a word of --word-list: masked with * ("mask") or refused ("block")
    word_filter: str = "mask"
