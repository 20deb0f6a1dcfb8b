/**
 * Chat room page (`?room=NAME`): joins the room through the SDK, shows the
 * newest page of history, live and resumed messages, own messages as
 * pending → sent, members and presence, who is typing, the connection banner,
 * and "load earlier messages" (history with `before`).
 */
const config = require('../../config')
const { toRow, merge } = require('../../utils/conversation')
const { addMessages, loadEarlier } = require('../../utils/thread')
const { typingTracker } = require('../../utils/typing')
const { requireChat } = require('../../utils/page')

const TYPING_MS = 4000

Component({
  data: {
    room: '',
    me: '',
    messages: [],
    members: [],
    typingUsers: [],
    state: '',
    delay: 0,
    hasMore: false,
    loading: false,
    error: ''
  },
  methods: {
    onLoad(options) {
      const chat = requireChat(this)
      if (!chat) return
      const room = decodeURIComponent(options.room || 'lobby')
      this.room = room
      this._typing = typingTracker((users) => this.setData({ typingUsers: users }), TYPING_MS)
      wx.setNavigationBarTitle({ title: '#' + room })
      const pending = chat.outbox.filter((e) => e.kind === 'room' && e.room === room).map((e) => toRow(e, chat.user))
      this.setData({ room, me: chat.user || '', state: chat.state, members: chat.members(room), messages: merge([], pending) })
      const mine = (f) => (x) => {
        if (x.room === room) f.call(this, x)
      }
      this._offs = [
        chat.on('status', (s) => this.setData({ state: s.state, delay: s.delay || 0, me: chat.user || '' })),
        chat.on('joined', mine(this._onJoined)),
        chat.on('message', mine((m) => {
          this._typing.stop(m.from)
          this._add([m])
        })),
        chat.on('ack', mine((e) => this._add([e]))),
        chat.on('failed', mine((e) => this._add([e]))),
        chat.on('presence', mine((p) => this.setData({ members: p.members }))),
        chat.on('typing', mine((t) => this._typing.start(t.from))),
        chat.on('error', (e) => {
          if (e.code !== 'name_taken') this.setData({ error: e.message || e.code })
        })
      ]
      chat.join(room).catch((e) => this.setData({ error: 'Cannot join: ' + e.message }))
    },
    onUnload() {
      ;(this._offs || []).forEach((off) => off())
      if (this._typing) this._typing.clear()
    },
    _onJoined(j) {
      this.setData({ members: j.members, me: this.chat.user || '' })
      if (!this._loadedOnce) {
        this._loadedOnce = true
        this.loadEarlier()
      } else if (j.truncated) {
        this.setData({ hasMore: true })
      }
    },
    _add(msgs) {
      addMessages(this, msgs, this.chat.user)
    },
    /** Fetches the page before the oldest row shown (or the newest page). */
    loadEarlier() {
      return loadEarlier(this, (o) => this.chat.history(this.room, o), config.historyPageSize, this.chat.user)
    },
    onSend(e) {
      try {
        const entry = this.chat.send(this.room, e.detail.text)
        this._add([entry])
      } catch (err) {
        this.setData({ error: err.message })
      }
    },
    onTyping() {
      this.chat.typing(this.room)
    },
    onSelectMember(e) {
      wx.navigateTo({ url: '/pages/dm/dm?with=' + encodeURIComponent(e.detail.user) })
    },
    onLeave() {
      this.chat.leave(this.room)
      wx.navigateBack()
    }
  }
})
