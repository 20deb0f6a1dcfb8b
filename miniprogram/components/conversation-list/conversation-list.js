/**
 * <conversation-list>: the WeChat-style list of conversations. Each row
 * (`utils/chatview.js` conversationRow) shows an avatar initial, the title, a
 * muted icon, the time, the preview ("[draft]" and "[@you]" in red) and the
 * unread badge (a dot when muted). A tap fires `open` {key}; a long-press
 * fires `action` {key}. Swiping a row to the left reveals its buttons (Mark
 * read, Mute/Unmute, and Leave for groups), which fire `act` {key, action:
 * read|mute|unmute|leave}; swiping right or tapping the row closes it.
 */

/** How far (px) a finger must travel sideways to open or close a row. */
const SWIPE = 40

Component({
  properties: {
    rows: { type: Array, value: [] },
    emptyText: { type: String, value: 'No conversations yet' }
  },
  data: { open: '' },
  methods: {
    onTap(e) {
      if (this.data.open) {
        this.setData({ open: '' })
        return
      }
      this.triggerEvent('open', { key: e.currentTarget.dataset.key })
    },
    onLongPress(e) {
      this.triggerEvent('action', { key: e.currentTarget.dataset.key })
    },
    onTouchStart(e) {
      const t = e.touches && e.touches[0]
      this._start = t ? { x: t.clientX, y: t.clientY } : null
    },
    onTouchEnd(e) {
      const t = e.changedTouches && e.changedTouches[0]
      const s = this._start
      this._start = null
      if (!s || !t) return
      const dx = t.clientX - s.x
      if (Math.abs(dx) < SWIPE || Math.abs(dx) < Math.abs(t.clientY - s.y)) return // a tap or a scroll
      const key = e.currentTarget.dataset.key
      this.setData({ open: dx < 0 ? key : '' })
    },
    onAct(e) {
      const { key, action } = e.currentTarget.dataset
      this.setData({ open: '' })
      this.triggerEvent('act', { key, action })
    }
  }
})
