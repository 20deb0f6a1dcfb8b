/**
 * <message-list>: renders one row per message with name, text and status,
 * marks own rows, scrolls to the newest row on append but not on prepend,
 * and fires `loadmore` from "Load earlier messages".
 */
const path = require('path')
const simulate = require('miniprogram-simulate')

const ROOT = path.resolve(__dirname, '..', '..')
const id = simulate.load(path.join(ROOT, 'components/message-list/message-list'), { rootPath: ROOT })

const row = (seq, text, extra) => Object.assign({ key: 'seq:' + seq, seq, from: 'bob', name: 'bob', text, time: '10:0' + seq, mine: false, status: 'sent' }, extra)

// nested nodes: query the rendered DOM (exparser prefixes classes with "main--")
const q = (node, cls) => (node.dom || node).querySelector('.main--' + cls)

function render(props) {
  const comp = simulate.render(id, props)
  comp.attach(document.createElement('parent-wrapper'))
  return comp
}

test('renders rows with name, text, own marker and pending/failed status', () => {
  const comp = render({
    messages: [row(1, 'hi'), row(2, 'mine', { mine: true, from: 'me', name: 'me' }), { key: 'own:x', seq: null, from: 'me', name: 'me', text: 'wait', time: '', mine: true, status: 'pending' }, { key: 'own:y', seq: null, from: 'me', name: 'me', text: 'nope', time: '', mine: true, status: 'failed' }]
  })
  const rows = comp.querySelectorAll('.row')
  expect(rows.length).toBe(4)
  expect(q(rows[0], 'name').textContent).toBe('bob')
  expect(q(rows[0], 'bubble').textContent).toBe('hi')
  expect(rows[1].dom.className).toContain('mine')
  expect(rows[0].dom.className).not.toContain('mine')
  expect(q(rows[2], 'status').textContent).toBe('sending…')
  expect(q(rows[3], 'status').textContent).toBe('not sent')
  expect(q(rows[0], 'status')).toBeNull()
})

test('shows the empty text when there are no messages', () => {
  const comp = render({ emptyText: 'Say hello' })
  expect(comp.querySelector('.empty').dom.textContent).toBe('Say hello')
  expect(comp.querySelectorAll('.row').length).toBe(0)
})

test('scrolls to the newest row on append, keeps position when older rows are prepended', () => {
  const comp = render({ messages: [row(5, 'e'), row(6, 'f')] })
  expect(comp.data.anchor).toBe('m1')
  comp.setData({ messages: [row(5, 'e'), row(6, 'f'), row(7, 'g')] })
  expect(comp.data.anchor).toBe('m2')
  comp.setData({ messages: [row(3, 'c'), row(4, 'd'), row(5, 'e'), row(6, 'f'), row(7, 'g')] })
  expect(comp.data.anchor).toBe('m2') // unchanged: the reader stays where they were
  const last = comp.querySelectorAll('.row')[4]
  expect(last._exparserNode.id).toBe('m4')
})

test('"Load earlier messages" fires loadmore, not while loading', async () => {
  const comp = render({ messages: [row(1, 'a')], hasMore: true })
  let n = 0
  comp.addEventListener('loadmore', () => n++)
  const more = comp.querySelector('.more')
  expect(more.dom.textContent).toBe('Load earlier messages')
  more.dispatchEvent('tap')
  await simulate.sleep(0)
  expect(n).toBe(1)
  comp.setData({ loading: true })
  expect(comp.querySelector('.more').dom.textContent).toBe('Loading…')
  comp.querySelector('.more').dispatchEvent('tap')
  await simulate.sleep(0)
  expect(n).toBe(1)
  comp.setData({ hasMore: false })
  expect(comp.querySelector('.more')).toBeFalsy()
})
