/**
 * Me page (third tab): who I am (name and user id), "Notify me" (WeChat users,
 * with `config.pushTemplates`: switched on it shows WeChat's subscribe prompt
 * and reports each accept, utils/push.js; it shows how many notifications are
 * left) and "Log out", which forgets the stored session and token and returns
 * to the login page. A global moderator (the login token's `mod` claim,
 * utils/moderation.js isModerator) also gets the "Moderator" section: lift a
 * global mute or ban by user id (`unmuteUser(null, user)`, `unbanUser(user)`);
 * mutes and bans are set from a member's "Moderate…" sheet in group info.
 */
const config = require('../../config')
const { logout } = require('../../utils/login')
const { isModerator, refusalText } = require('../../utils/moderation')
const push = require('../../utils/push')

Component({
  data: { name: '', user: '', authenticated: false, notifyShown: false, notifyLeft: 0, moderator: false, target: '' },
  methods: {
    onLoad() {
      this.onShow()
    },
    onShow() {
      const chat = getApp().chat()
      if (!chat) return
      this.chat = chat
      const w = chat.welcome || {}
      const notifyShown = push.canAsk(wx, chat, config.pushTemplates)
      this.setData({
        name: w.name || getApp().globalData.name || '',
        user: chat.user || '',
        authenticated: !!w.authenticated,
        notifyShown,
        moderator: isModerator(chat.token)
      })
      // what chatd holds (offline: after the next welcome)
      if (notifyShown) return push.report(chat, {}).then((s) => this._left(s), () => {})
      return null
    },
    _left(subs) {
      this.setData({ notifyLeft: push.remaining(subs) })
      return subs
    },
    /** The switch: on → WeChat's prompt, each accept reported; off: one-time grants cannot be taken back. */
    onNotify(e) {
      const chat = getApp().chat()
      if (!e.detail.value) {
        this.setData({ notifyLeft: this.data.notifyLeft }) // the switch shows what chatd holds
        wx.showToast({ title: 'WeChat grants each notice once: they are used up by the next messages', icon: 'none' })
        return null
      }
      return push.subscribe(wx, chat, config.pushTemplates).then(
        (subs) => (subs ? this._left(subs) : this.setData({ notifyLeft: this.data.notifyLeft })),
        () => wx.showToast({ title: 'Not connected: try again', icon: 'none' })
      )
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
