/**
 * Me page (third tab): who I am (name and user id) and "Log out", which
 * forgets the stored session and token and returns to the login page.
 */
const { clearToken } = require('../../utils/login')

Component({
  data: { name: '', user: '', authenticated: false },
  methods: {
    onLoad() {
      this.onShow()
    },
    onShow() {
      const chat = getApp().chat()
      if (!chat) return
      const w = chat.welcome || {}
      this.setData({ name: w.name || getApp().globalData.name || '', user: chat.user || '', authenticated: !!w.authenticated })
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
