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

test('attachments: a thumbnail in its box, voice with its duration (◼ while playing), a file with name and size; taps and a load error fire media/mediaerror', async () => {
  const attachments = [
    { id: 'i1', kind: 'image', name: '', size: '2.0 KB', w: 320, h: 240, thumb: 'http://h/t', url: 'http://h/o' },
    { id: 'v1', kind: 'voice', name: '', size: '1 KB', duration: '7"', width: 175, url: 'http://h/v' },
    { id: 'f1', kind: 'file', name: 'report.pdf', size: '5.0 MB', url: 'http://h/f' }
  ]
  const comp = render(msgId, { row: row({ text: '', attachments }), playing: 'v1' })
  const thumb = q(comp, 'thumb')
  expect(thumb.getAttribute('style')).toContain('width: 320px; height: 240px') // simulate draws 1 rpx as 1 px
  expect(q(comp, 'duration').textContent).toBe('7"')
  expect(q(comp, 'voice').className).toContain('playing')
  expect(q(comp, 'voice-icon').textContent).toBe('◼')
  expect(q(comp, 'file-name').textContent).toBe('report.pdf')
  expect(q(comp, 'file-size').textContent).toBe('5.0 MB')
  expect(q(comp, 'text')).toBeNull() // no empty text under the media
  const seen = listen(comp, ['media', 'mediaerror'])
  comp.querySelector('.thumb').dispatchEvent('tap')
  comp.querySelector('.file').dispatchEvent('tap')
  comp.querySelector('.thumb').dispatchEvent('error', { detail: { errMsg: 'expired' } })
  await simulate.sleep(0)
  expect(seen).toEqual([
    ['media', { key: 's3', index: 0 }],
    ['media', { key: 's3', index: 2 }],
    ['mediaerror', { key: 's3', index: 0 }]
  ])
})

test('an upload in progress shows a progress ring and its percentage; a failed one why, with Retry and Delete ("not sent" retries too)', async () => {
  const up = row({ key: 'pm1', seq: null, mine: true, text: '', tick: 'sending…', status: 'pending', attachments: [{ id: 'pm1', kind: 'image', w: 320, h: 320, thumb: '/tmp/a.png', url: '/tmp/a.png' }], upload: { progress: 40, deg: 144, failed: false, label: 'Uploading 40%', error: '' } })
  const comp = render(msgId, { row: up })
  expect(q(comp, 'upload-text').textContent).toBe('Uploading 40%')
  expect(q(comp, 'ring').getAttribute('style')).toContain('conic-gradient(#07c160 144deg')
  expect(q(comp, 'upload-retry')).toBeNull()
  const failed = render(msgId, { row: Object.assign({}, up, { tick: 'not sent', status: 'failed', upload: { progress: 0, deg: 0, failed: true, label: '', error: 'This file is too large to send' } }) })
  expect(q(failed, 'upload-error').textContent).toBe('This file is too large to send')
  expect(q(failed, 'ring')).toBeNull()
  const seen = listen(failed, ['retry', 'discard'])
  failed.querySelector('.tick').dispatchEvent('tap')
  failed.querySelector('.upload-retry').dispatchEvent('tap')
  failed.querySelector('.upload-delete').dispatchEvent('tap')
  await simulate.sleep(0)
  expect(seen).toEqual([
    ['retry', { key: 'pm1' }],
    ['retry', { key: 'pm1' }],
    ['discard', { key: 'pm1' }]
  ])
})
