"""Who may do what in a room: one table, one pure function (docs/protocol.md, *Roles*).

:func:`may` takes the room's kind, the actor's role (``None``: not a member),
the action and, for actions on another member, that member's role; it does no
I/O. Every row of :data:`RULES` is a row of the table in docs/protocol.md, and
``tests/unit/test_permissions.py`` checks each one.

Roles rank ``owner`` > ``admin`` > ``member``. A room that was never
``create``-d (the rooms of chatd 0.1, made by a first ``join``) is public and
has no owner: nobody holds the moderator actions there except through the
HTTP API (which acts as the system, not as a member).
"""

from __future__ import annotations

OWNER, ADMIN, MEMBER = "owner", "admin", "member"
#: the "least role" of an action nobody may do (joining a private room by oneself)
NOBODY = "nobody"
ROLES = (OWNER, ADMIN, MEMBER)
PUBLIC, PRIVATE = "public", "private"
KINDS = (PUBLIC, PRIVATE)

_RANK = {NOBODY: 4, OWNER: 3, ADMIN: 2, MEMBER: 1, None: 0}

#: action -> {room kind: the least role that may do it}; ``None``: anyone, member or not
RULES: dict[str, dict[str, str | None]] = {
    # reading a room: its messages, info, member list, receipts
    "read": {PUBLIC: None, PRIVATE: MEMBER},
    # becoming a member by oneself (private rooms: only through invite)
    "join": {PUBLIC: None, PRIVATE: NOBODY},
    # posting, typing, reacting, marking read, replying
    "send": {PUBLIC: MEMBER, PRIVATE: MEMBER},
    "invite": {PUBLIC: MEMBER, PRIVATE: ADMIN},
    "update_room": {PUBLIC: ADMIN, PRIVATE: ADMIN},
    "mention_all": {PUBLIC: ADMIN, PRIVATE: ADMIN},
    # recall of another member's message, at any time
    "recall_any": {PUBLIC: ADMIN, PRIVATE: ADMIN},
    # actions on another member (see TARGETED): the actor must also outrank the target
    "kick": {PUBLIC: ADMIN, PRIVATE: ADMIN},
    "ban": {PUBLIC: ADMIN, PRIVATE: ADMIN},
    "unban": {PUBLIC: ADMIN, PRIVATE: ADMIN},
    "set_role": {PUBLIC: OWNER, PRIVATE: OWNER},
    # mute_user / unmute_user of a member in the room (chatd.moderation)
    "mute": {PUBLIC: ADMIN, PRIVATE: ADMIN},
}

#: actions on another member: the actor's role must rank above the target's
TARGETED = frozenset(("kick", "ban", "unban", "set_role", "mute"))


def may(action: str, kind: str, role: str | None, target_role: str | None = None) -> bool:
    """May a user with *role* in a room of *kind* do *action* (on a member with
    *target_role*, for the TARGETED actions)?

    *role* is None for a user who is not a member; *target_role* is None for a
    target who is not a member (``ban`` of an outsider, ``unban``).
    """
    least = RULES[action][kind]
    if _RANK[role] < _RANK[least]:
        return False
    if action in TARGETED:
        return _RANK[role] > _RANK[target_role]
    return True


def outranks(role: str | None, other: str | None) -> bool:
    """True when *role* ranks strictly above *other*."""
    return _RANK[role] > _RANK[other]
