/**
 * <composer>: the input box and send button. Fires `send` with `{text}`
 * (trimmed, never empty) on tap or keyboard confirm and clears the box; fires
 * `typing` at most once every `typingInterval` ms while the user types, and
 * `change` with `{value}` on every input. A page puts text into the box (a
 * draft, a message to edit, an @mention) with `selectComponent(…).setText(text)`.
 */
Component({
  properties: {
    disabled: { type: Boolean, value: false },
    placeholder: { type: String, value: 'Message' },
    maxLength: { type: Number, value: 4000 },
    typingInterval: { type: Number, value: 3000 }
  },
  data: { value: '' },
  methods: {
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
