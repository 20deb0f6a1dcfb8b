/**
 * login.js — WeChat login for chatd: `wx.login()` gives a one-time code, the
 * chat server's `POST /api/login/wechat` exchanges it at WeChat for the
 * user's openid and answers with a chatd token (`user` = `wx:<openid>`).
 * The token is kept in wx storage with its expiry; the SDK sends it as
 * `Authorization: Bearer <token>`.
 *
 * Every failure rejects with an Error whose `code` is the server's error
 * code (or `network`, `wx_login`, `not_enabled`, `http_<status>`), whose
 * `message` is a sentence for the login page, and whose `retry` says whether
 * trying again (with a fresh `wx.login()` code) can help.
 */
'use strict'

const TOKEN_KEY = 'chatd.token'
/** A stored token this close to its expiry (ms) is not used any more. */
const EXPIRY_SLACK = 60000

const MESSAGES = {
  invalid_code: ['WeChat did not accept the login code (it may have expired). Please try again.', true],
  wechat_busy: ['WeChat is busy right now. Please try again in a moment.', true],
  rate_limited: ['Too many logins right now. Please wait a minute and try again.', true],
  user_blocked: ['WeChat refused to log this account in (flagged as high risk).', false],
  wechat_unreachable: ['The chat server could not reach WeChat. Please try again.', true],
  wechat_error: ['WeChat returned an error. Please try again later.', true],
  bad_request: ['The app sent a malformed login request.', false],
  not_enabled: ['WeChat login is not enabled on this chat server.', false],
  banned: ['This account is suspended by a moderator.', false]
}

/** The http(s) origin of the chat server, derived from its ws(s):// address. */
function httpBase(serverUrl) {
  const m = /^(wss?):\/\/([^/?#]+)/i.exec(serverUrl || '')
  if (!m) throw new Error('serverUrl must start with ws:// or wss://')
  return (m[1].toLowerCase() === 'wss' ? 'https://' : 'http://') + m[2]
}

/** The login endpoint for `config` (`config.apiBase` overrides the derived origin). */
function loginUrl(config) {
  return (config.apiBase || httpBase(config.serverUrl)).replace(/\/+$/, '') + '/api/login/wechat'
}

function loginError(code, message, retry, status) {
  const e = new Error(message)
  e.code = code
  e.retry = retry
  if (status !== undefined) e.status = status
  return e
}

/** The error for a non-200 answer of the login endpoint. */
function answerError(res) {
  const status = res.statusCode
  const body = res.data && typeof res.data === 'object' ? res.data.error : null
  let code = body && typeof body.code === 'string' ? body.code : null
  if (!code) code = status === 404 ? 'not_enabled' : 'http_' + status
  const known = MESSAGES[code]
  if (known) return loginError(code, known[0], known[1], status)
  const detail = body && body.message ? ': ' + body.message : ''
  return loginError(code, 'The chat server could not log you in (HTTP ' + status + detail + '). Please try again later.', status >= 500, status)
}

/**
 * `wx.login()` → `POST {url} {code, name}` → `{token, user, name, expiresAt}`
 * (`expiresAt` in ms since the epoch).
 */
function wechatLogin(opts) {
  const wxApi = opts.wx
  const timeout = opts.timeout || 15000
  return new Promise((resolve, reject) => {
    wxApi.login({
      timeout,
      success: (r) => {
        if (!r || !r.code) {
          reject(loginError('wx_login', 'WeChat login failed: no code. Please try again.', true))
          return
        }
        const data = { code: r.code }
        if (opts.name) data.name = opts.name
        wxApi.request({
          url: opts.url,
          method: 'POST',
          header: { 'content-type': 'application/json' },
          data,
          timeout,
          success: (res) => {
            const body = res.data
            if (res.statusCode === 200 && body && typeof body.token === 'string') {
              const ttl = typeof body.expires_in === 'number' ? body.expires_in : 0
              resolve({ token: body.token, user: body.user, name: body.name, expiresAt: ttl ? Date.now() + ttl * 1000 : null })
            } else {
              reject(answerError(res))
            }
          },
          fail: (e) => reject(loginError('network', 'Cannot reach the chat server (' + ((e && e.errMsg) || 'request failed') + '). Check the network and try again.', true))
        })
      },
      fail: (e) => reject(loginError('wx_login', 'WeChat login failed (' + ((e && e.errMsg) || 'login failed') + '). Please try again.', true))
    })
  })
}

/** The stored login session, or null when there is none or it (nearly) expired. */
function loadToken(wxApi) {
  let s = null
  try {
    s = wxApi.getStorageSync(TOKEN_KEY)
  } catch (e) {
    s = null
  }
  if (!s || typeof s !== 'object' || typeof s.token !== 'string') return null
  if (s.expiresAt && Date.now() >= s.expiresAt - EXPIRY_SLACK) return null
  return s
}

function saveToken(wxApi, session) {
  wxApi.setStorageSync(TOKEN_KEY, { token: session.token, user: session.user, name: session.name, expiresAt: session.expiresAt })
}

function clearToken(wxApi) {
  try {
    wxApi.removeStorageSync(TOKEN_KEY)
  } catch (e) {
    // nothing stored
  }
}

/**
 * Log out (the Me tab, the suspended screen): close the connection, forget the
 * stored session, conversation cache and token (`close()` writes the session,
 * so `forget()` comes after it), and `reLaunch` the login page.
 */
function logout(app, wxApi) {
  const chat = app.chat()
  if (chat) {
    chat.close()
    chat.forget()
  }
  app.globalData.chat = null
  clearToken(wxApi)
  wxApi.reLaunch({ url: '/pages/login/login' })
}

module.exports = { TOKEN_KEY, MESSAGES, httpBase, loginUrl, wechatLogin, loadToken, saveToken, clearToken, logout }
