/** Helpers of the live tests that render pages with miniprogram-simulate. */
'use strict'
const path = require('path')
const simulate = require('miniprogram-simulate')
const { waitFor } = require('./helpers')

/** The mini-program's root folder. */
const ROOT = path.resolve(__dirname, '..', '..')

/**
 * The simulate.load id of page `p` ('pages/chat/chat'). A component used by several
 * pages renders only inside the page loaded first in a test file (miniprogram-simulate
 * registers it once): load first the page whose components a test asserts.
 */
const loadPage = (p) => simulate.load(path.join(ROOT, p), { rootPath: ROOT })

/**
 * Renders page `id` (a simulate.load id), calls onLoad and adds it to `pages`
 * (for the afterEach to unload); with `chat`, getApp() hands out that client.
 */
function openPage(pages, id, options, chat) {
  if (chat) global.getApp = () => ({ chat: () => chat, globalData: {} })
  const page = simulate.render(id)
  page.attach(document.createElement('parent-wrapper'))
  page.instance.onLoad(options || {})
  pages.push(page)
  return page
}

/** Every rendered row of a chat page, in order. */
const chatRows = (page) => page.data.chunks.reduce((out, c) => out.concat(c.rows), []).concat(page.data.pending)
const byText = (page, text) => chatRows(page).find((r) => r.text === text)

/** Answers the next action sheets with `labels`, runs `fn`, waits until they were shown. */
async function choose(wx, labels, fn) {
  const n = wx.sheets.length
  labels.forEach((l) => wx.sheetChoices.push(l))
  fn()
  await waitFor(() => wx.sheets.length >= n + labels.length && !wx.sheetChoices.length, 'the action sheets ' + labels.join(' → '))
}

module.exports = { ROOT, loadPage, openPage, chatRows, byText, choose }
