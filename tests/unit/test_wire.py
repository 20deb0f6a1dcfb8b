"""Unit tests of the chatd.v1 wire format (chatd.wire): parsing, validation, encoding."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chatd import errors, wire
from chatd.store import Message


def parse(obj, max_text=4000):
    raw = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
    return wire.parse(raw, max_text)


def test_parse_valid_requests():
    """Valid requests come back typed, with optional fields None when absent."""
    r = parse({"type": "join", "room": "r", "id": "a1"})
    assert (r.type, r.id, r.fields) == ("join", "a1", {"room": "r", "since": None})
    r = parse({"type": "send", "room": "r", "text": "hi", "extra": [1]})
    assert r.fields == {"room": "r", "text": "hi"} and r.id is None
    r = parse({"type": "dm_history", "with": "bob", "limit": 200})
    assert r.fields == {"with": "bob", "since": None, "before": None, "limit": 200}
    assert parse({"type": "ping"}).fields == {}


@pytest.mark.parametrize(
    "raw, error",
    [
        (b"{", errors.BadJSON),
        (b"null", errors.BadJSON),
        (b"[" * 100000, errors.BadJSON),
        (b"1" * 5000, errors.BadJSON),
        ({"type": None}, errors.BadRequest),
        ({"type": "JOIN", "room": "r"}, errors.UnknownType),
        ({"type": "send", "room": "r", "text": "x" * 11}, errors.TooLarge),
        ({"type": "send", "room": "r"}, errors.BadRequest),
        ({"type": "join", "room": "@dm"}, errors.BadRoom),
        ({"type": "join", "room": "r", "since": 1.5}, errors.BadRequest),
        ({"type": "join", "room": "r", "since": 2**60}, errors.BadRequest),
        ({"type": "dm", "to": "a\x00b", "text": "x"}, errors.BadRequest),
        ({"type": "ping", "id": "has space"}, errors.BadRequest),
    ],
)
def test_parse_errors(raw, error):
    """Each kind of bad frame raises its documented error class."""
    with pytest.raises(error):
        parse(raw, max_text=10)


def test_error_ref_is_the_request_id():
    """An error for a request with a valid id carries that id as ref."""
    with pytest.raises(errors.BadRoom) as e:
        parse({"type": "join", "room": "no way", "id": "r9"})
    assert e.value.ref == "r9"
    frame = json.loads(wire.error_frame(e.value))
    assert frame == {"type": "error", "code": "bad_room", "message": e.value.message, "ref": "r9"}


def test_names():
    """Names: 1-32 letters, digits, _ - .; guest- is reserved."""
    assert wire.valid_name("alice") and wire.valid_name("李雷") and wire.valid_name("a.b-c_d")
    for bad in ["", "x" * 33, "a b", "<b>", "guest-1", "a\nb"]:
        assert not wire.valid_name(bad)


def test_encoding_is_compact_utf8():
    """Frames are compact JSON with UTF-8 text (not \\u escapes)."""
    m = Message("r", 3, "alice", "Alice", "你好", 1700000000000, "c1")
    assert (
        wire.message_frame(m)
        == (
            '{"type":"message","room":"r","seq":3,"from":"alice","name":"Alice",'
            '"text":"你好","ts":1700000000000,"id":"c1"}'
        ).encode()
    )
    ack = json.loads(wire.ack_frame(m, True, room="r"))
    assert ack == {
        "type": "ack",
        "id": "c1",
        "seq": 3,
        "ts": 1700000000000,
        "room": "r",
        "duplicate": True,
    }
    dm = json.loads(wire.dm_history_frame("bob", "alice", [m], False))
    assert dm["messages"][0]["to"] == "bob" and dm["with"] == "alice"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=200),
        json_values.map(lambda v: json.dumps(v).encode()),
        st.fixed_dictionaries(
            {"type": st.sampled_from(sorted(wire.SCHEMAS))},
            optional={
                "room": json_values,
                "text": json_values,
                "id": json_values,
                "since": json_values,
                "to": json_values,
                "limit": json_values,
            },
        ).map(lambda v: json.dumps(v).encode()),
    )
)
def test_parser_never_fails_with_anything_but_a_chat_error(raw):
    """Whatever bytes arrive, parse returns a Request or raises a ChatError with a known code."""
    try:
        request = wire.parse(raw, 100)
    except errors.ChatError as e:
        assert e.code in {"bad_json", "bad_request", "unknown_type", "bad_room", "too_large"}
        assert e.ref is None or isinstance(e.ref, str)
    else:
        assert request.type in wire.SCHEMAS
        for field, (_validate, required) in wire.SCHEMAS[request.type].items():
            assert not required or request.fields[field] is not None


ENCODED = [
    {
        "type": "ack",
        "id": "a1",
        "room": "lobby",
        "seq": 7,
        "ts": 1_700_000_000_000,
        "duplicate": False,
    },
    {"type": "message", "text": '你好 🙂 \u2028 "quoted" \\ \n\t', "name": "Zoë", "id": None},
    {"type": "x", "list": [1, 2.5, -3, True, None, {"nested": ["a", {}]}], "empty": []},
]


@pytest.mark.parametrize("obj", ENCODED)
def test_encode_is_the_compact_utf8_json_of_the_json_module(obj):
    want = json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    assert wire.encode(obj) == want
    assert json.loads(wire.encode(obj)) == obj


def test_encode_falls_back_to_the_json_module_for_what_orjson_refuses():
    big = {"type": "x", "n": 2**70, 1: "int key"}
    assert wire.encode(big) == b'{"type":"x","n":1180591620717411303424,"1":"int key"}'


def test_sync_items_join_store_encoded_runs_with_messages():
    """sync_items: a store's str (JSON objects of plain messages, comma-separated) goes
    into the reply as it is, Messages as item_object shows them, in order; the frame's
    bytes are those of item_object for every item. Without a str: a plain list."""
    plain = [Message("r", 1, "a", "A", "x", 1, None), Message("r", 2, "a", "A", "y", 2, "c")]
    edited = Message("r", 3, "b", "B", "z", 3, None, "message", {"edited_ts": 4})
    encoded = ",".join(wire.encode(wire.item_object(m)).decode() for m in plain)
    expected = wire.encode({"items": [wire.item_object(m) for m in [*plain, edited]]})
    raw = wire.sync_items([encoded, edited])
    assert isinstance(raw, wire.RawJSON)
    assert wire.encode_with_raw({"items": raw}) == expected
    assert wire.sync_items([edited]) == [wire.item_object(edited)]
    assert wire.sync_items([]) == []


def test_encode_with_raw_falls_back_to_the_json_module_as_encode_does():
    """A frame orjson refuses (an int beyond 64 bits) is written by the json module, its
    RawJSON re-encoded: the same bytes as the frame without RawJSON."""
    frame = {"big": 2**70, "items": wire.RawJSON('[{"t":"é\\u0000"}]')}
    assert wire.encode_with_raw(frame) == wire.encode({"big": 2**70, "items": [{"t": "é\x00"}]})
    assert wire.encode_with_raw({"items": wire.RawJSON("[1, 2]")}) == b'{"items":[1, 2]}'
