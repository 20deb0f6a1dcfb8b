/**
 * <member-grid> and <people-picker>: the room-info member grid (initials,
 * names, "(you)", role labels, online style, select on tap) and the picker of
 * DM peers (check marks, toggle on tap, empty text).
 */
const path = require('path')
const simulate = require('miniprogram-simulate')

const ROOT = path.resolve(__dirname, '..', '..')
const gridId = simulate.load(path.join(ROOT, 'components/member-grid/member-grid'), { rootPath: ROOT })
const peopleId = simulate.load(path.join(ROOT, 'components/people-picker/people-picker'), { rootPath: ROOT })
const qa = (node, cls) => Array.from((node.dom || node).querySelectorAll('.main--' + cls))

function render(id, props) {
  const comp = simulate.render(id, props)
  comp.attach(document.createElement('parent-wrapper'))
  return comp
}

test('member-grid: one cell per member with initial, name, (you), role label, mute mark; tap → select', async () => {
  const comp = render(gridId, {
    me: 'wx:o-a',
    members: [
      { user: 'wx:o-a', name: 'alice', role: 'owner', online: true },
      { user: 'wx:o-b', name: 'Bob', role: 'admin', online: false, muted: 'Muted until 15:40' },
      { user: 'wx:o-c', name: '', role: 'member', online: true }
    ]
  })
  expect(qa(comp, 'avatar').map((n) => n.textContent)).toEqual(['A', 'B', 'W'])
  expect(qa(comp, 'name').map((n) => n.textContent)).toEqual(['alice (you)', 'Bob', 'wx:o-c'])
  expect(qa(comp, 'role').map((n) => n.textContent)).toEqual(['Owner', 'Admin'])
  expect(qa(comp, 'muted').map((n) => n.textContent)).toEqual(['Muted until 15:40'])
  expect(qa(comp, 'avatar')[1].className).not.toContain('online')
  const picked = []
  comp.addEventListener('select', (e) => picked.push(e.detail.user))
  comp.querySelectorAll('.cell')[1].dispatchEvent('tap')
  await simulate.sleep(0)
  expect(picked).toEqual(['wx:o-b'])
})

test('people-picker: check marks, toggle on tap, the empty text', async () => {
  const comp = render(peopleId, { people: [{ user: 'b', name: 'Bob', checked: true }, { user: 'c', name: 'Carol', checked: false }] })
  expect(qa(comp, 'name').map((n) => n.textContent)).toEqual(['Bob', 'Carol'])
  expect(qa(comp, 'check').map((n) => n.textContent)).toEqual(['✓', ''])
  const toggled = []
  comp.addEventListener('toggle', (e) => toggled.push(e.detail.user))
  comp.querySelectorAll('.person')[1].dispatchEvent('tap')
  await simulate.sleep(0)
  expect(toggled).toEqual(['c'])
  comp.setData({ people: [], emptyText: 'Nobody' })
  expect(qa(comp, 'empty').map((n) => n.textContent)).toEqual(['Nobody'])
})
