/**
 * @jest-environment node
 *
 * `receipts_batch` (docs/protocol.md, *Receipt batching*): the client asks for it
 * with `?features=receipts_batch` (unless `batchReceipts: false`) and applies a
 * batch exactly as the same receipts one `receipt` frame each: the same store
 * state, "read by" and timeline statuses, and one `receipt` event per entry.
 */
'use strict'
const { ChatClient, wxAdapter } = require('../utils/chatd')

function fakeWx() {
  const tasks = []
  return {
    tasks,
    connectSocket(req) {
      const h = {}
      const task = {
        req,
        sent: [],
        onOpen: (fn) => (h.open = fn),
        onMessage: (fn) => (h.message = fn),
        onError: (fn) => (h.error = fn),
        onClose: (fn) => (h.close = fn),
        send: (a) => task.sent.push(a),
        close: () => {},
        h
      }
      tasks.push(task)
      return task
    },
    getStorageSync: () => '',
    setStorageSync: () => {},
    removeStorageSync: () => {}
  }
}

const opened = []
afterEach(() => opened.splice(0).forEach((c) => c.close()))

const MINE = (seq) => ({ type: 'message', room: 'team', seq, from: 'alice', name: 'alice', text: 'm' + seq, ts: 1000 + seq, id: 'x' + seq })

/** A token client of alice, welcomed, whose first sync gave room `team` with her messages 1-3. */
async function welcomed(opts) {
  const wx = fakeWx()
  const client = new ChatClient(Object.assign({ url: 'ws://h/ws', token: 'tok', adapter: wxAdapter(wx) }, opts))
  client.connect()
  const task = wx.tasks[0]
  const feed = (frame) => task.h.message({ data: JSON.stringify(frame) })
  task.h.open({})
  feed({ type: 'welcome', user: 'alice', name: 'alice', session: 's', authenticated: true, features: ['receipts_batch'] })
  const summary = { room: 'team', kind: 'public', title: '', role: 'member', seq: 3, ts: 1003, last: null, unread: 0, mentions: 0, read: 3, muted: false }
  feed({
    type: 'sync',
    cursor: 'c1',
    reset: false,
    more: false,
    removed: [],
    conversations: [Object.assign({}, summary, { items: [MINE(1), MINE(2), MINE(3)], truncated: false })]
  })
  await new Promise((resolve) => setImmediate(resolve)) // the sync answer is applied
  opened.push(client)
  return { client, task, feed }
}

function state(client) {
  const statuses = client.store.timeline('r:team', []).filter((r) => r.mine).map((r) => [r.seq, r.status, r.readBy])
  return { statuses, readBy: [1, 2, 3].map((s) => client.store.readBy('r:team', s)) }
}

test('the upgrade URL asks for receipts_batch unless batchReceipts is false', async () => {
  expect((await welcomed()).task.req.url).toBe('ws://h/ws?features=receipts_batch')
  expect((await welcomed({ batchReceipts: false })).task.req.url).toBe('ws://h/ws')
})

test('a batch is applied exactly like its receipts one frame each', async () => {
  const batched = await welcomed()
  const single = await welcomed()
  const events = { batched: [], single: [] }
  batched.client.on('receipt', (e) => events.batched.push(e))
  single.client.on('receipt', (e) => events.single.push(e))
  const receipts = [
    { user: 'bob', seq: 3 },
    { user: 'carol', seq: 2 },
    { user: 'alice', seq: 3 } // my own marker (another device): counts for nobody
  ]
  batched.feed({ type: 'receipts_batch', room: 'team', receipts })
  receipts.forEach((r) => single.feed(Object.assign({ type: 'receipt', room: 'team' }, r)))
  expect(state(batched.client)).toEqual(state(single.client))
  expect(state(batched.client).readBy[1]).toEqual({ count: 2, users: ['bob', 'carol'] })
  expect(events.batched).toEqual(events.single)
  expect(events.batched.map((e) => [e.key, e.user, e.seq])).toEqual([
    ['r:team', 'bob', 3],
    ['r:team', 'carol', 2],
    ['r:team', 'alice', 3]
  ])
  // an older marker later changes nothing, in either form
  batched.feed({ type: 'receipts_batch', room: 'team', receipts: [{ user: 'bob', seq: 1 }] })
  single.feed({ type: 'receipt', room: 'team', user: 'bob', seq: 1 })
  expect(state(batched.client)).toEqual(state(single.client))
  expect(state(batched.client).readBy[2]).toEqual({ count: 1, users: ['bob'] })
})

test('a batch changes the conversation once; malformed entries are skipped', async () => {
  const { client, feed } = await welcomed()
  const timelines = []
  client.on('timeline', (e) => timelines.push(e.key))
  feed({ type: 'receipts_batch', room: 'team', receipts: [{ user: 'bob', seq: 2 }, { user: 'carol', seq: 3 }, null, { user: 5, seq: 1 }, { user: 'dan' }] })
  expect(timelines).toEqual(['r:team'])
  expect(client.store.readBy('r:team', 2)).toEqual({ count: 2, users: ['bob', 'carol'] })
  feed({ type: 'receipts_batch', room: 'team', receipts: 'nope' })
  feed({ type: 'receipts_batch', room: 'nowhere', receipts: [{ user: 'bob', seq: 1 }] })
  expect(timelines).toEqual(['r:team'])
})
