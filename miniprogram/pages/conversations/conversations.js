/**
 * Conversations page (the home tab of WeChat-login users): every room and DM
 * from the SDK's conversation store, newest first, with the avatar initial,
 * title, last-message preview (tombstones, "[draft]"), time, unread badge
 * (99+), "[@you]" and the muted icon; the tab-bar badge shows the total
 * unread of conversations not muted. Pull down → `sync`; long-press (or swipe
 * left and tap a button) → mute / mark read / leave. Anonymous users have no conversations: the page points
 * them to the Rooms tab.
 */
const { badgeText, conversationRow, learnNames } = require('../../utils/chatview')
const { diffList } = require('../../utils/window')
const { confirmLeave } = require('../../utils/groups')
const { requireChat } = require('../../utils/page')

/** Index of this page in app.json's tabBar list. */
const TAB = 0

Component({
  data: { rows: [], me: '', state: '', delay: 0, messenger: true },
  methods: {
    onLoad() {
      const chat = requireChat(this)
      if (!chat) return
      this.names = {}
      this._badge = null
      this.setData({ me: chat.user || '', state: chat.state })
      this._offs = [
        chat.on('status', (s) => {
          this.setData({ state: s.state, delay: s.delay || 0, me: chat.user || '' })
          this._render()
        }),
        chat.on('conversations', () => this._render()),
        chat.on('unread', (u) => this._setBadge(u.total))
      ]
      this._render()
      this._setBadge(chat.totalUnread())
    },
    onShow() {
      if (!this.chat) return
      this._badge = null // a call made while a non-tab page was on top may not have taken
      this._render()
      this._setBadge(this.chat.totalUnread())
    },
    onUnload() {
      ;(this._offs || []).forEach((off) => off())
    },
    /** Re-renders the rows, setting only the rows that changed. */
    _render() {
      const chat = this.chat
      const messenger = !chat.welcome || !!chat.welcome.authenticated
      const list = chat.conversations
      learnNames(this.names, list)
      const now = Date.now()
      this._askTitles(list)
      const rows = list.map((c) => conversationRow(c, chat.user, now, this.names))
      const patch = {}
      diffList(this.data.rows, rows, 'rows', patch)
      if (messenger !== this.data.messenger) patch.messenger = messenger
      if (Object.keys(patch).length) this.setData(patch)
    },
    /**
     * A group I was invited to live is known by its id only (its title is in
     * the `created` event before my time): ask `room_info` once per group.
     */
    _askTitles(list) {
      const chat = this.chat
      if (!chat.connected) return
      this._asked = this._asked || new Set()
      list.forEach((c) => {
        if (c.kind === 'dm' || c.title || this._asked.has(c.key)) return
        this._asked.add(c.key)
        chat.roomInfo(c.room).catch(() => this._asked.delete(c.key))
      })
    },
    _setBadge(total) {
      const text = badgeText(total)
      if (text === this._badge) return
      this._badge = text
      if (text) wx.setTabBarBadge({ index: TAB, text, fail: () => {} })
      else wx.removeTabBarBadge({ index: TAB, fail: () => {} })
    },
    /** Pull-down: sync with chatd, then stop the refresh animation. */
    onPullDownRefresh() {
      const done = () => wx.stopPullDownRefresh()
      if (!this.chat) return Promise.resolve(done())
      return this.chat.sync().then(done, (e) => {
        done()
        wx.showToast({ title: e.message === 'offline' ? 'Not connected' : 'Sync failed', icon: 'none' })
      })
    },
    onOpen(e) {
      wx.navigateTo({ url: '/pages/chat/chat?key=' + encodeURIComponent(e.detail.key) })
    },
    /** Long-press: mute/unmute, mark as read, and (rooms) leave. */
    onAction(e) {
      const key = e.detail.key
      const c = this.chat.conversation(key)
      if (!c) return
      const actions = [c.muted ? 'unmute' : 'mute', 'read']
      if (c.kind !== 'dm') actions.push('leave')
      const labels = { mute: 'Mute notifications', unmute: 'Unmute', read: 'Mark as read', leave: 'Leave group' }
      wx.showActionSheet({
        itemList: actions.map((a) => labels[a]),
        success: (res) => {
          this._acting = this._act(actions[res.tapIndex], c)
        },
        fail: () => {}
      })
    },
    /** A button revealed by swiping a row: the same actions as the long-press sheet. */
    onSwipeAct(e) {
      const c = this.chat.conversation(e.detail.key)
      return c ? this._act(e.detail.action, c) : null
    },
    _act(action, c) {
      const chat = this.chat
      if (action === 'mute' || action === 'unmute') {
        chat.mute(c.key, action === 'mute').catch(() => wx.showToast({ title: 'Not connected', icon: 'none' }))
      } else if (action === 'read') {
        chat.markRead(c.key)
      } else if (action === 'leave') {
        return confirmLeave(wx, chat, c.room, c.title || c.room, c.role)
      }
      return null
    },
    onNewGroup() {
      wx.navigateTo({ url: '/pages/group-create/group-create' })
    },
    onRooms() {
      wx.switchTab({ url: '/pages/rooms/rooms' })
    }
  }
})
