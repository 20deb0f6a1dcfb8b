/**
 * Me page (third tab): who I am (name and user id), "Notify me" (WeChat users,
 * with `config.pushTemplates`: switched on it shows WeChat's subscribe prompt
 * and reports each accept, utils/push.js; it shows how many notifications are
 * left) and "Log out", which forgets the stored session and token and returns
 * to the login page.
 */
const config = require('../../config')
const { clearToken } = require('../../utils/login')
const push = require('../../utils/push')

Component({
  data: { name: '', user: '', authenticated: false, notifyShown: false, notifyLeft: 0 },
  methods: {
    onLoad() {
      this.onShow()
    },
    onShow() {
      const chat = getApp().chat()
      if (!chat) return
      const w = chat.welcome || {}
      const notifyShown = push.canAsk(wx, chat, config.pushTemplates)
      this.setData({ name: w.name || getApp().globalData.name || '', user: chat.user || '', authenticated: !!w.authenticated, notifyShown })
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
      const app = getApp()
      const chat = app.chat()
      if (chat) {
        chat.close() // close() saves the session: forget it afterwards
        chat.forget()
      }
      app.globalData.chat = null
      clearToken(wx)
      wx.reLaunch({ url: '/pages/login/login' })
    }
  }
})
