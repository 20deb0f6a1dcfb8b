/**
 * <conversation-list>: one row per conversation with initial, title, time,
 * preview, badge (a dot when muted), "[@you]" and the muted icon; taps fire
 * `open` and long-presses `action` with the conversation key.
 */
const path = require('path')
const simulate = require('miniprogram-simulate')

const ROOT = path.resolve(__dirname, '..', '..')
const id = simulate.load(path.join(ROOT, 'components/conversation-list/conversation-list'), { rootPath: ROOT })
const q = (node, cls) => (node.dom || node).querySelector('.main--' + cls)

const row = (extra) => Object.assign({ key: 'd:bob', kind: 'dm', title: 'Bob', initial: 'B', preview: 'hi', draft: false, time: '10:01', badge: '', dot: false, mention: '', muted: false }, extra)

function render(props) {
  const comp = simulate.render(id, props)
  comp.attach(document.createElement('parent-wrapper'))
  return comp
}

test('renders title, initial, time, preview, badge, mention marker, muted icon and the draft style', () => {
  const comp = render({
    rows: [
      row({ badge: '3' }),
      row({ key: 'r:team', kind: 'private', title: 'Team', initial: 'T', preview: 'Carol: @you', badge: '99+', mention: '[@you]' }),
      row({ key: 'r:quiet', kind: 'public', title: 'quiet', initial: 'Q', muted: true, dot: true }),
      row({ key: 'd:carol', title: 'carol', initial: 'C', preview: '[draft] half', draft: true })
    ]
  })
  const rows = comp.querySelectorAll('.row')
  expect(rows.length).toBe(4)
  expect(q(rows[0], 'title').textContent).toBe('Bob')
  expect(q(rows[0], 'initial').textContent).toBe('B')
  expect(q(rows[0], 'time').textContent).toBe('10:01')
  expect(q(rows[0], 'badge').textContent).toBe('3')
  expect(q(rows[0], 'mention')).toBeNull()
  expect(q(rows[0], 'muted')).toBeNull()
  expect(q(rows[1], 'badge').textContent).toBe('99+')
  expect(q(rows[1], 'mention').textContent.trim()).toBe('[@you]')
  expect(q(rows[1], 'preview').textContent).toContain('Carol: @you')
  expect(q(rows[2], 'badge')).toBeNull()
  expect(q(rows[2], 'dot')).not.toBeNull()
  expect(q(rows[2], 'muted').textContent).toBe('🔕')
  expect(q(rows[3], 'draft').textContent).toBe('[draft] half')
})

test('empty text without rows; tap → open, long-press → action, with the key', async () => {
  const comp = render({ emptyText: 'Nothing here' })
  expect(comp.querySelector('.empty').dom.textContent).toBe('Nothing here')
  comp.setData({ rows: [row(), row({ key: 'r:team', title: 'Team' })] })
  expect(comp.querySelector('.empty')).toBeUndefined()
  const seen = []
  comp.addEventListener('open', (e) => seen.push(['open', e.detail.key]))
  comp.addEventListener('action', (e) => seen.push(['action', e.detail.key]))
  const rows = comp.querySelectorAll('.row')
  rows[1].dispatchEvent('tap')
  rows[0].dispatchEvent('longpress')
  await simulate.sleep(0)
  expect(seen).toEqual([['open', 'r:team'], ['action', 'd:bob']])
})

test('swipe left opens a row’s buttons (Leave only for groups), a button fires act and closes, swipe right or a tap closes', async () => {
  const comp = render({ rows: [row(), row({ key: 'r:team', kind: 'private', title: 'Team', muted: true })] })
  const seen = []
  ;['open', 'act'].forEach((n) => comp.addEventListener(n, (e) => seen.push([n, e.detail])))
  const rows = () => comp.querySelectorAll('.row')
  const swipe = async (i, from, to) => {
    rows()[i].dispatchEvent('touchstart', { touches: [{ x: from, y: 100 }] })
    await simulate.sleep(0)
    rows()[i].dispatchEvent('touchmove', { touches: [{ x: (from + to) / 2, y: 102 }] })
    await simulate.sleep(0)
    rows()[i].dispatchEvent('touchend', { changedTouches: [{ x: to, y: 104 }] })
    await simulate.sleep(0)
  }
  await swipe(1, 300, 180)
  expect(comp.data.open).toBe('r:team')
  expect(rows()[1].dom.className).toContain('open3')
  const acts = (i) => Array.from(comp.querySelectorAll('.swipe')[i].dom.querySelectorAll('.main--act')).map((n) => n.textContent)
  expect(acts(1)).toEqual(['Mark read', 'Unmute', 'Leave'])
  expect(acts(0)).toEqual(['Mark read', 'Mute'])
  await swipe(1, 180, 300)
  expect(comp.data.open).toBe('')
  await swipe(0, 300, 292) // too short: a tap (it opens the chat), not a swipe
  expect(comp.data.open).toBe('')
  expect(seen).toEqual([['open', { key: 'd:bob' }]])
  await swipe(0, 300, 150)
  expect(rows()[0].dom.className).toContain('open2')
  rows()[0].dispatchEvent('tap') // a tap on an open row closes it, it does not open the chat
  await simulate.sleep(0)
  expect(comp.data.open).toBe('')
  await swipe(1, 300, 150)
  comp.querySelectorAll('.leave')[0].dispatchEvent('tap') // the only Leave: the group's
  await simulate.sleep(0)
  expect(comp.data.open).toBe('')
  expect(seen).toEqual([['open', { key: 'd:bob' }], ['act', { key: 'r:team', action: 'leave' }]])
})
