/**
 * Pure helpers that turn SDK events into the rows the message-list component
 * renders, and merge them without duplicates (keyed by sender + client id, or
 * by seq when the sender gave no id).
 */
'use strict'

function pad(n) {
  return n < 10 ? '0' + n : String(n)
}

/** "HH:MM" in local time for a millisecond timestamp. */
function clock(ts) {
  if (typeof ts !== 'number') return ''
  const d = new Date(ts)
  return pad(d.getHours()) + ':' + pad(d.getMinutes())
}

/**
 * The merge key of a message or outbox entry. Client ids are unique per
 * sender, so own messages (outbox entries, acks, own messages echoed from
 * other devices or replayed) key on the id alone — an entry queued before the
 * welcome has no `from` yet — and others' on sender + id; id-less messages key
 * on seq.
 */
function keyOf(m, me) {
  const own = !!m.kind || (!!me && m.from === me)
  if (m.id && own) return 'own:' + m.id
  if (m.id) return 'id:' + m.from + ':' + m.id
  return 'seq:' + m.seq
}

/** A row for a server message (`message`, `dm`, history item) or an outbox entry. */
function toRow(m, me) {
  return {
    key: keyOf(m, me),
    seq: typeof m.seq === 'number' ? m.seq : null,
    from: m.kind ? me || m.from : m.from,
    name: m.name || (m.kind ? me || m.from : m.from) || 'me',
    text: m.text,
    ts: m.ts,
    time: clock(m.ts),
    mine: !!m.kind || (!!me && m.from === me),
    status: m.status || 'sent'
  }
}

/**
 * Merges `rows` into `list`: a row with a known key replaces the old one;
 * the result is sorted by seq, rows without a seq (pending) last in the
 * order they were added.
 */
function merge(list, rows) {
  const byKey = new Map()
  list.forEach((r, i) => byKey.set(r.key, Object.assign({ _o: i }, r)))
  let n = list.length
  rows.forEach((r) => {
    const old = byKey.get(r.key)
    byKey.set(r.key, Object.assign({ _o: old ? old._o : n++ }, r))
  })
  const out = Array.from(byKey.values())
  out.sort((a, b) => {
    if (a.seq !== null && b.seq !== null) return a.seq - b.seq
    if (a.seq === null && b.seq === null) return a._o - b._o
    return a.seq === null ? 1 : -1
  })
  return out.map((r) => {
    const c = Object.assign({}, r)
    delete c._o
    return c
  })
}

module.exports = { clock, keyOf, toRow, merge }
