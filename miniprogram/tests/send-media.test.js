/**
 * @jest-environment node
 *
 * The SDK's sendMedia outbox (utils/chatd.js) as a state machine, on a
 * recording adapter with manual timers: the file is kept first (wx saveFile),
 * uploaded one at a time with progress, retried with backoff on no answer /
 * 5xx / `unavailable` and failed on a refusal with chatd's code, then sent as
 * `attachments: [{media_id}]` with the entry's id; the entry (with its kept
 * file) is in storage, so another client on the same storage (a restart)
 * uploads it again and sends it with the same id. media.live.test.js runs the
 * same path against a real chatd.
 */
'use strict'
const { ChatClient, uploadVerdict } = require('../utils/chatd')

/** An adapter that records frames, uploads, kept files and timers; `storage` may be shared (a restart). */
function fakeIo(storage) {
  const io = { frames: [], uploads: [], kept: [], unkept: [], timers: [], storage: storage || new Map() }
  io.connect = (req, on) => {
    io.on = on
    return {
      send: (text) => io.frames.push(JSON.parse(text)) > 0,
      close: () => {}
    }
  }
  io.load = (k) => (io.storage.has(k) ? io.storage.get(k) : '')
  io.save = (k, v) => io.storage.set(k, JSON.parse(JSON.stringify(v)))
  io.remove = (k) => io.storage.delete(k)
  io.setTimeout = (fn, ms) => {
    const t = { fn, ms }
    io.timers.push(t)
    return t
  }
  io.clearTimeout = (t) => {
    io.timers = io.timers.filter((x) => x !== t)
  }
  io.upload = (req, done) => {
    const u = { req, done, aborted: false }
    io.uploads.push(u)
    return {
      abort: () => {
        u.aborted = true
        done(new Error('aborted'))
      }
    }
  }
  io.keep = (file, done) => {
    io.kept.push(file)
    done('saved:' + file)
  }
  io.unkeep = (file) => io.unkept.push(file)
  /** Runs the timer of `ms` milliseconds (the newest such). */
  io.fire = (ms) => {
    const t = io.timers.filter((x) => x.ms === ms).pop()
    if (!t) throw new Error('no timer of ' + ms + ' ms; have ' + io.timers.map((x) => x.ms).join(','))
    io.clearTimeout(t)
    t.fn()
  }
  io.dms = () => io.frames.filter((f) => f.type === 'dm')
  return io
}

/** Lets the SDK's promise callbacks run. */
const tick = () => new Promise((resolve) => setImmediate(resolve))
const answer = (status, body) => ({ status, body: JSON.stringify(body) })
const ok = { media_id: 'med1', kind: 'image', mime: 'image/png', size: 2048, width: 64, height: 48, url: '/media/med1?e=1&s=a' }

function start(io, opts) {
  const client = new ChatClient(Object.assign({ url: 'ws://h/ws', token: 'tok', storageKey: 'chatd', adapter: io, random: () => 0, uploadBackoff: { initial: 1000, factor: 2, max: 8000, jitter: 0 } }, opts))
  const events = []
  client.on('upload', (e) => events.push(e))
  client.connect()
  io.on.open()
  io.on.message(JSON.stringify({ type: 'welcome', user: 'alice', session: 's1', authenticated: true }))
  return { client, events }
}

test('uploadVerdict: no answer, 5xx and unavailable are retried; refusals with a code fail', async () => {
  expect(['network', 'unavailable'].map((code) => uploadVerdict({ code }))).toEqual(['retry', 'retry'])
  expect(uploadVerdict({ code: 'http_502', status: 502 })).toBe('retry')
  expect(uploadVerdict({ code: 'internal', status: 500 })).toBe('retry')
  expect(uploadVerdict(null)).toBe('retry')
  expect(['too_large', 'bad_image', 'quota_exceeded', 'unauthorized', 'bad_request'].map((code) => uploadVerdict({ code, status: 413 }))).toEqual(['fail', 'fail', 'fail', 'fail', 'fail'])
})

test('sendMedia keeps the file, uploads it with progress and its name, then sends the DM with attachments [{media_id}] once; the ack removes the kept file', async () => {
  const io = fakeIo()
  const { client, events } = start(io)
  const entry = client.sendMedia('d:bob', { filePath: 'tmp/photo.png', kind: 'image', name: 'photo.png', size: 2048, width: 64, height: 48 })
  expect(entry).toMatchObject({ kind: 'dm', to: 'bob', text: '', status: 'pending' })
  expect(io.kept).toEqual(['tmp/photo.png'])
  expect(io.uploads.length).toBe(1)
  const up = io.uploads[0].req
  expect(up).toMatchObject({ url: 'http://h/api/media', file: 'saved:tmp/photo.png', name: 'photo.png', form: { name: 'photo.png' }, header: { Authorization: 'Bearer tok' } })
  // persisted at once, with the kept path
  expect(io.storage.get('chatd').outbox).toEqual([expect.objectContaining({ id: entry.id, kind: 'dm', to: 'bob', text: '', upload: expect.objectContaining({ file: 'saved:tmp/photo.png', kind: 'image', name: 'photo.png', kept: true }) })])
  // the pending bubble: the local file and the progress
  up.onProgress(40)
  let row = client.timeline('d:bob').find((r) => r.id === entry.id)
  expect(row).toMatchObject({ mine: true, status: 'pending', upload: { state: 'uploading', progress: 40 }, attachments: [{ media_id: entry.id, kind: 'image', local: 'saved:tmp/photo.png', width: 64, height: 48 }] })
  expect(events.map((e) => [e.state, e.progress])).toEqual([
    ['uploading', 0],
    ['uploading', 40]
  ])
  expect(io.dms()).toEqual([]) // nothing is sent before the file is uploaded
  io.uploads[0].done(null, answer(201, ok))
  await tick()
  expect(io.dms()).toEqual([{ type: 'dm', to: 'bob', text: '', id: entry.id, attachments: [{ media_id: 'med1' }] }])
  expect(events[events.length - 1]).toMatchObject({ id: entry.id, state: 'done', progress: 100 })
  row = client.timeline('d:bob').find((r) => r.id === entry.id)
  expect(row.upload).toBeUndefined()
  expect(row.attachments[0]).toMatchObject({ media_id: 'med1', name: 'photo.png', url: '/media/med1?e=1&s=a' })
  expect(io.unkept).toEqual([])
  io.on.message(JSON.stringify({ type: 'ack', id: entry.id, seq: 7, ts: 1000 }))
  expect(io.unkept).toEqual(['saved:tmp/photo.png'])
  expect(client.outbox).toEqual([])
  expect(io.storage.get('chatd').outbox).toEqual([])
  expect(client.timeline('d:bob').filter((r) => r.attachments)).toEqual([expect.objectContaining({ seq: 7, status: 'sent' })])
  client.close()
})

test('no answer, a 503 unavailable and a 500 are retried after a growing delay; a refusal fails the entry with its code, retry() uploads again, discard() deletes it', async () => {
  const io = fakeIo()
  const { client, events } = start(io)
  const entry = client.sendMedia({ room: 'team' }, { file: 'tmp/a.mp3', kind: 'voice', duration_ms: 3000 })
  expect(entry).toMatchObject({ kind: 'room', room: 'team' })
  io.uploads[0].done(new Error('uploadFile:fail timeout'))
  await tick()
  expect(events[events.length - 1]).toMatchObject({ state: 'waiting', error: 'network' })
  expect(client.timeline('r:team')[0]).toMatchObject({ status: 'pending', upload: { state: 'waiting', error: 'network' } })
  io.fire(1000)
  expect(io.uploads.length).toBe(2)
  io.uploads[1].done(null, answer(503, { error: 'unavailable', message: 'storage down' }))
  await tick()
  io.fire(2000)
  io.uploads[2].done(null, { status: 500, body: 'oops' })
  await tick()
  io.fire(4000)
  expect(io.uploads.length).toBe(4)
  const failed = []
  client.on('failed', (e) => failed.push(e))
  io.uploads[3].done(null, answer(413, { error: 'too_large', message: 'over --max-voice-bytes' }))
  await tick()
  expect(failed).toEqual([expect.objectContaining({ id: entry.id, error: 'too_large' })])
  expect(client.outbox).toEqual([])
  expect(client.timeline('r:team')[0]).toMatchObject({ id: entry.id, status: 'failed', error: 'too_large', upload: { state: 'failed', error: 'too_large' } })
  expect(io.timers.some((t) => t.ms === 8000)).toBe(false) // no retry of a refusal (the next delay would be 8 s)

  client.retry(entry)
  expect(io.uploads.length).toBe(5)
  expect(client.timeline('r:team')[0]).toMatchObject({ status: 'pending', upload: { state: 'uploading', progress: 0 } })
  io.uploads[4].done(null, answer(429, { error: 'quota_exceeded' }))
  await tick()
  expect(client.timeline('r:team')[0]).toMatchObject({ status: 'failed', error: 'quota_exceeded' })
  expect(client.discard(entry)).toBe(true)
  expect(client.timeline('r:team')).toEqual([])
  expect(io.unkept).toEqual(['saved:tmp/a.mp3'])
  expect(client.discard(entry)).toBe(false)
  expect(io.frames.filter((f) => f.type === 'send')).toEqual([])
  client.close()
})

test('after uploadTries failed attempts the entry fails with the last error', async () => {
  const io = fakeIo()
  const { client } = start(io, { uploadTries: 2 })
  const entry = client.sendMedia('d:bob', { file: 'tmp/x.bin', name: 'x.bin' })
  io.uploads[0].done(new Error('down'))
  await tick()
  io.fire(1000)
  io.uploads[1].done(new Error('down'))
  await tick()
  expect(client.failed).toEqual([entry])
  expect(entry).toMatchObject({ status: 'failed', error: 'network' })
  client.close()
})

test('uploads go one at a time in order; a discarded upload in progress is aborted and the next starts', async () => {
  const io = fakeIo()
  const { client } = start(io)
  const a = client.sendMedia('d:bob', { file: 'tmp/1.png', kind: 'image' })
  const b = client.sendMedia('d:bob', { file: 'tmp/2.png', kind: 'image' })
  expect(io.uploads.map((u) => u.req.file)).toEqual(['saved:tmp/1.png'])
  expect(client.discard(a)).toBe(true)
  expect(io.uploads[0].aborted).toBe(true)
  expect(io.uploads.map((u) => u.req.file)).toEqual(['saved:tmp/1.png', 'saved:tmp/2.png'])
  io.uploads[1].done(null, answer(201, Object.assign({}, ok, { media_id: 'med2' })))
  await tick()
  expect(io.dms()).toEqual([expect.objectContaining({ id: b.id, attachments: [{ media_id: 'med2' }] })])
  expect(client.timeline('d:bob').map((r) => r.id)).toEqual([b.id])
  client.close()
})

test('a restart (a new client on the same storage) uploads the kept file again and sends the message with the same id; close() aborts and requeues', async () => {
  const storage = new Map()
  const io1 = fakeIo(storage)
  const { client: first } = start(io1)
  const entry = first.sendMedia('d:bob', { filePath: 'tmp/report.pdf', kind: 'file', name: 'report.pdf', size: 34, text: 'the report' })
  io1.uploads[0].req.onProgress(60)
  // killed mid-upload: what storage holds is all that survives
  const saved = JSON.parse(JSON.stringify(storage.get('chatd')))
  first.close()
  expect(io1.uploads[0].aborted).toBe(true)
  expect(first.outbox[0].upload.state).toBe('queued')

  const io2 = fakeIo(new Map([['chatd', saved]]))
  const { client: second, events } = start(io2)
  const row = second.timeline('d:bob').find((r) => r.id === entry.id)
  expect(row).toMatchObject({ text: 'the report', status: 'pending', attachments: [{ kind: 'file', name: 'report.pdf', local: 'saved:tmp/report.pdf' }] })
  expect(io2.kept).toEqual([]) // already kept by the first run
  expect(io2.uploads.map((u) => [u.req.file, u.req.form.name])).toEqual([['saved:tmp/report.pdf', 'report.pdf']])
  expect(events[0]).toMatchObject({ id: entry.id, state: 'uploading' })
  io2.uploads[0].done(null, answer(201, { media_id: 'med9', kind: 'file', size: 34, name: 'report.pdf' }))
  await tick()
  expect(io2.dms()).toEqual([{ type: 'dm', to: 'bob', text: 'the report', id: entry.id, attachments: [{ media_id: 'med9' }] }])
  // killed again after the upload, before the ack: the attachment is stored, the file is not uploaded a third time
  const afterUpload = JSON.parse(JSON.stringify(io2.storage.get('chatd')))
  expect(afterUpload.outbox[0]).toMatchObject({ id: entry.id, attachments: [{ media_id: 'med9' }], kept: 'saved:tmp/report.pdf' })
  expect(afterUpload.outbox[0].upload).toBeUndefined()
  second.close()
  const io3 = fakeIo(new Map([['chatd', afterUpload]]))
  const { client: third } = start(io3)
  expect(io3.uploads).toEqual([])
  expect(io3.dms()).toEqual([{ type: 'dm', to: 'bob', text: 'the report', id: entry.id, attachments: [{ media_id: 'med9' }] }])
  io3.on.message(JSON.stringify({ type: 'ack', id: entry.id, seq: 3, ts: 5 }))
  expect(io3.unkept).toEqual(['saved:tmp/report.pdf'])
  third.close()
})

test('a browser Blob the adapter cannot keep (no IndexedDB) is uploaded with its File name but not persisted (it cannot outlive the page)', async () => {
  const io = fakeIo()
  io.keep = undefined
  const { client } = start(io)
  const file = { name: 'holiday.jpg', size: 10 }
  const entry = client.sendMedia('d:bob', { file, kind: 'image' })
  expect(io.uploads[0].req).toMatchObject({ file, name: 'holiday.jpg', form: { name: 'holiday.jpg' } })
  expect(client.timeline('d:bob')[0].attachments[0]).toMatchObject({ name: 'holiday.jpg', local: '' })
  expect(io.storage.get('chatd').outbox).toEqual([])
  io.uploads[0].done(null, answer(201, ok))
  await tick()
  expect(io.storage.get('chatd').outbox).toEqual([expect.objectContaining({ id: entry.id, attachments: [expect.objectContaining({ media_id: 'med1' })] })])
  expect(() => client.sendMedia('d:bob', {})).toThrow(/no file/)
  client.close()
})

test('a browser Blob the adapter keeps (IndexedDB) is persisted as its reference: a reload uploads the reference again; logout (forget) removes the kept file', async () => {
  const storage = new Map()
  const io = fakeIo(storage)
  io.keep = (file, done) => {
    io.kept.push(file)
    done('idb:' + file.name)
  }
  const first = start(io).client
  const file = { name: 'holiday.jpg', size: 10 }
  const entry = first.sendMedia('d:bob', { file, kind: 'image' })
  expect(io.kept).toEqual([file])
  expect(io.uploads[0].req).toMatchObject({ file: 'idb:holiday.jpg', name: 'holiday.jpg' })
  expect(storage.get('chatd').outbox).toEqual([expect.objectContaining({ id: entry.id, upload: expect.objectContaining({ file: 'idb:holiday.jpg', kept: true }) })])
  // the page reloads mid-upload: a new client on the same storage
  const io2 = fakeIo(storage)
  const again = start(io2).client
  expect(io2.uploads.map((u) => u.req.file)).toEqual(['idb:holiday.jpg'])
  expect(again.outbox.map((e) => e.id)).toEqual([entry.id])
  again.close()
  again.forget()
  expect(io2.unkept).toEqual(['idb:holiday.jpg'])
  expect(storage.has('chatd')).toBe(false)
  first.close()
})

test('a refused upload outlives a restart as "not sent" (storage keeps it with its kept file): Retry uploads it, Delete removes the file', async () => {
  const io1 = fakeIo()
  const { client: first } = start(io1)
  const entry = first.sendMedia('d:bob', { filePath: 'tmp/big.pdf', kind: 'file', name: 'big.pdf' })
  io1.uploads[0].done(null, answer(413, { error: 'too_large' }))
  await tick()
  const saved = JSON.parse(JSON.stringify(io1.storage.get('chatd')))
  expect(saved.outbox).toEqual([])
  expect(saved.failed).toEqual([expect.objectContaining({ id: entry.id, error: 'too_large', upload: expect.objectContaining({ file: 'saved:tmp/big.pdf', kept: true }) })])
  first.close()

  const io2 = fakeIo(new Map([['chatd', saved]]))
  const { client: second } = start(io2)
  expect(io2.uploads).toEqual([]) // not uploaded again by itself
  expect(second.timeline('d:bob')).toEqual([expect.objectContaining({ id: entry.id, status: 'failed', error: 'too_large', upload: { state: 'failed', progress: 0 } })])
  const [again] = second.failed
  second.retry(again)
  expect(io2.uploads.map((u) => u.req.file)).toEqual(['saved:tmp/big.pdf'])
  expect(io2.storage.get('chatd').failed).toEqual([])
  io2.uploads[0].done(null, answer(413, { error: 'too_large' }))
  await tick()
  expect(io2.storage.get('chatd').failed.length).toBe(1)
  second.discard(again)
  expect(io2.unkept).toEqual(['saved:tmp/big.pdf'])
  expect(io2.storage.get('chatd').failed).toEqual([])
  second.close()
})

test('leave(room) drops its sendMedia entries: the upload is aborted, the kept file removed, the next upload starts', () => {
  const io = fakeIo()
  const { client } = start(io)
  client.join('team').catch(() => {}) // rejected by the leave
  client.sendMedia('r:team', { file: 'tmp/t.png', kind: 'image' })
  const other = client.sendMedia('d:bob', { file: 'tmp/b.png', kind: 'image' })
  client.leave('team')
  expect(io.uploads[0].aborted).toBe(true)
  expect(io.unkept).toEqual(['saved:tmp/t.png'])
  expect(client.outbox).toEqual([other])
  expect(io.uploads.map((u) => u.req.file)).toEqual(['saved:tmp/t.png', 'saved:tmp/b.png'])
  client.close()
})

test('a DM only my outbox has (a first sendMedia to carol, its upload waiting) is in the list, across a restart, merged newest first; once chatd has the DM it is listed once', async () => {
  const storage = new Map()
  const io1 = fakeIo(storage)
  let now = 5000
  const { client: first } = start(io1, { now: () => now })
  // what chatd knows: a DM with bob (ts 4000) and one with dave (ts 6000)
  io1.on.message(JSON.stringify({ type: 'conversations', conversations: [
    { with: 'bob', kind: 'dm', seq: 3, ts: 4000, last: { seq: 3, from: 'bob', text: 'hi', ts: 4000 }, unread: 1 },
    { with: 'dave', kind: 'dm', seq: 1, ts: 6000, last: { seq: 1, from: 'dave', text: 'yo', ts: 6000 }, unread: 0 }
  ] }))
  const lists = []
  first.on('conversations', (list) => lists.push(list.map((c) => c.key)))
  const entry = first.sendMedia('d:carol', { filePath: 'tmp/cat.png', kind: 'image', name: 'cat.png', size: 10, text: 'look' })
  await tick()
  expect(lists).toEqual([['d:dave', 'd:carol', 'd:bob']]) // the page hears of it at once
  expect(first.conversations.find((c) => c.key === 'd:carol')).toMatchObject({ with: 'carol', kind: 'dm', local: true, ts: 5000, unread: 0, last: { seq: null, from: 'alice', text: 'look', ts: 5000, media: 'image' } })
  expect(first.conversation('d:carol')).toBe(null) // the store (chatd's conversations) does not have it
  // killed while the upload waits (the cached list written): a new client on what storage holds lists it again
  io1.fire(1000)
  const saved = JSON.parse(JSON.stringify([...storage]))
  first.close()
  const io2 = fakeIo(new Map(saved))
  const { client: second } = start(io2, { now: () => now })
  // before any answer of chatd's (the cached list), and after its sync that does not know carol
  expect(second.conversations.map((c) => c.key)).toEqual(['d:dave', 'd:carol', 'd:bob'])
  io2.on.message(JSON.stringify({ type: 'sync', reset: true, cursor: 'c1', conversations: [] }))
  await tick()
  expect(second.conversations.map((c) => [c.key, !!c.local])).toEqual([['d:carol', true]])
  // a second message to carol before the first went: still one row, its newest entry the preview
  now = 7000
  const text = second.dm('carol', 'and this')
  expect(second.conversations).toEqual([expect.objectContaining({ key: 'd:carol', ts: 7000, last: expect.objectContaining({ text: 'and this' }) })])
  expect(second.conversations[0].last.media).toBeUndefined()
  // the upload, the send, the ack: chatd has the DM now, listed once (the store's summary)
  io2.uploads[0].done(null, answer(201, Object.assign({}, ok, { name: 'cat.png' })))
  await tick()
  expect(io2.dms().map((f) => f.id).sort()).toEqual([entry.id, text.id].sort())
  io2.on.message(JSON.stringify({ type: 'ack', id: text.id, seq: 1, ts: 8000 }))
  expect(second.conversations.map((c) => [c.key, !!c.local])).toEqual([['d:carol', false]])
  io2.on.message(JSON.stringify({ type: 'ack', id: entry.id, seq: 2, ts: 8001 }))
  const rows = second.conversations
  expect(rows.length).toBe(1)
  expect(rows[0]).toMatchObject({ key: 'd:carol', seq: 2, ts: 8001, last: { seq: 2, media: 'image' } })
  expect(rows[0].local).toBeUndefined()
  second.close()
})
