"""Media uploads (docs/api.md, "Media"): pictures, voice and files for chat messages.

The parts, each in its own module:

* :mod:`chatd.media.sniff` -- what an upload is, from its first bytes only;
* :mod:`chatd.media.multipart` -- the file part of a ``multipart/form-data`` body,
  streamed from file to file (never held in memory whole);
* :mod:`chatd.media.process` -- images decoded under a pixel limit, EXIF stripped,
  re-encoded, a thumbnail made; voice duration from the container (Pillow, mutagen);
* :mod:`chatd.media.store` -- :class:`IMediaStore` and its two backends, local disk
  (content-addressed by SHA-256) and S3-compatible services (boto3);
* :mod:`chatd.media.meta` -- the metadata table (SQLite, ``<media-dir>/media.sqlite3``);
* :mod:`chatd.media.signing` -- signed, expiring URLs;
* :mod:`chatd.media.attach` -- attachments: who may attach what, what a message
  stores and shows (pure; ``send``/``dm`` with ``attachments``, docs/protocol.md);
* :mod:`chatd.media.sweep` -- which uploads to remove (pure): never sent, recalled, pruned;
* :mod:`chatd.media.web` -- ``POST /api/media``, ``GET /api/media/<id>``,
  ``GET /media/<id>[/thumb]``, and :class:`chatd.media.web.Media` tying them together.

Heavy work (parsing, decoding, hashing, storage calls, SQLite) runs in one small
dedicated thread pool, never on the reactor.
"""
