/**
 * <chat-message>: one row of a chat (`utils/chatview.js` messageRow): a
 * message bubble (avatar initial, sender name in rooms, the quoted message,
 * "(edited)", reactions, and under my own messages the tick: "sending…",
 * "sent", "read", "read by N", "not sent"); a recalled message or a membership
 * event as a centred grey line ("you recalled a message" with Re-edit).
 * Attachments (`row.attachments`, utils/media.js attachmentRow): a picture as its
 * thumbnail in a box sized from width/height, voice as a bubble with its duration
 * (▶, or ◼ while `playing` is its media id; a red dot while unplayed), a file with its name and size; an
 * upload in progress (`row.upload`, utils/media.js uploadRow) shows a progress
 * ring and its percentage, or why it failed with Retry and Delete.
 * Events: `action` {key} (long-press on the bubble), `ticks` {seq} (tap on
 * "read by N"), `react` {seq, emoji} (tap on a reaction), `reedit` {seq},
 * `retry` {key} (tap on "not sent" or Retry: a refused message or a failed upload),
 * `discard` {key} (Delete on a failed upload), `media` {key, index}
 * (tap on an attachment), `mediaerror` {key, index} (a thumbnail did not load:
 * its URL may have expired).
 */
Component({
  properties: {
    row: { type: Object, value: {} },
    dm: { type: Boolean, value: false },
    playing: { type: String, value: '' }
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
    onDiscard() {
      this.triggerEvent('discard', { key: this.data.row.key })
    },
    onReaction(e) {
      this.triggerEvent('react', { seq: this.data.row.seq, emoji: e.currentTarget.dataset.emoji })
    },
    onMedia(e) {
      this.triggerEvent('media', { key: this.data.row.key, index: Number(e.currentTarget.dataset.index) })
    },
    onMediaError(e) {
      this.triggerEvent('mediaerror', { key: this.data.row.key, index: Number(e.currentTarget.dataset.index) })
    },
    onReedit() {
      this.triggerEvent('reedit', { seq: this.data.row.seq })
    }
  }
})
