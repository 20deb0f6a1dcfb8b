/**
 * Room list page (the Rooms tab): the default rooms plus every room joined so
 * far (with unread counts from live messages), a join box, and a box to start
 * a direct message. Opening a room or a DM navigates to its page: the room and
 * DM pages for anonymous users, the chat page (`?key=r:…|d:…`) for WeChat-login
 * users, whose conversations are kept.
 */
const config = require('../../config')
const { isValidName } = require('../../utils/chatd')
const { requireChat } = require('../../utils/page')

Component({
  data: { rooms: [], me: '', state: '', delay: 0, peer: '', dmError: '' },
  methods: {
    onLoad() {
      const chat = requireChat(this)
      if (!chat) return
      this._unread = {}
      this.setData({ me: chat.user || '', state: chat.state })
      this._offs = [
        chat.on('status', (s) => this.setData({ state: s.state, delay: s.delay || 0, me: chat.user || '' })),
        chat.on('message', (m) => {
          this._unread[m.room] = (this._unread[m.room] || 0) + 1
          this._refresh()
        })
      ]
      this._refresh()
    },
    onShow() {
      this._refresh()
    },
    onUnload() {
      ;(this._offs || []).forEach((off) => off())
    },
    _refresh() {
      if (!this.chat) return
      const names = config.defaultRooms.slice()
      this.chat.rooms.forEach((r, room) => {
        if (names.indexOf(room) < 0) names.push(room)
      })
      this.setData({ rooms: names.map((room) => ({ room, unread: this._unread[room] || 0 })) })
    },
    onOpenRoom(e) {
      const room = e.detail.room
      this._unread[room] = 0
      this._refresh()
      if (this._messenger()) wx.navigateTo({ url: '/pages/chat/chat?key=' + encodeURIComponent('r:' + room) })
      else wx.navigateTo({ url: '/pages/room/room?room=' + encodeURIComponent(room) })
    },
    onPeerInput(e) {
      this.setData({ peer: e.detail.value, dmError: '' })
    },
    onStartDm() {
      const peer = (this.data.peer || '').trim()
      if (!peer || (!isValidName(peer) && peer.indexOf('guest-') !== 0)) {
        this.setData({ dmError: 'Enter the name of someone online' })
        return
      }
      this.setData({ peer: '' })
      if (this._messenger()) wx.navigateTo({ url: '/pages/chat/chat?key=' + encodeURIComponent('d:' + peer) })
      else wx.navigateTo({ url: '/pages/dm/dm?with=' + encodeURIComponent(peer) })
    },
    _messenger() {
      return !!(this.chat.welcome && this.chat.welcome.authenticated)
    }
  }
})
