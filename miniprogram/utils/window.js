/**
 * The chat page's windowed message list, and the `setData` patch between two
 * renderings of it (pure: no wx).
 *
 * Rows with a `seq` live in chunks of `size` seqs: chunk `i` holds the rows
 * whose `floor(seq / size) - base === i`. A chunk's index never changes while
 * the page is open (`base` is fixed), so a new message, an ack, a recall or a
 * receipt changes one path (`chunks[7].rows[3]`), and an earlier page fills
 * chunks that are already there (empty until then) — the page never sets the
 * whole list. Only the chunks from `from` (an absolute chunk number) on are
 * rendered: the window; earlier rows stay out of the page's data until the user
 * scrolls up. My pending and failed entries (no seq) are `pending`, after the
 * chunks.
 */
'use strict'

/** The absolute chunk of `seq`. */
function chunkOf(seq, size) {
  return Math.floor(seq / size)
}

/**
 * The window's first chunk so that at least `n` of `rows` (ascending, seq rows
 * first) are rendered.
 */
function fromForLast(rows, n, size) {
  const withSeq = rows.filter((r) => r.seq !== null)
  if (!withSeq.length) return 0
  const i = Math.max(0, withSeq.length - n)
  return chunkOf(withSeq[i].seq, size)
}

/**
 * Lays `rows` out: `{chunks: [{id, rows}], pending, rebase}`, with at least
 * `opts.length` chunks (the previous layout's: chunks never go away, a chunk
 * left out of the window is empty). `rebase` is true when a row falls before
 * `base` (the page then chooses a new base and sets the list once).
 */
function layout(rows, opts) {
  const { base, size, from } = opts
  const chunks = []
  const pending = []
  let rebase = false
  rows.forEach((r) => {
    if (r.seq === null || r.seq === undefined) {
      pending.push(r)
      return
    }
    const c = chunkOf(r.seq, size)
    if (c < base) {
      rebase = true
      return
    }
    if (c < from) return
    const i = c - base
    while (chunks.length <= i) chunks.push({ id: base + chunks.length, rows: [] })
    chunks[i].rows.push(r)
  })
  while (chunks.length < (opts.length || 0)) chunks.push({ id: base + chunks.length, rows: [] })
  return { chunks, pending, rebase }
}

function same(a, b) {
  return JSON.stringify(a) === JSON.stringify(b)
}

/** Patch entries turning list `prev` into `next` at `path` (per index; appends are new indices). */
function diffList(prev, next, path, patch) {
  if (next.length < prev.length) {
    patch[path] = next
    return
  }
  next.forEach((row, j) => {
    if (j >= prev.length || !same(prev[j], row)) patch[path + '[' + j + ']'] = row
  })
}

/**
 * The `setData` patch from layout `prev` to layout `next`: only changed rows,
 * new rows and new chunks. A chunk that lost rows is set as a whole (a rare
 * case: an entry moved from pending to its seq is a change of `pending`).
 */
function diff(prev, next) {
  const patch = {}
  next.chunks.forEach((c, i) => {
    const p = prev.chunks[i]
    if (!p) patch['chunks[' + i + ']'] = c
    else diffList(p.rows, c.rows, 'chunks[' + i + '].rows', patch)
  })
  diffList(prev.pending, next.pending, 'pending', patch)
  return patch
}

/** The number of rows a layout renders. */
function rendered(l) {
  return l.chunks.reduce((n, c) => n + c.rows.length, 0) + l.pending.length
}

module.exports = { chunkOf, fromForLast, layout, diff, diffList, rendered }
