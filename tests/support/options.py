"""Parsing chatd's twistd options, and the welcome a running server sends."""

from __future__ import annotations

import json

from websockets.sync.client import connect

from chatd import tap


def parse(*args) -> tap.Options:
    """Parse ``twistd chatd`` arguments like twistd does."""
    options = tap.Options()
    options.parseOptions(list(args))
    return options


def _welcome(url):
    with connect(url + "/ws", subprotocols=["chatd.v1"], open_timeout=10) as ws:
        return json.loads(ws.recv(timeout=10))
