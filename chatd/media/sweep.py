"""Which uploads to remove: the media lifecycle's pure rules.

An upload is kept while a message that shows it is still stored. So, for each
upload (``{"id", "created", "attached", "posts", "live"}``: ``attached`` the
time it was last attached, 0 never; ``posts`` the messages it was committed
in; ``live`` how many of those are still stored and not recalled):

* **in use** (``live > 0``): kept;
* **orphaned** (``posts > 0``, ``live == 0``): every message that showed it was
  recalled or pruned (``--history-days``, ``--history-max``): removed at once;
* **never posted** (``posts == 0``): removed once the grace period
  (``--media-grace-hours``) has passed since its upload and since it was last
  attached (an attaching whose message was never committed, say).

:func:`to_remove` applies them; :func:`live_posts` decides which posts still
count from the stored messages. An upload with a *pending* post (attached to a
message being committed, :meth:`chatd.media.meta.IMediaMeta.claim`) is never
removed, whatever these rules say: the removal itself checks it, atomically.
A pending post older than :data:`RESOLVE_AFTER` (chatd stopped between the
commit and recording the post, or the commit failed) is settled by looking for
the message in the channel's history (:func:`scan`): found, it becomes a post;
not found, it is dropped and the upload falls under the grace period again. The sweep itself runs in
:class:`chatd.media.web.Media` every :data:`INTERVAL` seconds on an injected
clock; a recall runs the orphan rule at once for its message's uploads.
"""

from __future__ import annotations

#: seconds between sweeps
INTERVAL = 600.0
#: seconds after which a pending post whose message was not recorded is settled from
#: the history (a commit takes milliseconds; a kill between commit and record, hours)
RESOLVE_AFTER = 300.0
#: seconds a message's ts may be before its pending post's time (clocks of one node)
CLOCK_SLACK = 60.0


def to_remove(rows, now: float, grace: float) -> list[str]:
    """Ids of the *rows* to remove at *now* (see the module docstring)."""
    out = []
    for r in rows:
        live, posts = r.get("live", 0), r.get("posts", 0)
        if live:
            continue
        if posts or max(r["created"], r["attached"] or 0) + grace <= now:
            out.append(r["id"])
    return out


def live_posts(posts, stored) -> set:
    """The *posts* ``(media_id, channel, seq)`` whose message still shows the upload:
    *stored* is ``{(channel, seq): Message}`` of the posts' messages still stored."""
    out = set()
    for post in posts:
        message = stored.get((post[1], post[2]))
        if message is None or (message.data or {}).get("recalled"):
            continue
        shown = (message.data or {}).get("attachments") or ()
        if any(a.get("media_id") == post[0] for a in shown):
            out.add(post)
    return out


def pending_groups(pending) -> dict:
    """``{(token, channel): (at, {media_id})}`` of *pending* posts
    ``(token, media_id, channel, at)``: one message each, looked for once."""
    out: dict = {}
    for token, media_id, channel, at in pending:
        first, ids = out.get((token, channel), (at, set()))
        ids.add(media_id)
        out[(token, channel)] = (min(first, at), ids)
    return out


def scan(messages, ids, since_ms: int):
    """Look for the message showing uploads *ids* among *messages* (one history page,
    ascending), newest first: ``({id: seq}, done)``, ``done`` once a message older
    than *since_ms* was reached (older pages cannot hold it)."""
    for message in reversed(messages):
        if message.ts < since_ms:
            return {}, True
        if message.kind != "message":
            continue
        shown = set(ids).intersection(
            a.get("media_id") for a in (message.data or {}).get("attachments") or ()
        )
        if shown:
            return dict.fromkeys(shown, message.seq), True
    return {}, False
