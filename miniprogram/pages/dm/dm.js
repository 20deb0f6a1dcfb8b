/**
 * Direct-message page (`?with=USER`): the conversation's newest history page,
 * live DMs (the SDK fetches missed ones with `dm_history since` after a
 * reconnect), own messages pending → sent, "load earlier messages".
 */
const config = require('../../config')
const { toRow, merge } = require('../../utils/conversation')
const { addMessages, loadEarlier } = require('../../utils/thread')
const { requireChat } = require('../../utils/page')

Component({
  data: { peer: '', me: '', messages: [], state: '', delay: 0, hasMore: false, loading: false, error: '' },
  methods: {
    onLoad(options) {
      const chat = requireChat(this)
      if (!chat) return
      const peer = decodeURIComponent(options.with || '')
      this.peer = peer
      wx.setNavigationBarTitle({ title: '@' + peer })
      const pending = chat.outbox.filter((e) => e.kind === 'dm' && e.to === peer).map((e) => toRow(e, chat.user))
      this.setData({ peer, me: chat.user || '', state: chat.state, messages: merge([], pending) })
      const mine = (e) => e.kind === 'dm' && e.to === peer
      this._offs = [
        chat.on('status', (s) => {
          this.setData({ state: s.state, delay: s.delay || 0, me: chat.user || '' })
          if (s.state === 'open' && !this._loadedOnce) this._firstLoad()
        }),
        chat.on('dm', (m) => {
          if (m.peer === peer) this._add([m])
        }),
        chat.on('ack', (e) => {
          if (mine(e)) this._add([e])
        }),
        chat.on('failed', (e) => {
          if (mine(e)) {
            this._add([e])
            this.setData({ error: e.error === 'no_such_user' ? peer + ' is not online' : e.error })
          }
        })
      ]
      if (chat.connected) this._firstLoad()
    },
    onUnload() {
      ;(this._offs || []).forEach((off) => off())
    },
    _firstLoad() {
      this._loadedOnce = true
      this.loadEarlier()
    },
    _add(msgs) {
      addMessages(this, msgs, this.chat.user)
    },
    loadEarlier() {
      return loadEarlier(this, (o) => this.chat.dmHistory(this.peer, o), config.historyPageSize, this.chat.user)
    },
    onSend(e) {
      try {
        this._add([this.chat.dm(this.peer, e.detail.text)])
      } catch (err) {
        this.setData({ error: err.message })
      }
    }
  }
})
