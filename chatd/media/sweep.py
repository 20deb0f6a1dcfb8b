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

A removal retires an object, asks the metadata whether a row uses it, then
purges or restores it (:meth:`chatd.media.web.Media._drop_blob`); a chatd killed
in between leaves the retired object behind. The service's start, then the
sweep every :data:`RETIRED_INTERVAL`, settles the retired objects older than
:data:`RETIRED_GRACE` the same way (:func:`stale_retired`): restored if a row uses the key, else purged. A
removal still running in this process owns its token and is left alone; one
running in another process (``--workers``, another node) is younger than the
grace period. With them go the files of ``<media-dir>/tmp`` not written for
:data:`TEMPORARY_GRACE` (:func:`stale_files`): the bodies and cleaned images of
uploads whose chatd was killed; and the part files of ``objects/`` a put killed
half-way left (``<sha256>.part-<random>``, :func:`stale_parts`). Which puts are
running in this process the store knows exactly (and never removes their parts);
without ``--media-shared`` no other process writes into ``--media-dir``, so every
other part is a dead put's, whatever its age. With ``--media-shared`` another
node may be writing one: a part is removed once not written for
:data:`PART_GRACE`.
"""

from __future__ import annotations

#: seconds between sweeps
INTERVAL = 600.0
#: seconds after which a pending post whose message was not recorded is settled from
#: the history (a commit takes milliseconds; a kill between commit and record, hours)
RESOLVE_AFTER = 300.0
#: seconds a message's ts may be before its pending post's time (clocks of one node)
CLOCK_SLACK = 60.0
#: seconds a retired object is left to the removal that retired it (which takes
#: milliseconds) before the sweep settles it
RETIRED_GRACE = 3600.0
#: seconds between two looks for what a killed chatd left (at start, then with the
#: sweep at most this often: on disk it reads every directory of ``objects/``)
RETIRED_INTERVAL = 3600.0
#: seconds since its last write after which a file of ``<media-dir>/tmp`` is a
#: killed chatd's (an upload's body is written as it arrives, within 300 s)
TEMPORARY_GRACE = 3600.0
#: seconds since its last write after which a part file of a shared ``--media-dir``
#: is a killed put's: a put writes 1 MiB at a time, so the longest pause is the final
#: fsync of at most ``--max-file-bytes`` (1 GiB: under two minutes at 10 MB/s) or a
#: clock difference between the nodes and the file server
PART_GRACE = 3600.0


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


def stale_retired(listing, now: float, grace: float, owned) -> list[tuple[str, str]]:
    """``[(key, token)]`` of the retired objects *listing* (``(key, token, at)``,
    :meth:`chatd.media.store.IMediaStore.retired`) to settle at *now*: retired at
    least *grace* seconds before, and not *owned* (tokens of removals running here)."""
    return [(key, token) for key, token, at in listing if at + grace <= now and token not in owned]


def stale_files(listing, now: float, grace: float) -> list[str]:
    """The paths of *listing* (``(path, mtime)``) last written *grace* seconds or
    more before *now*."""
    return [path for path, mtime in listing if mtime + grace <= now]


def stale_parts(listing, now: float, grace: float | None, owned) -> list[str]:
    """The part files of *listing* (``(token, mtime)``,
    :meth:`chatd.media.store.IMediaStore.leftovers`) to remove at *now*: never one in
    *owned* (written by a put running here); with *grace* None (no other process
    writes into the store) every other one, else those last written *grace* seconds
    or more before *now*."""
    return [
        token
        for token, mtime in listing
        if token not in owned and (grace is None or mtime + grace <= now)
    ]
