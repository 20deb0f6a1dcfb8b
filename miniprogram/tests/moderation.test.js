/**
 * @jest-environment node
 *
 * The pure helpers of the moderation screens (utils/moderation.js): the token's
 * moderator claim, who is muted from a room's events, the words of a mute, and
 * what the "Moderate…" sheet offers by role (never more than wx's 6 items).
 */
'use strict'
const m = require('../utils/moderation')
const { mintToken } = require('./support/jwt')

const NOW = new Date(2026, 11, 3, 15, 30).getTime()
const MIN = 60000

test('isModerator reads the token’s mod claim or roles, like chatd’s is_moderator', () => {
  expect(m.isModerator(mintToken('s', { sub: 'anna', mod: true }))).toBe(true)
  expect(m.isModerator(mintToken('s', { sub: 'anna', roles: ['x', 'moderator'] }))).toBe(true)
  expect(m.isModerator(mintToken('s', { sub: 'anna', mod: 'yes' }))).toBe(false)
  expect(m.isModerator(mintToken('s', { sub: 'bob' }))).toBe(false)
  expect(m.isModerator(null)).toBe(false)
  expect(m.isModerator('not.a-jwt!.x')).toBe(false)
  expect(m.isModerator('a.b')).toBe(false)
  // a non-ASCII name in the claims decodes as UTF-8
  expect(m.tokenClaims(mintToken('s', { sub: 'wx:1', name: '小明 👍' })).name).toBe('小明 👍')
  expect(m.base64Text('aGk')).toBe('hi')
  expect(m.base64Text('aGk=')).toBe('hi')
  expect(m.base64Text('a$')).toBeNull()
})

test('mutedUsers: the latest muted/unmuted event of each user decides; a passed until is over', () => {
  const tl = [
    { seq: 1, from: 'a', text: 'hi' },
    { seq: 2, event: 'muted', user: 'bob', by: 'a', until: NOW + 10 * MIN },
    { seq: 3, event: 'muted', user: 'carol', by: 'a', until: NOW + MIN },
    { seq: 4, event: 'unmuted', user: 'carol', by: 'a' },
    { seq: 5, event: 'muted', user: 'dave', by: 'a', until: NOW - 1 },
    { seq: 6, event: 'muted', user: 'erin', by: 'a', until: NOW + 5 * MIN }
  ]
  const muted = m.mutedUsers(tl, NOW)
  expect(muted).toEqual({ bob: NOW + 10 * MIN, erin: NOW + 5 * MIN })
  expect(m.nextExpiry(muted)).toBe(NOW + 5 * MIN)
  expect(m.nextExpiry({})).toBe(0)
  expect(m.mutedUsers(null, NOW)).toEqual({})
})

test('the words of a mute: until HH:MM (with the date when not today), for how long', () => {
  expect(m.untilText(NOW + 10 * MIN, NOW)).toBe('15:40')
  expect(m.untilText(NOW + 1440 * MIN, NOW)).toBe('12/4 15:30')
  expect(m.mutedNotice(NOW + 10 * MIN, NOW)).toBe('You are muted until 15:40')
  expect(m.mutedMark(NOW + 60 * MIN, NOW)).toBe('Muted until 16:30')
  expect(m.mutedToast(NOW + 10 * MIN, NOW)).toBe('You are muted for 10 min')
  expect(m.mutedToast(NOW - 1, NOW)).toBe('You are muted')
  expect(m.mutedToast(undefined, NOW)).toBe('You are muted')
  expect(m.durationText(1)).toBe('1 s')
  expect(m.durationText(59000)).toBe('59 s')
  expect(m.durationText(61000)).toBe('2 min')
  expect(m.durationText(3600000)).toBe('1 h')
  expect(m.durationText(86400000)).toBe('24 h')
  expect(m.durationText(7 * 86400000)).toBe('7 days')
})

test('the Moderate… sheet: room mutes by rank, Unmute when muted, global actions for moderators', () => {
  const ids = (mine, member, opts) => m.moderateActions(mine, member, 'me', opts).map((a) => a.id)
  const bob = { user: 'bob', role: 'member' }
  expect(ids('owner', bob)).toEqual(['mute600', 'mute3600', 'mute86400'])
  expect(ids('admin', bob, { mutedUntil: NOW })).toEqual(['unmute', 'mute600', 'mute3600', 'mute86400'])
  expect(ids('admin', { user: 'bob', role: 'admin' })).toEqual([]) // an admin cannot mute an admin
  expect(ids('member', bob)).toEqual([])
  expect(ids('member', bob, { moderator: true })).toEqual(['mute600', 'mute3600', 'mute86400', 'muteAll', 'banAll'])
  expect(ids('', { user: 'bob', role: 'owner' }, { moderator: true, mutedUntil: NOW })).toEqual(['unmute', 'mute600', 'mute3600', 'mute86400', 'muteAll', 'banAll'])
  expect(ids('owner', { user: 'me', role: 'owner' }, { moderator: true })).toEqual([])
  // wx.showActionSheet takes at most 6 items
  expect(m.moderateActions('owner', bob, 'me', { moderator: true, mutedUntil: NOW }).length).toBeLessThanOrEqual(m.SHEET_MAX)
  expect(m.MUTES.map((x) => x.label)).toEqual(['Mute 10 min', 'Mute 1 h', 'Mute 1 day'])
  expect(m.BANS.map((x) => x.seconds)).toEqual([86400, 604800, 0])
  expect(m.REPORT_REASONS.map((x) => x.id)).toEqual(['spam', 'abuse', 'other'])
})

test('refusals as toasts', () => {
  expect(m.refusalText({ code: 'rate_limited' })).toBe('Too many reports: try again in a minute')
  expect(m.refusalText({ code: 'no_such_message' })).toBe('That message is gone')
  expect(m.refusalText({ code: 'forbidden' })).toBe('You may not do that')
  expect(m.refusalText(new Error('offline'))).toBe('Not connected')
  expect(m.refusalText({ code: 'bad_request' })).toBe('Refused: bad_request')
})
