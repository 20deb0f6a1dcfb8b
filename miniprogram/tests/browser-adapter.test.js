/**
 * @jest-environment node
 *
 * The shared client (utils/chatd.js, served to browsers as
 * /static/chatd-client.js) on its browser adapter, with a fake `window`:
 * a WebSocket class that records what the client does and lets the test play
 * the server, a localStorage that only holds strings, and timers the test
 * fires by hand. The live behaviour in a real browser is covered by
 * tests/e2e/test_browser*.py (Chromium against a real chatd).
 */
'use strict'
const fs = require('fs')
const path = require('path')
const vm = require('vm')
const { ChatClient, browserAdapter } = require('../utils/chatd')

const SOURCE = path.join(__dirname, '..', 'utils', 'chatd.js')

/** A window with a fake WebSocket, a string-only localStorage and manual timers. */
function fakeWindow() {
  const sockets = []
  const timers = new Map()
  let nextTimer = 1
  let clock = 1000000
  class FakeWebSocket {
    constructor(url, protocols) {
      this.url = url
      this.protocols = protocols
      this.readyState = 0
      this.sent = []
      this.closed = null
      sockets.push(this)
    }
    send(text) {
      if (this.readyState !== 1) throw new Error('InvalidStateError')
      this.sent.push(JSON.parse(text))
    }
    close(code, reason) {
      if (code !== 1000 && (code < 3000 || code > 4999)) throw new Error('InvalidAccessError: close code ' + code)
      this.closed = { code, reason }
      this.readyState = 3
    }
    // the server's side
    open() {
      this.readyState = 1
      this.onopen({})
    }
    frame(obj) {
      this.onmessage({ data: JSON.stringify(obj) })
    }
    drop(code, reason) {
      this.readyState = 3
      this.onclose({ code, reason: reason || '' })
    }
  }
  const items = new Map()
  const localStorage = {
    getItem: (k) => (items.has(k) ? items.get(k) : null),
    setItem: (k, v) => {
      if (typeof v !== 'string') throw new Error('localStorage holds strings')
      items.set(k, v)
    },
    removeItem: (k) => items.delete(k)
  }
  return {
    WebSocket: FakeWebSocket,
    localStorage,
    items,
    sockets,
    timers,
    now: () => clock,
    setTimeout(fn, ms) {
      const id = nextTimer++
      timers.set(id, { fn, ms })
      return id
    },
    clearTimeout(id) {
      timers.delete(id)
    },
    /** Advances the clock by `ms` and runs the (first) pending timer set for `ms`. */
    fire(ms) {
      for (const [id, t] of timers) {
        if (t.ms === ms) {
          timers.delete(id)
          clock += ms
          t.fn()
          return t
        }
      }
      throw new Error('no timer for ' + ms)
    }
  }
}

const WELCOME = { type: 'welcome', user: 'alice', name: 'alice', session: 's1', protocol: 'chatd.v1', max_text_length: 10, resume: 'sekrit' }

function welcomed(win, opts) {
  let r = 0
  const random = () => (r = (r + 0.1234567) % 1) // distinct ids, no Math.random
  const client = new ChatClient(
    Object.assign({ url: 'ws://h/ws', name: 'alice', adapter: browserAdapter(win), random, now: win.now }, opts)
  )
  client.connect()
  const ws = win.sockets[win.sockets.length - 1]
  ws.open()
  ws.frame(WELCOME)
  return { client, ws }
}

test('a plain <script> of the very same file defines window.ChatdClient (no module, no build step)', () => {
  const sandbox = { console }
  sandbox.window = sandbox
  sandbox.self = sandbox
  vm.runInNewContext(fs.readFileSync(SOURCE, 'utf8'), sandbox, { filename: 'chatd-client.js' })
  expect(typeof sandbox.ChatdClient.ChatClient).toBe('function')
  expect(typeof sandbox.ChatdClient.browserAdapter).toBe('function')
  expect(typeof sandbox.ChatdClient.wxAdapter).toBe('function')
  expect(sandbox.module).toBeUndefined()
})

test('connects with new WebSocket(url?name, ["chatd.v1"]), sends JSON text frames, joins after welcome', () => {
  const win = fakeWindow()
  const { client, ws } = welcomed(win)
  expect(ws.url).toBe('ws://h/ws?name=alice&features=receipts_batch')
  expect(ws.protocols).toEqual(['chatd.v1'])
  expect(client.connected).toBe(true)
  const joined = client.join('lobby')
  expect(ws.sent[0]).toMatchObject({ type: 'join', room: 'lobby' })
  ws.frame({ type: 'joined', room: 'lobby', members: ['alice'], seq: 7, truncated: false })
  return joined.then((f) => expect(f.seq).toBe(7))
})

test('the session goes to localStorage as a JSON string and a new client restores outbox, seqs and resume from it', () => {
  const win = fakeWindow()
  const { client, ws } = welcomed(win, { storageKey: 'k', idPrefix: 'c-' })
  client.join('lobby')
  ws.frame({ type: 'joined', room: 'lobby', members: ['alice'], seq: 7, truncated: false })
  const entry = client.send('lobby', 'hi')
  expect(entry.id.startsWith('c-')).toBe(true)
  const saved = JSON.parse(win.items.get('k'))
  expect(saved).toMatchObject({ name: 'alice', resume: 'sekrit', rooms: { lobby: 7 } })
  expect(saved.outbox.map((e) => e.id)).toEqual([entry.id])

  client.close()
  const again = new ChatClient({ url: 'ws://h/ws', name: 'alice', adapter: browserAdapter(win), storageKey: 'k' })
  expect(again.outbox.map((e) => [e.id, e.text, e.status])).toEqual([[entry.id, 'hi', 'pending']])
  again.connect()
  const ws2 = win.sockets[win.sockets.length - 1]
  expect(ws2.url).toBe('ws://h/ws?name=alice&resume=sekrit&features=receipts_batch')
  ws2.open()
  ws2.frame(WELCOME)
  expect(ws2.sent[0]).toMatchObject({ type: 'join', room: 'lobby', since: 7 })
  ws2.frame({ type: 'joined', room: 'lobby', members: ['alice'], seq: 7, since: 7, truncated: false })
  expect(ws2.sent[1]).toEqual({ type: 'send', room: 'lobby', text: 'hi', id: entry.id })
  again.forget()
  expect(win.items.has('k')).toBe(false)
})

test('{storage} puts the session in another Storage (the web client uses sessionStorage: one per tab)', () => {
  const win = fakeWindow()
  const session = new Map()
  const sessionStorage = {
    getItem: (k) => (session.has(k) ? session.get(k) : null),
    setItem: (k, v) => session.set(k, v),
    removeItem: (k) => session.delete(k)
  }
  const client = new ChatClient({ url: 'ws://h/ws', name: 'alice', adapter: browserAdapter(win, { storage: sessionStorage }), storageKey: 'k' })
  client.connect()
  win.sockets[0].open()
  win.sockets[0].frame(WELCOME)
  expect(JSON.parse(session.get('k')).resume).toBe('sekrit')
  expect(win.items.size).toBe(0)
  client.close()
})

test('storage that throws (disabled) leaves the client working without persistence', () => {
  const win = fakeWindow()
  Object.defineProperty(win, 'localStorage', {
    get() {
      throw new Error('SecurityError')
    }
  })
  const { client, ws } = welcomed(win, { storageKey: 'k' })
  client.join('lobby')
  expect(ws.sent[0]).toMatchObject({ type: 'join', room: 'lobby' })
  expect(client.send('lobby', 'hi').status).toBe('pending')
  client.close()
})

test('a lost socket reconnects on the window timer with the resume secret; drop(hold) waits at least hold', () => {
  const win = fakeWindow()
  const { client, ws } = welcomed(win, { backoff: { initial: 500, jitter: 0 } })
  const statuses = []
  client.on('status', (s) => statuses.push(s))
  ws.drop(1006)
  expect(statuses[0]).toMatchObject({ state: 'reconnecting', delay: 500, code: 1006 })
  win.fire(500)
  const ws2 = win.sockets[1]
  expect(ws2.url).toBe('ws://h/ws?name=alice&resume=sekrit&features=receipts_batch')
  ws2.open()
  ws2.frame(WELCOME)
  expect(client.connected).toBe(true)

  client.drop(2500)
  expect(ws2.closed).toEqual({ code: 4000, reason: 'dropped by client' })
  expect(statuses[statuses.length - 1]).toMatchObject({ state: 'reconnecting', code: 4000 })
  expect(statuses[statuses.length - 1].delay).toBe(2500)
  expect(win.sockets.length).toBe(2)
})

test('rate_limited: the refused frame waits on a window timer and is resent with the same id, one at a time', () => {
  const win = fakeWindow()
  const { client, ws } = welcomed(win, { rateBackoff: { initial: 300, jitter: 0 } })
  client.join('lobby')
  ws.frame({ type: 'joined', room: 'lobby', members: ['alice'], seq: 0, truncated: false })
  const a = client.send('lobby', 'one')
  const b = client.send('lobby', 'two')
  expect(ws.sent.filter((f) => f.type === 'send').map((f) => f.id)).toEqual([a.id, b.id])
  ws.frame({ type: 'error', code: 'rate_limited', ref: a.id, message: 'slow down' })
  ws.frame({ type: 'error', code: 'rate_limited', ref: b.id, message: 'slow down' })
  ws.sent.length = 0
  win.fire(300)
  expect(ws.sent).toEqual([{ type: 'send', room: 'lobby', text: 'one', id: a.id }])
  ws.frame({ type: 'ack', id: a.id, seq: 1, ts: 1 })
  expect(ws.sent[1]).toEqual({ type: 'send', room: 'lobby', text: 'two', id: b.id })
  ws.frame({ type: 'ack', id: b.id, seq: 2, ts: 2 })
  expect(client.outbox).toEqual([])
})

test('a failed entry can be retried with its id; texts are measured in code points', () => {
  const win = fakeWindow()
  const { client, ws } = welcomed(win)
  const failed = []
  client.on('failed', (e) => failed.push(e))
  const e = client.dm('bob', 'psst')
  ws.frame({ type: 'error', code: 'no_such_user', ref: e.id, message: 'offline' })
  expect(failed[0]).toMatchObject({ id: e.id, status: 'failed', error: 'no_such_user' })
  ws.sent.length = 0
  client.retry(e)
  expect(e.status).toBe('pending')
  expect(ws.sent).toEqual([{ type: 'dm', to: 'bob', text: 'psst', id: e.id }])
  // max_text_length 10: ten emoji are ten characters (twenty UTF-16 units)
  expect(() => client.dm('bob', '😀'.repeat(10))).not.toThrow()
  expect(() => client.dm('bob', '😀'.repeat(11))).toThrow('too_large')
})

test('a token cannot go in a browser WebSocket header: the connection fails instead of going out without it', () => {
  const win = fakeWindow()
  const client = new ChatClient({ url: 'ws://h/ws', token: 't', adapter: browserAdapter(win), backoff: { jitter: 0 } })
  const statuses = []
  client.on('status', (s) => statuses.push(s))
  client.connect()
  expect(win.sockets.length).toBe(0)
  expect(statuses[1]).toMatchObject({ state: 'reconnecting', code: 1006 })
  expect(statuses[1].reason).toMatch(/cannot send headers/)
  client.close()
  const q = new ChatClient({ url: 'ws://h/ws', token: 't', tokenIn: 'query', adapter: browserAdapter(win) })
  q.connect()
  expect(win.sockets[0].url).toBe('ws://h/ws?token=t&features=receipts_batch')
  q.close()
})

test('upload() posts FormData with the file to /api/media with the token; an error answer rejects with its code', async () => {
  const win = fakeWindow()
  const calls = []
  win.FormData = FormData
  const answers = [
    { status: 201, body: JSON.stringify({ media_id: 'm1', kind: 'image', url: '/media/m1?e=1&s=x' }) },
    { status: 413, body: JSON.stringify({ error: 'too_large', message: 'over --max-image-bytes' }) }
  ]
  win.fetch = (url, init) => {
    calls.push({ url, init })
    const a = answers.shift()
    return Promise.resolve({ status: a.status, text: () => Promise.resolve(a.body) })
  }
  const client = new ChatClient({ url: 'wss://chat.example.com/ws', token: 't0k', tokenIn: 'query', adapter: browserAdapter(win) })
  const file = new Blob(['png bytes'], { type: 'image/png' })
  const up = await client.upload(file, { name: 'a.png' })
  expect(up.media_id).toBe('m1')
  expect(calls[0].url).toBe('https://chat.example.com/api/media')
  expect(calls[0].init.method).toBe('POST')
  expect(calls[0].init.headers.Authorization).toBe('Bearer t0k')
  expect(calls[0].init.body.get('file').name).toBe('a.png')
  expect(client.mediaUrl(up.url)).toBe('https://chat.example.com/media/m1?e=1&s=x')
  await expect(client.upload(file)).rejects.toMatchObject({ code: 'too_large', status: 413 })
})

test('with XMLHttpRequest, upload() reports upload.onprogress as percent, sends the name as filename and form field, and can be aborted', async () => {
  const win = fakeWindow()
  win.FormData = FormData
  const xhrs = []
  win.XMLHttpRequest = class {
    constructor() {
      this.upload = {}
      this.headers = {}
      xhrs.push(this)
    }
    open(method, url) {
      Object.assign(this, { method, url })
    }
    setRequestHeader(k, v) {
      this.headers[k] = v
    }
    send(body) {
      this.body = body
    }
    abort() {
      this.onabort()
    }
  }
  const client = new ChatClient({ url: 'ws://h:1/ws', token: 't0k', tokenIn: 'query', adapter: browserAdapter(win) })
  const progress = []
  const file = new Blob(['x'.repeat(1000)])
  const done = client.upload(file, { name: 'notes.txt', onProgress: (p) => progress.push(p) })
  const x = xhrs[0]
  expect([x.method, x.url, x.headers]).toEqual(['POST', 'http://h:1/api/media', { Authorization: 'Bearer t0k' }])
  expect(x.body.get('file').name).toBe('notes.txt')
  expect(x.body.get('name')).toBe('notes.txt')
  x.upload.onprogress({ lengthComputable: true, loaded: 250, total: 1000 })
  x.upload.onprogress({ lengthComputable: false, loaded: 500, total: 0 })
  x.upload.onprogress({ lengthComputable: true, loaded: 1000, total: 1000 })
  Object.assign(x, { status: 201, responseText: JSON.stringify({ media_id: 'm2', kind: 'file', name: 'notes.txt' }) })
  x.onload()
  await expect(done).resolves.toMatchObject({ media_id: 'm2' })
  expect(progress).toEqual([25, 100])
  let task = null
  const aborted = client.upload(file, { onTask: (t) => (task = t) })
  task.abort()
  await expect(aborted).rejects.toMatchObject({ code: 'network' })
})
