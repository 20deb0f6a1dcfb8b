"""chatd's exceptions: one flat tree, each mapped to its wire error code here.

Raise these from the chat logic and the wire parser; the protocol turns any of
them into ``error {code, message, ref}`` (see docs/protocol.md) and the
connection stays open unless :attr:`ChatError.close_code` says otherwise.
"""

from __future__ import annotations


class ChatError(Exception):
    """A request was refused; ``code`` is the wire error code."""

    code = "internal"
    #: when not None, the connection is closed with this WebSocket close code
    close_code: int | None = None

    def __init__(self, message: str, ref: str | None = None, **fields):
        super().__init__(message)
        self.message = message
        self.ref = ref
        #: more fields of the ``error`` frame (e.g. ``muted``'s ``muted_until``)
        self.fields = fields


class BadJSON(ChatError):
    """The frame is not valid JSON or not a JSON object."""

    code = "bad_json"


class BadRequest(ChatError):
    """A field is missing or has the wrong type, or the frame is binary."""

    code = "bad_request"


class UnknownType(ChatError):
    """``type`` names no client-to-server message."""

    code = "unknown_type"


class BadRoom(ChatError):
    """A room name breaks the room-name rule."""

    code = "bad_room"


class NotInRoom(ChatError):
    """The connection is not a member of the room it addressed."""

    code = "not_in_room"


class NoSuchUser(ChatError):
    """A direct message to a user with no live connection."""

    code = "no_such_user"


class TooLarge(ChatError):
    """A text longer than ``max_text_length``."""

    code = "too_large"


class BadName(ChatError):
    """The display name asked for breaks the name rule; the connection closes."""

    code = "bad_name"
    close_code = 4400


class NameTaken(ChatError):
    """The display name is used by another live connection; the connection closes."""

    code = "name_taken"
    close_code = 4409


class Forbidden(ChatError):
    """The user's token does not allow this room."""

    code = "forbidden"


class TooManyRooms(ChatError):
    """Joining would pass ``--max-rooms`` for this connection."""

    code = "too_many_rooms"


class RateLimited(ChatError):
    """Over the rate limit: the request was dropped, not executed."""

    code = "rate_limited"


class Unavailable(ChatError):
    """The history store could not commit: nothing was acknowledged."""

    code = "unavailable"


class IdReused(ChatError):
    """An anonymous session sent an id that an earlier session under the same name
    used: nothing was stored; send it again with a new id."""

    code = "id_reused"


class AuthRequired(ChatError):
    """A conversation request (rooms as memberships, markers, recall, ...) from an
    anonymous connection."""

    code = "auth_required"


class NoSuchRoom(ChatError):
    """The room was never created and has no message, or the user has no such
    conversation."""

    code = "no_such_room"


class RoomExists(ChatError):
    """``create`` of a room that exists already."""

    code = "room_exists"


class NoSuchMessage(ChatError):
    """The seq named is not a message of that conversation (or was recalled)."""

    code = "no_such_message"


class TooLate(ChatError):
    """A sender's recall after ``--recall-window``."""

    code = "too_late"


class BadAttachment(ChatError):
    """A ``send``/``dm`` attachment names no upload of the sender's that finished
    processing (unknown, someone else's, still being stored): nothing was stored."""

    code = "bad_attachment"


class Muted(ChatError):
    """The sender is muted (in the room, or everywhere) by a moderator: nothing was
    stored; the frame says until when (``muted_until`` ms, ``seconds`` left)."""

    code = "muted"


class ContentBlocked(ChatError):
    """The content check (WeChat ``msgSecCheck``) found the text risky: nothing was
    stored or delivered."""

    code = "content_blocked"
