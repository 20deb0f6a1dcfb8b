/**
 * <member-list>, <typing-indicator>, <status-banner>, <room-list>: rendered
 * output for given data, and the events they fire on taps and input.
 */
const path = require('path')
const simulate = require('miniprogram-simulate')

const ROOT = path.resolve(__dirname, '..', '..')
const load = (name) => simulate.load(path.join(ROOT, 'components', name, name), { rootPath: ROOT })
const ids = {
  members: load('member-list'),
  typing: load('typing-indicator'),
  banner: load('status-banner'),
  rooms: load('room-list')
}

function render(which, props) {
  const comp = simulate.render(ids[which], props)
  comp.attach(document.createElement('parent-wrapper'))
  return comp
}

const text = (node) => (node ? (node.dom || node).textContent.trim() : null)
// nested nodes: query the rendered DOM (exparser prefixes classes with "main--")
const q = (node, cls) => node.dom.querySelector('.main--' + cls)

describe('member-list', () => {
  test('shows the count, one chip per member, marks the current user', () => {
    const comp = render('members', { members: ['alice', 'bob', 'carol'], me: 'bob' })
    expect(text(comp.querySelector('.count'))).toBe('3 online')
    const chips = comp.querySelectorAll('.chip')
    expect(chips.map(text)).toEqual(['alice', 'bob (you)', 'carol'])
    expect(chips[1].dom.className).toContain('me')
  })

  test('presence updates re-render; tapping another member fires select, tapping yourself does not', async () => {
    const comp = render('members', { members: ['alice'], me: 'alice' })
    const picked = []
    comp.addEventListener('select', (e) => picked.push(e.detail.user))
    comp.setData({ members: ['alice', 'dave'] })
    expect(text(comp.querySelector('.count'))).toBe('2 online')
    const chips = comp.querySelectorAll('.chip')
    chips[0].dispatchEvent('tap')
    chips[1].dispatchEvent('tap')
    await simulate.sleep(0)
    expect(picked).toEqual(['dave'])
  })
})

describe('typing-indicator', () => {
  test.each([
    [[], null],
    [['alice'], 'alice is typing…'],
    [['alice', 'bob'], 'alice and bob are typing…'],
    [['a', 'b', 'c'], '3 people are typing…']
  ])('users %j → %s', (users, label) => {
    const comp = render('typing', { users })
    expect(text(comp.querySelector('.typing'))).toBe(label)
  })
})

describe('status-banner', () => {
  test('hidden while open; reconnecting shows the wait; closed shows the reason', () => {
    const comp = render('banner', { state: 'open' })
    expect(comp.querySelector('.banner')).toBeFalsy()
    comp.setData({ state: 'reconnecting', delay: 1500 })
    expect(text(comp.querySelector('.banner'))).toBe('Reconnecting… (retry in 2 s)')
    comp.setData({ state: 'reconnecting', delay: 0 })
    expect(text(comp.querySelector('.banner'))).toBe('Reconnecting…')
    comp.setData({ state: 'connecting' })
    expect(text(comp.querySelector('.banner'))).toBe('Connecting…')
    comp.setData({ state: 'closed', reason: 'name_taken' })
    expect(text(comp.querySelector('.banner'))).toBe('Disconnected: name_taken')
    expect(comp.querySelector('.banner').dom.className).toContain('closed')
  })
})

describe('room-list', () => {
  test('rows with unread badges; tapping a row fires open', async () => {
    const comp = render('rooms', { rooms: [{ room: 'lobby', unread: 0 }, { room: 'dev', unread: 3 }] })
    const rows = comp.querySelectorAll('.room')
    expect(rows.map((r) => text(q(r, 'room-name')))).toEqual(['#lobby', '#dev'])
    expect(q(rows[0], 'unread')).toBeNull()
    expect(text(q(rows[1], 'unread'))).toBe('3')
    const opened = []
    comp.addEventListener('open', (e) => opened.push(e.detail.room))
    rows[1].dispatchEvent('tap')
    await simulate.sleep(0)
    expect(opened).toEqual(['dev'])
  })

  test('the join box opens a valid room and rejects an invalid name with an error', async () => {
    const comp = render('rooms', { rooms: [] })
    const opened = []
    comp.addEventListener('open', (e) => opened.push(e.detail.room))
    comp.querySelector('.input').dispatchEvent('input', { detail: { value: 'bad room!' } })
    await simulate.sleep(0)
    comp.querySelector('.join-btn').dispatchEvent('tap')
    await simulate.sleep(0)
    expect(opened).toEqual([])
    expect(text(comp.querySelector('.error'))).toContain('1–64')
    comp.querySelector('.input').dispatchEvent('input', { detail: { value: ' 设计:v2 ' } })
    await simulate.sleep(0)
    expect(comp.querySelector('.error')).toBeFalsy()
    comp.querySelector('.join-btn').dispatchEvent('tap')
    await simulate.sleep(0)
    expect(opened).toEqual(['设计:v2'])
    expect(comp.data.draft).toBe('')
  })
})
