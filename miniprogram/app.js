/**
 * The app holds the single ChatClient (the SDK instance) and maps the
 * mini-program lifecycle onto it: hidden → pause (sockets are cut in the
 * background anyway), shown → resume (rejoin every room with `since`), network
 * back → reconnect without waiting for the backoff.
 */
const { ChatClient } = require('./utils/chatd')
const config = require('./config')

App({
  globalData: { chat: null, name: '' },

  /** Creates (or replaces) the SDK instance for `name` and connects it. */
  startChat(name) {
    if (this.globalData.chat) this.globalData.chat.close()
    const chat = new ChatClient({ url: config.serverUrl, name, wx })
    this.globalData.chat = chat
    this.globalData.name = name
    chat.connect()
    return chat
  },

  /** The SDK instance, or null before the user picked a name. */
  chat() {
    return this.globalData.chat
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
