"""Plain counters of what one chatd process did; no I/O, no metrics library.

The chat logic, the factory and the protocol increment these; exporters
(``/metrics``, the admin page) read them. Counting is a few integer additions
per event, never per-recipient work on the fan-out path.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass(slots=True)
class Stats:
    """Monotonic counters (gauges such as open connections are read from live state)."""

    #: connections that finished the WebSocket handshake, by mode
    connections_opened: Counter = field(default_factory=Counter)
    #: frames received from clients, by mode
    frames_in: Counter = field(default_factory=Counter)
    #: messages committed to history (room messages and DMs, duplicates excluded)
    messages_stored: int = 0
    #: resends recognised by exactly-once dedupe
    duplicates: int = 0
    #: frames handed to connections by the fan-out, and their bytes (payload)
    deliveries: int = 0
    delivery_bytes: int = 0
    #: error frames sent, by error code
    errors: Counter = field(default_factory=Counter)
    #: frames refused by the rate limits
    rate_limited: int = 0
    #: join replays and history reads cancelled because their connection closed or left
    replays_cancelled: int = 0
    #: small rooms' receipts put into a room's window (--receipt-window), and the
    #: receipts_batch frames the windows' ends handed to connections
    receipts_batched: int = 0
    receipt_batches: int = 0
    #: connections closed by the server, by close code (4008: dropped slow consumers)
    closes: Counter = field(default_factory=Counter)
    #: seconds from receiving a send/dm to sending its ack (for a latency histogram)
    ack_latencies: list = field(default_factory=list)
    #: the most recent errors, as (ts_ms, code, message), newest last
    recent_errors: list = field(default_factory=list)

    RECENT_MAX = 50
    ACK_SAMPLE_MAX = 10000

    def error(self, ts_ms: int, code: str, message: str) -> None:
        """Count an error frame and remember it among the recent ones."""
        self.errors[code] += 1
        self.recent_errors.append((ts_ms, code, message))
        if len(self.recent_errors) > self.RECENT_MAX:
            del self.recent_errors[0]

    def ack_latency(self, seconds: float) -> None:
        """Record one ack latency sample (bounded; exporters drain it)."""
        if len(self.ack_latencies) < self.ACK_SAMPLE_MAX:
            self.ack_latencies.append(seconds)
