"""How the parts are put together: ``makeService`` and ``chatd.service.build`` make
each part once and hand the same one to every part that uses it (no sockets, no
reactor run)."""

from __future__ import annotations

from autobahn.websocket.protocol import PreparedMessage
from twisted.internet.task import Clock

from chatd import tap
from chatd.cluster.local import LocalBroker, LocalMessageLog
from chatd.cluster.presence import LocalDirectory
from chatd.fanout import server_frame
from chatd.gate import Gate
from chatd.metrics import TimedLog
from chatd.service import SERVER, build
from chatd.settings import Settings
from chatd.store.memory import MemoryStore


def test_build_hands_one_fanout_one_stats_and_one_settings_to_every_part():
    settings, store, clock = Settings(), MemoryStore(), Clock()
    factory = build(store, settings, reactor=clock)
    chat, out = factory.chat, factory.fanout
    assert chat.fanout is out
    assert factory.protocol.fanout is out  # the factory's own protocol class
    assert factory.protocol is not type(factory).protocol
    assert chat.stats is out.stats
    assert chat.settings is out.settings is factory.settings is settings
    assert chat.store is store
    assert chat.clock is out.reactor is factory.reactor is clock
    assert isinstance(chat.broker, LocalBroker)
    assert isinstance(chat.directory, LocalDirectory)
    assert isinstance(chat.messages, LocalMessageLog) and chat.messages.broker is chat.broker
    assert chat.server == SERVER and factory.server == SERVER
    assert chat.anonymous_prefix == ""  # no token is accepted: no "~"


def test_make_service_builds_the_chat_on_its_store_and_broker():
    options = tap.Options()
    options.parseOptions(["--db", ":memory:", "--jwt-secret", "s" * 32])
    clock = Clock()
    service = tap.makeService(options, reactor=clock)
    factory = service.factory
    chat = factory.chat
    assert service.store is chat.store
    assert isinstance(chat.messages, TimedLog)  # append latencies for /metrics
    assert factory.gate is options["gate"]
    assert isinstance(factory.gate, Gate) and factory.gate.auth == "optional"
    assert chat.anonymous_prefix == "~"
    assert service.lifecycle.webhooks in chat.observers
    assert service.lifecycle.readiness.store is service.store
    assert [listener.factory for listener in service.listeners] == [service.site]


def test_server_frame_is_autobahns_server_frame():
    for size in (0, 125, 126, 65535, 65536):
        for binary in (False, True):
            payload = b"x" * size
            prepared = PreparedMessage(payload, binary, False, False).payloadHybi
            assert server_frame(payload, binary) == prepared
