/**
 * The moderation screens of the messenger pages (docs/protocol.md,
 * "Moderation"; docs/miniprogram.md, "Moderation screens"):
 *
 * - pure helpers (no wx, no I/O; the clock is passed in as `now`, ms): report
 *   reasons, mute durations, who is muted in a room (from the timeline's
 *   `muted`/`unmuted` events), whether the login token makes me a global
 *   moderator, what the "Moderate…" sheet of a member offers, the words of a
 *   mute;
 * - the small flows the pages share: `reportMessage` (reason sheet → `report`
 *   → toast) and `muteTracker` (is my composer muted in a conversation, and
 *   until when; a timer ends it).
 */
'use strict'

const { clock } = require('./conversation')
const { entryKey } = require('./chatd')

/** The reasons offered by "Report" (chatd takes any string of at most 500 characters). */
const REPORT_REASONS = [
  { id: 'spam', label: 'Spam' },
  { id: 'abuse', label: 'Abuse' },
  { id: 'other', label: 'Other' }
]

/** Room mutes offered to owners and admins. */
const MUTES = [
  { id: 'mute600', label: 'Mute 10 min', seconds: 600 },
  { id: 'mute3600', label: 'Mute 1 h', seconds: 3600 },
  { id: 'mute86400', label: 'Mute 1 day', seconds: 86400 }
]

/** Durations of "Mute everywhere…" (global moderators). */
const GLOBAL_MUTES = MUTES.map((m) => ({ id: m.id, label: m.label.replace('Mute', 'Everywhere'), seconds: m.seconds }))

/** Durations of "Ban everywhere…" (global moderators); no seconds: for good. */
const BANS = [
  { id: 'ban86400', label: 'Ban 1 day', seconds: 86400 },
  { id: 'ban604800', label: 'Ban 7 days', seconds: 604800 },
  { id: 'banForever', label: 'Ban for good', seconds: 0 }
]

/** wx.showActionSheet shows at most this many items. */
const SHEET_MAX = 6

const RANK = { owner: 3, admin: 2, member: 1 }

/** The characters of base64url, by value. */
const B64 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_'

/** Decodes base64url (or base64) `s` as UTF-8 text; null when it is not base64. */
function base64Text(s) {
  const clean = String(s).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '')
  let bits = 0
  let value = 0
  let hex = ''
  for (let i = 0; i < clean.length; i++) {
    const v = B64.indexOf(clean.charAt(i))
    if (v < 0) return null
    value = (value << 6) | v
    bits += 6
    if (bits >= 8) {
      bits -= 8
      const byte = (value >> bits) & 0xff
      hex += '%' + (byte < 16 ? '0' : '') + byte.toString(16)
    }
  }
  try {
    return decodeURIComponent(hex)
  } catch (e) {
    return null
  }
}

/**
 * The claims of a JWT (its middle part, not verified: chatd verifies, the app
 * only decides what to show), or null.
 */
function tokenClaims(token) {
  const parts = typeof token === 'string' ? token.split('.') : []
  if (parts.length !== 3) return null
  const text = base64Text(parts[1])
  if (text === null) return null
  try {
    const claims = JSON.parse(text)
    return claims && typeof claims === 'object' ? claims : null
  } catch (e) {
    return null
  }
}

/**
 * Does the login token make me a global moderator? chatd's rule
 * (chatd/modrules.py `is_moderator`): `"mod": true` or `"moderator"` in `roles`.
 * chatd checks again on every request; this only shows the moderator actions.
 */
function isModerator(token) {
  const c = tokenClaims(token)
  if (!c) return false
  return c.mod === true || (Array.isArray(c.roles) && c.roles.indexOf('moderator') >= 0)
}

/**
 * Who is muted in a room, from its timeline (`chat.timeline(key)`): the latest
 * `muted`/`unmuted` event of each user decides; a mute whose `until` passed
 * is over. Returns `{user: until}` (ms).
 */
function mutedUsers(timeline, now) {
  const last = {}
  ;(timeline || []).forEach((x) => {
    if (x.event === 'muted' || x.event === 'unmuted') last[x.user] = x
  })
  const out = {}
  Object.keys(last).forEach((user) => {
    const e = last[user]
    if (e.event === 'muted' && typeof e.until === 'number' && e.until > now) out[user] = e.until
  })
  return out
}

/** The earliest of `{user: until}`, or 0. */
function nextExpiry(muted) {
  return Object.keys(muted).reduce((t, u) => (!t || muted[u] < t ? muted[u] : t), 0)
}

/** "HH:MM" for a time today, else "M/D HH:MM". */
function untilText(until, now) {
  const d = new Date(until)
  const today = new Date(now)
  const sameDay = d.getFullYear() === today.getFullYear() && d.getMonth() === today.getMonth() && d.getDate() === today.getDate()
  return (sameDay ? '' : d.getMonth() + 1 + '/' + d.getDate() + ' ') + clock(until)
}

/** How long `ms` is, in words: "45 s", "10 min", "3 h", "2 days" (rounded up). */
function durationText(ms) {
  const s = Math.max(1, Math.ceil(ms / 1000))
  if (s < 60) return s + ' s'
  const min = Math.ceil(s / 60)
  if (min < 60) return min + ' min'
  const h = Math.ceil(min / 60)
  if (h < 48) return h + ' h'
  return Math.ceil(h / 24) + ' days'
}

/** The composer's notice while I am muted. */
function mutedNotice(until, now) {
  return 'You are muted until ' + untilText(until, now)
}

/** The toast of a send (or edit, reaction) refused with `muted`. */
function mutedToast(until, now) {
  if (typeof until !== 'number' || until <= now) return 'You are muted'
  return 'You are muted for ' + durationText(until - now)
}

/** The member grid's mark of a muted member. */
function mutedMark(until, now) {
  return 'Muted until ' + untilText(until, now)
}

/**
 * What the "Moderate…" sheet offers me for member `m` ({user, role}) of a room
 * where my role is `mine`: room mutes (owners and admins above the member, or a
 * global moderator), "Unmute" when `mutedUntil` says the member is muted, and for
 * global moderators "Mute everywhere…" and "Ban everywhere…". `[{id, label}]`,
 * at most SHEET_MAX; [] for myself.
 */
function moderateActions(mine, m, me, opts) {
  const o = opts || {}
  if (m.user === me) return []
  const out = []
  const roomMod = o.moderator || ((RANK[mine] || 0) >= RANK.admin && (RANK[m.role] || 0) < RANK[mine])
  if (roomMod) {
    if (o.mutedUntil) out.push({ id: 'unmute', label: 'Unmute' })
    MUTES.forEach((x) => out.push({ id: x.id, label: x.label }))
  }
  if (o.moderator) {
    out.push({ id: 'muteAll', label: 'Mute everywhere…' })
    out.push({ id: 'banAll', label: 'Ban everywhere…' })
  }
  return out
}

/** The words of a moderation request chatd refused (or `offline`). */
function refusalText(e) {
  const code = (e && (e.code || e.message)) || 'error'
  if (code === 'offline') return 'Not connected'
  if (code === 'rate_limited') return 'Too many reports: try again in a minute'
  if (code === 'no_such_message') return 'That message is gone'
  if (code === 'forbidden') return 'You may not do that'
  return 'Refused: ' + code
}

/** wx.showActionSheet of `items` ([{label}]); resolves with the chosen item, or null (cancel). */
function pick(wxApi, items) {
  return new Promise((resolve) => {
    wxApi.showActionSheet({
      itemList: items.map((x) => x.label),
      success: (res) => resolve(items[res.tapIndex] || null),
      fail: () => resolve(null)
    })
  })
}

/**
 * "Report": the reasons sheet, then `chat.report(key, seq, reason)` and a toast
 * ("Reported", or why not). Resolves with chatd's answer, or null.
 */
function reportMessage(wxApi, chat, key, seq) {
  return pick(wxApi, REPORT_REASONS).then((reason) => {
    if (!reason) return null
    return chat.report(key, seq, reason.id).then(
      (answer) => {
        wxApi.showToast({ title: 'Reported', icon: 'success' })
        return answer
      },
      (e) => {
        wxApi.showToast({ title: refusalText(e), icon: 'none' })
        return null
      }
    )
  })
}

/**
 * Is my composer in conversation `key` muted? Follows the SDK's `failed`
 * entries refused with `muted` (their `muted_until`) and the room's `muted` /
 * `unmuted` events about me; a timer ends the mute at its `until`. `onChange`
 * gets the until (ms) or 0. `env`: `{now, setTimeout, clearTimeout}`.
 * Returns `{until(), clear(), stop()}` (`clear`: try again now, e.g. after a
 * global unmute, which no event announces).
 */
function muteTracker(chat, key, onChange, env) {
  let until = 0
  let timer = null
  const set = (t) => {
    const next = t > env.now() ? t : 0
    if (timer) env.clearTimeout(timer)
    timer = next ? env.setTimeout(() => set(0), next - env.now() + 50) : null
    if (next === until) return
    until = next
    onChange(until)
  }
  // what is known when the page opens: the room's events, else my refused entries
  const me = chat.user
  const events = (chat.timeline(key) || []).filter((x) => (x.event === 'muted' || x.event === 'unmuted') && x.user === me)
  const refused = (chat.failed || []).filter((x) => x.error === 'muted' && entryKey(x) === key)
  if (events.length) set(mutedUsers(events, env.now())[me] || 0)
  else set(refused.reduce((t, x) => Math.max(t, x.muted_until || 0), 0))
  const offs = [
    chat.on('failed', (e) => {
      if (e.error === 'muted' && entryKey(e) === key) set(Math.max(until, e.muted_until || 0))
    }),
    chat.on('event', (e) => {
      if (e.key !== key || e.user !== me) return
      if (e.kind === 'muted') set(e.until || 0)
      else if (e.kind === 'unmuted') set(0)
    })
  ]
  return {
    until: () => until,
    clear: () => set(0),
    stop() {
      offs.forEach((off) => off())
      if (timer) env.clearTimeout(timer)
      timer = null
    }
  }
}

module.exports = {
  REPORT_REASONS,
  MUTES,
  GLOBAL_MUTES,
  BANS,
  SHEET_MAX,
  base64Text,
  tokenClaims,
  isModerator,
  mutedUsers,
  nextExpiry,
  untilText,
  durationText,
  mutedNotice,
  mutedToast,
  mutedMark,
  moderateActions,
  refusalText,
  pick,
  reportMessage,
  muteTracker
}
