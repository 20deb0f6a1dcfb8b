"""Removing uploads that were never attached to a message.

:func:`to_remove` is the pure rule: an upload not attached to any message and
older than the grace period (``--media-grace-hours``) goes. "Attached" is set
by the attachment work (``send``/``dm`` with ``attachments``, not built yet):
until then **every** upload is unattached and is removed once its grace period
is over. The sweep itself runs in :class:`chatd.media.web.Media` every
:data:`INTERVAL` seconds on an injected clock.
"""

from __future__ import annotations

#: seconds between sweeps
INTERVAL = 600.0


def to_remove(rows, now: float, grace: float) -> list[str]:
    """Ids of the *rows* (``{"id", "created", "attached"}``) to remove at *now*."""
    return [r["id"] for r in rows if not r["attached"] and r["created"] + grace <= now]
