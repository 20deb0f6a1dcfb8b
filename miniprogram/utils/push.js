/**
 * Offline notifications through WeChat subscribe messages (docs/protocol.md and
 * docs/operations.md, "Offline push"): ask with `wx.requestSubscribeMessage`
 * for `config.pushTemplates` (the server's `--push-template` id), and report
 * every template the user accepted to chatd with `chat.pushSubscribe` — one
 * message per accept. WeChat shows the prompt only from a user's tap, so the
 * callers call these inside a tap handler (the send button, a switch).
 */
'use strict'

/** The ids of `templates` that the `requestSubscribeMessage` result `res` accepted. */
function acceptedTemplates(res, templates) {
  return (templates || []).filter((id) => res && res[id] === 'accept')
}

/** Can this user be notified at all? (a token user, and templates configured) */
function canAsk(wx, chat, templates) {
  return !!(templates && templates.length && chat && chat.welcome && chat.welcome.authenticated && typeof wx.requestSubscribeMessage === 'function')
}

/**
 * `chat.pushSubscribe(spec)` now, or after the next welcome when offline (a
 * report is not lost to a reconnect). Resolves with `push_subscriptions`.
 */
function report(chat, spec) {
  if (chat.connected) return chat.pushSubscribe(spec)
  return new Promise((resolve, reject) => {
    const off = chat.on('welcome', () => {
      off()
      chat.pushSubscribe(spec).then(resolve, reject)
    })
  })
}

/**
 * Shows WeChat's prompt for `templates` and reports what was accepted, merged
 * with `extra` (`{rooms, notify}`). Resolves with chatd's `push_subscriptions`,
 * or null when nothing was accepted and there was nothing else to report (a
 * refusal, a closed prompt, WeChat's `fail`).
 */
function subscribe(wx, chat, templates, extra) {
  const asked = canAsk(wx, chat, templates)
    ? new Promise((resolve) => {
        // called synchronously: still inside the user's tap
        wx.requestSubscribeMessage({
          tmplIds: templates.slice(0, 3), // WeChat takes at most 3 at once
          success: (res) => resolve(acceptedTemplates(res, templates)),
          fail: () => resolve([])
        })
      })
    : Promise.resolve([])
  return asked.then((accepted) => {
    const spec = Object.assign({}, extra)
    if (accepted.length) spec.templates = accepted.map((id) => ({ id, count: 1 }))
    if (!Object.keys(spec).length) return null
    return report(chat, spec)
  })
}

/**
 * After the first DM I send in this app session (app.globalData.pushAsked):
 * the natural moment for the prompt. Returns subscribe()'s promise, or null when
 * it was asked already (or cannot be).
 */
function afterFirstDm(wx, chat, app, templates) {
  const g = app && app.globalData
  if (!g || g.pushAsked || !canAsk(wx, chat, templates)) return null
  g.pushAsked = true
  return subscribe(wx, chat, templates).catch(() => null)
}

/** How many notifications the user has left (the sum of the templates' counts) in `push_subscriptions`. */
function remaining(subs) {
  return ((subs && subs.templates) || []).reduce((n, t) => n + (t.count || 0), 0)
}

module.exports = { acceptedTemplates, canAsk, report, subscribe, afterFirstDm, remaining }
