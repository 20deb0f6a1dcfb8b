/**
 * Login page. With `config.login === 'name'`: pick a display name (or go on as
 * a guest) and connect anonymously; the server's refusal (name taken, bad
 * name) is shown. With `config.login === 'wechat'`: "Log in with WeChat"
 * (`wx.login()` → chatd's `/api/login/wechat` → token, see utils/login.js),
 * with an optional display name; a stored token that has not expired is used
 * at once. Every login error is shown as a sentence; the button stays usable
 * when trying again can help. Once the server welcomes us it switches to the
 * Chats tab (WeChat users) or the Rooms tab (anonymous users). `?next=` (a chat
 * page opened before the app had a session, e.g. from an offline notification)
 * is opened on top of Chats once a WeChat user is welcomed.
 */
const config = require('../../config')
const { isValidName } = require('../../utils/chatd')
const { wechatLogin, loginUrl, loadToken, saveToken } = require('../../utils/login')

const NAME_KEY = 'chatd.name'

Component({
  data: { mode: 'name', name: '', error: '', busy: false, state: '', reason: '', canRetry: true },
  methods: {
    onLoad(options) {
      const mode = config.login === 'wechat' ? 'wechat' : 'name'
      let name = ''
      try {
        name = wx.getStorageSync(NAME_KEY) || ''
      } catch (e) {
        name = ''
      }
      const error = options && options.error ? decodeURIComponent(options.error) : ''
      const next = options && options.next ? decodeURIComponent(options.next) : ''
      this._next = next.indexOf('/pages/chat/chat?') === 0 ? next : '' // only a conversation of this app
      this.setData({ mode, name, error })
      if (mode === 'wechat' && !error) {
        const stored = loadToken(wx)
        if (stored) this._startSession(stored)
      }
    },
    onUnload() {
      this._unwatch()
    },
    onInput(e) {
      this.setData({ name: e.detail.value, error: '', canRetry: true })
    },
    onConfirm() {
      return this.data.mode === 'wechat' ? this.onWechat() : this.onEnter()
    },
    onEnter() {
      const name = (this.data.name || '').trim()
      if (!isValidName(name)) {
        this.setData({ error: 'A name is 1–32 letters, digits or _ - . and may not start with guest-' })
        return
      }
      this._start(name)
    },
    onGuest() {
      this._start('')
    },
    /** "Log in with WeChat": a fresh code every time, so a retry is a new attempt. */
    onWechat() {
      if (this.data.busy) return Promise.resolve()
      const name = (this.data.name || '').trim()
      if (name && !isValidName(name)) {
        this.setData({ error: 'A name is 1–32 letters, digits or _ - . and may not start with guest-' })
        return Promise.resolve()
      }
      this.setData({ busy: true, error: '', state: 'connecting', reason: '' })
      return wechatLogin({ wx, url: loginUrl(config), name }).then(
        (session) => {
          saveToken(wx, session)
          if (name) wx.setStorageSync(NAME_KEY, name)
          this._startSession(session)
        },
        (e) => this.setData({ busy: false, state: '', error: e.message, canRetry: e.retry !== false })
      )
    },
    _startSession(session) {
      this._watch(getApp().startChat(session), '')
    },
    _start(name) {
      this._watch(getApp().startChat(name), name)
    },
    _watch(chat, name) {
      this._unwatch()
      this.setData({ busy: true, error: '' })
      this._offs = [
        chat.on('status', (s) => {
          this.setData({ state: s.state, reason: s.reason || '' })
          if (s.state === 'open') {
            if (name) wx.setStorageSync(NAME_KEY, name)
            this._unwatch()
            this.setData({ busy: false })
            // tab pages are reached with switchTab: WeChat users land on their conversations
            const messenger = !!(chat.welcome && chat.welcome.authenticated)
            const next = messenger ? this._next : ''
            this._next = ''
            wx.switchTab({
              url: messenger ? '/pages/conversations/conversations' : '/pages/rooms/rooms',
              success: () => next && wx.navigateTo({ url: next })
            })
          } else if (s.state === 'closed' && s.reason !== 'token_expired' && s.reason !== 'unauthorized') {
            // (an expired or refused token is the app's business: it logs in again)
            this._unwatch()
            this.setData({ busy: false, error: s.reason === 'name_taken' ? 'That name is taken' : 'Could not connect: ' + (s.reason || 'closed') })
          }
        }),
        chat.on('error', (e) => {
          if (e.code === 'name_taken' || e.code === 'bad_name') this.setData({ error: e.message || e.code })
        })
      ]
    },
    _unwatch() {
      ;(this._offs || []).forEach((off) => off())
      this._offs = []
    }
  }
})
