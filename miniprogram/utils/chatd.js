/**
 * chatd.js — THE JavaScript client for chatd's `chatd.v1` protocol (see
 * docs/protocol.md), shared by the WeChat mini-program and the web client.
 *
 * One source file, no build step: the mini-program `require`s it as
 * CommonJS (`miniprogram/utils/chatd.js`), chatd serves the very same file to
 * browsers at `/static/chatd-client.js` (`chatd/static/chatd-client.js` is a
 * symlink to it), where a plain `<script>` sets `window.ChatdClient`.
 *
 * `ChatClient` never touches a platform API itself: the socket, the storage
 * and the timers come from an adapter —
 *  - `wxAdapter(wx)`: `wx.connectSocket` / `SocketTask`, wx storage,
 *    setTimeout (the default when `opts.wx` or a global `wx` exists);
 *  - `browserAdapter(window, {storage})`: `WebSocket`, `localStorage` (or
 *    the given storage, e.g. `sessionStorage`), window timers (a browser
 *    cannot send headers: use `tokenIn: 'query'` there), and IndexedDB for
 *    the files of pending `sendMedia` uploads (kept across a reload).
 * An adapter is `{connect(req, on), load(key), save(key, value),
 * remove(key), setTimeout(fn, ms), clearTimeout(t)}`; `connect` gets
 * `{url, protocols, header?}` and `on = {open(), message(data),
 * error(reason), close(code, reason)}` and returns `{send(text) → false when
 * it could not, close(code, reason)}`.
 *
 * What it does for the pages:
 *  - reconnects with capped exponential backoff and jitter; `pause()` (call it
 *    from App.onHide) closes the socket and stops retrying, `resume()` (from
 *    App.onShow) reconnects at once;
 *  - sends `ping` after `heartbeat.interval` ms of silence and declares the
 *    socket dead when nothing arrives within `heartbeat.timeout` ms
 *    (mini-program sockets die silently in the background or on a network
 *    change);
 *  - remembers the newest `seq` of every joined room and rejoins with `since`
 *    after a reconnect, dropping anything already seen, so every missed message
 *    is delivered exactly once; missed DMs are fetched with `dm_history since`;
 *  - keeps an outbox: `send`/`dm` give each message a random client `id`, the
 *    entry stays `pending` until its `ack` and is resent on every new
 *    connection until then (chatd dedupes by `id`, so this is exactly-once);
 *  - anonymous sessions remember `welcome.resume` and reconnect with
 *    `?name=…&resume=…`, so a reconnect may take over its own name while chatd
 *    still holds the dead socket (a `name_taken` retry stays as a fallback);
 *  - token sessions send `Authorization: Bearer <token>`; a token that expired
 *    (close 4401, a 401 handshake refusal, or a known expiry in the past)
 *    stops the reconnect loop and emits `auth` so the app logs in again and
 *    calls `setToken()` + `connect()`;
 *  - with `storageKey`, the outbox, the last seen `seq` of every room and DM
 *    conversation and the resume secret are kept in the adapter's storage, so a cold
 *    start resends queued messages and resumes every room with `since`;
 *  - `rate_limited` refusals are resent with the same `id` after a growing
 *    delay, one frame in flight at a time until the server accepts again;
 *    a conversation's entries never overtake each other (chatd stores a
 *    connection's messages to one conversation in send order);
 *    `forbidden` / `too_many_rooms` reject `join()` and fail the room's
 *    queued messages;
 *  - emits typed events: `status`, `welcome`, `joined`, `message`, `dm`,
 *    `presence`, `typing`, `ack`, `failed`, `error`, `auth`;
 *  - for token users, keeps a local conversation store (`ConversationStore`):
 *    `sync` after every welcome from the stored cursor, the conversation list
 *    (`conversations`, unread, mentions, mute, drafts), per-conversation
 *    timelines with recalls, edits and reactions applied, read markers
 *    (`markRead`, debounced) and receipts (my messages pending → sent → read),
 *    recall/edit/react through the outbox, room management (`createRoom`,
 *    `invite`, `kick`, `ban`, `setRole`, `updateRoom`, `roomInfo`,
 *    `roomMembers`), and emits `conversations`, `conversation`, `timeline`,
 *    `unread`, `removed`, `synced` (docs/miniprogram.md, "SDK: conversations").
 *
 * All state is in the ChatClient instance (and, with `storageKey`, in one
 * storage entry); no globals.
 */
(function (root, factory) {
  const api = factory()
  if (typeof module === 'object' && module && module.exports) module.exports = api
  else root.ChatdClient = api
})(typeof self !== 'undefined' ? self : this, function () {
'use strict'

const PROTOCOL = 'chatd.v1'

/** Default tuning; every value can be overridden in the constructor. */
const DEFAULTS = {
  backoff: { initial: 500, factor: 2, max: 30000, jitter: 0.5 },
  heartbeat: { interval: 25000, timeout: 10000 },
  connectTimeout: 15000,
  retryDelay: 1000,
  seenWindow: 2000,
  // delay before resending a frame refused with rate_limited (grows ×2)
  rateBackoff: { initial: 300, factor: 2, max: 8000, jitter: 0.2 },
  // a token this close to its expiry (ms) is treated as expired before dialing
  tokenSlack: 5000,
  // seq changes are written to storage at most this often (ms)
  saveDelay: 300,
  // at most one `read` per conversation this often (ms)
  readDelay: 1000,
  // the conversation store is written to storage at most this often (ms)
  convSaveDelay: 1000,
  // timeline items per conversation kept in storage for a cold start
  convTail: 50,
  // retries of a sendMedia upload that got no answer, a 5xx or `unavailable`
  uploadBackoff: { initial: 1000, factor: 2, max: 60000, jitter: 0.3 },
  // attempts of one upload before its message fails with the last error (the page offers a retry)
  uploadTries: 6
}

/** Storage format version of the persisted session. */
const STORE_VERSION = 1
/** Storage format version of the persisted conversation store (`<storageKey>.conv`). */
const CONV_VERSION = 1

/** Requests answered by a frame without an id, in order per kind and key. */
const FIFO_KINDS = ['history', 'dm_history', 'room_info', 'members', 'conversations', 'sync', 'receipts']
/** What `sendMedia` keeps about its file besides the file itself (shown on the pending bubble). */
const MEDIA_FIELDS = ['kind', 'name', 'size', 'mime', 'width', 'height', 'duration_ms']

/**
 * What to do after a failed upload of a `sendMedia` entry: `retry` (after a
 * backoff) when no answer came (`network`), chatd failed (HTTP 5xx) or could not
 * store it now (`unavailable`); else `fail` with chatd's error code (a 4xx:
 * `too_large`, `bad_image`, `quota_exceeded`, `unauthorized`, …).
 */
function uploadVerdict(err) {
  const code = (err && err.code) || 'network'
  if (code === 'network' || code === 'unavailable' || (err && err.status >= 500)) return 'retry'
  return 'fail'
}

/** The attachment a pending `sendMedia` entry shows until chatd has the file (`local`: the wx file path). */
function uploadAttachment(e) {
  const a = { media_id: e.id, local: typeof e.upload.file === 'string' ? e.upload.file : '' }
  MEDIA_FIELDS.forEach((k) => {
    if (e.upload[k] !== undefined) a[k] = e.upload[k]
  })
  return a
}

/** The persistable part of an upload (`file` a path or an adapter's kept reference, not a Blob): null when it cannot be stored. */
function uploadRecord(up) {
  if (!up || typeof up.file !== 'string' || !up.file) return null
  const r = { file: up.file }
  MEDIA_FIELDS.forEach((k) => {
    if (up[k] !== undefined && up[k] !== null) r[k] = up[k]
  })
  if (up.kept) r.kept = true
  return r
}

/** Outbox operations on a message (exactly-once by id, like sends). */
const OPS = ['recall', 'edit', 'react']

/** Close codes after which reconnecting cannot help. */
const FATAL_CLOSE = { 4400: 'bad_name', 4451: 'banned' }

/** Room names as docs/protocol.md states them: 1–64 letters, digits, `_ - . : #`. */
const ROOM_RE = /^[\p{L}\p{N}_\-.:#]{1,64}$/u
/** Display names: 1–32 letters, digits, `_ - .`, not starting with `guest-`. */
const NAME_RE = /^[\p{L}\p{N}_\-.]{1,32}$/u

function isValidRoom(room) {
  return typeof room === 'string' && ROOM_RE.test(room)
}

function isValidName(name) {
  return typeof name === 'string' && NAME_RE.test(name) && name.indexOf('guest-') !== 0
}

/**
 * The delay before reconnect attempt number `attempt` (0 = first retry):
 * `min(max, initial * factor^attempt)`, of which up to `jitter` (a fraction)
 * is taken off at random so that clients cut off together do not return
 * together.
 */
function backoffDelay(attempt, backoff, random) {
  const b = Object.assign({}, DEFAULTS.backoff, backoff)
  const base = Math.min(b.max, b.initial * Math.pow(b.factor, attempt))
  const r = (random || Math.random)()
  return Math.max(0, Math.round(base * (1 - b.jitter * r)))
}

/**
 * A client message id: `prefix` (default `m`) + time + 64 random bits,
 * printable ASCII, unique per user.
 */
function makeId(random, prefix) {
  const rnd = random || Math.random
  let s = ''
  for (let i = 0; i < 4; i++) {
    s += Math.floor(rnd() * 0x10000).toString(16).padStart(4, '0')
  }
  return (prefix || 'm') + Date.now().toString(36) + '-' + s
}

/** The length of `text` in code points, as chatd counts `max_text_length`. */
function textLength(text) {
  let n = 0
  for (const _ of text) n++ // eslint-disable-line no-unused-vars
  return n
}

/** True when a socket failure message reports an HTTP 401 handshake refusal. */
function isUnauthorized(reason) {
  return typeof reason === 'string' && /(^|\D)401(\D|$)/.test(reason)
}

/** Appends `name` / `token` to the upgrade URL as query parameters. */
function buildUrl(url, params) {
  const parts = []
  Object.keys(params).forEach((k) => {
    if (params[k] !== undefined && params[k] !== null && params[k] !== '') {
      parts.push(encodeURIComponent(k) + '=' + encodeURIComponent(params[k]))
    }
  })
  if (!parts.length) return url
  return url + (url.indexOf('?') >= 0 ? '&' : '?') + parts.join('&')
}

// ---- adapters ---------------------------------------------------------------

/**
 * The mini-program adapter: `wx.connectSocket` / `SocketTask`, wx storage
 * (objects are stored as they are) and the global timers.
 */
function wxAdapter(wxApi) {
  if (!wxApi) throw new Error('wxAdapter: no wx API')
  return {
    connect(req, on) {
      const opts = {
        url: req.url,
        protocols: req.protocols,
        // chatd compresses long frames (history pages, member lists) once per
        // message for every client that offers permessage-deflate (docs/protocol.md)
        perMessageDeflate: true,
        fail: (err) => on.error((err && err.errMsg) || 'connectSocket failed')
      }
      if (req.header) opts.header = req.header
      const task = wxApi.connectSocket(opts)
      task.onOpen(() => on.open())
      task.onMessage((res) => on.message(res && res.data))
      task.onError((err) => on.error((err && err.errMsg) || 'socket error'))
      task.onClose((res) => on.close(res && res.code, res && res.reason))
      return {
        send(text) {
          task.send({ data: text, fail: () => {} })
          return true
        },
        close(code, reason) {
          task.close({ code, reason, fail: () => {} })
        }
      }
    },
    load: (key) => wxApi.getStorageSync(key),
    save: (key, value) => wxApi.setStorageSync(key, value),
    remove: (key) => wxApi.removeStorageSync(key),
    setTimeout: (fn, ms) => setTimeout(fn, ms),
    clearTimeout: (t) => clearTimeout(t),
    // `file`: a local file path (wx.chooseMedia / RecorderManager's tempFilePath);
    // wx.uploadFile names the multipart file after the path, so the original
    // name goes in the `name` form field (ChatClient.upload puts it in `form`)
    upload(req, done) {
      const task = wxApi.uploadFile({
        url: req.url,
        filePath: req.file,
        name: 'file',
        header: req.header,
        formData: req.form || {},
        success: (res) => done(null, { status: res.statusCode, body: res.data }),
        fail: (err) => done(new Error((err && err.errMsg) || 'uploadFile failed'))
      })
      // UploadTask.onProgressUpdate({progress}): percent sent
      if (req.onProgress && task && typeof task.onProgressUpdate === 'function') task.onProgressUpdate((r) => req.onProgress(r.progress))
      return { abort: () => task && typeof task.abort === 'function' && task.abort() }
    },
    // a temp file kept across restarts (wx.getFileSystemManager().saveFile moves it
    // into the user data dir); `done(path)` gets the saved path, or the temp one
    // when it cannot be saved (full, or no file system API)
    keep(file, done) {
      const fsm = typeof wxApi.getFileSystemManager === 'function' ? wxApi.getFileSystemManager() : null
      if (!fsm || typeof file !== 'string') return done(file)
      fsm.saveFile({ tempFilePath: file, success: (res) => done(res.savedFilePath), fail: () => done(file) })
    },
    // a kept file that is not needed any more (its message was sent or deleted)
    unkeep(file) {
      const fsm = typeof wxApi.getFileSystemManager === 'function' ? wxApi.getFileSystemManager() : null
      if (fsm && typeof file === 'string') fsm.removeSavedFile({ filePath: file, fail: () => {} })
    },
    request(req, done) {
      wxApi.request({
        url: req.url,
        method: req.method || 'GET',
        header: req.header,
        dataType: 'text',
        responseType: 'text',
        success: (res) => done(null, { status: res.statusCode, body: typeof res.data === 'string' ? res.data : JSON.stringify(res.data) }),
        fail: (err) => done(new Error((err && err.errMsg) || 'request failed'))
      })
    }
  }
}

/**
 * The browser adapter: `WebSocket`, `localStorage` (JSON strings; pass
 * `{storage: window.sessionStorage}` for one session per tab) and the
 * window's timers. `win` defaults to the global `window`; tests pass a fake.
 * A browser WebSocket cannot send headers, so a `header` request (a token
 * with `tokenIn: 'header'`) fails the connection: use `tokenIn: 'query'`.
 */
function browserAdapter(win, options) {
  const w = win || (typeof window !== 'undefined' ? window : null) // eslint-disable-line no-undef
  if (!w || !w.WebSocket) throw new Error('browserAdapter: no WebSocket')
  // looked up on use: reading window.localStorage throws where storage is
  // disabled, and the client treats a failing storage as no storage
  const storage = () => (options && options.storage) || w.localStorage
  const files = blobKeeper(w)
  return {
    connect(req, on) {
      if (req.header) throw new Error('a browser WebSocket cannot send headers: use tokenIn "query"')
      const ws = new w.WebSocket(req.url, req.protocols)
      ws.binaryType = 'arraybuffer'
      ws.onopen = () => on.open()
      ws.onmessage = (ev) => on.message(ev.data)
      // a browser reports a failure as onerror followed by onclose (1006):
      // the close carries the code, so only it is passed on
      ws.onclose = (ev) => on.close(ev.code, ev.reason)
      return {
        send(text) {
          if (ws.readyState !== 1) return false
          ws.send(text)
          return true
        },
        close(code, reason) {
          ws.close(code, reason)
        }
      }
    },
    load: (key) => storage().getItem(key),
    save: (key, value) => storage().setItem(key, JSON.stringify(value)),
    remove: (key) => storage().removeItem(key),
    setTimeout: (fn, ms) => w.setTimeout(fn, ms),
    clearTimeout: (t) => w.clearTimeout(t),
    // `file`: a Blob or File (an <input type=file>'s, a MediaRecorder's), or the
    // `idb:` reference `keep` gave for one; sent with XMLHttpRequest where there is
    // one, for its upload progress (fetch has none)
    upload(req, done) {
      if (!files.owns(req.file)) return blobUpload(w, req, done)
      // a kept file (a page reloaded while it was uploading): read back, then sent
      let task = null
      let stopped = false
      files.get(req.file).then(
        (blob) => {
          if (stopped) return
          if (!blob) return done(Object.assign(new Error('the file to upload is gone from this browser'), { code: 'file_gone' }))
          task = blobUpload(w, Object.assign({}, req, { file: blob }), done)
        },
        (err) => stopped || done(err instanceof Error ? err : new Error(String(err)))
      )
      return {
        abort: () => {
          stopped = true
          if (task) task.abort()
        }
      }
    },
    // a Blob/File kept across reloads of the page: stored in IndexedDB, `done(ref)`
    // gets its `idb:` reference (a string the session's storage can hold), or the
    // Blob itself where IndexedDB is missing or fails (then it is lost with the page)
    keep: (file, done) => files.keep(file, done),
    // a kept file that is not needed any more (its message was sent or deleted)
    unkeep: (file) => files.remove(file),
    request(req, done) {
      fetchText(w, req.url, { method: req.method || 'GET', headers: req.header }, done)
    }
  }
}

/** POSTs the Blob `req.file` as a multipart form; returns `{abort()}`. */
function blobUpload(w, req, done) {
  const form = new w.FormData()
  Object.keys(req.form || {}).forEach((k) => form.append(k, req.form[k]))
  form.append('file', req.file, req.name || (req.file && req.file.name) || 'file')
  if (!w.XMLHttpRequest) return fetchText(w, req.url, { method: 'POST', headers: req.header, body: form }, done)
  return xhrUpload(w, req, form, done)
}

/** The IndexedDB database and object store where the browser adapter keeps the files of pending uploads. */
const KEPT_DB = 'chatd-files'
const KEPT_STORE = 'files'
/** The prefix of a kept file's reference (`idb:<random>`). */
const KEPT_PREFIX = 'idb:'
/** Kept files older than this (ms) are removed when the database is opened (a tab closed mid-upload). */
const KEPT_MAX_AGE = 7 * 24 * 3600 * 1000

/**
 * Blobs kept in the window's IndexedDB under `idb:` references: `keep(blob, done)`,
 * `get(ref)` (a Promise of the Blob, null when gone), `remove(ref)`, `owns(ref)`.
 * The database is opened on first use; a browser without IndexedDB (or one that
 * refuses it, as private windows may) keeps nothing.
 */
function blobKeeper(w) {
  let opened = null
  const open = () => {
    if (!opened) {
      opened = new Promise((resolve, reject) => {
        const req = w.indexedDB.open(KEPT_DB, 1)
        req.onupgradeneeded = () => req.result.createObjectStore(KEPT_STORE)
        req.onsuccess = () => resolve(req.result)
        req.onerror = () => reject(req.error || new Error('IndexedDB cannot be opened'))
      })
      opened.then(prune, () => {})
    }
    return opened
  }
  // runs `fn(objectStore)` in one transaction: a Promise of its request's result once committed
  const inStore = (mode, fn) =>
    open().then(
      (db) =>
        new Promise((resolve, reject) => {
          const tx = db.transaction(KEPT_STORE, mode)
          const req = fn(tx.objectStore(KEPT_STORE))
          tx.oncomplete = () => resolve(req ? req.result : undefined)
          tx.onerror = tx.onabort = () => reject(tx.error || new Error('IndexedDB failed'))
        })
    )
  const prune = () =>
    inStore('readwrite', (store) => {
      const cursor = store.openCursor()
      const old = Date.now() - KEPT_MAX_AGE
      cursor.onsuccess = () => {
        const c = cursor.result
        if (!c) return
        if (!c.value || !(c.value.at > old)) c.delete()
        c.continue()
      }
      return null
    }).catch(() => {})
  const owns = (ref) => typeof ref === 'string' && ref.indexOf(KEPT_PREFIX) === 0
  return {
    owns,
    keep(file, done) {
      if (!hasIndexedDB(w) || !file || typeof file !== 'object' || typeof file.size !== 'number') return done(file)
      const ref = KEPT_PREFIX + Date.now().toString(36) + '-' + Math.random().toString(36).slice(2)
      inStore('readwrite', (store) => store.put({ blob: file, at: Date.now() }, ref)).then(
        () => done(ref),
        () => done(file)
      )
    },
    get(ref) {
      return inStore('readonly', (store) => store.get(ref)).then((v) => (v && v.blob) || null)
    },
    remove(ref) {
      if (owns(ref) && hasIndexedDB(w)) inStore('readwrite', (store) => store.delete(ref)).catch(() => {})
    }
  }
}

/** Whether `w` has an IndexedDB (reading it throws where storage is disabled). */
function hasIndexedDB(w) {
  try {
    return !!w.indexedDB
  } catch (e) {
    return false
  }
}

/** POSTs `form` with XMLHttpRequest, reporting `upload.onprogress` as percent; returns `{abort()}`. */
function xhrUpload(w, req, form, done) {
  const xhr = new w.XMLHttpRequest()
  let over = false
  const end = (err, res) => {
    if (over) return
    over = true
    done(err, res)
  }
  xhr.open('POST', req.url)
  Object.keys(req.header || {}).forEach((k) => xhr.setRequestHeader(k, req.header[k]))
  if (req.onProgress && xhr.upload) {
    xhr.upload.onprogress = (ev) => {
      if (ev.lengthComputable && ev.total > 0) req.onProgress(Math.floor((ev.loaded * 100) / ev.total))
    }
  }
  xhr.onload = () => end(null, { status: xhr.status, body: xhr.responseText })
  xhr.onerror = () => end(new Error('upload failed'))
  xhr.onabort = () => end(new Error('upload aborted'))
  xhr.ontimeout = () => end(new Error('upload timed out'))
  xhr.send(form)
  return { abort: () => xhr.abort() }
}

function fetchText(w, url, init, done) {
  w.fetch(url, init).then(
    (res) => res.text().then((body) => done(null, { status: res.status, body })),
    (err) => done(err instanceof Error ? err : new Error(String(err)))
  )
}

/** The http(s):// origin of a ws(s):// URL (`ws://h:1/ws` → `http://h:1`). */
function httpOrigin(url) {
  const m = /^(wss?):\/\/([^/?#]+)/.exec(url)
  if (!m) return ''
  return (m[1] === 'wss' ? 'https' : 'http') + '://' + m[2]
}

/** Tracks which `seq`s of one stream (room or DM conversation) were delivered. */
class SeqTracker {
  constructor(windowSize) {
    this.windowSize = windowSize
    this.last = null // highest seq seen (or the live start after a plain join)
    this.floor = 0 // every seq <= floor counts as seen
    this.seen = new Set()
  }

  /** Records `seq`; returns false when it was already delivered. */
  add(seq) {
    if (typeof seq !== 'number') return true
    if (seq <= this.floor || this.seen.has(seq)) return false
    this.seen.add(seq)
    if (this.last === null || seq > this.last) this.last = seq
    if (this.seen.size > this.windowSize) {
      const drop = Math.floor(this.windowSize / 2)
      const sorted = Array.from(this.seen).sort((a, b) => a - b)
      for (let i = 0; i < drop; i++) this.seen.delete(sorted[i])
      this.floor = Math.max(this.floor, sorted[drop - 1])
    }
    return true
  }

  /** Marks everything up to `seq` as seen (the live start after a plain join). */
  startAt(seq) {
    if (typeof seq !== 'number') return
    this.floor = Math.max(this.floor, seq)
    if (this.last === null || seq > this.last) this.last = seq
  }
}

// ---- the conversation store -------------------------------------------------

/** A conversation's key: `r:<room>` or `d:<user>` (the DM's other user). */
function convKey(c) {
  if (typeof c === 'string') return c
  if (c.room !== undefined && c.room !== null) return 'r:' + c.room
  return 'd:' + c.with
}

/** The request fields naming conversation `key`: `{room}` or `{with}`. */
function convTarget(key) {
  return key.charAt(0) === 'r' ? { room: key.slice(2) } : { with: key.slice(2) }
}

/** The key of a live frame's conversation (DMs name `from`/`to`, or `with`). */
function frameKey(msg, me) {
  if (msg.room !== undefined && msg.room !== null) return 'r:' + msg.room
  if (msg.with !== undefined && msg.with !== null) return 'd:' + msg.with
  if (msg.peer !== undefined) return 'd:' + msg.peer
  return 'd:' + (msg.from === me ? msg.to : msg.from)
}

const PREVIEW = 100
const SUMMARY_FIELDS = ['kind', 'title', 'role', 'seq', 'ts', 'last', 'unread', 'mentions', 'read', 'muted', 'peer_read']

/** Does message `m` mention user `me` (by id or `@all`)? */
function mentionsMe(m, me) {
  return Array.isArray(m.mentions) && (m.mentions.indexOf(me) >= 0 || m.mentions.indexOf('@all') >= 0)
}

/**
 * The local conversation store (pure: no I/O, no clock): the conversation list
 * and, per conversation, the timeline of messages and events as chatd
 * describes them (docs/protocol.md, "Conversations"), with recalls, edits and
 * reactions applied, markers and receipts. `ChatClient` feeds it the frames it
 * receives (each item once: the client's seq trackers gate them) and persists
 * `snapshot()`; pages read `list()` and `timeline(key)`.
 */
class ConversationStore {
  constructor(opts) {
    const o = opts || {}
    this.me = o.me || null
    this.tail = o.tail || 50 // items per conversation kept by snapshot()
    this.convs = new Map() // key -> summary {key, room|with, kind, title, role, seq, ts, last, unread, mentions, read, muted, peer_read, draft}
    this.lines = new Map() // key -> {items: [...] ascending by seq, bySeq: Map, more, readers: Map(user -> seq)}
  }

  has(key) {
    return this.convs.has(key)
  }

  /** The summary of `key`, created (empty) when `create` is set. */
  conv(key, create) {
    let c = this.convs.get(key)
    if (!c && create) {
      c = Object.assign({ key }, convTarget(key), {
        kind: key.charAt(0) === 'd' ? 'dm' : 'public',
        title: '',
        role: 'member',
        seq: 0,
        ts: 0,
        last: null,
        unread: 0,
        mentions: 0,
        read: 0,
        muted: false,
        draft: ''
      })
      if (c.kind === 'dm') c.peer_read = 0
      this.convs.set(key, c)
    }
    return c || null
  }

  line(key) {
    let l = this.lines.get(key)
    if (!l) {
      l = { items: [], bySeq: new Map(), more: null, readers: new Map() }
      this.lines.set(key, l)
    }
    return l
  }

  /** Takes a server summary (from `conversations` or `sync`) as the truth. */
  summary(s) {
    const key = convKey(s)
    const c = this.conv(key, true)
    SUMMARY_FIELDS.forEach((f) => {
      if (s[f] !== undefined) c[f] = s[f]
    })
    // chatd's `last` has text only: the kind of a cached message's attachments is ours to add
    const l = c.last && !c.last.media && !c.last.recalled && this.lines.get(key)
    const m = l && l.bySeq.get(c.last.seq)
    if (m && m.attachments && m.attachments.length) c.last = Object.assign({}, c.last, { media: m.attachments[0].kind || 'file' })
    return c
  }

  /** Forgets conversation `key` (left, kicked, banned). */
  remove(key) {
    this.convs.delete(key)
    this.lines.delete(key)
  }

  /** Forgets everything (a `sync` reset); drafts are kept. */
  reset() {
    const drafts = new Map()
    this.convs.forEach((c, k) => {
      if (c.draft) drafts.set(k, c.draft)
    })
    this.convs.clear()
    this.lines.clear()
    return drafts
  }

  /** Drops the cached timeline of `key` (its new items do not join on: a gap). */
  cut(key) {
    const l = this.line(key)
    l.items = []
    l.bySeq = new Map()
    l.more = true
  }

  _insert(l, item) {
    const old = l.bySeq.get(item.seq)
    l.bySeq.set(item.seq, item)
    if (old) {
      l.items[l.items.indexOf(old)] = item
      return
    }
    const items = l.items
    if (!items.length || items[items.length - 1].seq < item.seq) {
      items.push(item)
      return
    }
    let lo = 0
    let hi = items.length
    while (lo < hi) {
      const mid = (lo + hi) >> 1
      if (items[mid].seq < item.seq) lo = mid + 1
      else hi = mid
    }
    items.splice(lo, 0, item)
  }

  /** A timeline message from a `message`/`dm` frame or a history message. */
  _message(l, f) {
    const m = { seq: f.seq, from: f.from, name: f.name, text: f.text, ts: f.ts, id: f.id === undefined ? null : f.id }
    ;['mentions', 'reply_to', 'quote', 'edited_ts', 'recalled', 'reactions', 'attachments'].forEach((k) => {
      if (f[k] !== undefined && f[k] !== null) m[k] = f[k]
    })
    if (m.reply_to !== undefined && !m.quote) {
      const o = l.bySeq.get(m.reply_to)
      if (o && !o.event) m.quote = { seq: o.seq, from: o.from, name: o.name, text: o.recalled ? '' : String(o.text || '').slice(0, PREVIEW) }
    }
    return m
  }

  /** A timeline event from an `event` frame or a history page's event. */
  _event(f) {
    const e = { seq: f.seq, event: f.kind, user: f.user, by: f.by, ts: f.ts }
    if (f.role !== undefined) e.role = f.role
    if (f.changes !== undefined) e.changes = f.changes
    if (f.until !== undefined) e.until = f.until // muted (docs/protocol.md, "Moderation")
    return e
  }

  _bump(c, seq, ts) {
    if (typeof seq === 'number' && seq > c.seq) {
      c.seq = seq
      if (typeof ts === 'number') c.ts = ts
    }
  }

  _lastOf(m) {
    const last = { seq: m.seq, from: m.from, name: m.name, text: m.recalled ? '' : String(m.text || '').slice(0, PREVIEW), ts: m.ts }
    if (m.recalled) last.recalled = true
    else if (m.attachments && m.attachments.length) last.media = m.attachments[0].kind || 'file'
    return last
  }

  /**
   * Applies one timeline item (a `message`/`dm`, `event`, `recalled`, `edited` or
   * `reaction` frame or sync item) to conversation `key`. Returns the summary.
   */
  apply(key, f) {
    const c = this.conv(key, true)
    const l = this.line(key)
    const me = this.me
    const type = f.type
    if (type === 'message' || type === 'dm') {
      const m = this._message(l, f)
      this._insert(l, m)
      const newest = m.seq > c.seq
      this._bump(c, m.seq, m.ts)
      if (!c.last || m.seq >= c.last.seq) c.last = this._lastOf(m)
      if (!newest) return c
      if (m.from === me) {
        if (m.seq > c.read) c.read = m.seq // sending is reading
        c.unread = 0
        c.mentions = 0
      } else if (m.seq > c.read) {
        c.unread++
        if (mentionsMe(m, me)) c.mentions++
      }
      return c
    }
    if (type === 'event') {
      const e = this._event(f)
      this._insert(l, e)
      this._bump(c, e.seq, e.ts)
      if (e.user === me && e.role && (f.kind === 'role' || f.kind === 'joined' || f.kind === 'invited')) c.role = e.role
      if (f.kind === 'role' && e.user !== me && e.role === 'owner' && c.role === 'owner') c.role = 'admin' // handed over
      const ch = f.changes || {}
      if (f.kind === 'created' || f.kind === 'room_updated') {
        ;['title', 'kind', 'topic', 'avatar'].forEach((k) => {
          if (ch[k] !== undefined && ch[k] !== null) c[k] = ch[k]
        })
      }
      return c
    }
    const target = l.bySeq.get(f.target)
    this._bump(c, f.seq, f.ts)
    if (!target && c.last && c.last.seq === f.target) {
      // the last message is not cached (a list from `conversations`): its preview still changes
      if (type === 'recalled') c.last = Object.assign({}, c.last, { text: '', recalled: true })
      else if (type === 'edited') c.last = Object.assign({}, c.last, { text: String(f.text || '').slice(0, PREVIEW) })
    }
    if (!target || target.event) return c
    if (type === 'recalled') {
      target.text = ''
      target.recalled = { by: f.by, ts: f.ts }
      delete target.reactions
      delete target.attachments
      l.items.forEach((m) => {
        if (m.quote && m.quote.seq === target.seq) m.quote = Object.assign({}, m.quote, { text: '' })
      })
    } else if (type === 'edited') {
      target.text = f.text
      target.edited_ts = f.edited_ts
    } else if (type === 'reaction') {
      const list = (target.reactions || []).map((r) => Object.assign({}, r))
      let r = list.find((x) => x.emoji === f.emoji)
      if (!r) {
        r = { emoji: f.emoji, count: 0, me: false }
        list.push(r)
      }
      r.count = Math.max(0, r.count + (f.on ? 1 : -1))
      if (f.user === me) r.me = !!f.on
      target.reactions = list.filter((x) => x.count > 0)
      if (!target.reactions.length) delete target.reactions
    }
    if (c.last && c.last.seq === target.seq) c.last = this._lastOf(target)
    return c
  }

  /** Whether `me` has reacted with `emoji` to message `seq` of `key`. */
  reacted(key, seq, emoji) {
    const l = this.lines.get(key)
    const m = l && l.bySeq.get(seq)
    return !!(m && m.reactions && m.reactions.some((r) => r.emoji === emoji && r.me))
  }

  /** Merges an older page (`history`/`dm_history` reply, messages in their current state). */
  page(key, messages, events, more) {
    const l = this.line(key)
    const before = l.items.length ? l.items[0].seq : Infinity
    ;(messages || []).forEach((m) => {
      if (!l.bySeq.has(m.seq)) this._insert(l, this._message(l, m))
    })
    ;(events || []).forEach((e) => {
      if (!l.bySeq.has(e.seq)) this._insert(l, this._event(e))
    })
    const first = l.items.length ? l.items[0].seq : Infinity
    if (first <= before) l.more = !!more
    return l
  }

  /** The user's read marker of `key` (a `read` frame: the server's counts). */
  read(key, seq, unread, mentions) {
    const c = this.conv(key, false)
    if (!c) return null
    if (typeof seq === 'number' && seq >= c.read) c.read = seq
    if (typeof unread === 'number') c.unread = unread
    if (typeof mentions === 'number') c.mentions = mentions
    return c
  }

  /** Marks `key` read up to `seq` locally, before the server's `read` answer. */
  readLocally(key, seq) {
    const c = this.conv(key, false)
    if (!c || seq <= c.read) return c
    c.read = seq
    if (seq >= c.seq) {
      c.unread = 0
      c.mentions = 0
    } else {
      const l = this.lines.get(key)
      if (l) {
        let unread = 0
        let mentions = 0
        l.items.forEach((m) => {
          if (!m.event && m.seq > seq && m.from !== this.me) {
            unread++
            if (mentionsMe(m, this.me)) mentions++
          }
        })
        c.unread = Math.min(c.unread, unread)
        c.mentions = Math.min(c.mentions, mentions)
      }
    }
    return c
  }

  /** Another user read `key` up to `seq` (a `receipt`). */
  receipt(key, user, seq) {
    const c = this.conv(key, false)
    if (!c) return null
    if (c.kind === 'dm') {
      if (seq > (c.peer_read || 0)) c.peer_read = seq
    } else {
      const readers = this.line(key).readers
      if (!(readers.get(user) >= seq)) readers.set(user, seq)
    }
    return c
  }

  /** Who (other than me) is known to have read message `seq` of `key`. */
  readBy(key, seq) {
    const c = this.convs.get(key)
    if (!c) return { count: 0, users: [] }
    if (c.kind === 'dm') {
      const yes = (c.peer_read || 0) >= seq
      return { count: yes ? 1 : 0, users: yes ? [c.with] : [] }
    }
    const users = []
    const l = this.lines.get(key)
    if (l) {
      l.readers.forEach((s, u) => {
        if (s >= seq && u !== this.me) users.push(u)
      })
    }
    users.sort()
    return { count: users.length, users }
  }

  /**
   * The conversation list, most recent activity first (a draft counts as now
   * only for its ordering among equals: WeChat keeps the list by activity).
   * `pending` (outbox entries, pending or failed) adds the DMs chatd does not
   * know yet: a first message to a peer still on its way (a sendMedia whose
   * upload waits, across a restart too) is a conversation of its own, `local:
   * true`, with its newest entry as `last` and `ts`; once the store has the
   * DM (the ack, a sync) it is listed once, as the store has it. A message
   * refused because the peer does not exist (`no_such_user`) makes none.
   */
  list(pending) {
    const out = Array.from(this.convs.values()).map((c) => Object.assign({}, c))
    const local = new Map()
    ;(pending || []).forEach((e) => {
      if (e.kind !== 'dm' || e.error === 'no_such_user') return
      const key = entryKey(e)
      if (this.convs.has(key)) return
      const newest = local.get(key)
      if (!newest || e.ts >= newest.ts) local.set(key, e)
    })
    local.forEach((e, key) => out.push(this._localSummary(key, e)))
    return out.sort((a, b) => b.ts - a.ts || b.seq - a.seq || (a.key < b.key ? -1 : 1))
  }

  /** The summary of DM `key` that only has my outbox entry `e` (its newest) so far. */
  _localSummary(key, e) {
    const c = Object.assign({ key }, convTarget(key), { kind: 'dm', title: '', role: 'member', seq: 0, ts: e.ts || 0, unread: 0, mentions: 0, read: 0, muted: false, draft: '', peer_read: 0, local: true })
    c.last = { seq: null, from: this.me, text: String(e.text || '').slice(0, PREVIEW), ts: e.ts || 0 }
    const media = e.upload ? e.upload.kind : e.attachments && e.attachments.length ? e.attachments[0].kind : null
    if (media || e.upload) c.last.media = media || 'file'
    return c
  }

  /** Total unread of the conversations that are not muted (the tab badge). */
  totalUnread() {
    let n = 0
    this.convs.forEach((c) => {
      if (!c.muted) n += c.unread || 0
    })
    return n
  }

  /**
   * The timeline of `key`: its messages and events ascending by seq, then the
   * given outbox entries (pending or failed). My messages carry `status`:
   * `read` (DM: the peer's marker passed it; room: someone's receipt did, with
   * `readBy`), else `sent`.
   */
  timeline(key, pending) {
    const c = this.convs.get(key)
    const l = this.lines.get(key)
    const out = []
    if (l) {
      l.items.forEach((m) => {
        const row = Object.assign({}, m)
        if (!m.event) {
          row.mine = m.from === this.me
          if (row.mine) {
            const by = this.readBy(key, m.seq)
            row.status = by.count > 0 ? 'read' : 'sent'
            if (c && c.kind !== 'dm') row.readBy = by.count
          }
        }
        out.push(row)
      })
    }
    ;(pending || []).forEach((e) => {
      const row = { seq: null, id: e.id, from: this.me, name: this.me, text: e.text, ts: e.ts, mine: true, status: e.status }
      if (e.error) row.error = e.error
      if (e.mentions) row.mentions = e.mentions
      if (e.reply_to !== undefined) row.reply_to = e.reply_to
      if (e.attachments) row.attachments = e.attachments
      if (e.upload) {
        // a sendMedia entry whose file is not uploaded yet: the local file, and how far it got
        row.attachments = [uploadAttachment(e)]
        row.upload = { state: e.upload.state, progress: e.upload.progress || 0 }
        if (e.upload.error) row.upload.error = e.upload.error
      }
      out.push(row)
    })
    return out
  }

  /** Whether older items than the cached ones exist (null: unknown). */
  more(key) {
    const l = this.lines.get(key)
    return l ? l.more : null
  }

  /** The oldest cached seq of `key` (null when nothing is cached). */
  oldest(key) {
    const l = this.lines.get(key)
    return l && l.items.length ? l.items[0].seq : null
  }

  /** What the client persists: the list and the newest `tail` items of each conversation. */
  snapshot() {
    const convs = []
    this.convs.forEach((c) => {
      const l = this.lines.get(c.key)
      const items = l ? l.items.slice(-this.tail) : []
      const more = l ? (items.length < l.items.length ? true : l.more) : null
      const readers = l ? Array.from(l.readers.entries()) : []
      convs.push({ c, items, more, readers })
    })
    return convs
  }

  /** Loads a `snapshot()`. */
  load(convs) {
    ;(convs || []).forEach((s) => {
      if (!s || !s.c || typeof s.c.key !== 'string') return
      const c = Object.assign({}, s.c)
      this.convs.set(c.key, c)
      const l = this.line(c.key)
      ;(s.items || []).forEach((m) => {
        if (m && typeof m.seq === 'number') this._insert(l, m)
      })
      l.more = s.more === undefined ? null : s.more
      ;(s.readers || []).forEach((p) => {
        if (Array.isArray(p)) l.readers.set(p[0], p[1])
      })
    })
  }
}

/** Runs `fn` once, `delay()` ms after the first `soon()` (until it ran or `cancel()`). */
class Later {
  constructor(client, fn, delay) {
    this.client = client
    this.fn = fn
    this.delay = delay
    this.timer = null
  }

  soon() {
    if (this.timer !== null) return
    this.timer = this.client.setTimeout(() => {
      this.timer = null
      this.fn()
    }, this.delay())
  }

  cancel() {
    if (this.timer === null) return
    this.client.clearTimeout(this.timer)
    this.timer = null
  }
}

/** The `reply_to` / `mentions` of a send's options. */
function extrasOf(opts) {
  const o = opts || {}
  const x = {}
  if (typeof o.reply_to === 'number') x.reply_to = o.reply_to
  if (Array.isArray(o.mentions) && o.mentions.length) x.mentions = o.mentions.slice()
  if (Array.isArray(o.attachments) && o.attachments.length) {
    // upload answers (or just {media_id}); the frame sends the ids, the timeline shows the rest
    x.attachments = o.attachments.map((a) => (typeof a === 'string' ? { media_id: a } : Object.assign({}, a)))
  }
  return x
}

/** The conversation key of an outbox entry. */
function entryKey(e) {
  if (e.kind === 'op') return e.key
  return e.kind === 'room' ? 'r:' + e.room : 'd:' + e.to
}

class ChatClient {
  /**
   * @param {object} opts
   * @param {string} opts.url      ws:// or wss:// URL of chatd (path `/` or `/ws`)
   * @param {string} [opts.name]   display name to ask for (anonymous)
   * @param {string} [opts.token]  access token (sent as `Authorization: Bearer`)
   * @param {number} [opts.tokenExpiresAt] ms since the epoch when the token expires
   * @param {string} [opts.tokenIn] 'header' (default) or 'query' (`?token=`)
   * @param {string} [opts.storageKey] storage key to persist the session under
   * @param {object} [opts.adapter] socket/storage/timers (`wxAdapter(wx)`, `browserAdapter(window)`)
   * @param {object} [opts.wx]     without `adapter`: the wx API for `wxAdapter` (defaults to the global `wx`)
   * @param {string} [opts.idPrefix] prefix of client message ids (default `m`)
   * @param {function} [opts.now]  the clock in ms (default `Date.now`)
   * @param {boolean} [opts.batchReceipts] ask for `receipts_batch` (default true): a
   *   small room's receipts come at most once per room per `--receipt-window`
   */
  constructor(opts) {
    const o = opts || {}
    if (!o.url) throw new Error('ChatClient: url is required')
    this.url = o.url
    this.httpUrl = (o.httpUrl || httpOrigin(o.url)).replace(/\/$/, '') // for /api/media and /media/ URLs
    this.name = o.name || null
    this.token = o.token || null
    this.tokenExpiresAt = o.tokenExpiresAt || null
    this.tokenIn = o.tokenIn === 'query' ? 'query' : 'header'
    this.tokenSlack = o.tokenSlack !== undefined ? o.tokenSlack : DEFAULTS.tokenSlack
    this.storageKey = o.storageKey || null
    this.saveDelay = o.saveDelay !== undefined ? o.saveDelay : DEFAULTS.saveDelay
    this.resumeSecret = null // welcome.resume of an anonymous session
    this.batchReceipts = o.batchReceipts !== false // ?features=receipts_batch
    this.io = o.adapter || null
    if (!this.io) {
      const wxApi = o.wx || (typeof wx !== 'undefined' ? wx : null) // eslint-disable-line no-undef
      if (!wxApi) throw new Error('ChatClient: no adapter and no wx API')
      this.io = wxAdapter(wxApi)
    }
    this.idPrefix = o.idPrefix || 'm'
    this.backoff = Object.assign({}, DEFAULTS.backoff, o.backoff)
    this.heartbeat = Object.assign({}, DEFAULTS.heartbeat, o.heartbeat)
    this.connectTimeout = o.connectTimeout || DEFAULTS.connectTimeout
    this.retryDelay = o.retryDelay || DEFAULTS.retryDelay
    this.seenWindow = o.seenWindow || DEFAULTS.seenWindow
    this.rateBackoff = Object.assign({}, DEFAULTS.rateBackoff, o.rateBackoff)
    this.uploadBackoff = Object.assign({}, DEFAULTS.uploadBackoff, o.uploadBackoff)
    this.uploadTries = o.uploadTries || DEFAULTS.uploadTries
    this._uploadRun = null // the sendMedia upload in progress: {entry, task}
    this.random = o.random || Math.random
    this.now = o.now || (() => Date.now()) // the clock (ms) for expiry and pacing
    this.setTimeout = o.setTimeout || this.io.setTimeout
    this.clearTimeout = o.clearTimeout || this.io.clearTimeout

    this.state = 'idle'
    this.user = null
    this.welcome = null
    this.rooms = new Map() // room -> {seq: SeqTracker, joined, members}
    this.dms = new Map() // peer -> SeqTracker
    this.outbox = [] // pending entries, oldest first
    this.failed = [] // messages refused by chatd (shown with a retry) since this start
    // conversations (token users; see docs/miniprogram.md, "SDK: conversations")
    this.store = new ConversationStore({ tail: o.convTail || DEFAULTS.convTail })
    this.cursor = null // the newest `sync` cursor
    this.synced = false // a sync of this connection completed
    this.readDelay = o.readDelay !== undefined ? o.readDelay : DEFAULTS.readDelay
    this.convSaveDelay = o.convSaveDelay !== undefined ? o.convSaveDelay : DEFAULTS.convSaveDelay
    this._subs = new Set() // rooms this connection is subscribed to by the server (`subscribed`)
    this._subSeen = new Map() // room -> SeqTracker for rooms received without join()
    this._reads = new Map() // key -> {seq, sent, at, timer}: read markers to send
    this._syncing = false

    this._listeners = {}
    this._task = null
    this._gen = 0 // bumped whenever the current socket is abandoned
    this._open = false // current socket opened and welcomed
    this._wanted = false // the app wants a connection
    this._paused = false
    this._attempt = 0
    this._everWelcomed = false
    this._timers = {}
    this._reqSeq = 0
    this._byRef = new Map() // request id -> waiter
    this._fifo = {}
    FIFO_KINDS.forEach((k) => {
      this._fifo[k] = new Map()
    })
    this._limited = false // a frame was refused with rate_limited: pace the outbox
    this._rateAttempt = 0
    this._holdUntil = 0 // no outbox frame before this time (ms)
    this._holdReconnect = 0 // no reconnect before this time (ms), see drop()
    this._saver = new Later(this, () => this._save(), () => this.saveDelay)
    this._convSaver = new Later(this, () => this._saveConv(), () => this.convSaveDelay)
    this._restore()
  }

  // ---- persistence ----------------------------------------------------------

  /** Loads the persisted session (outbox, seqs, resume secret) if there is one. */
  _restore() {
    if (!this.storageKey) return
    let saved = null
    try {
      saved = this.io.load(this.storageKey)
    } catch (e) {
      saved = null
    }
    if (typeof saved === 'string' && saved) {
      try {
        saved = JSON.parse(saved)
      } catch (e) {
        saved = null
      }
    }
    if (!saved || typeof saved !== 'object' || saved.v !== STORE_VERSION) return
    if (saved.name === (this.name || null) && typeof saved.resume === 'string') this.resumeSecret = saved.resume
    Object.keys(saved.rooms || {}).forEach((room) => {
      if (!isValidRoom(room)) return
      const r = this._room(room)
      const seq = saved.rooms[room]
      if (typeof seq === 'number') r.seq.startAt(seq)
    })
    Object.keys(saved.dms || {}).forEach((peer) => {
      const t = new SeqTracker(this.seenWindow)
      if (typeof saved.dms[peer] === 'number') t.startAt(saved.dms[peer])
      this.dms.set(peer, t)
    })
    ;(saved.outbox || []).forEach((e) => {
      const entry = this._fromRecord(e)
      if (!entry) return
      entry._gen = null
      this.outbox.push(entry)
    })
    // sendMedia entries refused before the kill keep their "not sent" bubble (Retry / Delete)
    ;(saved.failed || []).forEach((e) => {
      const entry = e && e.upload ? this._fromRecord(e) : null
      if (!entry) return
      entry.status = 'failed'
      entry.error = typeof e.error === 'string' ? e.error : 'failed'
      entry.upload.state = 'failed'
      this.failed.push(entry)
    })
    this._restoreConv()
  }

  /** Loads the persisted conversation store (a cold start shows it at once). */
  _restoreConv() {
    let saved = null
    try {
      saved = this.io.load(this.storageKey + '.conv')
      if (typeof saved === 'string' && saved) saved = JSON.parse(saved)
    } catch (e) {
      saved = null
    }
    if (!saved || typeof saved !== 'object' || saved.v !== CONV_VERSION) return
    this.user = this.user || saved.user || null
    this.store.me = saved.user || null
    this.cursor = typeof saved.cursor === 'string' ? saved.cursor : null
    this.store.load(saved.convs)
    this.store.convs.forEach((c, key) => {
      // everything cached counts as delivered: sync and live frames bring what follows
      if (key.charAt(0) === 'r') {
        const t = this._roomTracker(key.slice(2))
        t.startAt(c.seq)
      } else {
        const peer = key.slice(2)
        if (!this.dms.has(peer)) this.dms.set(peer, new SeqTracker(this.seenWindow))
        this.dms.get(peer).startAt(c.seq)
      }
    })
    Object.keys(saved.reads || {}).forEach((key) => {
      if (typeof saved.reads[key] === 'number') this._reads.set(key, { seq: saved.reads[key], sent: null, at: 0, timer: null })
    })
  }

  /** Writes the conversation store soon (at most every `convSaveDelay` ms). */
  _saveConvSoon() {
    if (this.storageKey) this._convSaver.soon()
  }

  _saveConv() {
    if (!this.storageKey) return
    this._convSaver.cancel()
    if (!this.store.convs.size && this.cursor === null) return
    const reads = {}
    this._reads.forEach((r, key) => {
      reads[key] = r.seq
    })
    const data = { v: CONV_VERSION, user: this.store.me, cursor: this.cursor, convs: this.store.snapshot(), reads }
    try {
      this.io.save(this.storageKey + '.conv', data)
    } catch (e) {
      // storage full or unavailable: the list is just not cached
    }
  }

  /** Writes the session to storage now (outbox changes must survive a kill). */
  _save() {
    if (!this.storageKey) return
    this._saver.cancel()
    const rooms = {}
    this.rooms.forEach((r, room) => {
      rooms[room] = r.seq.last
    })
    const dms = {}
    this.dms.forEach((t, peer) => {
      if (t.last !== null) dms[peer] = t.last
    })
    const outbox = []
    this.outbox.forEach((e) => {
      if (e.upload && !uploadRecord(e.upload)) return // a browser Blob not kept (no IndexedDB): lost with the page
      outbox.push(this._record(e))
    })
    // refused sendMedia entries: their kept file and "not sent" bubble outlive a restart
    const failed = this.failed.filter((e) => e.upload && uploadRecord(e.upload)).map((e) => Object.assign(this._record(e), { error: e.error }))
    const data = { v: STORE_VERSION, name: this.name || null, resume: this.resumeSecret, rooms, dms, outbox, failed }
    try {
      this.io.save(this.storageKey, data)
    } catch (e) {
      // storage full or unavailable: the session just is not persisted
    }
  }

  /** An outbox entry (status `pending`) from its stored `_record`, or null when it is not one. */
  _fromRecord(e) {
    if (!e || typeof e.id !== 'string') return null
    let entry
    if (e.kind === 'op') {
      if (OPS.indexOf(e.op) < 0 || typeof e.key !== 'string' || typeof e.seq !== 'number') return null
      entry = { id: e.id, kind: 'op', op: e.op, key: e.key, seq: e.seq, status: 'pending', ts: e.ts }
      if (typeof e.text === 'string') entry.text = e.text
      if (typeof e.emoji === 'string') entry.emoji = e.emoji
      return entry
    }
    if (typeof e.text !== 'string' || (e.kind !== 'room' && e.kind !== 'dm')) return null
    entry = { id: e.id, text: e.text, status: 'pending', ts: e.ts, from: null, kind: e.kind }
    if (e.kind === 'room') entry.room = e.room
    else entry.to = e.to
    if (Array.isArray(e.mentions)) entry.mentions = e.mentions
    if (typeof e.reply_to === 'number') entry.reply_to = e.reply_to
    if (Array.isArray(e.attachments)) entry.attachments = e.attachments
    const up = uploadRecord(e.upload)
    // a sendMedia entry killed before its upload finished: uploaded again on connect()
    if (up) entry.upload = Object.assign(up, { state: 'queued', progress: 0, tries: 0 })
    else if (e.upload) return null
    if (typeof e.kept === 'string') entry.kept = e.kept
    return entry
  }

  /** What storage keeps of outbox entry `e`. */
  _record(e) {
    if (e.kind === 'op') {
      const op = { id: e.id, kind: 'op', op: e.op, key: e.key, seq: e.seq, ts: e.ts }
      if (e.text !== undefined) op.text = e.text
      if (e.emoji !== undefined) op.emoji = e.emoji
      return op
    }
    const o = { id: e.id, kind: e.kind, text: e.text, ts: e.ts }
    if (e.kind === 'room') o.room = e.room
    else o.to = e.to
    if (e.mentions) o.mentions = e.mentions
    if (e.reply_to !== undefined) o.reply_to = e.reply_to
    if (e.attachments) o.attachments = e.attachments
    if (e.upload) o.upload = uploadRecord(e.upload)
    if (e.kept) o.kept = e.kept
    return o
  }

  /** Writes the session soon (seq advances: many per second while chatting). */
  _saveSoon() {
    if (this.storageKey) this._saver.soon()
  }

  /** Deletes the persisted session (logout). */
  forget() {
    this._saver.cancel()
    this._convSaver.cancel()
    // the files kept for uploads not sent yet (wx saved files, the browser's IndexedDB)
    // go too: a logout on a shared device leaves none of the user's files behind
    this._stopUpload(false)
    this.outbox.concat(this.failed).forEach((e) => this._unkeep(e))
    if (!this.storageKey) return
    try {
      this.io.remove(this.storageKey)
      this.io.remove(this.storageKey + '.conv')
    } catch (e) {
      // nothing stored
    }
  }

  _room(room) {
    let r = this.rooms.get(room)
    if (!r) {
      // a room received by subscription keeps what it has seen
      const seq = this._subSeen.get(room) || new SeqTracker(this.seenWindow)
      this._subSeen.delete(room)
      r = { seq, joined: false, members: [], waiters: [] }
      this.rooms.set(room, r)
    }
    return r
  }

  /** The seq tracker of `room`: its join()'s, or one for a room received by subscription. */
  _roomTracker(room) {
    const r = this.rooms.get(room)
    if (r) return r.seq
    let t = this._subSeen.get(room)
    if (!t) {
      t = new SeqTracker(this.seenWindow)
      this._subSeen.set(room, t)
    }
    return t
  }

  /** The seq tracker of conversation `key`. */
  _tracker(key) {
    if (key.charAt(0) === 'r') return this._roomTracker(key.slice(2))
    const peer = key.slice(2)
    if (!this.dms.has(peer)) this.dms.set(peer, new SeqTracker(this.seenWindow))
    return this.dms.get(peer)
  }

  // ---- events -------------------------------------------------------------

  /** Adds a listener; returns a function that removes it. */
  on(type, fn) {
    ;(this._listeners[type] = this._listeners[type] || []).push(fn)
    return () => this.off(type, fn)
  }

  off(type, fn) {
    const l = this._listeners[type]
    if (l) this._listeners[type] = l.filter((f) => f !== fn)
  }

  _emit(type, payload) {
    const l = this._listeners[type]
    if (!l) return
    l.slice().forEach((fn) => {
      try {
        fn(payload)
      } catch (e) {
        console.error('chatd listener for ' + type + ' failed:', e)
      }
    })
  }

  _setState(state, extra) {
    this.state = state
    this._emit('status', Object.assign({ state }, extra || {}))
  }

  // ---- connection lifecycle ----------------------------------------------

  /** Starts connecting (no-op when already connected or connecting). */
  connect() {
    this._wanted = true
    this._paused = false
    this._pumpUploads() // sendMedia files of a previous run, and any waiting their turn
    if (this._task) return
    this._attempt = 0
    this._dial()
  }

  /** Closes for good (logout): no reconnect, the outbox is kept. */
  close() {
    this._wanted = false
    this._paused = false
    this._stopUpload(true) // uploaded again on the next connect()
    this._abandon(1000, 'client closed')
    this._save()
    this._saveConv()
    this._setState('closed', { code: 1000, reason: 'client closed' })
  }

  /** A new access token (after a fresh login); call `connect()` to use it. */
  setToken(token, expiresAt) {
    this.token = token || null
    this.tokenExpiresAt = expiresAt || null
  }

  /** True when the token is known to be expired (or about to). */
  tokenExpired() {
    return !!(this.token && this.tokenExpiresAt && this.now() >= this.tokenExpiresAt - this.tokenSlack)
  }

  /** App went to the background: close the socket, stop retrying. */
  pause() {
    if (!this._wanted || this._paused) return
    this._paused = true
    this._abandon(1000, 'app hidden')
    this._save() // the app may be killed while hidden
    this._saveConv()
    this._setState('paused')
  }

  /** App came back: reconnect now (resuming every room). */
  resume() {
    if (!this._wanted) return
    if (!this._paused && this._task) return
    this._paused = false
    this._attempt = 0
    this._clearTimer('reconnect')
    this._dial()
  }

  /** The network came back: skip the remaining backoff wait. */
  reconnectNow() {
    if (this._wanted && !this._paused && !this._task) {
      this._clearTimer('reconnect')
      this._dial()
    }
  }

  /**
   * Drops the socket as a failed network would (close 4000) and reconnects
   * by itself, no sooner than `holdMs` from now (for tests and debugging).
   */
  drop(holdMs) {
    if (!this._task) return
    this._holdReconnect = this.now() + (holdMs || 0)
    this._lost(this._gen, 4000, 'dropped by client')
  }

  /** True while a welcomed connection is up. */
  get connected() {
    return this._open
  }

  _dial() {
    if (this.tokenExpired()) {
      this._gen++
      this._needAuth(401, 'token_expired')
      return
    }
    const gen = ++this._gen
    this._open = false
    this._setState(this._everWelcomed ? 'reconnecting' : 'connecting', { attempt: this._attempt })
    const params = {}
    if (this.token) {
      if (this.tokenIn === 'query') params.token = this.token
    } else {
      params.name = this.name
      if (this.name && this.resumeSecret) params.resume = this.resumeSecret
    }
    if (this.batchReceipts) params.features = 'receipts_batch'
    const req = { url: buildUrl(this.url, params), protocols: [PROTOCOL] }
    if (this.token && this.tokenIn === 'header') req.header = { Authorization: 'Bearer ' + this.token }
    let task
    try {
      task = this.io.connect(req, {
        open: () => {
          if (gen === this._gen) this._armHeartbeat(gen)
        },
        message: (data) => {
          if (gen === this._gen) this._onFrame(gen, data)
        },
        error: (reason) => {
          if (gen === this._gen) this._lost(gen, 1006, reason)
        },
        close: (code, reason) => {
          if (gen === this._gen) this._lost(gen, code, reason)
        }
      })
    } catch (e) {
      this._task = null
      this._lost(gen, 1006, String(e && e.message))
      return
    }
    if (gen !== this._gen) return // the connect failed synchronously
    this._task = task
    this._setTimer('connect', this.connectTimeout, () => this._lost(gen, 4008, 'connect timeout'))
  }

  /** Drops the current socket (if any) without reacting to its events. */
  _abandon(code, reason) {
    this._gen++
    this._open = false
    Object.keys(this._timers).forEach((k) => this._clearTimer(k))
    const task = this._task
    this._task = null
    this.rooms.forEach((r) => {
      r.joined = false
    })
    this._subs.clear()
    this.synced = false
    this._syncing = false
    this._reads.forEach((r) => {
      r.sent = null // unconfirmed reads go again on the next connection
    })
    this._failRequests('disconnected')
    if (task) {
      try {
        task.close(code, reason)
      } catch (e) {
        // the socket may already be gone
      }
    }
  }

  /** The socket of generation `gen` is gone: decide between retry and stop. */
  _lost(gen, code, reason) {
    if (gen !== this._gen) return
    const cleanCode = code === 4008 || code === 4000 ? 4000 : 1000
    this._abandon(cleanCode, reason || 'lost')
    if (!this._wanted || this._paused) return
    if (this.token && (code === 4401 || isUnauthorized(reason))) {
      this._needAuth(code === 4401 ? 4401 : 401, code === 4401 ? 'token_expired' : 'unauthorized')
      return
    }
    if (code === 1008) this._limited = true // closed for flooding: pace the resend
    let fatal = FATAL_CLOSE[code]
    // A taken name on the very first connect is the user's problem; after a
    // reconnect it is most likely our own dead connection, which the server
    // drops after its ping timeout: keep retrying.
    if (code === 4409 && !this._everWelcomed) fatal = 'name_taken'
    if (fatal) {
      this._wanted = false
      this._setState('closed', { code, reason: fatal })
      return
    }
    const delay = Math.max(backoffDelay(this._attempt, this.backoff, this.random), this._holdReconnect - this.now())
    this._holdReconnect = 0
    this._attempt++
    this._setState('reconnecting', { attempt: this._attempt, delay, code, reason })
    this._setTimer('reconnect', delay, () => this._dial())
  }

  /** The token is no good any more: stop retrying, ask the app for a new one. */
  _needAuth(code, reason) {
    this._wanted = false
    this._setState('closed', { code, reason })
    this._emit('auth', { code, reason })
  }

  _setTimer(name, ms, fn) {
    this._clearTimer(name)
    this._timers[name] = this.setTimeout(() => {
      delete this._timers[name]
      fn()
    }, ms)
  }

  _clearTimer(name) {
    if (this._timers[name] !== undefined) {
      this.clearTimeout(this._timers[name])
      delete this._timers[name]
    }
  }

  /** After `interval` ms of silence send a ping; `timeout` ms later, give up. */
  _armHeartbeat(gen) {
    this._clearTimer('dead')
    this._setTimer('ping', this.heartbeat.interval, () => {
      this._raw({ type: 'ping', id: this._nextRef('p') })
      this._setTimer('dead', this.heartbeat.timeout, () => this._lost(gen, 4000, 'heartbeat timeout'))
    })
  }

  // ---- sending --------------------------------------------------------------

  _raw(obj) {
    if (!this._task) return false
    try {
      return this._task.send(JSON.stringify(obj)) !== false
    } catch (e) {
      return false
    }
  }

  _nextRef(prefix) {
    this._reqSeq++
    return prefix + this._reqSeq.toString(36) + '-' + this._gen
  }

  _failRequests(reason) {
    const waiters = Array.from(this._byRef.values())
    this._byRef.clear()
    waiters.forEach((w) => w.reject(new Error(reason)))
    FIFO_KINDS.forEach((t) => this._fifo[t].clear())
  }

  /**
   * Joins `room` (remembered: rejoined with `since` after every reconnect).
   * Resolves with the `joined` frame of the current (or next) connection.
   */
  join(room) {
    if (!isValidRoom(room)) return Promise.reject(new Error('bad_room'))
    const isNew = !this.rooms.has(room)
    const r = this._room(room)
    if (isNew) this._save()
    const p = new Promise((resolve, reject) => r.waiters.push({ resolve, reject }))
    if (this._open) this._sendJoin(room)
    return p
  }

  _sendJoin(room) {
    const r = this.rooms.get(room)
    const frame = { type: 'join', room, id: this._nextRef('j') }
    if (r.seq.last !== null) frame.since = r.seq.last
    if (r.joinRef) this._byRef.delete(r.joinRef)
    r.joinRef = frame.id
    this._byRef.set(frame.id, {
      resolve: () => {},
      reject: (e) => {
        if (!e.code) return // disconnected: the join is repeated on reconnect
        if (e.code === 'rate_limited') {
          // dropped, not executed: ask again later on this connection
          const gen = this._gen
          this._setTimer('join:' + room, this._rateDelay(), () => {
            if (gen === this._gen && this._open && this.rooms.get(room) === r) this._sendJoin(room)
          })
          return
        }
        this.rooms.delete(room)
        r.waiters.splice(0).forEach((w) => w.reject(e))
        // forbidden, too_many_rooms, bad_room: messages queued for it cannot go
        this.outbox
          .filter((x) => x.kind === 'room' && x.room === room)
          .forEach((x) => this._fail(x, e.code))
        this._save()
      }
    })
    this._raw(frame)
  }

  /** Leaves `room` and forgets it (a token user: ends the membership on every device). */
  leave(room) {
    const r = this.rooms.get(room)
    const member = this._authenticated() && (this._subs.has(room) || this.store.has('r:' + room))
    if (!r && !member) return
    if (r) {
      this.rooms.delete(room)
      r.waiters.splice(0).forEach((w) => w.reject(new Error('left')))
    }
    // a token user's membership ends on every device (chatd answers `left` to each)
    if (this._open && ((r && r.joined) || member)) this._raw({ type: 'leave', room })
    this.outbox.filter((e) => e.kind === 'room' && e.room === room).forEach((e) => this._forget(e))
    this._save()
    this._pumpUploads()
  }

  _authenticated() {
    return !!(this.welcome && this.welcome.authenticated)
  }

  /** Members of a joined room (sorted user ids). */
  members(room) {
    const r = this.rooms.get(room)
    return r ? r.members.slice() : []
  }

  /**
   * Queues a room message; returns its outbox entry (status `pending`).
   * `opts`: `reply_to` (a seq of the room), `mentions` (user ids, `@all`).
   */
  send(room, text, opts) {
    return this._enqueue(Object.assign({ kind: 'room', room }, extrasOf(opts)), text)
  }

  /** Queues a direct message to user `to` (online or not); returns its outbox entry. */
  dm(to, text, opts) {
    if (!this.dms.has(to)) this.dms.set(to, new SeqTracker(this.seenWindow))
    return this._enqueue(Object.assign({ kind: 'dm', to }, extrasOf(opts)), text)
  }

  /**
   * Queues a picture, voice clip or file for conversation `conversation`
   * (`r:<room>` / `d:<user>`, or `{room}` / `{with}`); returns its outbox entry
   * (status `pending`, `upload.state` `queued` → `uploading` → sent). `spec`:
   * `{file | filePath, kind, name, size, mime, width, height, duration_ms, text,
   * reply_to, mentions}` — `file` a wx file path (kept with `saveFile`, so a
   * restart resumes it) or a browser Blob/File (kept in IndexedDB by the browser
   * adapter, so a reload resumes it; lost with the page where there is none). The file is
   * uploaded (one at a time, `upload` events with the progress), retried with
   * backoff on no answer, 5xx or `unavailable`, then sent as
   * `attachments: [{media_id}]` through the outbox (exactly once by id); a
   * refusal (`too_large`, `bad_image`, `quota_exceeded`, …) fails the entry with
   * that code (`retry(entry)` / `discard(entry)`).
   */
  sendMedia(conversation, spec) {
    const s = spec || {}
    const file = s.file !== undefined ? s.file : s.filePath
    if (file === undefined || file === null || file === '') throw new Error('sendMedia: no file')
    const target = convTarget(convKey(conversation))
    const up = { file, state: 'queued', progress: 0, tries: 0 }
    MEDIA_FIELDS.forEach((k) => {
      if (s[k] !== undefined && s[k] !== null) up[k] = s[k]
    })
    if (!up.name && typeof file === 'object' && typeof file.name === 'string' && file.name) up.name = file.name
    if (!up.kind) up.kind = 'file'
    const extras = Object.assign(extrasOf({ reply_to: s.reply_to, mentions: s.mentions }), { upload: up })
    if (target.room !== undefined) return this._enqueue(Object.assign({ kind: 'room', room: target.room }, extras), s.text || '')
    if (!this.dms.has(target.with)) this.dms.set(target.with, new SeqTracker(this.seenWindow))
    return this._enqueue(Object.assign({ kind: 'dm', to: target.with }, extras), s.text || '')
  }

  /**
   * Deletes my failed message `entry`, or a `sendMedia` entry whose file is not
   * sent yet (its upload is stopped, its kept file removed); false when it is
   * neither (a message on its way cannot be taken back).
   */
  discard(entry) {
    const pending = this.outbox.indexOf(entry) >= 0
    if (!(pending && entry.upload) && this.failed.indexOf(entry) < 0) return false
    this._forget(entry)
    this._save()
    this._changed(entryKey(entry), true)
    this._pumpUploads()
    return true
  }

  // ---- sendMedia uploads ------------------------------------------------------

  /** Starts the next queued sendMedia upload (one at a time, oldest first). */
  _pumpUploads() {
    if (this._uploadRun) return
    const entry = this.outbox.find((e) => e.upload && e.upload.state === 'queued')
    if (!entry) return
    const up = entry.upload
    const run = { entry, task: null }
    this._uploadRun = run
    if (!up.kept && typeof this.io.keep === 'function') {
      // first keep the file (a wx temp file, a browser Blob: a restart or a reload must
      // still find it), then upload the kept one
      up.state = 'keeping'
      this.io.keep(up.file, (path) => {
        if (this._uploadRun !== run) return
        this._uploadRun = null
        up.kept = true
        if (path) up.file = path
        up.state = 'queued'
        this._save()
        this._pumpUploads()
      })
      return
    }
    up.state = 'uploading'
    up.progress = 0
    this._uploadEvent(entry, true)
    const onProgress = (p) => {
      if (this._uploadRun !== run || typeof p !== 'number') return
      up.progress = Math.max(0, Math.min(100, Math.floor(p)))
      this._uploadEvent(entry, false)
    }
    this.upload(up.file, { name: up.name, onProgress, onTask: (t) => (run.task = t) }).then(
      (answer) => {
        if (this._uploadRun !== run) return
        this._uploadRun = null
        delete entry.upload
        if (up.kept && typeof up.file === 'string') entry.kept = up.file // removed once the message is sent
        entry.attachments = [Object.assign({ name: up.name }, answer)]
        this._save()
        this._uploadEvent(entry, true, 'done')
        this._flush()
        this._pumpUploads()
      },
      (err) => {
        if (this._uploadRun !== run) return
        this._uploadRun = null
        up.tries++
        up.error = err.code || 'network'
        if (uploadVerdict(err) === 'retry' && up.tries < this.uploadTries) {
          up.state = 'waiting'
          // its own timer: a reconnect (which clears the connection's timers) does not stop it
          up.timer = this.setTimeout(() => {
            up.timer = null
            if (up.state !== 'waiting' || this.outbox.indexOf(entry) < 0) return
            up.state = 'queued'
            this._pumpUploads()
          }, backoffDelay(up.tries - 1, this.uploadBackoff, this.random))
          this._uploadEvent(entry, true)
        } else {
          up.state = 'failed'
          this._uploadEvent(entry, false)
          this._fail(entry, up.error)
        }
        this._pumpUploads()
      }
    )
  }

  /** Emits `upload` {id, key, state, progress, error?}; `timeline` too when `changed` (a new state). */
  _uploadEvent(entry, changed, state) {
    const up = entry.upload
    const ev = { id: entry.id, key: entryKey(entry), state: state || up.state, progress: up ? up.progress : 100 }
    if (up && up.error) ev.error = up.error
    this._emit('upload', ev)
    if (changed) this._changed(ev.key, true)
  }

  /** Takes `entry` out of the outbox and the failed list for good: its upload stopped, its kept file removed. */
  _forget(entry) {
    if (this._uploadRun && this._uploadRun.entry === entry) this._stopUpload(false)
    this._unwait(entry)
    this.outbox = this.outbox.filter((e) => e !== entry)
    this.failed = this.failed.filter((e) => e !== entry)
    entry.status = 'discarded'
    this._unkeep(entry)
  }

  /** Cancels the retry timer of a `waiting` upload. */
  _unwait(entry) {
    const up = entry.upload
    if (!up || !up.timer) return
    this.clearTimeout(up.timer)
    up.timer = null
  }

  /**
   * Stops the upload in progress (close, discard); `requeue` (close): it and the
   * ones waiting for a retry start again on the next connect().
   */
  _stopUpload(requeue) {
    if (requeue) {
      this.outbox.forEach((e) => {
        if (!e.upload || e.upload.state !== 'waiting') return
        this._unwait(e)
        e.upload.state = 'queued'
      })
    }
    const run = this._uploadRun
    if (!run) return
    this._uploadRun = null
    if (run.entry.upload) run.entry.upload.state = requeue ? 'queued' : 'failed'
    if (run.task && typeof run.task.abort === 'function') run.task.abort()
  }

  /** Removes the file a sent or deleted sendMedia entry kept. */
  _unkeep(entry) {
    const file = entry.kept || (entry.upload && entry.upload.kept && entry.upload.file)
    delete entry.kept
    if (typeof file === 'string' && typeof this.io.unkeep === 'function') this.io.unkeep(file)
  }

  // ---- conversations --------------------------------------------------------

  /**
   * The conversation list, most recent first, with the DMs only my outbox has
   * so far (`local: true`; see ConversationStore.list).
   */
  get conversations() {
    return this.store.list(this._unsent())
  }

  /** My messages not taken by chatd yet (pending and failed; no operations). */
  _unsent() {
    return this.outbox.concat(this.failed).filter((e) => e.kind !== 'op')
  }

  /** The summary of conversation `key` (`r:<room>` / `d:<user>`), or null. */
  conversation(key) {
    const c = this.store.conv(convKey(key), false)
    return c ? Object.assign({}, c) : null
  }

  /** Messages and events of `key`, ascending, then my pending and failed entries. */
  timeline(key) {
    const k = convKey(key)
    return this.store.timeline(
      k,
      this._unsent().filter((e) => entryKey(e) === k)
    )
  }

  /** Unread of every conversation that is not muted (for the tab badge). */
  totalUnread() {
    return this.store.totalUnread()
  }

  /** Who (other than me) read message `seq` of `key`, as far as receipts told. */
  readBy(key, seq) {
    return this.store.readBy(convKey(key), seq)
  }

  /** Keeps an unsent draft of `key` (shown as "[draft]" in the list; persisted). */
  setDraft(key, text) {
    const c = this.store.conv(convKey(key), true)
    c.draft = text || ''
    this._changed(c.key, false)
  }

  /**
   * Loads the page before the oldest cached item of `key` into its timeline;
   * resolves with `{more}`.
   */
  loadEarlier(key, limit) {
    const k = convKey(key)
    const oldest = this.store.oldest(k)
    const t = convTarget(k)
    const frame = t.room !== undefined ? { type: 'history', room: t.room } : { type: 'dm_history', with: t.with }
    if (oldest !== null) frame.before = oldest
    frame.limit = limit || 50
    const kind = frame.type
    return this._request(kind, t.room !== undefined ? t.room : t.with, frame).then((page) => {
      this.store.page(k, page.messages, page.events, page.more)
      this._changed(k, true)
      return { more: !!page.more }
    })
  }

  /**
   * Marks `key` read up to `seq` (default: its newest): applied locally at once,
   * sent as `read` at most once per `readDelay` ms per conversation, and again
   * after a reconnect until chatd confirms it.
   */
  markRead(key, seq) {
    const k = convKey(key)
    const c = this.store.conv(k, false)
    if (!c) return
    const s = typeof seq === 'number' ? seq : c.seq
    if (s <= c.read && !this._reads.has(k)) return
    this.store.readLocally(k, s)
    const r = this._reads.get(k) || { seq: 0, sent: null, at: 0, timer: null }
    r.seq = Math.max(r.seq, s)
    this._reads.set(k, r)
    this._changed(k, false)
    this._sendRead(k)
  }

  _sendRead(key) {
    const r = this._reads.get(key)
    if (!r || !this._open || r.timer !== null) return
    if (r.sent !== null && r.sent >= r.seq) return
    const wait = r.at + this.readDelay - this.now()
    if (wait > 0) {
      r.timer = this.setTimeout(() => {
        r.timer = null
        this._sendRead(key)
      }, wait)
      return
    }
    if (this._raw(Object.assign({ type: 'read' }, convTarget(key), { seq: r.seq }))) {
      r.sent = r.seq
      r.at = this.now()
    }
  }

  /**
   * May I recall message `m` (a timeline row) myself? My own, inside chatd's
   * `--recall-window` (from `welcome`), by the local clock; owners and admins of a
   * room may recall any message at any time.
   */
  canRecall(key, m) {
    if (!m || m.seq === null || m.seq === undefined || m.recalled || m.event) return false
    const c = this.store.conv(convKey(key), false)
    if (c && c.kind !== 'dm' && (c.role === 'owner' || c.role === 'admin')) return true
    if (m.from !== this.user) return false
    const windowS = this.welcome && typeof this.welcome.recall_window === 'number' ? this.welcome.recall_window : 120
    return this.now() - m.ts < windowS * 1000
  }

  /** Recalls my message `seq` of `key` (owners/admins: anyone's); an outbox entry. */
  recall(key, seq) {
    return this._enqueueOp('recall', key, seq, {})
  }

  /** Replaces the text of my message `seq` of `key`; an outbox entry. */
  edit(key, seq, text) {
    if (typeof text !== 'string' || !text.length) throw new Error('empty text')
    return this._enqueueOp('edit', key, seq, { text })
  }

  /** Toggles my reaction `emoji` on message `seq` of `key`; an outbox entry. */
  react(key, seq, emoji) {
    if (typeof emoji !== 'string' || !emoji.length) throw new Error('empty emoji')
    return this._enqueueOp('react', key, seq, { emoji })
  }

  _enqueueOp(op, key, seq, extra) {
    if (typeof seq !== 'number') throw new Error('bad seq')
    const entry = Object.assign({ id: makeId(this.random, this.idPrefix), kind: 'op', op, key: convKey(key), seq, status: 'pending', ts: this.now() }, extra)
    return this._queue(entry)
  }

  /** Mutes or unmutes `key` (unread still counts; push skips it). */
  mute(key, muted) {
    const k = convKey(key)
    const c = this.store.conv(k, false)
    if (c) {
      c.muted = !!muted
      this._changed(k, false)
    }
    if (!this._open) return Promise.reject(new Error('offline'))
    this._raw(Object.assign({ type: 'mute' }, convTarget(k), { muted: !!muted }))
    return Promise.resolve()
  }

  /**
   * Creates a room: `{room, kind: 'public'|'private', title?, topic?, avatar?,
   * members?}`; resolves with its `room_info`.
   */
  createRoom(spec) {
    // exactly-once by id on chatd's side (per user, across connections): a fresh one
    const frame = Object.assign({ type: 'create', id: makeId(this.random, 'c') }, spec)
    const gen = this._gen
    return this._request('room_info', spec.room, frame).then((info) => {
      // chatd subscribed this connection to the new room (without a `subscribed`)
      if (gen === this._gen) this._subs.add(spec.room)
      this._roomInfoToStore(info, true)
      this._syncSoon() // the `created` (and `invited`) events of this connection's own create
      this._flush()
      return info
    })
  }

  /** Puts a `room_info` answer into the room's summary (created when `create`). */
  _roomInfoToStore(info, create) {
    const c = this.store.conv('r:' + info.room, create)
    if (!c) return
    ;['kind', 'title', 'topic', 'avatar', 'role'].forEach((f) => {
      if (info[f] !== undefined && info[f] !== null) c[f] = info[f]
    })
    this._changed(c.key, false)
  }

  /** A `sync` soon (one for a burst of reasons), when connected as a token user. */
  _syncSoon() {
    if (!this._syncLater) this._syncLater = new Later(this, () => this._open && this._authenticated() && this.sync().catch(() => {}), () => 50)
    this._syncLater.soon()
  }

  /** `room_info {room, kind, title, topic, avatar, members, role, seq, created_by}`. */
  roomInfo(room) {
    return this._request('room_info', room, { type: 'room_info', room }).then((info) => {
      this._roomInfoToStore(info, false)
      return info
    })
  }

  /** One page of a room's members: `{room, members: [{user, name, role, online}], cursor}`. */
  roomMembers(room, opts) {
    return this._request('members', room, Object.assign({ type: 'members', room }, opts || {}))
  }

  /** Every member of `room` (all pages). */
  allMembers(room) {
    const all = []
    const next = (cursor) =>
      this.roomMembers(room, cursor ? { cursor, limit: 200 } : { limit: 200 }).then((page) => {
        all.push.apply(all, page.members || [])
        return page.cursor ? next(page.cursor) : all
      })
    return next(null)
  }

  /** How many (and, in small rooms, which) others read `key` up to `seq`. */
  receipts(key, seq) {
    const k = convKey(key)
    return this._request('receipts', k, Object.assign({ type: 'receipts' }, convTarget(k), { seq })).then((r) => {
      if (Array.isArray(r.users)) r.users.forEach((u) => this.store.receipt(k, u, seq))
      return r
    })
  }

  /** Adds `user` to `room` (resolves with the `ack`). */
  invite(room, user) {
    return this._command({ type: 'invite', room, user })
  }

  kick(room, user) {
    return this._command({ type: 'kick', room, user })
  }

  ban(room, user) {
    return this._command({ type: 'ban', room, user })
  }

  unban(room, user) {
    return this._command({ type: 'unban', room, user })
  }

  /** `role`: `owner` (hands the room over), `admin` or `member`. */
  setRole(room, user, role) {
    return this._command({ type: 'set_role', room, user, role })
  }

  /** `changes`: any of `title`, `topic`, `avatar`, `kind`. */
  updateRoom(room, changes) {
    return this._command(Object.assign({ type: 'update_room', room }, changes))
  }

  /** A request answered by `ack {id}` (exactly-once by its id on chatd's side). */
  _command(frame, answer) {
    if (!this._open) return Promise.reject(new Error('offline'))
    return new Promise((resolve, reject) => {
      frame.id = makeId(this.random, 'c')
      this._byRef.set(frame.id, { resolve, reject, command: !answer })
      this._raw(frame)
    })
  }

  // ---- media (docs/api.md, "Media") ------------------------------------------

  /** The absolute URL of a `/media/…` path from an attachment (`url`, `thumb_url`). */
  mediaUrl(path) {
    if (!path || /^https?:\/\//.test(path)) return path || ''
    return this.httpUrl + path
  }

  /** An HTTP call through the adapter with the token; `onTask` gets what the adapter returned (`{abort()}`). */
  _http(kind, req, onTask) {
    if (typeof this.io[kind] !== 'function') return Promise.reject(new Error('this adapter cannot ' + kind))
    if (!this.token) return Promise.reject(Object.assign(new Error('uploads need a token'), { code: 'unauthorized' }))
    req.header = Object.assign({ Authorization: 'Bearer ' + this.token }, req.header)
    return new Promise((resolve, reject) => {
      const task = this.io[kind](req, (err, res) => {
        if (err) return reject(Object.assign(err, { code: err.code || 'network' }))
        let body = null
        try {
          body = typeof res.body === 'string' ? JSON.parse(res.body) : res.body
        } catch (e) {
          body = null
        }
        if (res.status >= 200 && res.status < 300 && body) return resolve(body)
        const e = new Error((body && body.message) || 'HTTP ' + res.status)
        e.code = (body && body.error) || 'http_' + res.status
        e.status = res.status
        reject(e)
      })
      if (onTask) onTask(task)
    })
  }

  /**
   * Uploads one file (wx: a local file path; browser: a Blob/File, or the `idb:` reference of a kept one) to
   * `POST /api/media`; resolves with the answer `{media_id, kind, mime, size, url, …}`
   * to pass in `send`/`dm` `{attachments: [answer]}`. Rejects with `code`
   * `too_large`, `quota_exceeded`, `bad_image`, `unauthorized`, … (HTTP errors) or `network`.
   * `opts.onProgress(percent)`: the upload's progress (wx: `UploadTask.onProgressUpdate`;
   * the browser adapter does not report it).
   */
  upload(file, opts) {
    const o = opts || {}
    const name = o.name || (file && typeof file === 'object' && typeof file.name === 'string' ? file.name : '')
    // the original name: the multipart filename (browser) and a `name` form field (wx.uploadFile cannot set the filename)
    const form = Object.assign({}, o.form, name ? { name } : {})
    return this._http('upload', { url: this.httpUrl + '/api/media', file, name: name || undefined, form, onProgress: o.onProgress }, o.onTask)
  }

  /** An upload's fields with freshly signed URLs (`GET /api/media/ID`). */
  mediaInfo(mediaId) {
    return this._http('request', { url: this.httpUrl + '/api/media/' + encodeURIComponent(mediaId) })
  }

  /**
   * Reports subscribe-message templates the user accepted in
   * `wx.requestSubscribeMessage` (and rooms to be notified for); resolves with
   * `push_subscriptions {templates, rooms, refused}` (docs/protocol.md, "Offline push").
   * `spec`: `{templates: [{id, count?}], rooms?, notify?}`; `{}` only reads them.
   */
  pushSubscribe(spec) {
    if (!this._open) return Promise.reject(new Error('offline'))
    return this._command(Object.assign({ type: 'push_subscribe' }, spec || {}), 'push_subscriptions')
  }

  /** An answer that echoes its request's id (push_subscriptions, mute_user, report, …). */
  _answerById(msg) {
    const w = msg.id ? this._byRef.get(msg.id) : null
    if (w) {
      this._byRef.delete(msg.id)
      w.resolve(msg)
    }
  }

  _on_push_subscriptions(msg) {
    this._answerById(msg)
  }

  _on_mute_user(msg) {
    this._answerById(msg)
  }

  _on_unmute_user(msg) {
    this._answerById(msg)
  }

  _on_ban_user(msg) {
    this._answerById(msg)
  }

  _on_unban_user(msg) {
    this._answerById(msg)
  }

  _on_report(msg) {
    this._answerById(msg)
  }

  // ---- moderation (docs/protocol.md, "Moderation") ---------------------------

  /**
   * Mutes `user` in `room` for `seconds` (room owners/admins), or everywhere with
   * `room` null (global moderators); resolves with `{user, room, muted_until}`.
   */
  muteUser(room, user, seconds) {
    const frame = { type: 'mute_user', user, seconds }
    if (room) frame.room = room
    return this._command(frame, 'mute_user')
  }

  unmuteUser(room, user) {
    const frame = { type: 'unmute_user', user }
    if (room) frame.room = room
    return this._command(frame, 'unmute_user')
  }

  /** Global moderators: bans `user` everywhere (`seconds` absent: for good). */
  banUser(user, seconds) {
    const frame = { type: 'ban_user', user }
    if (seconds) frame.seconds = seconds
    return this._command(frame, 'ban_user')
  }

  unbanUser(user) {
    return this._command({ type: 'unban_user', user }, 'unban_user')
  }

  /** Reports message `seq` of `key` to the moderators; resolves with `{report, duplicate}`. */
  report(key, seq, reason) {
    return this._command(Object.assign({ type: 'report' }, convTarget(convKey(key)), { seq, reason: reason || '' }), 'report')
  }

  /** Asks for everything that changed since the stored cursor (done after every welcome). */
  sync() {
    if (!this._open) return Promise.reject(new Error('offline'))
    if (this._syncing) {
      // asked again while one runs: what changed meanwhile needs one more
      this._syncAgain = true
      return this._syncing
    }
    const run = () => {
      const frame = { type: 'sync' }
      if (this.cursor) frame.since = this.cursor
      return this._request('sync', '', frame).then((reply) => {
        this._applySync(reply)
        return reply.more ? run() : reply
      })
    }
    const p = run().then(
      (reply) => {
        this._syncing = false
        this.synced = true
        this._emit('synced', { cursor: this.cursor, conversations: this.store.convs.size })
        if (this._syncAgain) {
          this._syncAgain = false
          return this.sync()
        }
        return reply
      },
      (e) => {
        this._syncing = false
        throw e
      }
    )
    this._syncing = p
    return p
  }

  _applySync(reply) {
    if (reply.reset) {
      const drafts = this.store.reset()
      this._subSeen.clear()
      drafts.forEach((d, k) => {
        this.store.conv(k, true).draft = d
      })
      this._emit('reset', {})
    }
    ;(reply.removed || []).forEach((r) => this._removed('r:' + r.room, r.kind))
    ;(reply.conversations || []).forEach((s) => {
      const key = convKey(s)
      if (s.truncated) {
        // a gap before these items: the cached timeline does not join on
        this.store.cut(key)
        const t = this._tracker(key)
        const items = s.items || []
        if (items.length) t.startAt(items[0].seq - 1)
      }
      ;(s.items || []).forEach((item) => this._item(key, item, true))
      this.store.summary(s) // the server's counts, after its items
      this._changed(key, true)
    })
    if (typeof reply.cursor === 'string') this.cursor = reply.cursor
    this._saveConv()
  }

  /** Conversation `key` is gone for me (left, kicked, banned). */
  _removed(key, why) {
    const had = this.store.has(key)
    this.store.remove(key)
    if (key.charAt(0) === 'r') {
      const room = key.slice(2)
      this._subs.delete(room)
      this._subSeen.delete(room)
      const r = this.rooms.get(room)
      if (r) {
        this.rooms.delete(room)
        r.waiters.splice(0).forEach((w) => w.reject(new Error(why || 'left')))
        this._save()
      }
      this.outbox.filter((e) => entryKey(e) === key).forEach((e) => this._fail(e, why || 'left'))
    }
    if (had) {
      this._emit('removed', { key, kind: why || 'left' })
      this._emitList()
    }
    this._saveConvSoon()
  }

  /**
   * One timeline item of conversation `key` (live, replayed or from `sync`),
   * each exactly once: applied to the store, and `message`/`dm` emitted for pages
   * that listen to them. Returns false for an item already seen.
   */
  _item(key, f, quiet) {
    if (!this._tracker(key).add(f.seq)) return false
    this.store.apply(key, f)
    if ((f.type === 'message' || f.type === 'dm') && f.from === this.user && f.id && this._settle(f.id, f)) {
      // my own message echoed (from another device, a replay or sync) settles my outbox entry
    } else if (f.type === 'message') this._emit('message', f)
    else if (f.type === 'dm') this._emit('dm', Object.assign({ peer: key.slice(2) }, f))
    if (f.type === 'event' && f.user === this.user && (f.kind === 'left' || f.kind === 'kicked' || f.kind === 'banned')) {
      this._emit('event', Object.assign({ key }, f))
      this._removed(key, f.kind)
      return true
    }
    if (f.type !== 'message' && f.type !== 'dm') this._emit(f.type === 'event' ? 'event' : f.type, Object.assign({ key }, f))
    if (!quiet) this._changed(key, true)
    return true
  }

  /**
   * Conversation `key` changed: emits `conversation` ({key, conversation}),
   * `timeline` ({key}) when its items changed, `conversations` and `unread`
   * for the list (batched into one per turn), and saves soon.
   */
  _changed(key, items) {
    const c = this.store.conv(key, false)
    this._emit('conversation', { key, conversation: c ? Object.assign({}, c) : null })
    if (items) this._emit('timeline', { key })
    this._emitList()
    this._saveConvSoon()
  }

  _emitList() {
    if (this._listTimer) return
    this._listTimer = true
    Promise.resolve().then(() => {
      this._listTimer = false
      this._emit('conversations', this.conversations)
      this._emit('unread', { total: this.store.totalUnread() })
    })
  }

  /** Queues a `failed` entry again with the same id (a retry the server dedupes). */
  retry(entry) {
    if (!entry || entry.status !== 'failed' || this.outbox.indexOf(entry) >= 0) return entry
    this.failed = this.failed.filter((e) => e !== entry)
    entry.status = 'pending'
    delete entry.error
    if (entry.upload) Object.assign(entry.upload, { state: 'queued', progress: 0, tries: 0, error: undefined })
    return this._queue(entry)
  }

  /** Puts `entry` at the end of the outbox (persisted) and sends what can go. */
  _queue(entry) {
    entry._gen = null
    this.outbox.push(entry)
    this._save()
    // a first message to a peer: the list has its DM from now on (ConversationStore.list)
    if (entry.kind === 'dm' && !this.store.has(entryKey(entry))) this._emitList()
    this._flush()
    if (entry.upload) this._pumpUploads()
    return entry
  }

  _enqueue(target, text) {
    const media = target.attachments || target.upload
    if (media && (text === undefined || text === null)) text = ''
    if (typeof text !== 'string' || (!text.length && !media)) throw new Error('empty text')
    if (target.attachments && target.attachments.length > 9) throw new Error('too_large')
    const max = (this.welcome && this.welcome.max_text_length) || 4000
    if (textLength(text) > max) throw new Error('too_large')
    const entry = Object.assign({ id: makeId(this.random, this.idPrefix), text, status: 'pending', ts: this.now(), from: this.user }, target)
    return this._queue(entry)
  }

  /** Sends every pending entry not yet sent on this connection. */
  _flush() {
    if (!this._open) return
    if (this._limited && this.now() < this._holdUntil) {
      // held back after a rate_limited refusal: the retry timer flushes
      if (this._timers.retry === undefined) this._setTimer('retry', this._holdUntil - this.now(), () => this._flush())
      return
    }
    let inFlight = this.outbox.filter((e) => e._gen === this._gen).length
    // conversations with an earlier entry still waiting: later ones wait behind it
    // (a conversation keeps its send order; chatd holds back the ones in flight)
    const waiting = new Set()
    this.outbox.forEach((e) => {
      if (e._gen === this._gen) return
      if (e.upload) return // its file is not uploaded yet (sendMedia): it holds nothing back
      const key = entryKey(e)
      if (waiting.has(key) || (this._limited && inFlight >= 1)) {
        waiting.add(key) // one at a time until accepted again
        return
      }
      let frame
      if (e.kind === 'op') {
        frame = Object.assign({ type: e.op }, convTarget(e.key), { seq: e.seq, id: e.id })
        if (e.op === 'edit') frame.text = e.text
        if (e.op === 'react') frame.emoji = e.emoji
      } else if (e.kind === 'room') {
        const r = this.rooms.get(e.room)
        if (!(r && r.joined) && !this._subs.has(e.room)) return waiting.add(key)
        frame = { type: 'send', room: e.room, text: e.text, id: e.id }
      } else {
        frame = { type: 'dm', to: e.to, text: e.text, id: e.id }
      }
      if (e.mentions) frame.mentions = e.mentions
      if (e.reply_to !== undefined) frame.reply_to = e.reply_to
      if (e.attachments) frame.attachments = e.attachments.map((a) => ({ media_id: a.media_id }))
      if (this._raw(frame)) {
        e._gen = this._gen
        inFlight++
      } else waiting.add(key)
    })
  }

  /** The next delay after a rate_limited refusal (grows until frames are accepted). */
  _rateDelay() {
    const d = backoffDelay(this._rateAttempt, this.rateBackoff, this.random)
    this._rateAttempt++
    return d
  }

  /** Tells the room this user is typing (dropped while offline). */
  typing(room) {
    const r = this.rooms.get(room)
    // joined here, or (a token user) subscribed to it by chatd
    if (this._open && ((r && r.joined) || this._subs.has(room))) this._raw({ type: 'typing', room })
  }

  /** One page of older messages: `{room, messages (oldest first), more}`. */
  history(room, opts) {
    const o = opts || {}
    const frame = { type: 'history', room }
    if (o.before !== undefined && o.before !== null) frame.before = o.before
    if (o.limit) frame.limit = o.limit
    return this._request('history', room, frame)
  }

  /**
   * One page of a DM conversation: `{with, messages, more}`. Its seqs count
   * as delivered, so a reconnect catches up with `since` from the newest.
   */
  dmHistory(peer, opts) {
    const frame = Object.assign({ type: 'dm_history', with: peer }, opts || {})
    return this._request('dm_history', peer, frame).then((page) => {
      if (!this.dms.has(peer)) this.dms.set(peer, new SeqTracker(this.seenWindow))
      const t = this.dms.get(peer)
      ;(page.messages || []).forEach((m) => t.add(m.seq))
      this._saveSoon()
      return page
    })
  }

  _request(kind, key, frame, tries) {
    if (!this._open) return Promise.reject(new Error('offline'))
    const left = tries === undefined ? 5 : tries
    return this._request1(kind, key, frame).catch((e) => {
      if (e.code !== 'rate_limited' || left <= 0) throw e
      // dropped by the server's rate limit: ask again a little later
      return new Promise((resolve) => this.setTimeout(resolve, this._rateDelay())).then(() =>
        this._request(kind, key, Object.assign({}, frame), left - 1)
      )
    })
  }

  _request1(kind, key, frame) {
    return new Promise((resolve, reject) => {
      frame.id = frame.id || this._nextRef('r')
      const waiter = { resolve, reject, id: frame.id }
      const q = this._fifo[kind].get(key) || []
      q.push(waiter)
      this._fifo[kind].set(key, q)
      this._byRef.set(frame.id, {
        resolve,
        reject: (e) => {
          const qq = this._fifo[kind].get(key) || []
          this._fifo[kind].set(
            key,
            qq.filter((w) => w !== waiter)
          )
          reject(e)
        }
      })
      this._raw(frame)
    })
  }

  // ---- receiving ------------------------------------------------------------

  _onFrame(gen, data) {
    this._armHeartbeat(gen) // any frame proves the link alive
    if (typeof data !== 'string') {
      this._emit('error', { code: 'bad_frame', message: 'binary frame from server' })
      return
    }
    let msg
    try {
      msg = JSON.parse(data)
    } catch (e) {
      this._emit('error', { code: 'bad_json', message: 'server sent invalid JSON' })
      return
    }
    if (!msg || typeof msg.type !== 'string') return
    const handler = this['_on_' + msg.type]
    if (handler) handler.call(this, msg)
  }

  _on_welcome(msg) {
    this._clearTimer('connect')
    this.welcome = msg
    this.user = msg.user
    if (typeof msg.resume === 'string' && msg.resume) this.resumeSecret = msg.resume
    this.outbox.forEach((e) => {
      e.from = msg.user
    })
    this._open = true
    this._everWelcomed = true
    this._attempt = 0
    if (this.store.me !== msg.user) {
      // another user's cached conversations (a different login): start afresh
      if (this.store.me !== null) {
        this.store.reset()
        this.cursor = null
        this._reads.clear()
      }
      this.store.me = msg.user
    }
    this._setState('open', { user: msg.user, session: msg.session })
    this._emit('welcome', msg)
    this.rooms.forEach((r, room) => this._sendJoin(room))
    if (msg.authenticated) {
      // a messenger user: one sync brings every conversation up to date
      this.sync().catch(() => {})
      this._reads.forEach((r, key) => this._sendRead(key))
    } else {
      this.dms.forEach((t, peer) => {
        if (t.last !== null) this._catchUpDm(peer, t.last)
      })
    }
    this._save()
    this._flush()
  }

  _catchUpDm(peer, since) {
    this._request('dm_history', peer, { type: 'dm_history', with: peer, since, limit: 200 }).then(
      (page) => (page.messages || []).forEach((m) => this._on_dm(Object.assign({ type: 'dm' }, m))),
      () => {}
    )
  }

  _on_joined(msg) {
    const r = this.rooms.get(msg.room)
    if (!r) return
    const resumed = msg.since !== undefined && msg.since !== null
    if (resumed && typeof msg.seq === 'number' && msg.seq < msg.since) {
      // the room's history went backwards (a server without a durable store
      // restarted): the old seqs mean nothing now, start from its view
      r.seq = new SeqTracker(this.seenWindow)
    }
    if (!resumed || r.seq.last === null) r.seq.startAt(msg.seq)
    r.joined = true
    this._saveSoon()
    if (r.joinRef) this._byRef.delete(r.joinRef)
    r.joinRef = null
    r.members = (msg.members || []).slice().sort()
    if (this._authenticated() && !this.store.has('r:' + msg.room)) {
      // my own first join: the room and its `joined` event come with a sync
      this.store.conv('r:' + msg.room, true)
      this._syncSoon()
    }
    this._emit('joined', {
      room: msg.room,
      members: r.members.slice(),
      seq: msg.seq,
      since: msg.since,
      truncated: !!msg.truncated
    })
    r.waiters.splice(0).forEach((w) => w.resolve(msg))
    this._flush()
  }

  _on_left(msg) {
    // a token user's membership ended on another device (or by kick/ban): forget it
    if (this.welcome && this.welcome.authenticated && msg.room) this._removed('r:' + msg.room, 'left')
  }

  /** Is `room` one this client receives (joined, subscribed or a known conversation)? */
  _receives(room) {
    return this.rooms.has(room) || this._subs.has(room) || this.store.has('r:' + room)
  }

  _on_message(msg) {
    if (!this._receives(msg.room)) return
    if (this._item('r:' + msg.room, msg)) this._saveSoon()
  }

  _on_dm(msg) {
    const peer = msg.from === this.user ? msg.to : msg.from
    if (this._item('d:' + peer, msg)) this._saveSoon()
  }

  _on_event(msg) {
    if (this._receives(msg.room)) this._item('r:' + msg.room, msg)
  }

  _on_recalled(msg) {
    this._onChange(msg)
  }

  _on_edited(msg) {
    this._onChange(msg)
  }

  _on_reaction(msg) {
    this._onChange(msg)
  }

  _onChange(msg) {
    if (msg.room !== undefined && !this._receives(msg.room)) return
    this._item(frameKey(msg, this.user), msg)
  }

  _on_subscribed(msg) {
    ;(msg.rooms || []).forEach((room) => {
      this._subs.add(room)
      // a room that is new here (invited, created on another device): its title and
      // items come with a sync (the one after welcome covers the rooms of `welcome`)
      if (!this.store.has('r:' + room) && this.synced) this._syncSoon()
      this.store.conv('r:' + room, true)
    })
    this._emitList()
    this._flush()
  }

  _on_read(msg) {
    const key = frameKey(msg, this.user)
    const r = this._reads.get(key)
    if (r && typeof msg.seq === 'number' && msg.seq >= r.seq) {
      if (r.timer !== null) this.clearTimeout(r.timer)
      this._reads.delete(key)
    }
    if (this.store.read(key, msg.seq, msg.unread, msg.mentions)) this._changed(key, true)
    this._emit('read', Object.assign({ key }, msg))
  }

  _on_receipt(msg) {
    const key = frameKey(msg, this.user)
    if (this.store.receipt(key, msg.user, msg.seq)) this._changed(key, true)
    this._emit('receipt', Object.assign({ key }, msg))
  }

  /**
   * A room's receipts of one `--receipt-window` (`receipts_batch`, asked for with
   * `batchReceipts`): applied exactly as that many `receipt` frames, in order (one
   * `receipt` event each), with one `conversation`/`timeline` change at the end.
   */
  _on_receipts_batch(msg) {
    if (!Array.isArray(msg.receipts)) return
    const key = frameKey(msg, this.user)
    const valid = msg.receipts.filter((r) => r && typeof r.user === 'string' && typeof r.seq === 'number')
    let changed = false
    valid.forEach((r) => {
      if (this.store.receipt(key, r.user, r.seq)) changed = true
    })
    if (changed) this._changed(key, true)
    valid.forEach((r) => this._emit('receipt', { key, type: 'receipt', room: msg.room, user: r.user, seq: r.seq }))
  }

  _on_muted(msg) {
    const key = frameKey(msg, this.user)
    const c = this.store.conv(key, false)
    if (c) {
      c.muted = !!msg.muted
      this._changed(key, false)
    }
  }

  _on_room_info(msg) {
    this._answer('room_info', msg.room, msg)
  }

  _on_members(msg) {
    this._answer('members', msg.room, msg)
  }

  _on_receipts(msg) {
    this._answer('receipts', convKey(msg), msg)
  }

  _on_sync(msg) {
    this._answer('sync', '', msg)
  }

  _on_conversations(msg) {
    ;(msg.conversations || []).forEach((s) => this._changed(this.store.summary(s).key, false))
    this._answer('conversations', '', msg)
  }

  /** One page of the server's conversation list: `{conversations, cursor}` (also merged into the store). */
  listConversations(opts) {
    return this._request('conversations', '', Object.assign({ type: 'conversations' }, opts || {}))
  }

  _on_presence(msg) {
    const r = this.rooms.get(msg.room)
    if (!r) return
    const set = new Set(r.members)
    if (msg.event === 'join') set.add(msg.user)
    else if (msg.event === 'leave') set.delete(msg.user)
    r.members = Array.from(set).sort()
    this._emit('presence', { room: msg.room, user: msg.user, event: msg.event, members: r.members.slice() })
  }

  _on_typing(msg) {
    if (msg.from === this.user) return
    this._emit('typing', { room: msg.room, from: msg.from })
  }

  _on_ack(msg) {
    const entry = this.outbox.find((e) => e.id === msg.id)
    if (!entry) {
      const w = msg.id ? this._byRef.get(msg.id) : null
      if (w && w.command) {
        // a command's answer (invite, kick, set_role, …): its timeline event reaches
        // this user's other connections live, this one through a sync
        this._byRef.delete(msg.id)
        this._syncSoon()
        w.resolve(msg)
      }
      return // else a duplicate ack for an entry already settled
    }
    const key = entryKey(entry)
    if (this._tracker(key).add(msg.seq)) {
      // my own item, as chatd stored it (my other devices get it live)
      const me = this.user
      if (entry.kind === 'op') {
        const item = { seq: msg.seq, target: entry.seq, ts: msg.ts }
        if (entry.op === 'recall') Object.assign(item, { type: 'recalled', by: me })
        else if (entry.op === 'edit') Object.assign(item, { type: 'edited', text: entry.text, edited_ts: msg.ts })
        else Object.assign(item, { type: 'reaction', emoji: entry.emoji, user: me, on: !this.store.reacted(key, entry.seq, entry.emoji) })
        this.store.apply(key, item)
      } else {
        const m = { type: entry.kind === 'room' ? 'message' : 'dm', seq: msg.seq, from: me, name: (this.welcome && this.welcome.name) || me, text: entry.text, ts: msg.ts, id: entry.id }
        if (entry.mentions) m.mentions = entry.mentions
        if (entry.reply_to !== undefined) m.reply_to = entry.reply_to
        if (entry.attachments) m.attachments = entry.attachments
        this.store.apply(key, m)
      }
    }
    this._settle(msg.id, msg)
    this._changed(key, true)
  }

  /** Marks outbox entry `id` as sent with the server's seq/ts; false if unknown. */
  _settle(id, info) {
    const i = this.outbox.findIndex((e) => e.id === id)
    if (i < 0) return false
    const entry = this.outbox[i]
    this.outbox.splice(i, 1)
    entry.status = 'sent'
    if (entry.kind === 'op') entry.at = info.seq
    else entry.seq = info.seq
    entry.ts = info.ts
    entry.from = this.user
    delete entry._gen
    this._unkeep(entry)
    this._save()
    if (this._limited) {
      // accepted: shrink the next delay; full speed again once the outbox is empty
      this._rateAttempt = Math.max(0, this._rateAttempt - 1)
      if (!this.outbox.length) {
        this._limited = false
        this._rateAttempt = 0
      }
    }
    this._emit('ack', Object.assign({}, entry))
    this._flush()
    return true
  }

  /** Drops outbox `entry` as refused with `code` and emits `failed`. */
  _fail(entry, code) {
    if (this._uploadRun && this._uploadRun.entry === entry) this._stopUpload(false)
    this._unwait(entry)
    if (entry.upload) entry.upload.state = 'failed'
    this.outbox = this.outbox.filter((e) => e !== entry)
    entry.status = 'failed'
    entry.error = code
    delete entry._gen
    // a failed message stays in its timeline (with a retry button) until retried
    if (entry.kind !== 'op') this.failed.push(entry)
    this._save()
    this._emit('failed', Object.assign({}, entry))
    this._changed(entryKey(entry), true)
  }

  _on_history(msg) {
    this._answer('history', msg.room, msg)
  }

  _on_dm_history(msg) {
    this._answer('dm_history', msg.with, msg)
  }

  _answer(kind, key, msg) {
    const q = this._fifo[kind].get(key)
    if (!q || !q.length) return
    const w = q.shift()
    this._byRef.delete(w.id)
    w.resolve(msg)
  }

  _on_pong() {}

  _on_error(msg) {
    const ref = msg.ref
    const entry = ref ? this.outbox.find((e) => e.id === ref) : null
    if (entry) {
      if (msg.code === 'rate_limited') {
        // dropped, not executed: resend the same id after a growing delay,
        // one frame in flight at a time until the server accepts again
        // (refusals arriving while already holding belong to the same burst
        // and do not lengthen the wait)
        entry._gen = null
        this._limited = true
        if (this.now() >= this._holdUntil) this._holdUntil = this.now() + this._rateDelay()
        this._setTimer('retry', Math.max(0, this._holdUntil - this.now()), () => this._flush())
      } else if (msg.code === 'unavailable' || msg.code === 'not_in_room') {
        // not stored: send again later with the same id
        entry._gen = null
        if (msg.code === 'not_in_room' && entry.kind === 'room') this.join(entry.room).catch(() => {})
        this._setTimer('retry', this.retryDelay, () => this._flush())
      } else {
        if (msg.code === 'muted' && typeof msg.muted_until === 'number') entry.muted_until = msg.muted_until
        this._fail(entry, msg.code)
      }
    } else if (ref && this._byRef.has(ref)) {
      const w = this._byRef.get(ref)
      this._byRef.delete(ref)
      const err = new Error(msg.message || msg.code)
      err.code = msg.code
      w.reject(err)
    }
    this._emit('error', { code: msg.code, message: msg.message, ref: ref || null })
  }
}

return {
  ChatClient,
  PROTOCOL,
  DEFAULTS,
  wxAdapter,
  browserAdapter,
  backoffDelay,
  makeId,
  textLength,
  buildUrl,
  isUnauthorized,
  uploadVerdict,
  isValidRoom,
  isValidName,
  SeqTracker,
  ConversationStore,
  convKey,
  convTarget,
  entryKey
}
})
