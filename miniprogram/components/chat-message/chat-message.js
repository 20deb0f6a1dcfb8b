/**
 * <chat-message>: one row of a chat (`utils/chatview.js` messageRow): a
 * message bubble (avatar initial, sender name in rooms, the quoted message,
 * "(edited)", reactions, and under my own messages the tick: "sending…",
 * "sent", "read", "read by N", "not sent"); a recalled message or a membership
 * event as a centred grey line ("you recalled a message" with Re-edit).
 * Events: `action` {key} (long-press on the bubble), `ticks` {seq} (tap on
 * "read by N"), `react` {seq, emoji} (tap on a reaction), `reedit` {seq},
 * `retry` {key} (tap on "not sent").
 */
Component({
  properties: {
    row: { type: Object, value: {} },
    dm: { type: Boolean, value: false }
  },
  methods: {
    onLongPress() {
      this.triggerEvent('action', { key: this.data.row.key })
    },
    onTick() {
      const row = this.data.row
      if (row.status === 'failed') this.triggerEvent('retry', { key: row.key })
      else if (row.tickTap) this.triggerEvent('ticks', { seq: row.seq })
    },
    onReaction(e) {
      this.triggerEvent('react', { seq: this.data.row.seq, emoji: e.currentTarget.dataset.emoji })
    },
    onReedit() {
      this.triggerEvent('reedit', { seq: this.data.row.seq })
    }
  }
})
