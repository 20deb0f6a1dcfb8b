"""The message push URL's pure parts (chatd.wechatpush): the body formats and the
signature."""

from __future__ import annotations

import json

from chatd.wechatpush import parse_event, signature
from tests.support.wechat import event_xml, media_verdict


def test_message_push_bodies_are_json_or_wechats_xml_and_entities_are_never_expanded():
    """chatd.wechatpush.parse_event: the JSON and the XML push formats give the same
    event; a DOCTYPE/ENTITY body (billion laughs, external entities), broken XML, a
    JSON array or garbage give ``{}`` (nothing is done)."""
    event = media_verdict("media-trace-1", "risky", label=20002)
    as_json = parse_event(json.dumps(event).encode())
    as_xml = parse_event(event_xml(event))
    assert as_json["Event"] == as_xml["Event"] == "wxa_media_check"
    assert as_json["trace_id"] == as_xml["trace_id"] == "media-trace-1"
    assert as_json["result"]["suggest"] == as_xml["result"]["suggest"] == "risky"
    assert as_xml["result"]["label"] == "20002"  # XML text stays text
    laughs = (
        b'<?xml version="1.0"?><!DOCTYPE xml [<!ENTITY a "aaaaaaaaaa">'
        b'<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]><xml><Event>&b;</Event></xml>'
    )
    external = b'<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><xml><a>&e;</a></xml>'
    for raw in (laughs, external, b"<xml><Event>", b"[1, 2]", b"\xff\xfe", b""):
        assert parse_event(raw) == {}, raw


def test_the_signature_is_the_sha1_of_the_sorted_three():
    import hashlib

    expected = hashlib.sha1(b"".join(sorted([b"tok", b"1700000000", b"nonce"]))).hexdigest()
    assert signature("tok", "1700000000", "nonce") == expected
    assert signature("tok", "1700000000", "nonce") != signature("tok2", "1700000000", "nonce")
