/**
 * @jest-environment node
 *
 * ConversationStore (utils/chatd.js): the pure local conversation store the
 * SDK feeds with frames — no socket, no clock.
 */
'use strict'
const { ConversationStore, convKey, convTarget } = require('../utils/chatd')

const msg = (seq, from, text, extra) => Object.assign({ type: 'dm', seq, from, to: from === 'me' ? 'bob' : 'me', name: from, text, ts: 1000 + seq, id: 'i' + seq }, extra)

function store() {
  return new ConversationStore({ me: 'me', tail: 3 })
}

test('keys name rooms and DMs', () => {
  expect(convKey({ room: 'team' })).toBe('r:team')
  expect(convKey({ with: 'bob' })).toBe('d:bob')
  expect(convTarget('r:team')).toEqual({ room: 'team' })
  expect(convTarget('d:bob')).toEqual({ with: 'bob' })
})

test('messages of others count unread and mentions; my own message reads the conversation', () => {
  const s = store()
  s.apply('r:team', { type: 'message', room: 'team', seq: 1, from: 'bob', name: 'Bob', text: 'hi', ts: 1 })
  s.apply('r:team', { type: 'message', room: 'team', seq: 2, from: 'bob', name: 'Bob', text: '@me', ts: 2, mentions: ['me'] })
  s.apply('r:team', { type: 'message', room: 'team', seq: 3, from: 'carol', name: 'C', text: 'all', ts: 3, mentions: ['@all'] })
  expect(s.conv('r:team')).toMatchObject({ seq: 3, unread: 3, mentions: 2, last: { seq: 3, from: 'carol', text: 'all' } })
  s.apply('r:team', { type: 'message', room: 'team', seq: 4, from: 'me', name: 'me', text: 'ok', ts: 4 })
  expect(s.conv('r:team')).toMatchObject({ seq: 4, unread: 0, mentions: 0, read: 4 })
})

test('an older message (a history page) changes neither unread nor last', () => {
  const s = store()
  s.apply('d:bob', msg(5, 'bob', 'new'))
  s.page('d:bob', [{ seq: 2, from: 'me', name: 'me', text: 'old', ts: 2 }], [], true)
  expect(s.conv('d:bob')).toMatchObject({ unread: 1, last: { seq: 5 } })
  expect(s.timeline('d:bob').map((m) => m.seq)).toEqual([2, 5])
  expect(s.more('d:bob')).toBe(true)
  expect(s.oldest('d:bob')).toBe(2)
})

test('recall makes a tombstone (quotes too), edit replaces the text, reactions toggle', () => {
  const s = store()
  s.apply('d:bob', msg(1, 'bob', 'secret'))
  s.apply('d:bob', msg(2, 'me', 'replying', { reply_to: 1 }))
  expect(s.timeline('d:bob')[1].quote).toEqual({ seq: 1, from: 'bob', name: 'bob', text: 'secret' })
  s.apply('d:bob', { type: 'reaction', from: 'me', to: 'bob', seq: 3, target: 1, emoji: '👍', user: 'me', on: true, ts: 3 })
  expect(s.reacted('d:bob', 1, '👍')).toBe(true)
  s.apply('d:bob', { type: 'reaction', from: 'bob', to: 'me', seq: 4, target: 1, emoji: '👍', user: 'bob', on: true, ts: 4 })
  expect(s.timeline('d:bob')[0].reactions).toEqual([{ emoji: '👍', count: 2, me: true }])
  s.apply('d:bob', { type: 'reaction', from: 'me', to: 'bob', seq: 5, target: 1, emoji: '👍', user: 'me', on: false, ts: 5 })
  expect(s.timeline('d:bob')[0].reactions).toEqual([{ emoji: '👍', count: 1, me: false }])
  s.apply('d:bob', { type: 'edited', from: 'me', to: 'bob', seq: 6, target: 2, text: 'replying!', edited_ts: 6, ts: 6 })
  expect(s.timeline('d:bob')[1]).toMatchObject({ text: 'replying!', edited_ts: 6 })
  s.apply('d:bob', { type: 'recalled', from: 'bob', to: 'me', seq: 7, target: 1, by: 'bob', ts: 7 })
  const [first, second] = s.timeline('d:bob')
  expect(first).toMatchObject({ text: '', recalled: { by: 'bob', ts: 7 } })
  expect(first.reactions).toBeUndefined()
  expect(second.quote.text).toBe('')
  expect(s.conv('d:bob').seq).toBe(7)
})

test('a recall of the uncached last message still changes the preview', () => {
  const s = store()
  s.summary({ with: 'bob', kind: 'dm', seq: 9, ts: 9, last: { seq: 9, from: 'bob', text: 'oops', ts: 9 }, unread: 1, read: 8 })
  s.apply('d:bob', { type: 'recalled', from: 'bob', to: 'me', seq: 10, target: 9, by: 'bob', ts: 10 })
  expect(s.conv('d:bob').last).toMatchObject({ seq: 9, text: '', recalled: true })
})

test('events: my role, room updates; room receipts give "read by N", DM receipts the peer marker', () => {
  const s = store()
  s.apply('r:team', { type: 'event', room: 'team', seq: 1, kind: 'created', user: 'me', by: 'me', ts: 1, changes: { kind: 'private', title: 'Team' } })
  s.apply('r:team', { type: 'event', room: 'team', seq: 2, kind: 'role', user: 'me', by: 'boss', ts: 2, role: 'admin' })
  expect(s.conv('r:team')).toMatchObject({ kind: 'private', title: 'Team', role: 'admin', seq: 2 })
  s.apply('r:team', { type: 'message', room: 'team', seq: 3, from: 'me', name: 'me', text: 'x', ts: 3 })
  expect(s.timeline('r:team')[2]).toMatchObject({ mine: true, status: 'sent', readBy: 0 })
  s.receipt('r:team', 'bob', 3)
  s.receipt('r:team', 'carol', 2)
  expect(s.readBy('r:team', 3)).toEqual({ count: 1, users: ['bob'] })
  expect(s.timeline('r:team')[2]).toMatchObject({ status: 'read', readBy: 1 })
  s.apply('d:bob', msg(1, 'me', 'hi'))
  expect(s.timeline('d:bob')[0].status).toBe('sent')
  s.receipt('d:bob', 'bob', 1)
  expect(s.timeline('d:bob')[0].status).toBe('read')
})

test('readLocally clears what is read; the list is newest first; muted unread is not in the total', () => {
  const s = store()
  s.apply('d:bob', msg(1, 'bob', 'a'))
  s.apply('d:bob', msg(2, 'bob', 'b'))
  s.apply('r:team', { type: 'message', room: 'team', seq: 1, from: 'x', name: 'x', text: 'y', ts: 5000 })
  expect(s.list().map((c) => c.key)).toEqual(['r:team', 'd:bob'])
  s.readLocally('d:bob', 1)
  expect(s.conv('d:bob').unread).toBe(1)
  expect(s.totalUnread()).toBe(2)
  s.conv('r:team').muted = true
  expect(s.totalUnread()).toBe(1)
})

test('snapshot keeps the newest `tail` items and loads back; reset keeps drafts', () => {
  const s = store()
  for (let i = 1; i <= 5; i++) s.apply('d:bob', msg(i, 'bob', 't' + i))
  s.conv('d:bob').draft = 'unsent'
  s.receipt('r:none', 'x', 1) // unknown conversation: ignored
  const t = store()
  t.load(JSON.parse(JSON.stringify(s.snapshot())))
  expect(t.timeline('d:bob').map((m) => m.seq)).toEqual([3, 4, 5])
  expect(t.more('d:bob')).toBe(true)
  expect(t.conv('d:bob')).toMatchObject({ unread: 5, draft: 'unsent' })
  const drafts = t.reset()
  expect(t.list()).toEqual([])
  expect(drafts.get('d:bob')).toBe('unsent')
})

test('a summary from chatd (its last has text only) keeps the media kind of the cached message it names', () => {
  const s = store()
  s.apply('d:bob', msg(1, 'bob', '', { attachments: [{ media_id: 'a', kind: 'voice' }] }))
  s.summary({ with: 'bob', kind: 'dm', seq: 1, unread: 1, last: { seq: 1, from: 'bob', name: 'bob', text: '', ts: 1001 } })
  expect(s.conv('d:bob').last).toMatchObject({ seq: 1, text: '', media: 'voice' })
  // a last message that is not cached stays as chatd sent it
  s.summary({ with: 'carol', kind: 'dm', seq: 4, last: { seq: 4, from: 'carol', text: '', ts: 5 } })
  expect(s.conv('d:carol').last.media).toBeUndefined()
  // nor does a text message get a kind
  s.apply('d:bob', msg(2, 'bob', 'plain'))
  s.summary({ with: 'bob', kind: 'dm', seq: 2, last: { seq: 2, from: 'bob', text: 'plain', ts: 1002 } })
  expect(s.conv('d:bob').last.media).toBeUndefined()
})

test('list(pending) adds the DMs only my outbox has, newest entry first, once (none for a peer that does not exist); rooms and known DMs as the store has them', () => {
  const s = store()
  s.apply('d:bob', msg(5, 'bob', 'new')) // ts 1005
  s.apply('r:team', { type: 'message', room: 'team', seq: 1, from: 'bob', name: 'Bob', text: 'hi', ts: 1001 })
  const pending = [
    { id: 'a', kind: 'dm', to: 'carol', text: 'first', ts: 1003, status: 'pending' },
    { id: 'b', kind: 'dm', to: 'carol', text: '', ts: 1004, status: 'failed', upload: { kind: 'voice', file: 'f' } },
    { id: 'c', kind: 'dm', to: 'bob', text: 'known peer', ts: 2000, status: 'pending' },
    { id: 'd', kind: 'room', room: 'elsewhere', text: 'not a member per the store', ts: 3000, status: 'pending' },
    { id: 'e', kind: 'dm', to: 'erin', text: '', ts: 1000, status: 'pending', attachments: [{ media_id: 'm', kind: 'file' }] },
    { id: 'f', kind: 'dm', to: 'nobody', text: 'hello?', ts: 5000, status: 'failed', error: 'no_such_user' }
  ]
  expect(s.list(pending).map((c) => c.key)).toEqual(['d:bob', 'd:carol', 'r:team', 'd:erin'])
  const [carol, erin] = ['d:carol', 'd:erin'].map((k) => s.list(pending).find((c) => c.key === k))
  expect(carol).toMatchObject({ with: 'carol', kind: 'dm', local: true, seq: 0, ts: 1004, unread: 0, last: { seq: null, from: 'me', text: '', ts: 1004, media: 'voice' } })
  expect(erin.last.media).toBe('file')
  expect(s.list(pending).find((c) => c.key === 'd:bob').local).toBeUndefined()
  expect(s.list().map((c) => c.key)).toEqual(['d:bob', 'r:team'])
  expect(s.has('d:carol')).toBe(false) // listing adds nothing to the store
})
