/**
 * The full-screen "Your account is suspended" state (docs/miniprogram.md,
 * "Moderation screens"): app.js `reLaunch`es here when chatd closes the
 * connection with 4451 (a global moderator banned the user; the SDK then stops
 * reconnecting, `status` closed with reason `banned`). "Try again" connects
 * once more — a ban that has ended lets the user back in (the Chats tab, once
 * the sync after `welcome` completed) —
 * and "Log out" forgets the session like the Me tab does.
 */
const { logout } = require('../../utils/login')

Component({
  data: { trying: false, still: false },
  methods: {
    onLoad() {
      const chat = getApp().chat()
      if (!chat) return
      this.chat = chat
      // chatd welcomes a banned user before it closes with 4451: a completed sync means we are back
      this._offs = [
        chat.on('synced', () => wx.switchTab({ url: '/pages/conversations/conversations' })),
        chat.on('status', (s) => {
          if (s.state === 'closed') this.setData({ trying: false, still: s.reason === 'banned' })
        })
      ]
    },
    onUnload() {
      ;(this._offs || []).forEach((off) => off())
    },
    onRetry() {
      if (!this.chat || this.data.trying) return
      this.setData({ trying: true, still: false })
      this.chat.connect()
    },
    onLogout() {
      logout(getApp(), wx)
    }
  }
})
