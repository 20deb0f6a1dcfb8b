"""Fixtures of the realm tests: a task.Clock at a fixed time and a Chat on it (the
real MemoryStore; see tests/support/realm.py)."""

from __future__ import annotations

import pytest
from twisted.internet.task import Clock

from tests.support.realm import make_chat


@pytest.fixture
def clock():
    clock = Clock()
    clock.advance(1_700_000_000)
    return clock


@pytest.fixture
def chat(clock):
    return make_chat(clock)
