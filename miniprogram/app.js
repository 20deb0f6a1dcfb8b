/**
 * The app holds the single ChatClient (the SDK instance) and maps the
 * mini-program lifecycle onto it: hidden → pause (sockets are cut in the
 * background anyway), shown → resume (rejoin every room with `since`), network
 * back → reconnect without waiting for the backoff.
 *
 * With WeChat login the SDK reports an expired or refused token with an
 * `auth` event; the app then logs in again with a fresh `wx.login()` code and
 * reconnects the same instance (rooms and outbox kept). If that fails the
 * login page is shown with the reason.
 *
 * A user banned everywhere by a moderator (close 4451: the SDK stops
 * reconnecting, status closed with reason `banned`) gets the full-screen
 * suspended page instead (pages/suspended).
 */
const { ChatClient } = require('./utils/chatd')
const { wechatLogin, loginUrl, saveToken, clearToken } = require('./utils/login')
const config = require('./config')

/** A second automatic login within this many ms goes to the login page instead. */
const RELOGIN_INTERVAL = 10000

App({
  // pushAsked: the notification prompt after a first DM was shown in this session (utils/push.js)
  globalData: { chat: null, name: '', user: '', loginError: '', pushAsked: false, suspended: false },

  /**
   * Creates (or replaces) the SDK instance and connects it: `session` is a
   * display name (anonymous, '' for a guest) or a WeChat login session
   * `{token, user, name, expiresAt}`. Named and token sessions keep their
   * outbox and room positions in storage across app restarts.
   */
  startChat(session) {
    const s = typeof session === 'object' && session ? session : { name: session || '' }
    if (this.globalData.chat) this.globalData.chat.close()
    let storageKey = null
    if (s.token && s.user) storageKey = 'chatd.state:' + s.user
    else if (!s.token && s.name) storageKey = 'chatd.state:~' + s.name
    const chat = new ChatClient({
      url: config.serverUrl,
      name: s.token ? null : s.name,
      token: s.token || null,
      tokenExpiresAt: s.expiresAt || null,
      storageKey,
      wx
    })
    chat.on('auth', () => this.relogin())
    chat.on('status', (st) => this._banned(chat, st))
    chat.on('synced', () => {
      // chatd welcomes a banned user before it closes with 4451: only a sync proves it let us in
      if (this.globalData.chat === chat) this.globalData.suspended = false
    })
    this.globalData.chat = chat
    this.globalData.name = s.name || ''
    this.globalData.user = s.user || ''
    this.globalData.suspended = false
    this._lastRelogin = 0
    chat.connect()
    return chat
  },

  /** The SDK instance, or null before the user logged in. */
  chat() {
    return this.globalData.chat
  },

  /** The token expired or was refused: fresh wx.login(), new token, reconnect. */
  relogin() {
    const chat = this.globalData.chat
    if (!chat) return Promise.resolve()
    if (this._relogging) return this._relogging
    clearToken(wx)
    const now = Date.now()
    if (this._lastRelogin && now - this._lastRelogin < RELOGIN_INTERVAL) {
      this._loginFailed('The chat server keeps refusing the login. Please log in again.')
      return Promise.resolve()
    }
    this._lastRelogin = now
    this._relogging = wechatLogin({ wx, url: loginUrl(config), name: this.globalData.name })
      .then(
        (s) => {
          if (this.globalData.chat !== chat) return
          saveToken(wx, s)
          chat.setToken(s.token, s.expiresAt)
          chat.connect()
        },
        (e) => this._loginFailed(e.message)
      )
      .then(() => {
        this._relogging = null
      })
    return this._relogging
  },

  /** Close 4451: show "Your account is suspended" (once; the page itself offers "Try again"). */
  _banned(chat, st) {
    if (this.globalData.chat !== chat) return
    const banned = st.state === 'closed' && st.reason === 'banned'
    if (!banned || this.globalData.suspended) return
    this.globalData.suspended = true
    wx.reLaunch({ url: '/pages/suspended/suspended' })
  },

  _loginFailed(message) {
    this.globalData.loginError = message
    wx.reLaunch({ url: '/pages/login/login?error=' + encodeURIComponent(message) })
  },

  onLaunch() {
    wx.onNetworkStatusChange((res) => {
      const chat = this.globalData.chat
      if (chat && res.isConnected) chat.reconnectNow()
    })
  },

  onShow() {
    const chat = this.globalData.chat
    if (chat) chat.resume()
  },

  onHide() {
    const chat = this.globalData.chat
    if (chat) chat.pause()
  }
})
