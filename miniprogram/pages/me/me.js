/**
 * Me page (third tab): who I am (name and user id) and "Log out", which
 * forgets the stored session and token and returns to the login page. A
 * global moderator (the login token's `mod` claim, utils/moderation.js
 * isModerator) also gets the "Moderator" section: lift a global mute or ban
 * by user id (`unmuteUser(null, user)`, `unbanUser(user)`); mutes and bans are
 * set from a member's "Moderate…" sheet in group info.
 */
const { logout } = require('../../utils/login')
const { isModerator, refusalText } = require('../../utils/moderation')

Component({
  data: { name: '', user: '', authenticated: false, moderator: false, target: '' },
  methods: {
    onLoad() {
      this.onShow()
    },
    onShow() {
      const chat = getApp().chat()
      if (!chat) return
      this.chat = chat
      const w = chat.welcome || {}
      this.setData({
        name: w.name || getApp().globalData.name || '',
        user: chat.user || '',
        authenticated: !!w.authenticated,
        moderator: isModerator(chat.token)
      })
    },
    onLogout() {
      logout(getApp(), wx)
    },
    onTarget(e) {
      this.setData({ target: e.detail.value })
    },
    /** "Unmute everywhere" / "Unban" for the user id typed in. */
    _lift(call, done) {
      const user = (this.data.target || '').trim()
      const chat = this.chat
      if (!user || !chat) return Promise.resolve(null)
      return call(chat, user).then(
        (answer) => {
          wx.showToast({ title: done, icon: 'success' })
          this.setData({ target: '' })
          return answer
        },
        (e) => {
          wx.showToast({ title: refusalText(e), icon: 'none' })
          return null
        }
      )
    },
    onUnmuteAll() {
      return this._lift((chat, user) => chat.unmuteUser(null, user), 'Unmuted')
    },
    onUnban() {
      return this._lift((chat, user) => chat.unbanUser(user), 'Unbanned')
    }
  }
})
