/**
 * What the room page and the DM page do alike with their message list: add
 * messages (merged without duplicates) and load the page before the oldest row
 * shown. `page` is the page component; `fetchPage(opts)` is the SDK's
 * `history` or `dmHistory` for that conversation.
 */
'use strict'

const { toRow, merge } = require('./conversation')

/** Merge SDK messages (or outbox entries) into the page's `messages`. */
function addMessages(page, msgs, me) {
  const rows = msgs.map((m) => toRow(m, me))
  page.setData({ messages: merge(page.data.messages, rows) })
}

/** Fetch the page before the oldest row shown (or the newest page) into the page. */
function loadEarlier(page, fetchPage, limit, me) {
  if (page.data.loading) return Promise.resolve()
  const first = page.data.messages.find((r) => r.seq !== null)
  const opts = { limit }
  if (first) opts.before = first.seq
  page.setData({ loading: true })
  return fetchPage(opts).then(
    (result) => {
      addMessages(page, result.messages || [], me)
      page.setData({ loading: false, hasMore: !!result.more })
    },
    (e) => page.setData({ loading: false, error: 'History: ' + e.message })
  )
}

module.exports = { addMessages, loadEarlier }
