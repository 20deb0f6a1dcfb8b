/**
 * @jest-environment node
 *
 * The shared client's `wx` adapter with a recording fake `wx`: what reaches
 * `wx.connectSocket` and the SocketTask, a `fail` that runs synchronously,
 * and wx storage holding objects as they are. The live tests
 * (sdk/limits/login/rooms/pages.live.test.js) run the same adapter on a wx
 * shim backed by real WebSockets against a real chatd.
 */
'use strict'
const { ChatClient, wxAdapter } = require('../utils/chatd')

function fakeWx(opts) {
  const o = opts || {}
  const tasks = []
  const storage = new Map()
  return {
    tasks,
    storage,
    connectSocket(req) {
      const h = {}
      const task = {
        req,
        sent: [],
        closed: null,
        onOpen: (fn) => (h.open = fn),
        onMessage: (fn) => (h.message = fn),
        onError: (fn) => (h.error = fn),
        onClose: (fn) => (h.close = fn),
        send: (a) => task.sent.push(a),
        close: (a) => (task.closed = a),
        h
      }
      tasks.push(task)
      if (o.failNow) req.fail({ errMsg: 'connectSocket:fail exceed max task count' })
      return task
    },
    getStorageSync: (k) => (storage.has(k) ? storage.get(k) : ''),
    setStorageSync: (k, v) => storage.set(k, v),
    removeStorageSync: (k) => storage.delete(k)
  }
}

test('opts.wx means wxAdapter(wx): connectSocket gets url, protocols and the Bearer header; frames go through task.send({data})', () => {
  const wx = fakeWx()
  const client = new ChatClient({ url: 'ws://h/ws', token: 'tok', wx, storageKey: 'k' })
  client.connect()
  const task = wx.tasks[0]
  expect(task.req.url).toBe('ws://h/ws?features=receipts_batch')
  expect(task.req.protocols).toEqual(['chatd.v1'])
  expect(task.req.header).toEqual({ Authorization: 'Bearer tok' })
  expect(task.req.perMessageDeflate).toBe(true)
  task.h.open({})
  task.h.message({ data: JSON.stringify({ type: 'welcome', user: 'wx:o1', session: 's' }) })
  client.join('lobby')
  expect(JSON.parse(task.sent[0].data)).toMatchObject({ type: 'join', room: 'lobby' })
  expect(typeof task.sent[0].fail).toBe('function')
  expect(wx.storage.get('k')).toMatchObject({ v: 1, rooms: { lobby: null } }) // an object, not a string
  client.close()
  expect(task.closed).toMatchObject({ code: 1000, reason: 'client closed' })
})

test('an anonymous session sends no header; a fail() that runs inside connectSocket means one retry, not two', () => {
  const wx = fakeWx({ failNow: true })
  const client = new ChatClient({ url: 'ws://h/ws', name: 'alice', adapter: wxAdapter(wx), backoff: { jitter: 0 } })
  const statuses = []
  client.on('status', (s) => statuses.push(s))
  client.connect()
  expect(wx.tasks[0].req.url).toBe('ws://h/ws?name=alice&features=receipts_batch')
  expect('header' in wx.tasks[0].req).toBe(false)
  // the task's own onError/onClose for the same failure are ignored
  wx.tasks[0].h.error({ errMsg: 'again' })
  wx.tasks[0].h.close({ code: 1006, reason: '' })
  expect(statuses.map((s) => s.state)).toEqual(['connecting', 'reconnecting'])
  expect(statuses[1]).toMatchObject({ code: 1006, reason: 'connectSocket:fail exceed max task count', delay: 500 })
  client.close()
})

test('upload() hands wx.uploadFile the file and the Bearer header; onProgress follows UploadTask.onProgressUpdate', async () => {
  const wx = fakeWx()
  const calls = []
  let progress = null
  wx.uploadFile = (req) => {
    calls.push(req)
    return { onProgressUpdate: (fn) => (progress = fn) }
  }
  const client = new ChatClient({ url: 'ws://h:1/ws', token: 'T', wx })
  const seen = []
  const done = client.upload('wxfile://tmp/a.png', { onProgress: (p) => seen.push(p) })
  expect(calls[0]).toMatchObject({ url: 'http://h:1/api/media', filePath: 'wxfile://tmp/a.png', name: 'file', header: { Authorization: 'Bearer T' } })
  progress({ progress: 40, totalBytesSent: 4, totalBytesExpectedToSend: 10 })
  progress({ progress: 100, totalBytesSent: 10, totalBytesExpectedToSend: 10 })
  calls[0].success({ statusCode: 201, data: JSON.stringify({ media_id: 'm1', kind: 'image' }) })
  await expect(done).resolves.toMatchObject({ media_id: 'm1' })
  expect(seen).toEqual([40, 100])
  // without onProgress (and with a wx whose uploadFile returns nothing) nothing breaks
  wx.uploadFile = (req) => {
    calls.push(req)
  }
  const plain = client.upload('wxfile://tmp/b.png')
  calls[1].success({ statusCode: 413, data: JSON.stringify({ error: 'too_large', message: 'too large' }) })
  await expect(plain).rejects.toMatchObject({ code: 'too_large', status: 413 })
})

test('wxAdapter media: uploadFile gets the name as a form field and can be aborted; keep() is saveFile (the temp path when it fails), unkeep() removeSavedFile', () => {
  const calls = []
  const wx = Object.assign(fakeWx(), {
    uploadFile(opts) {
      calls.push(['uploadFile', opts])
      return { onProgressUpdate: (fn) => fn({ progress: 30 }), abort: () => calls.push(['abort']) }
    },
    getFileSystemManager: () => ({
      saveFile: (a) => (a.tempFilePath === 'tmp/full' ? a.fail({ errMsg: 'saveFile:fail exceeded' }) : a.success({ savedFilePath: 'store/' + a.tempFilePath })),
      removeSavedFile: (a) => calls.push(['removeSavedFile', a.filePath])
    })
  })
  const io = wxAdapter(wx)
  const progress = []
  const task = io.upload({ url: 'http://h/api/media', file: 'tmp/a.pdf', header: { Authorization: 'Bearer t' }, form: { name: 'a.pdf' }, onProgress: (p) => progress.push(p) }, () => {})
  expect(calls[0][1]).toMatchObject({ url: 'http://h/api/media', filePath: 'tmp/a.pdf', name: 'file', formData: { name: 'a.pdf' }, header: { Authorization: 'Bearer t' } })
  expect(progress).toEqual([30])
  task.abort()
  expect(calls[1]).toEqual(['abort'])
  const kept = []
  io.keep('tmp/a.pdf', (p) => kept.push(p))
  io.keep('tmp/full', (p) => kept.push(p))
  expect(kept).toEqual(['store/tmp/a.pdf', 'tmp/full'])
  io.unkeep('store/tmp/a.pdf')
  expect(calls[2]).toEqual(['removeSavedFile', 'store/tmp/a.pdf'])
  // no file system API: the temp path is used as it is
  const bare = wxAdapter(fakeWx())
  bare.keep('tmp/b', (p) => kept.push(p))
  expect(kept[2]).toBe('tmp/b')
})
