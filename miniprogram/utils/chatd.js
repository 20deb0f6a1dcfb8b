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
 *    cannot send headers: use `tokenIn: 'query'` there).
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
 *    `forbidden` / `too_many_rooms` reject `join()` and fail the room's
 *    queued messages;
 *  - emits typed events: `status`, `welcome`, `joined`, `message`, `dm`,
 *    `presence`, `typing`, `ack`, `failed`, `error`, `auth`.
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
  saveDelay: 300
}

/** Storage format version of the persisted session. */
const STORE_VERSION = 1

/** Close codes after which reconnecting cannot help. */
const FATAL_CLOSE = { 4400: 'bad_name' }

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
    clearTimeout: (t) => clearTimeout(t)
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
    clearTimeout: (t) => w.clearTimeout(t)
  }
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
   */
  constructor(opts) {
    const o = opts || {}
    if (!o.url) throw new Error('ChatClient: url is required')
    this.url = o.url
    this.name = o.name || null
    this.token = o.token || null
    this.tokenExpiresAt = o.tokenExpiresAt || null
    this.tokenIn = o.tokenIn === 'query' ? 'query' : 'header'
    this.tokenSlack = o.tokenSlack !== undefined ? o.tokenSlack : DEFAULTS.tokenSlack
    this.storageKey = o.storageKey || null
    this.saveDelay = o.saveDelay !== undefined ? o.saveDelay : DEFAULTS.saveDelay
    this.resumeSecret = null // welcome.resume of an anonymous session
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
    this._fifo = { history: new Map(), dm_history: new Map() }
    this._limited = false // a frame was refused with rate_limited: pace the outbox
    this._rateAttempt = 0
    this._holdUntil = 0 // no outbox frame before this time (ms)
    this._holdReconnect = 0 // no reconnect before this time (ms), see drop()
    this._saveTimer = null
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
      if (!e || typeof e.id !== 'string' || typeof e.text !== 'string') return
      if (e.kind !== 'room' && e.kind !== 'dm') return
      const entry = { id: e.id, text: e.text, status: 'pending', ts: e.ts, from: null, kind: e.kind }
      if (e.kind === 'room') entry.room = e.room
      else entry.to = e.to
      entry._gen = null
      this.outbox.push(entry)
    })
  }

  /** Writes the session to storage now (outbox changes must survive a kill). */
  _save() {
    if (!this.storageKey) return
    if (this._saveTimer !== null) {
      this.clearTimeout(this._saveTimer)
      this._saveTimer = null
    }
    const rooms = {}
    this.rooms.forEach((r, room) => {
      rooms[room] = r.seq.last
    })
    const dms = {}
    this.dms.forEach((t, peer) => {
      if (t.last !== null) dms[peer] = t.last
    })
    const outbox = this.outbox.map((e) => {
      const o = { id: e.id, kind: e.kind, text: e.text, ts: e.ts }
      if (e.kind === 'room') o.room = e.room
      else o.to = e.to
      return o
    })
    const data = { v: STORE_VERSION, name: this.name || null, resume: this.resumeSecret, rooms, dms, outbox }
    try {
      this.io.save(this.storageKey, data)
    } catch (e) {
      // storage full or unavailable: the session just is not persisted
    }
  }

  /** Writes the session soon (seq advances: many per second while chatting). */
  _saveSoon() {
    if (!this.storageKey || this._saveTimer !== null) return
    this._saveTimer = this.setTimeout(() => {
      this._saveTimer = null
      this._save()
    }, this.saveDelay)
  }

  /** Deletes the persisted session (logout). */
  forget() {
    if (this._saveTimer !== null) {
      this.clearTimeout(this._saveTimer)
      this._saveTimer = null
    }
    if (!this.storageKey) return
    try {
      this.io.remove(this.storageKey)
    } catch (e) {
      // nothing stored
    }
  }

  _room(room) {
    let r = this.rooms.get(room)
    if (!r) {
      r = { seq: new SeqTracker(this.seenWindow), joined: false, members: [], waiters: [] }
      this.rooms.set(room, r)
    }
    return r
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
    if (this._task) return
    this._attempt = 0
    this._dial()
  }

  /** Closes for good (logout): no reconnect, the outbox is kept. */
  close() {
    this._wanted = false
    this._paused = false
    this._abandon(1000, 'client closed')
    this._save()
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
    ;['history', 'dm_history'].forEach((t) => this._fifo[t].clear())
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

  /** Leaves `room` and forgets it. */
  leave(room) {
    const r = this.rooms.get(room)
    if (!r) return
    this.rooms.delete(room)
    r.waiters.splice(0).forEach((w) => w.reject(new Error('left')))
    if (this._open && r.joined) this._raw({ type: 'leave', room })
    this.outbox = this.outbox.filter((e) => !(e.kind === 'room' && e.room === room))
    this._save()
  }

  /** Members of a joined room (sorted user ids). */
  members(room) {
    const r = this.rooms.get(room)
    return r ? r.members.slice() : []
  }

  /** Queues a room message; returns its outbox entry (status `pending`). */
  send(room, text) {
    return this._enqueue({ kind: 'room', room }, text)
  }

  /** Queues a direct message to user `to`; returns its outbox entry. */
  dm(to, text) {
    if (!this.dms.has(to)) this.dms.set(to, new SeqTracker(this.seenWindow))
    return this._enqueue({ kind: 'dm', to }, text)
  }

  /** Queues a `failed` entry again with the same id (a retry the server dedupes). */
  retry(entry) {
    if (!entry || entry.status !== 'failed' || this.outbox.indexOf(entry) >= 0) return entry
    entry.status = 'pending'
    delete entry.error
    entry._gen = null
    this.outbox.push(entry)
    this._save()
    this._flush()
    return entry
  }

  _enqueue(target, text) {
    if (typeof text !== 'string' || !text.length) throw new Error('empty text')
    const max = (this.welcome && this.welcome.max_text_length) || 4000
    if (textLength(text) > max) throw new Error('too_large')
    const entry = Object.assign({ id: makeId(this.random, this.idPrefix), text, status: 'pending', ts: this.now(), from: this.user }, target)
    entry._gen = null
    this.outbox.push(entry)
    this._save()
    this._flush()
    return entry
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
    this.outbox.forEach((e) => {
      if (e._gen === this._gen) return
      if (this._limited && inFlight >= 1) return // one at a time until accepted again
      let frame
      if (e.kind === 'room') {
        const r = this.rooms.get(e.room)
        if (!r || !r.joined) return
        frame = { type: 'send', room: e.room, text: e.text, id: e.id }
      } else {
        frame = { type: 'dm', to: e.to, text: e.text, id: e.id }
      }
      if (this._raw(frame)) {
        e._gen = this._gen
        inFlight++
      }
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
    if (this._open && r && r.joined) this._raw({ type: 'typing', room })
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
      frame.id = this._nextRef('r')
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
    this._setState('open', { user: msg.user, session: msg.session })
    this._emit('welcome', msg)
    this.rooms.forEach((r, room) => this._sendJoin(room))
    this.dms.forEach((t, peer) => {
      if (t.last !== null) this._catchUpDm(peer, t.last)
    })
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

  _on_left() {}

  _on_message(msg) {
    const r = this.rooms.get(msg.room)
    if (!r || !r.seq.add(msg.seq)) return
    this._saveSoon()
    if (msg.from === this.user && msg.id && this._settle(msg.id, msg)) return
    this._emit('message', msg)
  }

  _on_dm(msg) {
    const peer = msg.from === this.user ? msg.to : msg.from
    if (!this.dms.has(peer)) this.dms.set(peer, new SeqTracker(this.seenWindow))
    if (!this.dms.get(peer).add(msg.seq)) return
    this._saveSoon()
    if (msg.from === this.user && msg.id && this._settle(msg.id, msg)) return
    this._emit('dm', Object.assign({ peer }, msg))
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
    if (!entry) return // a duplicate ack for an entry already settled
    if (entry.kind === 'room') {
      const r = this.rooms.get(entry.room)
      if (r) r.seq.add(msg.seq)
    } else {
      const t = this.dms.get(entry.to)
      if (t) t.add(msg.seq)
    }
    this._settle(msg.id, msg)
  }

  /** Marks outbox entry `id` as sent with the server's seq/ts; false if unknown. */
  _settle(id, info) {
    const i = this.outbox.findIndex((e) => e.id === id)
    if (i < 0) return false
    const entry = this.outbox[i]
    this.outbox.splice(i, 1)
    entry.status = 'sent'
    entry.seq = info.seq
    entry.ts = info.ts
    entry.from = this.user
    delete entry._gen
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
    this.outbox = this.outbox.filter((e) => e !== entry)
    entry.status = 'failed'
    entry.error = code
    delete entry._gen
    this._save()
    this._emit('failed', Object.assign({}, entry))
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
  isValidRoom,
  isValidName,
  SeqTracker
}
})
