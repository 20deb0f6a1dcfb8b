"""docs/protocol.md's permission table, row by row, against chatd.permissions.may.

``TABLE`` is the table as the document writes it (who may, per room kind); every
(action, kind, role) combination is checked, for non-members (role None) too.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from chatd.permissions import ADMIN, KINDS, MEMBER, OWNER, RULES, TARGETED, may, outranks

ANYONE = (None, MEMBER, ADMIN, OWNER)
MEMBERS = (MEMBER, ADMIN, OWNER)
ADMINS = (ADMIN, OWNER)
NOBODY = ()

#: docs/protocol.md, *Room kinds and roles*: action -> (public room, private room)
TABLE = {
    "read": (ANYONE, MEMBERS),
    "join": (ANYONE, NOBODY),
    "send": (MEMBERS, MEMBERS),
    "invite": (MEMBERS, ADMINS),
    "update_room": (ADMINS, ADMINS),
    "mention_all": (ADMINS, ADMINS),
    "recall_any": (ADMINS, ADMINS),
    "kick": (ADMINS, ADMINS),
    "ban": (ADMINS, ADMINS),
    "unban": (ADMINS, ADMINS),
    "set_role": ((OWNER,), (OWNER,)),
    "mute": (ADMINS, ADMINS),
}


def test_the_table_covers_every_rule():
    assert set(TABLE) == set(RULES)


def test_the_document_has_the_table_rows():
    """Each row of the document's table names its requests and who may, per kind."""
    doc = (Path(__file__).parents[2] / "docs" / "protocol.md").read_text()
    rows = [
        line
        for line in doc.splitlines()
        if re.match(r"\| (read|join|send|invite|update|`@all`|recall|kick|set)", line)
    ]
    assert len(rows) == 9
    who = [tuple(cell.strip() for cell in row.split("|")[2:4]) for row in rows]
    assert who == [
        ("anyone", "members"),
        ("anyone not banned", "nobody (invite only)"),
        ("members", "members"),
        ("members", "admins, owner"),
        ("admins, owner", "admins, owner"),
        ("admins, owner", "admins, owner"),
        ("admins, owner", "admins, owner"),
        ("admins, owner", "admins, owner"),
        ("owner", "owner"),
    ]


@pytest.mark.parametrize("action", sorted(TABLE))
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("role", ANYONE)
def test_may_follows_the_table(action, kind, role):
    allowed = TABLE[action][KINDS.index(kind)]
    if action in TARGETED:
        # on a plain member (or an outsider, for ban/unban): as the table says
        target = None if action in ("ban", "unban") else MEMBER
        expected = role in allowed and outranks(role, target)
        assert may(action, kind, role, target) is expected
    else:
        assert may(action, kind, role) is (role in allowed)


@pytest.mark.parametrize("action", sorted(TARGETED))
@pytest.mark.parametrize("kind", KINDS)
def test_targeted_actions_need_a_higher_rank_than_the_target(action, kind):
    """Nobody acts on the owner or on an equal: an admin cannot kick an admin, the
    owner can; an owner cannot set the role of an owner (itself)."""
    for role in ADMINS:
        for target in (MEMBER, ADMIN, OWNER):
            expected = role in TABLE[action][KINDS.index(kind)] and outranks(role, target)
            assert may(action, kind, role, target) is expected
    assert not may(action, kind, ADMIN, ADMIN)
    assert not may(action, kind, OWNER, OWNER)
    assert may(action, kind, OWNER, ADMIN) is True


def test_ranks():
    assert outranks(OWNER, ADMIN) and outranks(ADMIN, MEMBER) and outranks(MEMBER, None)
    assert not outranks(MEMBER, MEMBER) and not outranks(None, MEMBER)
