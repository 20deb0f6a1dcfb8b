"""``/metrics``: chatd's counters in the Prometheus text format (``prometheus_client``).

:class:`ChatCollector` is a custom collector: nothing is counted twice, every
scrape reads :class:`chatd.stats.Stats`, the live state of the chat
(connections, rooms, users), the history store's counters, the broker's
health and the webhook queues (:class:`chatd.webhooks.Webhooks`) at that
moment. Latency samples (``stats.ack_latencies`` and the message log's append
latencies measured by :class:`TimedLog`) are drained into
cumulative histograms on each scrape, so memory stays bounded.

Every chatd process has its own :class:`prometheus_client.CollectorRegistry`
(no global state; two servers in one test process do not collide).
"""

from __future__ import annotations

import dataclasses
from bisect import bisect_left
from collections import Counter

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from twisted.web.resource import Resource
from zope.interface import implementer

from chatd.interfaces import IMessageLog
from chatd.webhooks import EVENTS

#: seconds; ack latency and store write latency buckets
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
#: seconds; a message event's webhook delay (queued until the receiver's 2xx)
WEBHOOK_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300)
#: messages per committed transaction
BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)

#: Stats fields exported under their own, documented names
_KNOWN = {
    "connections_opened",
    "frames_in",
    "messages_stored",
    "duplicates",
    "deliveries",
    "delivery_bytes",
    "errors",
    "closes",
    "ack_latencies",
    "recent_errors",
    "rate_limited",
}


class Histogram:
    """A cumulative histogram fed with drained samples (no prometheus_client state)."""

    def __init__(self, buckets):
        self.bounds = tuple(float(b) for b in buckets)
        self.counts = [0] * (len(self.bounds) + 1)
        self.total = 0.0

    def add(self, value: float, n: int = 1) -> None:
        """Count *n* observations of *value*."""
        self.counts[bisect_left(self.bounds, value)] += n
        self.total += value * n

    def family(self, name, doc) -> HistogramMetricFamily:
        """The histogram as a metric family (cumulative ``le`` buckets)."""
        buckets, running = [], 0
        for bound, count in zip(self.bounds, self.counts, strict=False):
            running += count
            buckets.append((_le(bound), running))
        buckets.append(("+Inf", running + self.counts[-1]))
        return HistogramMetricFamily(name, doc, buckets=buckets, sum_value=self.total)


def _le(bound: float) -> str:
    return str(int(bound)) if bound == int(bound) else repr(bound)


@implementer(IMessageLog)
class TimedLog:
    """An :class:`~chatd.interfaces.IMessageLog` that times each commit of the one it wraps.

    The samples (seconds from the append until the commit fired) wait in
    ``append_latencies`` (bounded) until a scrape drains them.
    """

    SAMPLE_MAX = 10000

    def __init__(self, log, clock):
        self._log = log
        self._clock = clock
        self.append_latencies: list[float] = []

    def append(self, kind, fields, args):
        """Commit and publish through the wrapped log, timing the commit."""
        started = self._clock.seconds()
        return self._log.append(kind, fields, args).addBoth(self._timed, started)

    def _timed(self, result, started):
        samples = self.append_latencies
        if len(samples) < self.SAMPLE_MAX:
            samples.append(self._clock.seconds() - started)
        return result


class ChatCollector:
    """Reads a running chat's state on every scrape (a prometheus_client custom collector)."""

    def __init__(self, chat, webhooks=None):
        self.chat = chat
        self.webhooks = webhooks
        self.ack = Histogram(LATENCY_BUCKETS)
        self.write = Histogram(LATENCY_BUCKETS)
        self.webhook_delay = Histogram(WEBHOOK_BUCKETS)

    def _drain(self, samples: list, histogram: Histogram) -> None:
        taken = samples[:]
        del samples[: len(taken)]
        for value in taken:
            histogram.add(value)

    def collect(self):
        """Yield every metric family (called by prometheus_client on each scrape)."""
        chat, stats = self.chat, self.chat.stats
        snap = chat.snapshot()

        g = GaugeMetricFamily("chatd_connections", "Open WebSocket connections", labels=["mode"])
        for mode, n in snap["connections"].items():
            g.add_metric([mode], n)
        yield g
        yield GaugeMetricFamily(
            "chatd_users", "Distinct chatd.v1 users online", value=snap["users"]
        )
        yield GaugeMetricFamily("chatd_rooms", "Rooms with members", value=len(snap["rooms"]))
        yield GaugeMetricFamily(
            "chatd_replays_active",
            "Join replays and history reads started and not finished",
            value=chat.replayer.active,
        )
        yield GaugeMetricFamily(
            "chatd_room_memberships",
            "Room memberships (users in rooms, summed over rooms)",
            value=sum(len(m) for m in snap["rooms"].values()),
        )

        yield _labelled(
            "chatd_connections_opened",
            "WebSocket connections that finished the handshake",
            "mode",
            stats.connections_opened,
        )
        yield _labelled("chatd_frames_in", "Frames received from clients", "mode", stats.frames_in)
        yield CounterMetricFamily(
            "chatd_messages_stored",
            "Room messages and DMs committed to history (messages in)",
            value=stats.messages_stored,
        )
        yield CounterMetricFamily(
            "chatd_duplicates", "Resends recognised by exactly-once dedupe", value=stats.duplicates
        )
        yield CounterMetricFamily(
            "chatd_deliveries",
            "Frames handed to connections by the fan-out (messages out)",
            value=stats.deliveries,
        )
        yield CounterMetricFamily(
            "chatd_delivery_bytes",
            "Payload bytes handed out by the fan-out",
            value=stats.delivery_bytes,
        )
        yield _labelled("chatd_errors", "Error frames sent, by code", "code", stats.errors)
        yield _labelled(
            "chatd_closes", "Connections closed by the server, by close code", "code", stats.closes
        )
        yield CounterMetricFamily(
            "chatd_rate_limited",
            "Requests refused by a rate limit",
            value=stats.rate_limited,
        )
        yield CounterMetricFamily(
            "chatd_slow_consumer_disconnects",
            "Connections closed (4008) because they did not read fast enough",
            value=stats.closes.get(4008, 0),
        )
        # counters other modules added to Stats later, exported generically
        for f in dataclasses.fields(stats):
            if f.name in _KNOWN:
                continue
            value = getattr(stats, f.name)
            if isinstance(value, Counter):
                yield _labelled(f"chatd_stats_{f.name}", f"chatd stats.{f.name}", "key", value)
            elif isinstance(value, int | float) and not isinstance(value, bool):
                yield CounterMetricFamily(f"chatd_stats_{f.name}", f"chatd stats.{f.name}", value)

        self._drain(stats.ack_latencies, self.ack)
        yield self.ack.family(
            "chatd_ack_latency_seconds", "Seconds from receiving a send/dm to its ack"
        )

        store = chat.store
        samples = getattr(chat.messages, "append_latencies", None)
        if samples is not None:
            self._drain(samples, self.write)
            yield self.write.family(
                "chatd_store_append_latency_seconds",
                "Seconds from queueing a message to the history store until it is committed",
            )
        if hasattr(store, "commits"):
            yield CounterMetricFamily(
                "chatd_store_commits", "Committed append transactions", value=store.commits
            )
            yield CounterMetricFamily(
                "chatd_store_failed_commits",
                "Append transactions that failed",
                value=getattr(store, "failed_commits", 0),
            )
            yield CounterMetricFamily(
                "chatd_store_appended", "Messages committed by the store", value=store.appended
            )
            batch = Histogram(BATCH_BUCKETS)
            for size, n in dict(store.batch_sizes).items():
                batch.add(size, n)
            yield batch.family(
                "chatd_store_batch_size", "Messages per committed transaction (group commit)"
            )
        broker = chat.broker
        g = GaugeMetricFamily(
            "chatd_broker_up",
            "1 while the broker carries events (Redis reachable in cluster mode)",
            labels=["broker"],
        )
        g.add_metric([type(broker).__name__], 1 if broker.healthy else 0)
        yield g
        node = getattr(broker, "node", None)
        if node is not None:  # cluster mode: what the bus brings this node
            yield CounterMetricFamily(
                "chatd_bus_events_received",
                "Bus events this node received from Redis (every kind, its own included)",
                value=node.bus_events,
            )
            yield CounterMetricFamily(
                "chatd_bus_bytes_received",
                "Bytes of the bus events this node received from Redis (payloads)",
                value=node.bus_bytes,
            )
            if node.rooms is not None:
                yield GaugeMetricFamily(
                    "chatd_bus_room_channels",
                    "Rooms whose own shard channel this node follows (Redis Cluster: "
                    "rooms with connections here, and lingering ones)",
                    value=len(node.rooms),
                )
        if self.webhooks is not None:
            yield from self._webhook_families(self.webhooks)
        yield from self._push_families(chat.push)
        words = chat.words
        if words.path is not None:
            family = CounterMetricFamily(
                "chatd_word_filter",
                "Texts holding a --word-list word: masked, or refused (blocked)",
                labels=["outcome"],
            )
            family.add_metric(["masked"], words.masked)
            family.add_metric(["blocked"], words.blocked)
            yield family
            yield GaugeMetricFamily(
                "chatd_word_filter_words", "Words in the --word-list", value=words.words.size
            )
        moderation = chat.moderation
        if moderation.store is not None:
            yield _labelled(
                "chatd_moderation_sanction_reads",
                "Reads of a user's mutes and bans that failed (the store down), and the "
                "send/dm/edit/react refused for it (mutes fail closed)",
                "outcome",
                {"failed": moderation.unreadable, "refused": moderation.refused_unreadable},
            )
        content = chat.content
        if content.api is not None:
            yield _labelled(
                "chatd_content_checks",
                "WeChat msgSecCheck outcomes: pass, review, risky, unchecked (WeChat slow or "
                "down, failing open), refused (failing closed)",
                "outcome",
                content.outcomes,
            )
            yield GaugeMetricFamily(
                "chatd_content_checks_in_flight",
                "Content checks waiting for WeChat",
                value=content.in_flight,
            )

    def _push_families(self, push):
        decided = CounterMetricFamily(
            "chatd_push_decisions",
            "Offline push: recipients looked at, notified (push events), skipped (too many "
            "decisions in progress)",
            labels=["outcome"],
        )
        for outcome, n in (
            ("considered", push.considered),
            ("notified", push.notified),
            ("skipped", push.skipped),
        ):
            decided.add_metric([outcome], n)
        yield decided
        sender = push.sender
        if sender is None:
            return
        sends = CounterMetricFamily(
            "chatd_push_wechat",
            "WeChat subscribe messages: sent, retried, failed (given up), dropped (full "
            "queue), refused (43101: quota dropped), rate_limited (45009 answers)",
            labels=["outcome"],
        )
        for outcome in ("sent", "retried", "failed", "dropped", "refused", "rate_limited"):
            sends.add_metric([outcome], getattr(sender, outcome))
        yield sends
        yield GaugeMetricFamily(
            "chatd_push_wechat_waiting",
            "WeChat subscribe messages queued or waiting for a retry",
            value=sender.waiting,
        )
        yield CounterMetricFamily(
            "chatd_push_wechat_token_fetches",
            "WeChat access tokens fetched (stable_token)",
            value=sender.api.token_fetches,
        )

    def _webhook_families(self, hooks):
        for name, doc, counter in (
            ("sent", "Webhook events the receiver answered with 2xx, by event", hooks.sent_by),
            ("failed", "Webhook events given up on after every retry, by event", hooks.failed_by),
            (
                "dropped",
                "Webhook events dropped from a full queue (presence before messages), by event",
                hooks.dropped_by,
            ),
        ):
            family = CounterMetricFamily(f"chatd_webhook_{name}", doc, labels=["event"])
            for event in EVENTS:
                family.add_metric([event], counter[event])
            yield family
        yield CounterMetricFamily(
            "chatd_webhook_retried", "Webhook requests retried after a failure", hooks.retried
        )
        yield CounterMetricFamily(
            "chatd_webhook_coalesced",
            "online/offline events never sent: a user's online and offline collapsed in the queue",
            hooks.coalesced,
        )
        g = GaugeMetricFamily(
            "chatd_webhook_queued", "Webhook events waiting for a request slot", labels=["queue"]
        )
        for queue, n in hooks.queued().items():
            g.add_metric([queue], n)
        yield g
        yield GaugeMetricFamily(
            "chatd_webhook_in_flight", "Webhook requests being sent", value=hooks.in_flight
        )
        self._drain(hooks.message_delays, self.webhook_delay)
        yield self.webhook_delay.family(
            "chatd_webhook_message_delay_seconds",
            "Seconds from a message event's queueing to the receiver's 2xx",
        )


def _labelled(name, doc, label, counter) -> CounterMetricFamily:
    family = CounterMetricFamily(name, doc, labels=[label])
    for key, value in sorted(counter.items(), key=lambda kv: str(kv[0])):
        family.add_metric([str(key)], value)
    return family


def make_registry(chat, webhooks=None) -> CollectorRegistry:
    """A registry holding only chatd's collector for *chat* (and its *webhooks*)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ChatCollector(chat, webhooks))
    return registry


class MetricsResource(Resource):
    """``GET /metrics``: the registry in the Prometheus text format (version 0.0.4)."""

    isLeaf = True

    def __init__(self, registry: CollectorRegistry):
        super().__init__()
        self.registry = registry

    def render_GET(self, request):
        request.setHeader(b"content-type", CONTENT_TYPE_PLAIN_0_0_4.encode())
        request.setHeader(b"cache-control", b"no-store")
        return generate_latest(self.registry)
