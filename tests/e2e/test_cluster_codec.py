"""The cluster's seams: the bus codec's wire bytes, the Lua scripts, the message log.

The bus format is a contract between chatd versions: in a rolling upgrade old
and new nodes share one bus. ``CAPTURED`` holds payloads published by the
version before chatd.cluster existed (chatd/broker, its inline Lua), captured
from a real redis-server; this version must parse every one of them and
publish exactly the same bytes for the same events.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile

import pytest
import pytest_twisted
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.logger import capturedLogs
from zope.interface.verify import verifyObject

from chatd.cluster import IBroker, codec, scripts
from chatd.cluster.codec import BusEvent
from chatd.cluster.local import LocalBroker, LocalMessageLog
from chatd.cluster.presence import IDirectory, LocalDirectory, RedisDirectory
from chatd.cluster.redis import RedisBroker, RedisMessageLog, RedisNode
from chatd.interfaces import IMessageLog
from chatd.metrics import TimedLog
from chatd.store import Message
from chatd.store.memory import MemoryStore
from chatd.store.redis import RedisStore
from tests.conftest import ROOT
from tests.support.install import COPY_IGNORE
from tests.support.realm import make_chat, opened, say

TS = 1764686769123
TEXT = 'hi "there" / ünï 💬\n'
DM = '@dm:["alice","bob"]'

#: (payload published by the previous version, the event it carries), in the order
#: test_scripts_publish_the_captured_bytes publishes them
CAPTURED = [
    (
        '{"k": "message", "n": "n0de1", "a": ["sess-a", false],"m":["lobby",1,"alice",'
        '"Ali\\/ce é","hi \\"there\\" \\/ ünï 💬\\n",1764686769123,"c-1"]}',
        BusEvent(
            "message",
            "n0de1",
            ("sess-a", False),
            Message("lobby", 1, "alice", "Ali/ce é", TEXT, TS, "c-1"),
        ),
    ),
    (
        '{"k": "message", "n": "n0de1", "a": ["sess-b", true],"m":["lobby",2,"bob","Bob",'
        '"relayed",1764686769124,null]}',
        BusEvent(
            "message",
            "n0de1",
            ("sess-b", True),
            Message("lobby", 2, "bob", "Bob", "relayed", TS + 1, None),
        ),
    ),
    (
        '{"k": "dm", "n": "n0de1", "a": ["bob", "sess-a"],"m":["@dm:[\\"alice\\",\\"bob\\"]",'
        '1,"alice","Alice","psst",1764686769125,"c-2"]}',
        BusEvent(
            "dm",
            "n0de1",
            ("bob", "sess-a"),
            Message(DM, 1, "alice", "Alice", "psst", TS + 2, "c-2"),
        ),
    ),
    (
        '{"k": "typing", "n": "n0de1", "a": ["lobby", "alice", "sess-a"]}',
        BusEvent("typing", "n0de1", ("lobby", "alice", "sess-a")),
    ),
    (
        '{"k": "relay", "n": "n0de1", "a": ["AP9iaW4=", true, "sess-r"]}',
        BusEvent("relay", "n0de1", (b"\x00\xffbin", True, "sess-r")),
    ),
    (
        '{"k": "relay", "n": "n0de1", "a": ["aMOpbGxv", false, "sess-r"]}',
        BusEvent("relay", "n0de1", ("héllo".encode(), False, "sess-r")),
    ),
    (
        '{"k": "presence", "n": "n0de1", "a": ["lobby", "\\u00e5lice", "join", "sess-a"]}',
        BusEvent("presence", "n0de1", ("lobby", "ålice", "join", "sess-a")),
    ),
    # written by the presence scripts (cjson's key order, no origin session)
    (
        '{"a":["room\\/1","zoë","join",null],"k":"presence","n":"d3ad"}',
        BusEvent("presence", "d3ad", ("room/1", "zoë", "join", None)),
    ),
    (
        '{"a":["lobby","ålice","leave",null],"k":"presence","n":"n0de1"}',
        BusEvent("presence", "n0de1", ("lobby", "ålice", "leave", None)),
    ),
    (
        '{"a":["room\\/1","zoë","leave",null],"k":"presence","n":"d3ad"}',
        BusEvent("presence", "d3ad", ("room/1", "zoë", "leave", None)),
    ),
]
#: the payloads written by Python (and by append.lua from a Python head)
PYTHON_WRITTEN = CAPTURED[:7]


#: payloads of this version's new events (conversations): the frame kinds ``user`` and
#: ``room`` (their frame as a string) and timeline items that are not plain messages
#: (the message array with kind and data appended)
CONVERSATIONS = [
    (
        '{"k": "user", "n": "n0de1", "a": ["bob", "{\\"type\\":\\"read\\",\\"with\\":\\"zo\\u00eb\\"}", '
        '"sess-a"]}',
        BusEvent("user", "n0de1", ("bob", '{"type":"read","with":"zoë"}'.encode(), "sess-a")),
    ),
    (
        '{"k": "room", "n": "n0de1", "a": ["team", "{\\"type\\":\\"receipt\\"}", null]}',
        BusEvent("room", "n0de1", ("team", b'{"type":"receipt"}', None)),
    ),
    (
        '{"k": "message", "n": "n0de1", "a": ["sess-a", false],"m":["team",3,"alice","Ali\\/ce",'
        '"",1764686769123,"k1","event",{"event":"kicked","user":"bob","by":"alice"}]}',
        BusEvent(
            "message",
            "n0de1",
            ("sess-a", False),
            Message(
                "team",
                3,
                "alice",
                "Ali/ce",
                "",
                TS,
                "k1",
                "event",
                {"event": "kicked", "user": "bob", "by": "alice"},
            ),
        ),
    ),
    (
        '{"k": "dm", "n": "n0de1", "a": ["bob", "sess-a"],"m":["@dm:[\\"alice\\",\\"bob\\"]",'
        '2,"alice","Alice","hi @bob",1764686769124,null,"message",{"mentions":["bob"],"reply_to":1}]}',
        BusEvent(
            "dm",
            "n0de1",
            ("bob", "sess-a"),
            Message(
                DM,
                2,
                "alice",
                "Alice",
                "hi @bob",
                TS + 1,
                None,
                "message",
                {"mentions": ["bob"], "reply_to": 1},
            ),
        ),
    ),
]


@pytest.mark.parametrize(("payload", "event"), CONVERSATIONS)
def test_codec_round_trips_the_conversation_events(payload, event):
    """The new kinds and item payloads decode to their events and encode to the same bytes."""
    assert codec.decode(payload) == event
    assert codec.encode(event) == payload


def test_plain_messages_keep_the_seven_element_array():
    """A message without data is a plain message: the previous version's bytes."""
    payload, event = CAPTURED[0]
    assert event.message.kind == "message" and event.message.data is None
    assert codec.is_plain(event.message) and codec.encode(event) == payload
    assert len(json.loads(payload)["m"]) == 7


@pytest.mark.redis
@pytest_twisted.inlineCallbacks
def test_scripts_publish_the_conversation_bytes(redis):
    """On a real redis-server the broker publishes the user/room frames and the commit
    script the items exactly as CONVERSATIONS holds them."""
    url = f"{redis.url}?prefix=t:&backoff_max=0.3"
    listener = RedisNode(url, node_id="listen")
    seen = []
    listener.add_bus_handler(seen.append)
    node = RedisNode(url, node_id="n0de1")
    store = RedisStore(node, prune_interval=None)
    broker, log = RedisBroker(node), RedisMessageLog(store, node)
    yield listener.start()
    yield store.start()
    try:
        for _payload, event in CONVERSATIONS:
            if event.kind in codec.COMMITTED_KINDS:
                m = event.message
                yield node.execute("SET", f"t:s:{{{m.channel}}}", m.seq - 1)
                fields = (m.channel, m.sender, m.name, m.client_id, m.text, m.ts, m.kind, m.data)
                yield log.append(event.kind, fields, event.args)
            else:
                broker.publish(event.kind, *event.args)
        yield node.barrier()
        yield listener.barrier()
    finally:
        yield listener.stop()
        yield store.stop()
    assert seen == [payload for payload, _ in CONVERSATIONS]


@pytest.mark.parametrize(("payload", "event"), CAPTURED)
def test_codec_parses_the_previous_versions_bytes(payload, event):
    """Every payload the previous version published decodes to the event it carried
    (str or bytes, as a subscriber may hand it over)."""
    assert codec.decode(payload) == event
    assert codec.decode(payload.encode()) == event


@pytest.mark.parametrize(("payload", "event"), PYTHON_WRITTEN)
def test_codec_writes_the_previous_versions_bytes(payload, event):
    """Encoding an event gives exactly the bytes the previous version published."""
    assert codec.encode(event) == payload


def test_committed_head_is_the_start_of_the_payload():
    """The commit script gets the payload up to ``"m":`` from the codec; no other kind has one."""
    payload, event = CAPTURED[0]
    head = codec.committed_head("message", "n0de1", ("sess-a", False))
    assert payload.startswith(head) and head.endswith(',"m":')
    with pytest.raises(ValueError):
        codec.committed_head("typing", "n0de1", ("lobby", "alice", "sess-a"))


def test_deliver_args_keep_the_origin_only_on_its_node():
    """The origin session is passed on only where the event was published."""
    message, dm, typing = CAPTURED[0][1], CAPTURED[2][1], CAPTURED[3][1]
    assert message.deliver_args(True) == (message.message, "sess-a", False)
    assert message.deliver_args(False) == (message.message, None, False)
    assert dm.deliver_args(False) == (dm.message, "bob", None)
    assert typing.deliver_args(True) == ("lobby", "alice", "sess-a")
    assert typing.deliver_args(False) == ("lobby", "alice", None)


def test_every_script_part_is_a_file_of_the_package():
    """Each script is read from chatd/cluster/lua/ at import; no part is missing or unused."""
    lua = ROOT / "chatd" / "cluster" / "lua"
    used = {part for parts in scripts.PARTS.values() for part in parts}
    assert used == {p.stem for p in lua.glob("*.lua")}
    for name, parts in scripts.PARTS.items():
        assert (
            scripts.SOURCES[name].strip().endswith((lua / f"{parts[-1]}.lua").read_text().strip())
        )


@pytest.mark.redis
@pytest_twisted.inlineCallbacks
def test_scripts_publish_the_captured_bytes(redis):
    """The same events through this version's message log, broker, directory and
    scripts on a real redis-server put exactly the captured bytes on the bus."""
    url = f"{redis.url}?prefix=t:&backoff_max=0.3"
    listener = RedisNode(url, node_id="listen")
    seen = []
    listener.add_bus_handler(seen.append)
    node = RedisNode(url, node_id="n0de1")
    store = RedisStore(node, prune_interval=None)
    broker, directory = RedisBroker(node), RedisDirectory(node)
    log = RedisMessageLog(store, node)
    dead = RedisNode(url, node_id="d3ad")
    RedisDirectory(dead)  # registers the presence scripts on it
    yield listener.start()
    yield store.start()
    yield dead.start()
    try:
        member = json.dumps(["room/1", "zoë"], ensure_ascii=False)
        yield log.append(
            "message", ("lobby", "alice", "Ali/ce é", "c-1", TEXT, TS), ("sess-a", False)
        )
        yield log.append(
            "message", ("lobby", "bob", "Bob", None, "relayed", TS + 1), ("sess-b", True)
        )
        yield log.append("dm", (DM, "alice", "Alice", "c-2", "psst", TS + 2), ("bob", "sess-a"))
        broker.publish("typing", "lobby", "alice", "sess-a")
        broker.publish("relay", b"\x00\xffbin", True, "sess-r")
        broker.publish("relay", "héllo".encode(), False, "sess-r")
        directory.joined("lobby", "ålice", "sess-a")
        yield node.barrier()
        yield dead.script("heartbeat", [], ["t:", dead.bus, "d3ad", 60000])
        yield dead.script("resync", [], ["t:", dead.bus, "d3ad", 1, member, "zoë"])
        yield node.script("resync", [], ["t:", node.bus, "n0de1", 0])  # ålice leaves
        yield node.execute("DEL", "t:hb:d3ad")  # as if its heartbeat had expired
        reaped = yield node.script("heartbeat", [], ["t:", node.bus, "n0de1", 60000])
        assert reaped[1] == ["d3ad"]
        yield listener.barrier()
    finally:
        yield listener.stop()
        yield dead.stop()
        yield store.stop()
    assert seen == [payload for payload, _ in CAPTURED]


def test_decode_names_an_unknown_kind():
    """A kind this version does not know (a newer node's) is refused by name, not with a
    KeyError or an IndexError, whatever its arguments."""
    for payload in (
        '{"k": "future", "n": "n0de9", "a": [1, {"x": 2}]}',
        '{"k": "sanction2", "a": []}',
    ):
        with pytest.raises(codec.UnknownKind) as caught:
            codec.decode(payload)
        assert caught.value.kind in ("future", "sanction2")


@pytest.mark.redis
@pytest_twisted.inlineCallbacks
def test_broker_skips_unknown_kinds_with_one_log_line(redis):
    """Events of a newer node's kind are skipped (counted, one warning per kind), and the
    known events around them are delivered as before: a rolling upgrade never breaks
    the bus of the older nodes."""
    url = f"{redis.url}?prefix=t:&backoff_max=0.3"
    older, newer = RedisNode(url, node_id="older"), RedisNode(url, node_id="newer")
    broker = RedisBroker(older)
    chat = make_chat(Clock())
    broker.attach(chat)
    alice = opened(chat, "alice")
    say(chat, alice, type="join", room="lobby")
    yield older.start()
    yield newer.start()
    try:
        with capturedLogs() as events:
            for _ in range(3):
                newer.publish('{"k": "future", "n": "newer", "a": ["lobby", 1]}')
            newer.publish(codec.encode(BusEvent("typing", "newer", ("lobby", "bob", "s-b"))))
            yield newer.barrier()
            yield older.barrier()
    finally:
        yield older.stop()
        yield newer.stop()
    assert broker.skipped == {"future": 3}
    assert broker.received["typing"] == 1
    assert [t["from"] for t in alice.of("typing")] == ["bob"]
    warnings = [e for e in events if "unknown kind" in e.get("log_format", "")]
    failures = [e for e in events if e.get("log_failure") is not None]
    assert len(warnings) == 1 and warnings[0]["kind"] == "future"
    assert not failures


@pytest.mark.redis
@pytest_twisted.inlineCallbacks
def test_lua_json_matches_cjson(redis):
    """codec.lua_json writes what Redis's cjson writes for the same message array."""
    node = RedisNode(f"{redis.url}?backoff_max=0.3")
    yield node.start()
    try:
        texts = ["a/b", "\x7f", "\x01\x1b", '\t\b\f\r\n"\\', "é💬\u2028", "", "</script>"]
        for text in texts:
            fields = ['@dm:["a","b"]', 7, "u/1", "N", text, TS, None]
            lua = "return cjson.encode({ARGV[1], 7, ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5]), cjson.null})"
            got = yield node.execute("EVAL", lua, 0, fields[0], "u/1", "N", text, TS)
            assert got == codec.lua_json(fields), text
    finally:
        yield node.stop()


def test_message_logs_brokers_and_directories_provide_their_interfaces():
    """Every implementation of the cluster seams provides its interface."""
    store, broker = MemoryStore(), LocalBroker()
    local = LocalMessageLog(store, broker)
    node = RedisNode("redis://127.0.0.1:1/0")
    assert verifyObject(IMessageLog, local)
    assert verifyObject(IMessageLog, RedisMessageLog(RedisStore(node), node))
    assert verifyObject(IMessageLog, TimedLog(local, None))
    assert verifyObject(IBroker, broker)
    assert verifyObject(IBroker, RedisBroker(node))
    assert verifyObject(IDirectory, LocalDirectory())
    assert verifyObject(IDirectory, RedisDirectory(node))


def test_local_log_delivers_a_commit_once_and_members_come_in_a_fired_deferred():
    """In one process a sent message is stored, delivered once and acked; its resend is
    acked as a duplicate and not delivered again. ``joined.members`` (the local
    directory's fired Deferred) arrives with the join, synchronously."""
    chat = make_chat(Clock())
    alice, bob = opened(chat, "alice"), opened(chat, "bob")
    say(chat, alice, type="join", room="r")
    say(chat, bob, type="join", room="r")
    assert bob.of("joined")[0]["members"] == ["alice", "bob"]
    say(chat, alice, type="send", room="r", text="hi", id="c1")
    say(chat, alice, type="send", room="r", text="hi", id="c1")
    assert [a.get("duplicate", False) for a in alice.of("ack")] == [False, True]
    assert [m["text"] for m in bob.of("message")] == ["hi"]
    members, online = chat.directory.members("r"), chat.directory.is_online("bob")
    assert isinstance(members, defer.Deferred) and members.called
    assert isinstance(online, defer.Deferred) and online.called


def test_timed_log_times_each_commit():
    """TimedLog passes the commit through and keeps one latency sample per append."""
    clock = Clock()
    pending = defer.Deferred()

    class Log:
        def append(self, kind, fields, args):
            return pending

    timed = TimedLog(Log(), clock)
    results = []
    timed.append("message", (), ()).addCallback(results.append)
    clock.advance(0.25)
    pending.callback("appended")
    assert results == ["appended"] and timed.append_latencies == [0.25]


@pytest.mark.install
def test_wheel_ships_the_lua_scripts(tmp_path):
    """``pip wheel .`` packs every Lua file the scripts are made of."""
    tree = tmp_path / "src"
    shutil.copytree(ROOT, tree, ignore=COPY_IGNORE)
    out = tmp_path / "wheel"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", ".", "-w", str(out)],
        cwd=tree,
        check=True,
        timeout=300,
    )
    (wheel,) = out.glob("chatd-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    parts = {part for p in scripts.PARTS.values() for part in p}
    assert {f"chatd/cluster/lua/{part}.lua" for part in parts} <= names
