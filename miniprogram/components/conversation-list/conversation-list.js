/**
 * <conversation-list>: the WeChat-style list of conversations. Each row
 * (`utils/chatview.js` conversationRow) shows an avatar initial, the title, a
 * muted icon, the time, the preview ("[draft]" and "[@you]" in red) and the
 * unread badge (a dot when muted). A tap fires `open` {key}; a long-press
 * fires `action` {key}.
 */
Component({
  properties: {
    rows: { type: Array, value: [] },
    emptyText: { type: String, value: 'No conversations yet' }
  },
  methods: {
    onTap(e) {
      this.triggerEvent('open', { key: e.currentTarget.dataset.key })
    },
    onLongPress(e) {
      this.triggerEvent('action', { key: e.currentTarget.dataset.key })
    }
  }
})
