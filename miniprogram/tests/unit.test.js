/**
 * @jest-environment node
 *
 * Pure parts of the SDK and the conversation helpers: backoff bounds, URL
 * building, ids, name/room rules, seq de-duplication, row merging.
 */
const { backoffDelay, buildUrl, makeId, isValidRoom, isValidName, SeqTracker } = require('../utils/chatd')
const { merge, toRow, keyOf } = require('../utils/conversation')

test('backoff doubles from initial, is capped at max, jitter only shortens within its fraction', () => {
  const b = { initial: 500, factor: 2, max: 30000, jitter: 0.5 }
  expect([0, 1, 2, 3].map((a) => backoffDelay(a, b, () => 0))).toEqual([500, 1000, 2000, 4000])
  expect(backoffDelay(20, b, () => 0)).toBe(30000)
  expect(backoffDelay(20, b, () => 0.999999)).toBe(15000)
  for (let i = 0; i < 200; i++) {
    const d = backoffDelay(3, b, Math.random)
    expect(d).toBeGreaterThanOrEqual(2000)
    expect(d).toBeLessThanOrEqual(4000)
  }
})

test('buildUrl appends name and token, skipping empty ones', () => {
  expect(buildUrl('ws://h/ws', { name: 'a b', token: null })).toBe('ws://h/ws?name=a%20b')
  expect(buildUrl('ws://h/ws?x=1', { name: '张三', token: 't' })).toBe('ws://h/ws?x=1&name=%E5%BC%A0%E4%B8%89&token=t')
  expect(buildUrl('ws://h/ws', { name: '' })).toBe('ws://h/ws')
})

test('client ids are printable ASCII, at most 64 characters, and distinct', () => {
  const seen = new Set()
  for (let i = 0; i < 1000; i++) {
    const id = makeId()
    expect(id).toMatch(/^[\x21-\x7e]{1,64}$/)
    seen.add(id)
  }
  expect(seen.size).toBe(1000)
})

test('room and name rules follow docs/protocol.md', () => {
  expect(['lobby', 'a.b-c_d:e#f', '设计', 'x'.repeat(64)].every(isValidRoom)).toBe(true)
  expect(['', 'x'.repeat(65), 'a b', 'a/b', 5].some(isValidRoom)).toBe(false)
  expect(['alice', 'Bob_1.x', '张三'].every(isValidName)).toBe(true)
  expect(['', 'guest-abc', 'a b', 'x'.repeat(33), 'a:b'].some(isValidName)).toBe(false)
})

test('SeqTracker delivers each seq once, starts after a plain join, and forgets old seqs below its floor', () => {
  const t = new SeqTracker(10)
  t.startAt(5)
  expect(t.add(5)).toBe(false)
  expect(t.add(6)).toBe(true)
  expect(t.add(6)).toBe(false)
  expect(t.last).toBe(6)
  for (let s = 7; s < 40; s++) expect(t.add(s)).toBe(true)
  expect(t.seen.size).toBeLessThanOrEqual(10)
  expect(t.add(8)).toBe(false)
  expect(t.last).toBe(39)
})

test('merge: replaces by key, sorts by seq, pending rows last in arrival order', () => {
  const me = 'me'
  const p1 = toRow({ kind: 'room', id: 'i1', text: 'one', status: 'pending', ts: 1 }, me)
  const p2 = toRow({ kind: 'room', id: 'i2', text: 'two', status: 'pending', ts: 2 }, me)
  let list = merge([], [p1, p2])
  list = merge(list, [toRow({ seq: 3, from: 'bob', text: 'b3', id: null, ts: 3 }, me)])
  expect(list.map((r) => r.text)).toEqual(['b3', 'one', 'two'])
  // ack of i2 (seq 5) and a replay of own i1 (seq 4, from the server) replace the pending rows
  list = merge(list, [toRow({ kind: 'room', id: 'i2', text: 'two', status: 'sent', seq: 5, ts: 5 }, me)])
  list = merge(list, [toRow({ seq: 4, from: 'me', text: 'one', id: 'i1', ts: 4 }, me)])
  expect(list.map((r) => [r.text, r.seq, r.status])).toEqual([
    ['b3', 3, 'sent'],
    ['one', 4, 'sent'],
    ['two', 5, 'sent']
  ])
  // the same message from history again adds nothing
  list = merge(list, [toRow({ seq: 3, from: 'bob', text: 'b3', id: null, ts: 3 }, me)])
  expect(list.length).toBe(3)
  expect(list.every((r) => r.mine === (r.from === 'me'))).toBe(true)
  // another user's id does not collide with mine
  expect(keyOf({ id: 'i1', from: 'bob' }, me)).not.toBe(keyOf({ id: 'i1', from: 'me' }, me))
})

test('the login endpoint is derived from serverUrl (ws → http, wss → https), apiBase overrides it', () => {
  const { httpBase, loginUrl } = require('../utils/login')
  expect(httpBase('ws://127.0.0.1:8080/ws')).toBe('http://127.0.0.1:8080')
  expect(httpBase('wss://chat.example.com/ws?x=1')).toBe('https://chat.example.com')
  expect(loginUrl({ serverUrl: 'wss://chat.example.com/ws' })).toBe('https://chat.example.com/api/login/wechat')
  expect(loginUrl({ serverUrl: 'wss://c/ws', apiBase: 'https://api.example.com/' })).toBe('https://api.example.com/api/login/wechat')
  expect(() => httpBase('http://x')).toThrow('ws://')
})

test('a 401 handshake refusal is recognised in socket error messages, other numbers are not', () => {
  const { isUnauthorized } = require('../utils/chatd')
  expect(isUnauthorized('WebSocket handshake failed: HTTP 401')).toBe(true)
  expect(isUnauthorized('Unexpected response code: 401')).toBe(true)
  expect(isUnauthorized('HTTP 4010')).toBe(false)
  expect(isUnauthorized('HTTP 429')).toBe(false)
  expect(isUnauthorized(undefined)).toBe(false)
})
