/**
 * Pure presentation helpers of the messenger pages (conversations, chat, room
 * info): what a conversation row, a message row or a timeline event shows,
 * which actions a long-press offers, and who may do what to a member. No wx,
 * no I/O; the clock is passed in as `now` (ms).
 */
'use strict'

const { clock } = require('./conversation')
const { mediaPreview, attachmentRow, uploadRow } = require('./media')
const { mutedToast, untilText } = require('./moderation')

const WEEKDAYS = ['Sun', 'Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat']
const DAY = 86400000

/** The unread badge: '' for none, '99+' above 99. */
function badgeText(n) {
  if (!n || n <= 0) return ''
  return n > 99 ? '99+' : String(n)
}

function dayStart(ts) {
  const d = new Date(ts)
  d.setHours(0, 0, 0, 0)
  return d.getTime()
}

/** WeChat's list time: "HH:MM" today, "Yesterday", a weekday within a week, else "YYYY/M/D". */
function timeText(ts, now) {
  if (typeof ts !== 'number' || !ts) return ''
  const days = Math.round((dayStart(now) - dayStart(ts)) / DAY)
  if (days <= 0) return clock(ts)
  if (days === 1) return 'Yesterday'
  if (days < 7) return WEEKDAYS[new Date(ts).getDay()]
  const d = new Date(ts)
  return d.getFullYear() + '/' + (d.getMonth() + 1) + '/' + d.getDate()
}

/** The display name of user `user`: "you", a known name, else the id. */
function nameOf(user, me, names) {
  if (user === me) return 'you'
  return (names && names[user]) || user || ''
}

/** The title of a conversation summary: the room's title or name, the DM peer's name. */
function titleOf(c, names) {
  if (c.kind === 'dm') return (names && names[c.with]) || c.title || c.with
  return c.title || c.room
}

/** The avatar initial: the first character (code point) of the title, upper-cased. */
function initialOf(title) {
  const first = Array.from(String(title || '?'))[0] || '?'
  return first.toUpperCase()
}

/** The list's last-message preview (draft, tombstone, sender prefix in rooms). */
function previewText(c, me, names) {
  if (c.draft) return '[draft] ' + c.draft
  const last = c.last
  if (!last) return ''
  if (last.recalled) return last.from === me ? 'you recalled a message' : '[message recalled]'
  // a message of attachments: "[Image]" (with its text after it, if any)
  const text = last.media ? mediaPreview(last.media) + (last.text ? ' ' + last.text : '') : last.text || ''
  if (c.kind !== 'dm' && last.from && last.from !== me) return (last.name || nameOf(last.from, me, names)) + ': ' + text
  return text
}

/** One row of the conversation list for summary `c`. */
function conversationRow(c, me, now, names) {
  const title = titleOf(c, names)
  return {
    key: c.key,
    kind: c.kind,
    title,
    initial: initialOf(title),
    preview: previewText(c, me, names),
    draft: !!c.draft,
    time: timeText(c.ts || (c.last && c.last.ts), now),
    badge: c.muted ? '' : badgeText(c.unread),
    dot: !!c.muted && c.unread > 0,
    mention: c.mentions > 0 && c.unread > 0 ? '[@you]' : '',
    muted: !!c.muted
  }
}

/** Remembers the display names that summaries and timeline items carry. */
function learnNames(names, items) {
  ;(items || []).forEach((m) => {
    if (m && m.from && m.name) names[m.from] = m.name
    if (m && m.last && m.last.from && m.last.name) names[m.last.from] = m.last.name
  })
  return names
}

/** A centred grey line for a membership or room event. */
function eventText(e, me, names) {
  const who = nameOf(e.user, me, names)
  const by = nameOf(e.by, me, names)
  // "You" at the start of a line; names keep their own case
  const Who = e.user === me ? 'You' : who
  const By = e.by === me ? 'You' : by
  switch (e.event) {
    case 'created':
      return Who + ' created the group'
    case 'joined':
      return Who + ' joined'
    case 'invited':
      return By + ' invited ' + who
    case 'left':
      return Who + ' left'
    case 'kicked':
      return By + ' removed ' + who
    case 'banned':
      return By + ' banned ' + who
    case 'unbanned':
      return By + ' unbanned ' + who
    case 'muted':
      return By + ' muted ' + who + (typeof e.until === 'number' ? ' until ' + untilText(e.until, e.ts || e.until) : '')
    case 'unmuted':
      return By + ' unmuted ' + who
    case 'role':
      return Who + (e.user === me ? ' are' : ' is') + ' now ' + (e.role === 'admin' ? 'an admin' : e.role === 'owner' ? 'the owner' : 'a member')
    case 'room_updated': {
      const ch = e.changes || {}
      if (ch.title) return By + ' changed the group name to "' + ch.title + '"'
      if (ch.topic !== undefined) return By + ' changed the topic'
      return By + ' changed the group'
    }
    default:
      return e.event
  }
}

/** The tick under my message: "sending…", "not sent", "sent", "read", "read by N". */
function tickOf(m, isDm) {
  if (!m.mine) return ''
  if (m.status === 'pending') return 'sending…'
  if (m.status === 'failed') return 'not sent'
  if (isDm) return m.status === 'read' ? 'read' : 'sent'
  return m.readBy > 0 ? 'read by ' + m.readBy : 'sent'
}

/**
 * The row the chat page renders for timeline item `m` (a message, an event or
 * my pending/failed entry). `ctx`: `{me, dm, names, reedit, mediaUrl, fresh}`
 * (`reedit`: the seqs of my messages recalled from this page, whose text may be
 * re-edited; `mediaUrl(path)`: absolute attachment URLs; `fresh`: refreshed
 * attachment fields by media id, utils/media.js attachmentRow; `played`: the
 * voice messages played on this phone, by media id — the others' unplayed ones
 * get `unplayed`).
 */
function messageRow(m, ctx) {
  const key = m.seq !== null && m.seq !== undefined ? 's' + m.seq : 'p' + m.id
  if (m.event) return { key, seq: m.seq, type: 'event', text: eventText(m, ctx.me, ctx.names) }
  const mine = !!m.mine
  if (m.recalled) {
    const text = mine ? 'you recalled a message' : (m.name || nameOf(m.from, ctx.me, ctx.names)) + ' recalled a message'
    return { key, seq: m.seq, type: 'recalled', mine, text, reedit: !!(mine && ctx.reedit && ctx.reedit[m.seq] !== undefined) }
  }
  const row = {
    key,
    seq: m.seq === undefined ? null : m.seq,
    type: 'message',
    mine,
    from: m.from,
    name: mine ? 'you' : m.name || nameOf(m.from, ctx.me, ctx.names),
    initial: initialOf(mine ? ctx.myName || m.name || m.from : m.name || m.from),
    text: m.text,
    time: clock(m.ts),
    ts: m.ts || 0,
    status: m.status || '',
    tick: tickOf(m, ctx.dm),
    tickTap: !ctx.dm && mine && m.readBy > 0,
    edited: !!m.edited_ts,
    mentionsMe: Array.isArray(m.mentions) && (m.mentions.indexOf(ctx.me) >= 0 || m.mentions.indexOf('@all') >= 0),
    quote: m.quote ? { name: m.quote.from === ctx.me ? 'you' : m.quote.name || m.quote.from, text: m.quote.text || '[message recalled]' } : null,
    reactions: (m.reactions || []).map((r) => ({ emoji: r.emoji, count: r.count, me: !!r.me })),
    attachments: (m.attachments || []).map((a) => attachmentRow(a, ctx.mediaUrl || ((p) => p), ctx.fresh))
  }
  // my picture, voice or file still uploading (SDK sendMedia): the progress, or why it failed
  if (m.upload) row.upload = uploadRow(m.upload, m.status)
  // someone else's voice message I have not played yet has a red dot (ctx.played: media id -> true)
  if (!mine && ctx.played) row.attachments.forEach((a) => a.kind === 'voice' && !ctx.played[a.id] && (a.unplayed = true))
  // pictures alone are shown without a bubble, as in WeChat
  row.bare = !row.text && !row.quote && row.attachments.length > 0 && row.attachments.every((a) => a.kind === 'image')
  return row
}

/** The emoji offered by "React". */
const REACTIONS = ['👍', '❤️', '😂', '😮', '😢', '🙏']

/**
 * The long-press actions for message row `row`: reply and copy for every sent
 * message, react, report for someone else's, and edit and recall for my own
 * inside the recall window.
 * Returns `[{id, label}]`.
 */
function messageActions(row, now, recallWindowMs) {
  if (row.type !== 'message') return []
  // a picture, voice or file without text has nothing to copy or edit
  const text = !!row.text
  if (row.seq === null) return text ? [{ id: 'copy', label: 'Copy' }] : []
  const out = [{ id: 'reply', label: 'Reply' }]
  if (text) out.push({ id: 'copy', label: 'Copy' })
  out.push({ id: 'react', label: 'React' })
  if (!row.mine) out.push({ id: 'report', label: 'Report' }) // utils/moderation.js reportMessage
  if (row.mine && now - row.ts <= recallWindowMs) {
    if (text) out.push({ id: 'edit', label: 'Edit' })
    out.push({ id: 'recall', label: 'Recall' })
  }
  return out
}

const RANK = { owner: 3, admin: 2, member: 1 }

/**
 * What I (role `mine`) may do to member `m` ({user, role}) of a room: the
 * room-info action sheet. Returns `[{id, label}]` (docs/protocol.md, "Room kinds
 * and roles": kick/ban below oneself for admins and owner, roles by the owner).
 */
function memberActions(mine, m, me) {
  if (m.user === me) return []
  const out = [{ id: 'dm', label: 'Send a message' }]
  const myRank = RANK[mine] || 0
  const theirs = RANK[m.role] || 0
  if (mine === 'owner') {
    if (m.role === 'member') out.push({ id: 'admin', label: 'Make admin' })
    if (m.role === 'admin') out.push({ id: 'member', label: 'Remove admin' })
    out.push({ id: 'owner', label: 'Make owner' })
  }
  if (myRank >= RANK.admin && theirs < myRank) {
    out.push({ id: 'kick', label: 'Remove from group' })
    out.push({ id: 'ban', label: 'Ban' })
  }
  return out
}

/** Can role `mine` invite into / edit a room of `kind`? */
function mayManage(mine, kind, action) {
  const rank = RANK[mine] || 0
  if (action === 'invite' && kind === 'public') return rank >= RANK.member
  return rank >= RANK.admin
}

/**
 * The `mentions` of a text: the users picked from the @ picker whose "@name"
 * is still in it.
 */
function mentionsIn(text, picked) {
  const out = []
  ;(picked || []).forEach((p) => {
    if (text.indexOf('@' + p.name) >= 0 && out.indexOf(p.user) < 0) out.push(p.user)
  })
  return out
}

/**
 * The people I have DMs with (newest first), minus `exclude` (user ids): whom a
 * new group or an invite is picked from. `[{user, name}]`.
 */
function dmPeers(conversations, names, exclude) {
  const skip = new Set(exclude || [])
  return conversations.filter((c) => c.kind === 'dm' && !skip.has(c.with)).map((c) => ({ user: c.with, name: titleOf(c, names) }))
}

/** A default group title from the members' names (at most 64 characters). */
function groupTitle(names) {
  const t = names.join(', ')
  return t.length > 64 ? t.slice(0, 63) + '…' : t
}

/** The words of a failed operation, as a toast (`now`: for how long a mute lasts). */
function failureText(e, now) {
  const op = e.op || 'send'
  if (e.error === 'muted') return mutedToast(e.muted_until, now)
  if (e.error === 'too_late') return 'It is too late to ' + op + ' this message'
  if (e.error === 'forbidden') return 'You may not ' + op + ' this message'
  if (e.error === 'no_such_message') return 'That message is gone'
  if (e.error === 'no_such_user') return 'There is no such user'
  return 'Could not ' + op + ': ' + e.error
}

module.exports = {
  REACTIONS,
  badgeText,
  timeText,
  nameOf,
  titleOf,
  initialOf,
  previewText,
  conversationRow,
  learnNames,
  eventText,
  tickOf,
  messageRow,
  messageActions,
  memberActions,
  mayManage,
  mentionsIn,
  dmPeers,
  groupTitle,
  failureText
}
