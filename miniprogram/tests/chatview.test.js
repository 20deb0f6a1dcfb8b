/**
 * @jest-environment node
 *
 * The pure helpers of the messenger pages: list rows (badge, time, preview,
 * tombstones, drafts, mentions, mute), message rows (ticks, recall, events),
 * long-press and member actions, and the windowed list's setData patches.
 */
'use strict'
const v = require('../utils/chatview')
const w = require('../utils/window')

const NOW = new Date(2026, 11, 3, 15, 30).getTime()
const conv = (extra) => Object.assign({ key: 'd:bob', with: 'bob', kind: 'dm', title: '', seq: 3, ts: NOW - 60000, last: { seq: 3, from: 'bob', name: 'Bob', text: 'hi', ts: NOW - 60000 }, unread: 0, mentions: 0, muted: false, draft: '' }, extra)

test('badge text: nothing for 0, the count, 99+ above 99', () => {
  expect([0, 1, 99, 100, 5000].map(v.badgeText)).toEqual(['', '1', '99', '99+', '99+'])
})

test('list time: HH:MM today, Yesterday, a weekday within a week, else the date', () => {
  expect(v.timeText(new Date(2026, 11, 3, 9, 5).getTime(), NOW)).toBe('09:05')
  expect(v.timeText(new Date(2026, 11, 2, 23, 59).getTime(), NOW)).toBe('Yesterday')
  expect(v.timeText(new Date(2026, 10, 29, 12).getTime(), NOW)).toBe('Sun')
  expect(v.timeText(new Date(2026, 5, 1, 12).getTime(), NOW)).toBe('2026/6/1')
  expect(v.timeText(0, NOW)).toBe('')
})

test('conversation rows: title and initial, preview, unread, mention, mute, draft, tombstones', () => {
  const names = v.learnNames({}, [conv()])
  expect(v.conversationRow(conv({ unread: 3 }), 'me', NOW, names)).toEqual({
    key: 'd:bob', kind: 'dm', title: 'Bob', initial: 'B', preview: 'hi', draft: false, time: '15:29', badge: '3', dot: false, mention: '', muted: false
  })
  const room = { key: 'r:team', room: 'team', kind: 'private', title: 'Team', seq: 9, ts: NOW, unread: 150, mentions: 1, muted: false, draft: '', last: { seq: 9, from: 'carol', name: 'Carol', text: '@me look', ts: NOW } }
  expect(v.conversationRow(room, 'me', NOW, {})).toMatchObject({ title: 'Team', initial: 'T', preview: 'Carol: @me look', badge: '99+', mention: '[@you]' })
  expect(v.conversationRow(Object.assign({}, room, { title: '' }), 'me', NOW, {}).title).toBe('team')
  expect(v.conversationRow(Object.assign({}, room, { muted: true }), 'me', NOW, {})).toMatchObject({ badge: '', dot: true, muted: true })
  expect(v.conversationRow(conv({ draft: 'half a thought' }), 'me', NOW, {})).toMatchObject({ preview: '[draft] half a thought', draft: true })
  expect(v.previewText(conv({ last: { seq: 3, from: 'bob', text: '', recalled: true } }), 'me')).toBe('[message recalled]')
  expect(v.previewText(conv({ last: { seq: 3, from: 'me', text: '', recalled: true } }), 'me')).toBe('you recalled a message')
  expect(v.previewText(conv({ last: null }), 'me')).toBe('')
})

test('message rows: ticks for DMs and rooms, recall tombstones with re-edit, quotes, reactions, events', () => {
  const ctx = { me: 'me', dm: true, names: { bob: 'Bob' }, reedit: {} }
  const mine = { seq: 4, from: 'me', name: 'Me', text: 'yo', ts: NOW, mine: true, status: 'sent' }
  expect(v.messageRow(mine, ctx)).toMatchObject({ key: 's4', type: 'message', mine: true, name: 'you', tick: 'sent', tickTap: false })
  expect(v.messageRow(Object.assign({}, mine, { status: 'read' }), ctx).tick).toBe('read')
  expect(v.messageRow({ seq: null, id: 'm1', from: 'me', text: 'w', mine: true, status: 'pending' }, ctx)).toMatchObject({ key: 'pm1', seq: null, tick: 'sending…' })
  expect(v.messageRow({ seq: null, id: 'm2', from: 'me', text: 'w', mine: true, status: 'failed' }, ctx).tick).toBe('not sent')
  const room = Object.assign({}, ctx, { dm: false })
  expect(v.messageRow(Object.assign({}, mine, { status: 'read', readBy: 2 }), room)).toMatchObject({ tick: 'read by 2', tickTap: true })
  expect(v.messageRow(Object.assign({}, mine, { readBy: 0 }), room)).toMatchObject({ tick: 'sent', tickTap: false })
  expect(v.messageRow({ seq: 5, from: 'bob', name: 'Bob', text: '', recalled: { by: 'bob' }, mine: false }, ctx)).toEqual({ key: 's5', seq: 5, type: 'recalled', mine: false, text: 'Bob recalled a message', reedit: false })
  expect(v.messageRow({ seq: 4, from: 'me', text: '', recalled: { by: 'me' }, mine: true }, Object.assign({}, ctx, { reedit: { 4: 'yo' } }))).toMatchObject({ text: 'you recalled a message', reedit: true })
  const reply = v.messageRow({ seq: 6, from: 'bob', name: 'Bob', text: 'ok', mine: false, quote: { seq: 4, from: 'me', text: 'yo' }, reactions: [{ emoji: '👍', count: 2, me: true }], edited_ts: 1, mentions: ['me'] }, room)
  expect(reply).toMatchObject({ quote: { name: 'you', text: 'yo' }, reactions: [{ emoji: '👍', count: 2, me: true }], edited: true, mentionsMe: true, tick: '' })
  expect(v.messageRow({ seq: 7, event: 'kicked', user: 'carol', by: 'me' }, room)).toEqual({ key: 's7', seq: 7, type: 'event', text: 'You removed carol' })
  expect(v.eventText({ event: 'invited', user: 'me', by: 'bob' }, 'me', { bob: 'Bob' })).toBe('Bob invited you')
  expect(v.eventText({ event: 'role', user: 'bob', role: 'admin' }, 'me', {})).toBe('bob is now an admin')
  expect(v.eventText({ event: 'role', user: 'me', role: 'owner' }, 'me', {})).toBe('You are now the owner')
  expect(v.eventText({ event: 'room_updated', by: 'bob', changes: { title: 'X' } }, 'me', { bob: 'Bob' })).toBe('Bob changed the group name to "X"')
  const at = new Date(2026, 11, 3, 15, 0).getTime()
  expect(v.eventText({ event: 'muted', user: 'bob', by: 'me', until: at + 600000, ts: at }, 'me', { bob: 'Bob' })).toBe('You muted Bob until 15:10')
  expect(v.eventText({ event: 'muted', user: 'me', by: 'bob', until: at + 86400000, ts: at }, 'me', { bob: 'Bob' })).toBe('Bob muted you until 12/4 15:00')
  expect(v.eventText({ event: 'unmuted', user: 'me', by: 'bob' }, 'me', { bob: 'Bob' })).toBe('Bob unmuted you')
})

test('long-press actions: report for someone else\'s message; edit and recall only for my own inside the window', () => {
  const row = { type: 'message', seq: 3, mine: true, ts: NOW - 1000, text: 'hi' }
  const ids = (r, now) => v.messageActions(r, now, 120000).map((a) => a.id)
  // a picture without text: nothing to copy or edit
  const pic = Object.assign({}, row, { text: '', attachments: [{ kind: 'image' }] })
  expect(ids(pic, NOW)).toEqual(['reply', 'react', 'recall'])
  expect(ids(Object.assign({}, pic, { seq: null }), NOW)).toEqual([])
  expect(ids(row, NOW)).toEqual(['reply', 'copy', 'react', 'edit', 'recall'])
  expect(ids(row, NOW + 120000)).toEqual(['reply', 'copy', 'react'])
  expect(ids(Object.assign({}, row, { mine: false }), NOW)).toEqual(['reply', 'copy', 'react', 'report'])
  expect(ids(Object.assign({}, row, { seq: null }), NOW)).toEqual(['copy'])
  expect(ids({ type: 'event', seq: 2 }, NOW)).toEqual([])
})

test('member actions follow the role table: owner sets roles, admins remove those below them', () => {
  const ids = (mine, m) => v.memberActions(mine, m, 'me').map((a) => a.id)
  expect(ids('owner', { user: 'bob', role: 'member' })).toEqual(['dm', 'admin', 'owner', 'kick', 'ban'])
  expect(ids('owner', { user: 'bob', role: 'admin' })).toEqual(['dm', 'member', 'owner', 'kick', 'ban'])
  expect(ids('admin', { user: 'bob', role: 'member' })).toEqual(['dm', 'kick', 'ban'])
  expect(ids('admin', { user: 'bob', role: 'admin' })).toEqual(['dm'])
  expect(ids('member', { user: 'bob', role: 'member' })).toEqual(['dm'])
  expect(ids('owner', { user: 'me', role: 'owner' })).toEqual([])
  expect(v.mayManage('member', 'public', 'invite')).toBe(true)
  expect(v.mayManage('member', 'private', 'invite')).toBe(false)
  expect(v.mayManage('admin', 'private', 'edit')).toBe(true)
  expect(v.failureText({ op: 'recall', error: 'too_late' })).toBe('It is too late to recall this message')
  expect(v.failureText({ kind: 'dm', error: 'no_such_user' })).toBe('There is no such user')
  expect(v.failureText({ kind: 'room', error: 'too_large' })).toBe('Could not send: too_large')
  expect(v.failureText({ kind: 'room', error: 'muted', muted_until: NOW + 600000 }, NOW)).toBe('You are muted for 10 min')
  expect(v.failureText({ kind: 'op', op: 'react', error: 'muted' }, NOW)).toBe('You are muted')
  expect(v.mentionsIn('hi @Bob and @Carol', [{ user: 'b', name: 'Bob' }, { user: 'c', name: 'Cat' }])).toEqual(['b'])
})

describe('the windowed list', () => {
  const rows = (from, to) => {
    const out = []
    for (let s = from; s <= to; s++) out.push({ key: 's' + s, seq: s, text: 't' + s })
    return out
  }

  test('layout: chunks by seq from a fixed base; only the window from `from` is filled; pending last', () => {
    const all = rows(1, 45).concat([{ key: 'px', seq: null, text: 'wait' }])
    const from = w.fromForLast(all, 10, 20)
    expect(from).toBe(1) // seq 36 is in chunk 1 (20..39)
    const l = w.layout(all, { base: 0, size: 20, from })
    expect(l.chunks.map((c) => [c.id, c.rows.length])).toEqual([[0, 0], [1, 20], [2, 6]])
    expect(l.pending.map((r) => r.text)).toEqual(['wait'])
    expect(w.rendered(l)).toBe(27)
    expect(w.layout(all, { base: 1, size: 20, from: 1 }).rebase).toBe(true)
  })

  test('diff: a new message, an edit and an earlier page each set only their paths', () => {
    const opts = { base: 0, size: 20, from: 1 }
    const a = w.layout(rows(1, 45), opts)
    const next = rows(1, 46)
    next[29] = Object.assign({}, next[29], { text: 'edited' }) // seq 30
    const b = w.layout(next, opts)
    expect(w.diff(a, b)).toEqual({ 'chunks[1].rows[10]': next[29], 'chunks[2].rows[6]': next[45] })
    const c = w.layout(next, { base: 0, size: 20, from: 0 })
    expect(Object.keys(w.diff(b, c))).toEqual(rows(1, 19).map((r, i) => 'chunks[0].rows[' + i + ']'))
    const d = w.layout(rows(1, 70), opts)
    expect(Object.keys(w.diff(b, d))).toContain('chunks[3]')
    // my pending entry acked: it leaves `pending` and appears at its seq
    const p1 = w.layout(rows(1, 45).concat([{ key: 'pm', seq: null, text: 'mine' }]), opts)
    const p2 = w.layout(rows(1, 46), opts)
    expect(w.diff(p1, p2)).toEqual({ 'chunks[2].rows[6]': rows(46, 46)[0], pending: [] })
    // the newest chunks leave the window (scrolled far up): they are emptied, not dropped
    const cut = w.layout(rows(1, 45), { base: 0, size: 20, from: 0, length: 3 })
    const cutTo1 = w.layout(rows(1, 39), { base: 0, size: 20, from: 0, length: cut.chunks.length })
    expect(cutTo1.chunks.map((c) => c.rows.length)).toEqual([19, 20, 0])
    expect(w.diff(cut, cutTo1)).toEqual({ 'chunks[2].rows': [] })
  })
})
