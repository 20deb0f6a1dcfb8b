"""Attachments: uploads shown in messages (``send``/``dm`` with ``attachments``). Pure.

A message's attachments are stored in its data (``Message.data["attachments"]``,
the history schema is unchanged) as :func:`entry` made them from the upload's
metadata row, in the order the sender gave them::

    {"media_id", "kind", "mime", "size", "name"?, "width"?, "height"?,
     "duration_ms"?, "thumb"?: {"mime", "size"}}

They carry no URL: :func:`signed` adds ``url``, ``thumb_url`` (when there is a
thumbnail) and ``expires`` each time a frame is made (delivery, replay,
history, sync), so a page read a week later still has URLs that work.
:func:`check` is the rule of who may attach what.
"""

from __future__ import annotations

from chatd import errors

#: most attachments on one message
MAX_ATTACHMENTS = 9
#: the upload's optional metadata an attachment shows when it has it
_OPTIONAL = ("name", "width", "height", "duration_ms")
#: the type thumbnails are made in (chatd.media.process)
THUMB_MIME = "image/webp"


def entry(row: dict) -> dict:
    """The stored attachment of an upload's metadata *row* (see the module docstring)."""
    out = {"media_id": row["id"], "kind": row["kind"], "mime": row["mime"], "size": row["size"]}
    for field in _OPTIONAL:
        if row.get(field) is not None:
            out[field] = row[field]
    if row.get("thumb_sha256"):
        out["thumb"] = {"mime": THUMB_MIME, "size": row["thumb_size"]}
    return out


def signed(entries, signer, now: float) -> list[dict]:
    """*entries* (stored attachments) with URLs signed at *now* (a
    :class:`chatd.media.signing.Signer`): ``url``, ``thumb_url``, ``expires``."""
    expires = int(now + signer.ttl)
    out = []
    for e in entries:
        d = dict(e)
        media_id = e["media_id"]
        d["url"] = signer.url(media_id, "", now)
        if e.get("thumb"):
            d["thumb_url"] = signer.url(media_id, "thumb", now)
        d["expires"] = expires
        out.append(d)
    return out


def check(rows: dict, user: str, ids: list[str], ref=None) -> list[dict]:
    """The stored attachments for *user*'s message naming *ids*, from the metadata
    *rows* (``{id: row}``); raises :class:`chatd.errors.BadAttachment` unless every
    id is an upload of *user* whose bytes are stored. Someone else's upload is
    refused exactly like an unknown id (nothing tells that it exists)."""
    out = []
    for media_id in ids:
        row = rows.get(media_id)
        if row is None or row["owner"] != user:
            raise errors.BadAttachment(f"no upload {media_id!r} of yours", ref)
        if not row["ready"]:
            raise errors.BadAttachment(
                f"upload {media_id!r} is still being processed: send once it is done", ref
            )
        out.append(entry(row))
    return out


def media_ids(data: dict | None) -> list[str]:
    """The upload ids a message's *data* shows (``[]``: none)."""
    return [a["media_id"] for a in (data or {}).get("attachments") or ()]
