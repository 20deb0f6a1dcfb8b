/**
 * page.js — what every signed-in page does first.
 */
'use strict'

/**
 * The app's chat session for `page` (also kept as `page.chat`), or null after
 * sending the user to the login page (with `?next=<next>` when `next` is given,
 * so that the login comes back there).
 */
function requireChat(page, next) {
  const chat = getApp().chat()
  if (!chat) {
    wx.redirectTo({ url: '/pages/login/login' + (next ? '?next=' + encodeURIComponent(next) : '') })
    return null
  }
  page.chat = chat
  return chat
}

module.exports = { requireChat }
