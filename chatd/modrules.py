"""The rules of moderation, as pure functions (no I/O, no clock: ``now`` is given).

Used by :mod:`chatd.moderation` (mute, global ban, reports, the queue) and by the
HTTP API (:mod:`chatd.api`), as :mod:`chatd.pushrules` is for offline push.

Sanctions
    A *sanction* is ``(kind, scope) -> until`` for one user: ``kind`` is
    :data:`MUTE` or :data:`BAN`, ``scope`` a room name or :data:`GLOBAL` (every
    conversation), ``until`` milliseconds since the epoch. A sanction whose
    ``until`` has passed no longer counts (:func:`active_until`): it expires by
    itself, nothing has to delete it. The stores keep them per user
    (:class:`chatd.store.IModerationStore`).

Moderators
    A *global moderator* is a token user whose token carries ``"mod": true`` or
    ``"roles": [..., "moderator", ...]`` (:func:`is_moderator`), signed by the
    server's verifier like every other claim; the HTTP API (the operator's API key)
    acts as a moderator too. Room owners and admins moderate their own room
    (:mod:`chatd.permissions`, ``mute``).

Reports
    ``report`` names a message and a reason of at most :data:`REASON_MAX`
    characters; a user may file :data:`REPORTS_PER_WINDOW` reports per
    :data:`REPORT_WINDOW_MS` (:func:`report_allowed`: a sliding window, per node),
    exactly-once by the request's id (:func:`report_key`). In cluster mode the
    limit is the cluster's: a counter per user and fixed window in Redis
    (:func:`report_window`, :func:`report_count_allowed`).

Retention
    With ``--moderation-retention-days N`` (default :data:`RETENTION_DAYS`; 0 keeps
    everything) closed queue entries closed more than N days ago and audit entries
    older than N days are deleted by a periodic sweep (:func:`expired`); open queue
    entries are kept, however old, until someone acts on them.
"""

from __future__ import annotations

import math

MUTE, BAN = "mute", "ban"
SANCTION_KINDS = (MUTE, BAN)
#: the scope of a sanction in every conversation
GLOBAL = "*"
#: the longest mute or ban one request may set (a year), in seconds
SECONDS_MAX = 366 * 86400
#: most characters of a report's reason
REASON_MAX = 500
#: reports one user may file per window
REPORTS_PER_WINDOW = 10
REPORT_WINDOW_MS = 60_000
#: items of the conversation stored with a report, before and after the message
CONTEXT_ITEMS = 3
#: report states, and the actions on a report of the queue
OPEN, CLOSED = "open", "closed"
REPORT_STATES = (OPEN, CLOSED)
DISMISS, RECALL = "dismiss", "recall"
ACTIONS = (DISMISS, RECALL, MUTE, BAN)
#: where a queue entry came from
REPORTED, FLAGGED = "report", "content_check"
#: most queue entries and audit entries one page lists
PAGE_MAX = 200
#: the two logs retention prunes: the moderation queue and the audit log
QUEUE, AUDIT = "queue", "audit"
#: the default of --moderation-retention-days
RETENTION_DAYS = 180.0
#: seconds between two retention sweeps, and entries read per step of one
SWEEP_INTERVAL = 3600.0
SWEEP_CHUNK = 500
DAY_MS = 86_400_000


def is_moderator(claims: dict) -> bool:
    """True when a token's (verified) *claims* make its user a global moderator."""
    if claims.get("mod") is True:
        return True
    roles = claims.get("roles")
    return isinstance(roles, list) and "moderator" in roles


def until_of(seconds: int, now_ms: int) -> int:
    """The ``until`` (ms) of a sanction of *seconds* set at *now_ms*."""
    return now_ms + int(seconds) * 1000


def active_until(sanctions: dict, kind: str, scopes, now_ms: int) -> int:
    """The latest ``until`` among *sanctions* (``(kind, scope) -> until``) of *kind*
    in *scopes* that has not passed at *now_ms*; 0: none is in force."""
    latest = 0
    for scope in scopes:
        until = sanctions.get((kind, scope), 0)
        if until > now_ms and until > latest:
            latest = until
    return latest


def seconds_left(until_ms: int, now_ms: int) -> int:
    """Whole seconds (rounded up) until *until_ms*; 0 when it has passed."""
    return max(0, math.ceil((until_ms - now_ms) / 1000))


def prune(sanctions: dict, now_ms: int) -> dict:
    """*sanctions* without those that have passed."""
    return {key: until for key, until in sanctions.items() if until > now_ms}


def report_allowed(times: list, now_ms: int) -> tuple[bool, list]:
    """May a user whose earlier reports were filed at *times* (ms, oldest first) file
    one at *now_ms*? Returns the answer and the times to keep (the new one included
    when allowed)."""
    recent = [t for t in times if now_ms - t < REPORT_WINDOW_MS]
    if len(recent) >= REPORTS_PER_WINDOW:
        return False, recent
    return True, [*recent, now_ms]


def retention_cutoff(days: float, now_ms: int) -> int | None:
    """The ms before which moderation entries go (None: *days* 0, keep everything)."""
    if not days:
        return None
    return now_ms - int(days * DAY_MS)


def expired(log: str, oldest: list, cutoff_ms: int) -> tuple[list[int], bool]:
    """Which of *oldest* (entries of *log*, :data:`QUEUE` or :data:`AUDIT`, oldest
    first, each with ``id`` and ``ts``) retention deletes at *cutoff_ms*, and whether
    the sweep is done with *log* (an entry at least as young as the cutoff was
    reached; entries are in id order, so their ``ts`` only grows).

    An audit entry goes when its ``ts`` is older than the cutoff; a queue entry when
    it is closed and its resolution's ``ts`` (else its own) is older. Open entries
    are kept."""
    ids = []
    for entry in oldest:
        ts = entry.get("ts")
        if not isinstance(ts, int) or ts >= cutoff_ms:
            return ids, True
        if log == QUEUE:
            if entry.get("state") != CLOSED:
                continue
            resolution = entry.get("resolution")
            closed = resolution.get("ts", ts) if isinstance(resolution, dict) else ts
            if not isinstance(closed, int) or closed >= cutoff_ms:
                continue
        ids.append(entry["id"])
    return ids, False


def report_window(now_ms: int) -> int:
    """The number of the fixed window *now_ms* falls in (the cluster-wide limit)."""
    return now_ms // REPORT_WINDOW_MS


def report_count_allowed(count: int) -> bool:
    """May a report be filed that is the *count*-th of its user in its fixed window?"""
    return count <= REPORTS_PER_WINDOW


def report_key(reporter: str, ref: str | None, channel: str, seq: int) -> str:
    """What makes a report exactly-once: the reporter's request id (without one, the
    reporter and the message: one open report per user and message)."""
    if ref:
        return f"{reporter}\n{ref}"
    return f"{reporter}\n\n{channel}\n{seq}"


def context_range(seq: int) -> list[int]:
    """The seqs stored around a reported message *seq* (it included)."""
    return list(range(max(1, seq - CONTEXT_ITEMS), seq + CONTEXT_ITEMS + 1))


def check_reason(reason) -> str | None:
    """Why *reason* is not a report's reason (None: it is one)."""
    if not isinstance(reason, str):
        return "'reason' must be a string"
    if len(reason) > REASON_MAX:
        return f"'reason' is at most {REASON_MAX} characters"
    return None


def check_action(action: dict) -> str | None:
    """Why *action* (``{"action", "seconds"?}``) is not an action on a queue entry."""
    kind = action.get("action")
    if kind not in ACTIONS:
        return f"'action' is one of {', '.join(ACTIONS)}"
    if kind in (MUTE, BAN):
        seconds = action.get("seconds")
        if kind == BAN and seconds is None:
            return None  # a ban without seconds is for good
        return check_seconds(seconds)
    return None


def check_seconds(seconds) -> str | None:
    """Why *seconds* is not a mute's or ban's duration (None: it is one)."""
    if type(seconds) is not int or not 0 < seconds <= SECONDS_MAX:
        return f"'seconds' is an integer from 1 to {SECONDS_MAX}"
    return None


#: ``until`` of a ban for good (the year 9999)
FOREVER = 253_402_300_799_000
