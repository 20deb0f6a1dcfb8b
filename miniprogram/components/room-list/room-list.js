/**
 * <room-list>: the rooms to choose from (with unread counts) and a join box.
 * Fires `open` with `{room}` for a tapped row or a valid typed name; an
 * invalid name shows an error instead (room rule of docs/protocol.md).
 */
const { isValidRoom } = require('../../utils/chatd')

Component({
  properties: {
    rooms: { type: Array, value: [] }
  },
  data: { draft: '', error: '' },
  methods: {
    onTapRoom(e) {
      this.triggerEvent('open', { room: e.currentTarget.dataset.room })
    },
    onInput(e) {
      this.setData({ draft: e.detail.value, error: '' })
    },
    onJoin() {
      const room = (this.data.draft || '').trim()
      if (!isValidRoom(room)) {
        this.setData({ error: 'A room name is 1–64 letters, digits or _ - . : #' })
        return
      }
      this.setData({ draft: '', error: '' })
      this.triggerEvent('open', { room })
    }
  }
})
