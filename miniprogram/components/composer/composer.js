/**
 * <composer>: the input box and send button. Fires `send` with `{text}`
 * (trimmed, never empty) on tap or keyboard confirm and clears the box; fires
 * `typing` at most once every `typingInterval` ms while the user types, and
 * `change` with `{value}` on every input. A page puts text into the box (a
 * draft, a message to edit, an @mention) with `selectComponent(…).setText(text)`.
 *
 * With `media`, as in WeChat: a "+" instead of Send while the box is empty opens
 * a panel (Photo, File: `pick` {type: 'photo'|'file'}; Voice), and "Voice" (left
 * of the box, or in the panel) swaps the box for "Hold to talk": touching it fires `voicestart`, letting go `voiceend`
 * {cancel} — `cancel` when the finger slid up more than utils/media.js CANCEL_PX
 * ("Release to cancel") or the system interrupted the touch.
 */
const { slidToCancel } = require('../../utils/media')

/** The page y of a touch event's first touch (touchend: the lifted one). */
function touchY(e) {
  const t = (e.touches && e.touches[0]) || (e.changedTouches && e.changedTouches[0]) || {}
  return typeof t.clientY === 'number' ? t.clientY : t.pageY || 0
}

Component({
  properties: {
    disabled: { type: Boolean, value: false },
    placeholder: { type: String, value: 'Message' },
    maxLength: { type: Number, value: 4000 },
    typingInterval: { type: Number, value: 3000 },
    media: { type: Boolean, value: false }
  },
  data: { value: '', voice: false, panel: false, recording: false, cancelling: false },
  methods: {
    onMode() {
      this.setData({ voice: !this.data.voice, panel: false })
    },
    onPlus() {
      this.setData({ panel: !this.data.panel })
    },
    onFocus() {
      if (this.data.panel) this.setData({ panel: false })
    },
    onPick(e) {
      this.setData({ panel: false })
      this.triggerEvent('pick', { type: e.currentTarget.dataset.type })
    },
    onTalkStart(e) {
      if (this.data.disabled) return
      this._startY = touchY(e)
      this.setData({ recording: true, cancelling: false })
      this.triggerEvent('voicestart')
    },
    onTalkMove(e) {
      if (!this.data.recording) return
      const cancelling = slidToCancel(this._startY, touchY(e))
      if (cancelling !== this.data.cancelling) this.setData({ cancelling })
    },
    onTalkEnd(e) {
      if (!this.data.recording) return
      const cancel = this.data.cancelling || slidToCancel(this._startY, touchY(e))
      this.setData({ recording: false, cancelling: false })
      this.triggerEvent('voiceend', { cancel })
    },
    onTalkCancel() {
      if (!this.data.recording) return
      this.setData({ recording: false, cancelling: false })
      this.triggerEvent('voiceend', { cancel: true })
    },
    onInput(e) {
      const value = e.detail.value
      this.setData({ value })
      this.triggerEvent('change', { value })
      const now = Date.now()
      if (value && now - (this._lastTyping || 0) >= this.data.typingInterval) {
        this._lastTyping = now
        this.triggerEvent('typing')
      }
    },
    /** Replaces the text in the box (no `change` event: the page chose it). */
    setText(value) {
      this.setData({ value: value || '' })
    },
    onSend() {
      const text = (this.data.value || '').trim()
      if (!text || this.data.disabled) return
      this.triggerEvent('send', { text })
      this._lastTyping = 0
      this.setData({ value: '' })
    }
  }
})
