"""The media HTTP endpoints and :class:`Media`, which ties the media parts together.

==========  =====================  ==================================================
method      path                   what
==========  =====================  ==================================================
POST        /api/media             upload one file (multipart/form-data, a file field);
                                   ``Authorization: Bearer <token>``
GET         /api/media/ID          the upload's metadata with fresh signed URLs (its
                                   uploader, and readers of a conversation it was posted in)
GET, HEAD   /media/ID?e=&s=        the stored file (signed URL; Range, ETag)
GET, HEAD   /media/ID/thumb?e=&s=  its thumbnail (images)
==========  =====================  ==================================================

Errors are ``{"error": code, "message": text}`` (docs/api.md, "Media"). Bytes
are served with ``X-Content-Type-Options: nosniff``, a sandboxing
``Content-Security-Policy`` and the type chatd sniffed -- never one from the
client, never HTML or SVG: anything that is not a JPEG, PNG, GIF, WebP, MP3,
AAC, M4A or MP4 is ``application/octet-stream`` with ``Content-Disposition:
attachment``.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import tempfile
from dataclasses import dataclass
from urllib.parse import quote

from twisted.application.service import Service
from twisted.internet import defer, task
from twisted.internet.interfaces import IPushProducer
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET
from zope.interface import implementer

from chatd.auth import AuthError, bearer_identity
from chatd.httpserver import Refusal, flat_error
from chatd.media import attach as attaching
from chatd.media import sweep as sweeping
from chatd.media.meta import PooledMeta, QuotaExceeded
from chatd.media.multipart import (
    BadForm,
    FormSink,
    QueuedFile,
    TooLarge,
    Writer,
    boundary_of,
    extract_file,
)
from chatd.media.names import choose_name, download_name
from chatd.media.process import BackgroundThread, Limits, Processes, Refused
from chatd.media.signing import Signer
from chatd.media.sniff import FILE

#: room for the multipart framing around the file in the /api/media body limit
MULTIPART_SLACK = 64 * 1024
#: bytes read from the store per write when serving
SERVE_CHUNK = 256 * 1024
#: message seqs per history store read when the sweep checks which posts are still shown
COLLECT_BATCH = 500
#: seconds an upload's body may take once its headers are in (instead of --handshake-timeout)
UPLOAD_SECONDS = 300.0
#: bytes of a non-POST /api/media body kept in memory before it is spooled to a file
SPOOL_BYTES = 100_000
#: threads of the media pool (decoding is CPU-bound: keep it small)
THREADS = 2
_ID = re.compile(r"[A-Za-z0-9_-]{22}")
_CSP = b"default-src 'none'; img-src 'self'; media-src 'self'; sandbox"


@dataclass(frozen=True)
class Claim:
    """Uploads claimed for one message (:meth:`Media.claim`): its stored attachments
    and the token of their pending posts."""

    token: str
    ids: list
    entries: list


class MediaError(Exception):
    """An error answer: HTTP *status*, error *code*, *message*."""

    def __init__(self, status: int, code: str, message: str, headers=()):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = tuple(headers)


def parse_range(header: bytes | None, size: int):
    """A ``Range`` header against an object of *size* bytes.

    None: serve it whole (no header, another unit, several ranges);
    ``(start, stop)`` (stop exclusive): one satisfiable range; ``"unsatisfiable"``.
    """
    if not header:
        return None
    unit, _, spec = header.decode("latin-1").partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, dash, last = spec.strip().partition("-")
    if not dash:
        return None
    try:
        if first == "":
            if not last.isdigit() or int(last) == 0:
                return "unsatisfiable"
            return max(0, size - int(last)), size
        if not first.isdigit() or (last and not last.isdigit()):
            return None
        start = int(first)
        stop = min(size, int(last) + 1) if last else size
    except ValueError:
        return None
    if start >= size or stop <= start:
        return "unsatisfiable"
    return start, stop


class Media(Service):
    """Uploads, storage, signed serving and the sweep (see :mod:`chatd.media`).

    *store* is an :class:`chatd.media.store.IMediaStore`; *directory* holds the
    temporary files (and, unless *meta* is given, the SQLite metadata file, made on
    first use); *meta* an :class:`chatd.media.meta.IMediaMeta` (``--redis``:
    :class:`chatd.media.redismeta.RedisMeta`, shared by every node); *verifier* the
    :class:`chatd.auth.TokenVerifier`; *clock* drives the sweep and signs URLs.
    :meth:`attach` connects it to the chat: messages may then attach uploads.
    *run* replaces the thread pool (``run(f, *args)`` returning a Deferred; tests
    with a Clock run the blocking parts in place). *warm*: start the image worker
    processes with the service (:meth:`chatd.media.process.Processes.warm`).
    *shared*: other processes write into the store too (``--media-shared``), so a
    part file may be another node's put in flight (:func:`chatd.media.sweep.stale_parts`).
    """

    log = Logger()

    def __init__(
        self,
        store,
        directory: str,
        signer: Signer,
        verifier,
        limits: Limits,
        quota: int = 0,
        grace: float = 86400.0,
        reactor=None,
        clock=None,
        run=None,
        meta=None,
        warm=False,
        shared=False,
    ):
        if reactor is None:
            from twisted.internet import reactor
        self.store = store
        self.directory = os.path.abspath(directory)
        self.tmp = os.path.join(self.directory, "tmp")
        self.db_path = os.path.join(self.directory, "media.sqlite3")
        self.signer = signer
        self.verifier = verifier
        self.limits = limits
        self.quota = quota
        self.grace = grace
        self.reactor = reactor
        self.clock = clock if clock is not None else reactor
        self.pool = ThreadPool(0, THREADS, "chatd-media")
        #: its threads run behind the reactor's (hashing, copying, SQLite of the media)
        self.pool.threadFactory = BackgroundThread
        #: image/voice inspection in worker processes (see process.Processes)
        self.processes = Processes(THREADS)
        #: start the worker processes with the service (not on the first upload)
        self.warm = warm
        #: how long another process's part file is left (None: no other process writes)
        self.part_grace = sweeping.PART_GRACE if shared else None
        #: the thread writing upload bodies to disk as they arrive (multipart.Writer)
        self.writer = Writer(reactor)
        if run is not None:
            self.run = run
        #: the chat (chatd.chat.Chat) whose messages attach uploads (see attach)
        self.chat = None
        #: the metadata (chatd.media.meta.IMediaMeta)
        self.meta = meta if meta is not None else PooledMeta(self.db_path, self._in_pool)
        self._sweeper = task.LoopingCall(self.sweep)
        self._sweep_lock = defer.DeferredLock()
        #: tokens of retired objects a removal running here still owns (_settle)
        self._retiring: set[str] = set()
        #: when the sweep last looked for what a killed chatd left (sweep.RETIRED_INTERVAL)
        self._leftovers_looked = float("-inf")
        self._sweeper.clock = self.clock

    # lifecycle

    def startService(self):
        super().startService()
        self.pool.start()
        if self.warm:
            self.processes.warm()
        self._sweeper.start(sweeping.INTERVAL, now=False)
        # what a chatd killed half-way through a removal or an upload left
        self._sweep_lock.run(lambda: self._leftovers_swept(self.clock.seconds()))

    def stopService(self):
        super().stopService()
        if self._sweeper.running:
            self._sweeper.stop()
        self.pool.stop()
        self.writer.stop()
        self.processes.close()
        self.meta.close()

    def attach(self, chat) -> None:
        """Let *chat*'s ``send``/``dm`` attach uploads; its store tells which messages
        still show them, its membership who may see them."""
        self.chat = chat
        chat.media = self

    def run(self, f, *args):
        """Call ``f(*args)`` in the media thread pool: a Deferred."""
        return deferToThreadPool(self.reactor, self.pool, f, *args)

    def _in_pool(self, f, *args):
        return self.run(f, *args)

    # the resource tree

    def body_limit(self) -> int:
        """The body limit of ``/api/media``: the largest per-kind limit plus framing."""
        return self.limits.largest + MULTIPART_SLACK

    def identity(self, authorization):
        """The uploader; :class:`MediaError` 401 without a good token."""
        try:
            return bearer_identity(self.verifier, authorization)
        except AuthError as e:
            raise MediaError(401, "unauthorized", e.reason) from None

    def precheck(self, method: bytes, headers) -> None:
        """Refuse a request without a good token before any body byte is read."""
        values = headers.getRawHeaders(b"authorization")
        try:
            self.identity(values[-1] if values else None)
        except MediaError as e:
            raise Refusal(e.status, e.code, e.message, [(b"WWW-Authenticate", b"Bearer")]) from None

    # uploads

    def body_content(self, request, method: bytes, length) -> object:
        """``request.content`` of an ``/api/media`` request (:class:`chatd.httpserver.BodyRule`
        ``content``): a POST's body goes through a :class:`FormSink` as it arrives, its
        file part written into ``<media-dir>/tmp`` by the :class:`Writer`'s thread (the
        socket paused while too much waits for the disk); anything else is spooled."""
        if method != b"POST":
            return tempfile.SpooledTemporaryFile(SPOOL_BYTES)
        values = request.requestHeaders.getRawHeaders(b"content-type")
        try:
            boundary = boundary_of(values[-1] if values else None)
        except BadForm as e:  # answered once the body is in
            return FormSink(None, self.tmp, self.limits.largest, error=e)
        transport = request.channel.transport  # resuming a closed one is a no-op

        def opener(directory):
            self.writer.submit(os.makedirs, directory, 0o777, True)
            return QueuedFile(
                self.writer, directory, transport.pauseProducing, transport.resumeProducing
            )

        return FormSink(boundary, self.tmp, self.limits.largest, opener=opener)

    @defer.inlineCallbacks
    def _form(self, content, content_type):
        """The :class:`chatd.media.multipart.Form` of an upload's body *content*: a
        :class:`FormSink` parsed it as it arrived; a file is parsed in the pool."""
        try:
            if isinstance(content, FormSink):
                return (yield content.take())
            boundary = boundary_of(content_type)
            yield self.run(lambda: os.makedirs(self.tmp, exist_ok=True))
            return (yield self.run(extract_file, content, boundary, self.tmp, self.limits.largest))
        except BadForm as e:
            raise MediaError(400, "bad_request", str(e)) from None
        except TooLarge:
            raise MediaError(413, "too_large", self._too_large()) from None

    @defer.inlineCallbacks
    def upload(self, identity, content, content_type: str | None):
        """Take the multipart body *content* (a :class:`FormSink`, or a file) from
        *identity*: the answer dict."""
        form = yield self._form(content, content_type)
        made = [form.path]
        path, size = form.path, form.size
        name = choose_name(form.fields.get("name"), form.filename)
        try:
            if self.quota:
                used = yield self.meta.used(identity.user, self.clock.seconds())
                if used + size > self.quota:
                    raise self._over_quota()
            try:
                done = yield self.run(self.processes.call, path, self.tmp, self.limits)
            except Refused as e:
                raise MediaError(e.status, e.code, e.message) from None
            made.extend(p for p in done.paths() if p not in made)
            row = {
                "id": secrets.token_urlsafe(16),
                "owner": identity.user,
                "kind": done.kind,
                "mime": done.mime,
                "name": name,
                "size": done.size,
                "width": done.width,
                "height": done.height,
                "duration_ms": done.duration_ms,
                "sha256": done.sha256,
                "thumb_sha256": done.thumb_sha256,
                "thumb_size": done.thumb_size,
                "created": self.clock.seconds(),
            }
            try:
                yield self.meta.record(row, self.quota)
            except QuotaExceeded:
                raise self._over_quota() from None
            try:
                yield self.run(self._put, done)
            except Exception:
                self.log.failure("media: storing an upload of {user} failed", user=identity.user)
                yield self._unrecord(row["id"])
                raise MediaError(503, "unavailable", "the media store failed; try again") from None
            yield self.meta.ready(row["id"])
        finally:
            yield self.run(_unlink_all, made)  # off the reactor, like every file operation
        self.log.info(
            "media {id} uploaded by {user}: {kind} {mime}, {size} bytes",
            id=row["id"],
            user=identity.user,
            kind=row["kind"],
            mime=row["mime"],
            size=row["size"],
        )
        return self.describe(row)

    def _put(self, done) -> None:
        self.store.put(done.sha256, done.path)
        if done.thumb_path:
            self.store.put(done.thumb_sha256, done.thumb_path)

    @defer.inlineCallbacks
    def _unrecord(self, media_id: str):
        """Forget the upload *media_id* whose bytes could not all be stored: its row
        (so the quota does not count it) and the objects no other row uses (the image
        may be stored and its thumbnail not), removed as any removal does. If that
        fails too (the store is down) it is logged: a row left (not ready) goes with
        the grace period's sweep, an object the put stored stays until an identical
        upload uses it."""
        try:
            keys = yield self.meta.remove(media_id)
        except Exception:
            self.log.failure("media: removing the upload {id} whose put failed", id=media_id)
            return
        for key in keys:
            try:
                yield self._drop_blob(key)
            except Exception:
                self.log.failure("media: removing the object {key} of a failed put", key=key)

    def _too_large(self) -> str:
        lim = self.limits
        return f"uploads may have at most {lim.image} (image), {lim.voice} (voice), {lim.file} (other) bytes"

    def _over_quota(self) -> MediaError:
        return MediaError(
            429,
            "quota_exceeded",
            f"uploads are limited to {self.quota} bytes per user and day",
            [(b"Retry-After", b"3600")],
        )

    def urls(self):
        """:data:`chatd.wire.Sign` for frames made now: stored attachments with URLs
        signed at this moment."""
        now = self.clock.seconds()
        signer = self.signer
        return lambda entries: attaching.signed(entries, signer, now)

    def describe(self, row: dict) -> dict:
        """The JSON answer for an upload: its attachment entry with URLs signed now."""
        return self.urls()([attaching.entry(row)])[0]

    @defer.inlineCallbacks
    def owned(self, identity, media_id: str):
        """``GET /api/media/ID``: fresh URLs for the uploader and for whoever may read
        a conversation it was posted in (:meth:`chatd.chat.Chat.may_read`); 404 for
        anyone else, exactly as for an unknown id."""
        row = yield self._row(media_id)
        if row is None:
            raise MediaError(404, "not_found", "no such media")
        if row["owner"] != identity.user and not (yield self._may_see(identity, media_id)):
            raise MediaError(404, "not_found", "no such media")
        return self.describe(row)

    @defer.inlineCallbacks
    def _may_see(self, identity, media_id):
        if self.chat is None:
            return False
        for channel in (yield self.meta.channels(media_id)):
            if (yield self.chat.may_read(identity, channel)):
                return True
        return False

    # attachments (from chatd.inbox: send/dm with attachments)

    @defer.inlineCallbacks
    def claim(self, user: str, ids: list[str], channel: str, ref=None):
        """A :class:`Claim` of *user*'s uploads *ids* for a message to *channel*: their
        stored attachments (:func:`chatd.media.attach.check`; fails with
        ``bad_attachment``). Before the message is committed they are marked attached
        and get a pending post (:meth:`chatd.media.meta.IMediaMeta.claim`): neither the
        sweep nor a recall of another message showing them removes them meanwhile,
        and if chatd stops before :meth:`posted` the sweep finds the message."""
        token = secrets.token_urlsafe(12)
        rows = yield self.meta.claim(ids, user, token, channel, self.clock.seconds())
        try:
            entries = attaching.check(rows, user, ids, ref)
        except Exception:
            yield self.meta.release(token, ids)
            raise
        return Claim(token, list(ids), entries)

    def posted(self, message, claim):
        """*message* (committed) shows the attachments of *claim*: its posts recorded,
        the pending ones dropped."""
        ids = attaching.media_ids(message.data)
        return self.meta.posted(claim.token, claim.ids, ids, message.channel, message.seq)

    def released(self, claim):
        """The message of *claim* was not committed: drop its pending posts."""
        return self.meta.release(claim.token, claim.ids)

    def recalled(self, channel: str, seq):
        """Message *seq* of *channel* was recalled: its uploads go unless another
        message shows them (or one being committed will). Fires with how many went."""
        if seq is None:
            return defer.succeed(0)
        d = self.meta.posted_in(channel, seq)
        d.addCallback(lambda ids: self.collect(ids) if ids else 0)
        d.addErrback(self._collect_failed)
        return d

    def collect(self, ids=None):
        """Remove the uploads among *ids* (None: every posted one) whose every post is
        gone: its message recalled or pruned (:mod:`chatd.media.sweep`). Fires with
        how many went. One at a time with the sweep."""
        return self._sweep_lock.run(self._collect, ids)

    @defer.inlineCallbacks
    def _collect(self, ids):
        if self.chat is None:
            return 0
        meta = self.meta
        posts = yield meta.posts(ids)
        seqs: dict[str, list[int]] = {}
        for _media_id, channel, seq in posts:
            seqs.setdefault(channel, []).append(seq)
        stored = {}
        store = self.chat.store
        for channel, wanted in seqs.items():
            wanted = sorted(set(wanted))
            for start in range(0, len(wanted), COLLECT_BATCH):
                items = yield store.items(channel, wanted[start : start + COLLECT_BATCH])
                stored.update(((channel, seq), m) for seq, m in items.items())
        live = sweeping.live_posts(posts, stored)
        counts: dict[str, dict] = {}
        for post in posts:
            row = counts.setdefault(post[0], {"id": post[0], "created": 0.0, "attached": 0})
            row["posts"] = row.get("posts", 0) + 1
            row["live"] = row.get("live", 0) + (post in live)
        candidates = sweeping.to_remove(counts.values(), self.clock.seconds(), self.grace)
        seen: dict[str, list] = {}
        for post in posts:
            seen.setdefault(post[0], []).append(post)
        # each removed only if it has no post nor pending post the decision did not see
        gone = yield self._remove({i: seen[i] for i in candidates})
        went = set(gone)
        dead = [p for p in posts if p not in live and p[0] not in went]
        if dead:  # kept for another message: the dead posts grant no access any more
            yield meta.drop_posts(dead)
        if gone:
            self.log.info(
                "media: {count} uploads no message shows any more removed", count=len(gone)
            )
        return len(gone)

    def _collect_failed(self, failure):
        self.log.failure("media collection failed", failure)
        return 0

    @defer.inlineCallbacks
    def _remove(self, seen: dict, cutoff=None):
        """Remove the uploads ``{id: the posts the decision saw}`` -- each only if it
        still has no others, nor a pending one (:meth:`IMediaMeta.remove`) -- and the
        bytes no other row uses. Fires with the ids removed."""
        gone = []
        for media_id, posts in seen.items():
            keys = yield self.meta.remove(media_id, posts, cutoff)
            if keys is None:
                continue  # attached again meanwhile: kept
            gone.append(media_id)
            for key in keys:
                yield self._drop_blob(key)
        return gone

    @defer.inlineCallbacks
    def _drop_blob(self, key: str):
        """Remove the stored object *key* no row used when its last row went -- unless
        an identical upload was recorded meanwhile: its put may have found the object
        still there and stored nothing. Retired first (gone for every later put),
        then the metadata asked: a row uses it now -> put back, else purged. An upload
        recorded after that question finds the object missing and stores it anew."""
        token = yield self.run(self.store.retire, key)
        if token is not None and (yield self._settle(key, token)):
            self.log.info("media: object {key} kept for an identical upload", key=key)

    @defer.inlineCallbacks
    def _settle(self, key: str, token: str):
        """Put the retired object *token* back under *key* if a row uses *key* now,
        else purge it; fires with whether it was put back. Until then *token* is
        owned here: the retired-object sweep leaves it alone."""
        self._retiring.add(token)
        try:
            try:
                used = yield self.meta.referenced(key)
            except Exception:
                yield self.run(self.store.restore, key, token)  # unsure: keep the bytes
                raise
            if used:
                yield self.run(self.store.restore, key, token)
            else:
                yield self.run(self.store.purge, token)
            return used
        finally:
            self._retiring.discard(token)

    @defer.inlineCallbacks
    def _settle_retired(self, listing, now: float):
        """Settle the retired objects (*listing*, :meth:`IMediaStore.retired`) an
        interrupted removal left behind (:func:`chatd.media.sweep.stale_retired`);
        fires with how many."""
        stale = sweeping.stale_retired(listing, now, sweeping.RETIRED_GRACE, self._retiring)
        settled = restored = 0
        for key, token in stale:
            try:
                restored += yield self._settle(key, token)
            except Exception:  # another node may have settled it meanwhile: the next one
                self.log.failure("media: settling the retired object {token} failed", token=token)
                continue
            settled += 1
        if settled:
            self.log.info(
                "media sweep settled {count} retired objects an interrupted removal "
                "left ({restored} put back)",
                count=settled,
                restored=restored,
            )
        return settled

    def _row(self, media_id: str):
        if not _ID.fullmatch(media_id):
            return defer.succeed(None)
        return self.meta.get(media_id)

    # the sweep

    def sweep(self):
        """Remove the uploads never posted past the grace period, and those no stored
        message shows any more (:mod:`chatd.media.sweep`); fires with how many. One
        sweep at a time: a call while one runs (the periodic one, say) waits for it,
        then sweeps."""
        return self._sweep_lock.run(self._sweep)

    @defer.inlineCallbacks
    def _sweep(self):
        now = self.clock.seconds()
        try:
            yield self._resolve(now)
            cutoff = now - self.grace
            rows = yield self.meta.unposted_before(cutoff)
            unposted = sweeping.to_remove(rows, now, self.grace)
            unposted = yield self._remove({i: () for i in unposted}, cutoff)
            removed = len(unposted) + (yield self._collect(None))
        except Exception:
            self.log.failure("media sweep failed")
            removed = 0
        else:
            if unposted:
                self.log.info("media sweep removed {count} unattached uploads", count=len(unposted))
        if now - self._leftovers_looked >= sweeping.RETIRED_INTERVAL:
            yield self._leftovers_swept(now)
        return removed

    @defer.inlineCallbacks
    def _leftovers_swept(self, now):
        """Settle the retired objects, remove the part files and the temporary files a
        killed chatd left (each logged if it fails)."""
        if not self.running:  # the pool is not started (a sweep before startService)
            return
        self._leftovers_looked = now
        try:
            retired, parts = yield self.run(self.store.leftovers)
        except Exception:
            self.log.failure("media: listing the store for leftovers failed")
            retired = parts = None
        if retired is not None:
            try:
                yield self._settle_retired(retired, now)
            except Exception:
                self.log.failure("media: the retired-object sweep failed")
            try:
                yield self._sweep_parts(parts, now)
            except Exception:
                self.log.failure("media: the part-file sweep failed")
        try:
            yield self._sweep_temporary(now)
        except Exception:
            self.log.failure("media: the temporary-file sweep failed")

    @defer.inlineCallbacks
    def _sweep_parts(self, listing, now: float):
        """Remove the part files (*listing*, :meth:`IMediaStore.leftovers`) of puts a
        killed chatd left half-way (:func:`chatd.media.sweep.stale_parts`); fires with
        how many."""
        owned = yield self.run(self.store.writing)
        stale = sweeping.stale_parts(listing, now, self.part_grace, owned)
        removed = 0
        for token in stale:
            removed += yield self.run(self.store.discard, token)
        if removed:
            self.log.info(
                "media sweep removed {count} part files of interrupted puts", count=removed
            )
        return removed

    @defer.inlineCallbacks
    def _sweep_temporary(self, now: float):
        """Remove the files of ``<media-dir>/tmp`` last written
        :data:`chatd.media.sweep.TEMPORARY_GRACE` ago: an upload's body or cleaned
        image whose chatd was killed before it removed them. Fires with how many."""
        listing = yield self.run(_files_in, self.tmp)
        stale = sweeping.stale_files(listing, now, sweeping.TEMPORARY_GRACE)
        if stale:
            yield self.run(_unlink_all, stale)
            self.log.info(
                "media sweep removed {count} temporary files a stopped chatd left", count=len(stale)
            )
        return len(stale)

    @defer.inlineCallbacks
    def _resolve(self, now):
        """Settle the pending posts older than :data:`chatd.media.sweep.RESOLVE_AFTER`
        (chatd stopped between commit and :meth:`posted`, or the commit failed): a
        post where the channel's history has the message, else nothing."""
        if self.chat is None:
            return
        pending = yield self.meta.pending_before(now - sweeping.RESOLVE_AFTER)
        for (token, channel), (at, ids) in sweeping.pending_groups(pending).items():
            found = yield self._find(channel, ids, at)
            for media_id in sorted(ids):
                yield self.meta.resolve(token, media_id, channel, found.get(media_id))
            if found:
                self.log.info(
                    "media: the post of {ids} in {channel} recovered from the history",
                    ids=sorted(found),
                    channel=channel,
                )

    @defer.inlineCallbacks
    def _find(self, channel, ids, at):
        """``{id: seq}`` of the newest messages of *channel* committed since *at*
        (seconds) showing *ids*, read back from the history store page by page."""
        since_ms = int((at - sweeping.CLOCK_SLACK) * 1000)
        before = None
        while True:
            page = yield self.chat.store.history(channel, before, COLLECT_BATCH)
            found, done = sweeping.scan(page.messages, ids, since_ms)
            if found or done or not page.more or not page.messages:
                return found
            before = page.messages[0].seq


def _files_in(directory: str) -> list[tuple[str, float]]:
    """``[(path, mtime)]`` of the files in *directory* (none when it is missing)."""
    out = []
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return out
    for entry in entries:
        try:
            if entry.is_file(follow_symlinks=False):
                out.append((entry.path, entry.stat(follow_symlinks=False).st_mtime))
        except FileNotFoundError:
            continue  # removed meanwhile (its upload finished)
    return out


def _unlink_all(paths) -> None:
    for p in paths:
        try:
            os.unlink(p)
        except FileNotFoundError:
            pass


def _send_json(request, status: int, body: dict, headers=()) -> bytes:
    request.setResponseCode(status)
    request.setHeader(b"content-type", b"application/json")
    request.setHeader(b"cache-control", b"no-store")
    for name, value in headers:
        request.setHeader(name, value)
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _answer(request, d):
    """Finish *request* with the JSON *d* fires with, or its :class:`MediaError`."""

    def ok(result):
        status, body = result
        if not request._disconnected:
            request.write(_send_json(request, status, body))
            request.finish()

    def failed(failure):
        if failure.check(MediaError):
            e = failure.value
        else:
            Media.log.failure("media request {uri} failed", failure, uri=request.uri)
            e = MediaError(503, "unavailable", "the media store failed; try again")
        if not request._disconnected:
            request.write(_send_json(request, e.status, flat_error(e.code, e.message), e.headers))
            request.finish()

    d.addCallbacks(ok, failed)
    return NOT_DONE_YET


class UploadResource(Resource):
    """``/api/media`` (POST: upload) and ``/api/media/ID`` (GET: metadata, owner only)."""

    isLeaf = True

    def __init__(self, media: Media):
        super().__init__()
        self.media = media

    def render(self, request):
        parts = [p for p in request.postpath if p]
        try:
            identity = self.media.identity(request.getHeader(b"authorization"))
            if request.method == b"POST" and not parts:
                d = self.media.upload(identity, request.content, request.getHeader(b"content-type"))
                d.addCallback(lambda body: (201, body))
            elif request.method in (b"GET", b"HEAD") and len(parts) == 1:
                d = self.media.owned(identity, parts[0].decode("utf-8", "replace"))
                d.addCallback(lambda body: (200, body))
            elif parts:
                raise MediaError(405, "bad_request", "only GET is allowed on /api/media/ID")
            else:
                raise MediaError(405, "bad_request", "only POST is allowed on /api/media")
        except MediaError as e:
            extra = [(b"www-authenticate", b"Bearer")] if e.status == 401 else []
            return _send_json(request, e.status, flat_error(e.code, e.message), extra)
        return _answer(request, d)


@implementer(IPushProducer)
class _Pacer:
    """Backpressure for a streamed response: :meth:`ready` waits while the client is slow."""

    def __init__(self):
        self.paused = False
        self.stopped = False
        self._waiting = None

    def ready(self):
        if not self.paused:
            return defer.succeed(None)
        self._waiting = defer.Deferred()
        return self._waiting

    def pauseProducing(self):
        self.paused = True

    def resumeProducing(self):
        self.paused = False
        if self._waiting is not None:
            d, self._waiting = self._waiting, None
            d.callback(None)

    def stopProducing(self):
        self.stopped = True
        self.resumeProducing()


class ServeResource(Resource):
    """``/media/ID`` and ``/media/ID/thumb``: signed, expiring, Range-aware."""

    isLeaf = True

    def __init__(self, media: Media):
        super().__init__()
        self.media = media

    def render_GET(self, request):
        parts = [p.decode("utf-8", "replace") for p in request.postpath]
        if len(parts) == 1 or (len(parts) == 2 and parts[1] == "thumb"):
            media_id, variant = parts[0], (parts[1] if len(parts) == 2 else "")
        else:
            return _send_json(request, 404, flat_error("not_found", "no such media"))
        arg = request.args.get
        expires = (arg(b"e") or [b""])[0].decode("latin-1")
        sig = (arg(b"s") or [b""])[0].decode("latin-1")
        reason = self.media.signer.check(
            media_id, variant, expires, sig, self.media.clock.seconds()
        )
        if reason is not None:
            return _send_json(request, 403, flat_error("bad_signature", reason))
        d = self.media._row(media_id)
        d.addCallback(self._serve, request, variant, int(expires))
        d.addErrback(self._failed, request)
        return NOT_DONE_YET

    render_HEAD = render_GET

    @defer.inlineCallbacks
    def _serve(self, row, request, variant, expires):
        media = self.media
        key = row and (row["thumb_sha256"] if variant else row["sha256"])
        if not key:
            raise MediaError(404, "not_found", "no such media")
        mime = "image/webp" if variant else row["mime"]
        size = row["thumb_size"] if variant else row["size"]
        etag = f'"{key}"'.encode()
        max_age = max(0, expires - int(media.clock.seconds()))
        request.setHeader(b"etag", etag)
        request.setHeader(b"cache-control", b"private, max-age=%d, immutable" % max_age)
        request.setHeader(b"x-content-type-options", b"nosniff")
        request.setHeader(b"content-security-policy", _CSP)
        request.setHeader(b"accept-ranges", b"bytes")
        if row["kind"] == FILE and not variant:
            name = download_name(row["name"], row["mime"])
            request.setHeader(
                b"content-disposition",
                f"attachment; filename*=UTF-8''{quote(name, safe='')}".encode("ascii"),
            )
        else:
            request.setHeader(b"content-disposition", b"inline")
        if request.getHeader(b"if-none-match") == etag:
            request.setResponseCode(304)
            request.finish()
            return
        wanted = parse_range(request.getHeader(b"range"), size)
        if wanted == "unsatisfiable":
            request.setResponseCode(416)
            request.setHeader(b"content-range", b"bytes */%d" % size)
            request.setHeader(b"content-type", b"application/json")
            request.write(
                json.dumps(flat_error("bad_range", "the range is outside the file")).encode()
            )
            request.finish()
            return
        start, stop = wanted if wanted is not None else (0, size)
        if wanted is not None:
            request.setResponseCode(206)
            request.setHeader(b"content-range", b"bytes %d-%d/%d" % (start, stop - 1, size))
        request.setHeader(b"content-type", mime.encode("ascii"))
        request.setHeader(b"content-length", b"%d" % (stop - start))
        if request.method == b"HEAD":
            request.finish()
            return
        pacer = _Pacer()
        request.registerProducer(pacer, True)
        try:
            offset = start
            while offset < stop and not pacer.stopped and not request._disconnected:
                end = min(stop, offset + SERVE_CHUNK)
                data = yield media.run(media.store.open_range, key, offset, end)
                if pacer.stopped or request._disconnected:
                    break
                request.write(data)
                offset = end
                yield pacer.ready()
        finally:
            if not request._disconnected:
                request.unregisterProducer()
                if offset >= stop:
                    request.finish()
                else:
                    request.loseConnection()

    def _failed(self, failure, request):
        if request._disconnected or request.finished:
            return
        if request.startedWriting:
            Media.log.failure("serving media {uri} failed", failure, uri=request.uri)
            request.loseConnection()
            return
        if failure.check(MediaError):
            e = failure.value
        elif failure.check(KeyError):
            e = MediaError(404, "not_found", "the media's bytes are gone")
        else:
            Media.log.failure("serving media {uri} failed", failure, uri=request.uri)
            e = MediaError(503, "unavailable", "the media store failed; try again")
        request.write(_send_json(request, e.status, flat_error(e.code, e.message)))
        request.finish()


def make_media(options, verifier, reactor=None, node=None) -> Media | None:
    """The :class:`Media` the options describe, or None without a token verifier
    (uploads need a token: anonymous uploads are refused). With *node* (the
    cluster's :class:`chatd.cluster.redis.RedisNode`) the metadata is in Redis,
    shared by every node (:class:`chatd.media.redismeta.RedisMeta`)."""
    if verifier is None:
        return None
    from chatd.media.signing import derive_key
    from chatd.media.store import LocalStore, S3Store

    key = options.get("media-url-key") or os.environ.get("CHATD_MEDIA_URL_KEY")
    if key:
        url_key = key.encode()
    elif verifier.secret:
        url_key = derive_key(verifier.secret)
    else:
        url_key = secrets.token_bytes(32)
        Media.log.warn(
            "no --media-url-key: media URLs are signed with a random key and die on restart"
        )
    directory = options.get("media-dir") or "chatd-media"
    s3 = options.get("media-s3")
    store = S3Store(s3) if s3 else LocalStore(directory)
    meta = None
    if node is not None:
        from chatd.media.redismeta import RedisMeta

        meta = RedisMeta(node)
    return Media(
        store,
        directory,
        Signer(url_key, options.get("media-url-ttl") or 3600.0),
        verifier,
        Limits(
            options.get("max-image-bytes") or 20 << 20,
            options.get("max-voice-bytes") or 2 << 20,
            options.get("max-file-bytes") or 50 << 20,
        ),
        quota=options.get("media-quota-bytes") or 0,
        grace=(options.get("media-grace-hours") or 24.0) * 3600.0,
        reactor=reactor,
        meta=meta,
        warm=True,
        shared=bool(options.get("media-shared")),
    )


def media_children(media: Media, root: Resource, rules) -> None:
    """Put ``/media`` and ``/api/media`` into *root* and the ``/api/media`` row into *rules*."""
    root.putChild(b"media", ServeResource(media))
    api = root.children.get(b"api")
    if api is None:
        api = Resource()
        root.putChild(b"api", api)
    api.putChild(b"media", UploadResource(media))
    # the token is checked from the headers, before any body byte is read; the body
    # is parsed as it arrives (Media.body_content), its file part written to a file
    rules.add(
        b"/api/media/",
        media.body_limit(),
        media.precheck,
        parse_form=False,
        body_timeout=UPLOAD_SECONDS,
        content=media.body_content,
    )
