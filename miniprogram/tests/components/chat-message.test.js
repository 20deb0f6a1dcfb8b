/**
 * <chat-message> and <mention-picker>: a message bubble with name, quote,
 * "(edited)", reactions and my tick; recalled messages and events as grey
 * lines (Re-edit on my own recall); the events each fires. The picker filters
 * members by the typed prefix and fires pick/cancel.
 */
const path = require('path')
const simulate = require('miniprogram-simulate')

const ROOT = path.resolve(__dirname, '..', '..')
const msgId = simulate.load(path.join(ROOT, 'components/chat-message/chat-message'), { rootPath: ROOT })
const pickerId = simulate.load(path.join(ROOT, 'components/mention-picker/mention-picker'), { rootPath: ROOT })
const q = (node, cls) => (node.dom || node).querySelector('.main--' + cls)
const qa = (node, cls) => Array.from((node.dom || node).querySelectorAll('.main--' + cls))

function render(id, props) {
  const comp = simulate.render(id, props)
  comp.attach(document.createElement('parent-wrapper'))
  return comp
}

const row = (extra) => Object.assign({ key: 's3', seq: 3, type: 'message', mine: false, from: 'bob', name: 'Bob', initial: 'B', text: 'hello', time: '10:00', status: '', tick: '', tickTap: false, edited: false, mentionsMe: false, quote: null, reactions: [] }, extra)

function listen(comp, names) {
  const seen = []
  names.forEach((n) => comp.addEventListener(n, (e) => seen.push([n, e.detail])))
  return seen
}

test('someone else’s message in a room: name, avatar, text, quote, edited, reactions; no tick', () => {
  const comp = render(msgId, { row: row({ quote: { name: 'you', text: 'lunch?' }, edited: true, reactions: [{ emoji: '👍', count: 2, me: true }], mentionsMe: true }) })
  expect(q(comp, 'name').textContent).toBe('Bob')
  expect(q(comp, 'avatar').textContent).toBe('B')
  expect(q(comp, 'text').textContent).toBe('hello')
  expect(q(comp, 'quote').textContent).toBe('you: lunch?')
  expect(q(comp, 'edited').textContent.trim()).toBe('(edited)')
  expect(q(comp, 'bubble').className).toContain('mentioned')
  expect(qa(comp, 'reaction').map((n) => n.textContent)).toEqual(['👍 2'])
  expect(q(comp, 'reaction').className).toContain('me')
  expect(q(comp, 'tick')).toBeNull()
  expect(q(comp, 'msg').className).not.toContain('mine')
})

test('my message: no name, the tick; in a DM no names at all', () => {
  const comp = render(msgId, { row: row({ mine: true, name: 'you', tick: 'read by 2', tickTap: true, status: 'read' }) })
  expect(q(comp, 'msg').className).toContain('mine')
  expect(q(comp, 'name')).toBeNull()
  expect(q(comp, 'tick').textContent).toBe('read by 2')
  const dm = render(msgId, { row: row(), dm: true })
  expect(q(dm, 'name')).toBeNull()
})

test('recalled and event rows are grey lines; Re-edit only where offered', () => {
  const mine = render(msgId, { row: { key: 's4', seq: 4, type: 'recalled', mine: true, text: 'you recalled a message', reedit: true } })
  expect(q(mine, 'line').textContent).toBe('you recalled a message Re-edit')
  expect(q(mine, 'bubble')).toBeNull()
  const theirs = render(msgId, { row: { key: 's5', seq: 5, type: 'recalled', mine: false, text: 'Bob recalled a message', reedit: false } })
  expect(q(theirs, 'line').textContent).toBe('Bob recalled a message')
  const ev = render(msgId, { row: { key: 's6', seq: 6, type: 'event', text: 'Alice invited carol' } })
  expect(q(ev, 'line').textContent).toBe('Alice invited carol')
})

test('events: long-press → action, tick tap → ticks (only with tickTap), failed tick → retry, reaction → react, Re-edit → reedit', async () => {
  const comp = render(msgId, { row: row({ mine: true, tick: 'read by 1', tickTap: true, reactions: [{ emoji: '❤️', count: 1, me: false }] }) })
  const seen = listen(comp, ['action', 'ticks', 'react', 'retry', 'reedit'])
  comp.querySelector('.bubble').dispatchEvent('longpress')
  comp.querySelector('.tick').dispatchEvent('tap')
  comp.querySelector('.reaction').dispatchEvent('tap')
  await simulate.sleep(0)
  comp.setData({ row: row({ key: 'pm1', seq: null, mine: true, status: 'failed', tick: 'not sent' }) })
  comp.querySelector('.tick').dispatchEvent('tap')
  await simulate.sleep(0)
  comp.setData({ row: row({ mine: true, tick: 'sent', tickTap: false }) })
  comp.querySelector('.tick').dispatchEvent('tap')
  comp.setData({ row: { key: 's4', seq: 4, type: 'recalled', mine: true, text: 'you recalled a message', reedit: true } })
  comp.querySelector('.reedit').dispatchEvent('tap')
  await simulate.sleep(0)
  expect(seen).toEqual([
    ['action', { key: 's3' }],
    ['ticks', { seq: 3 }],
    ['react', { seq: 3, emoji: '❤️' }],
    ['retry', { key: 'pm1' }],
    ['reedit', { seq: 4 }]
  ])
})

test('mention-picker: members filtered by the typed prefix (name or id), pick and cancel', async () => {
  const members = [{ user: 'wx:o-1', name: 'Bob' }, { user: 'wx:o-2', name: 'Carol' }, { user: 'wx:o-3', name: 'bea' }]
  const comp = render(pickerId, { members })
  expect(qa(comp, 'name').map((n) => n.textContent)).toEqual(['Bob', 'Carol', 'bea'])
  comp.setData({ filter: 'b' })
  expect(qa(comp, 'name').map((n) => n.textContent)).toEqual(['Bob', 'bea'])
  comp.setData({ filter: 'zz' })
  expect(q(comp, 'none').textContent).toBe('No one matches')
  comp.setData({ filter: 'wx:o-2' })
  const seen = listen(comp, ['pick', 'cancel'])
  comp.querySelector('.member').dispatchEvent('tap')
  comp.querySelector('.cancel').dispatchEvent('tap')
  await simulate.sleep(0)
  expect(seen).toEqual([['pick', { user: 'wx:o-2', name: 'Carol' }], ['cancel', undefined]])
})
