/**
 * Login page: pick a display name (or go on as a guest) and connect. Moves to
 * the room list once the server welcomes us; shows the server's refusal
 * (name taken, bad name) otherwise. Token login plugs in here once chatd
 * issues tokens (wx.login code → server → token → ChatClient({token})).
 */
const { isValidName } = require('../../utils/chatd')

const NAME_KEY = 'chatd.name'

Component({
  data: { name: '', error: '', busy: false, state: '', reason: '' },
  methods: {
    onLoad() {
      let name = ''
      try {
        name = wx.getStorageSync(NAME_KEY) || ''
      } catch (e) {
        name = ''
      }
      this.setData({ name })
    },
    onUnload() {
      this._unwatch()
    },
    onInput(e) {
      this.setData({ name: e.detail.value, error: '' })
    },
    onEnter() {
      const name = (this.data.name || '').trim()
      if (!isValidName(name)) {
        this.setData({ error: 'A name is 1–32 letters, digits or _ - . and may not start with guest-' })
        return
      }
      this._start(name)
    },
    onGuest() {
      this._start('')
    },
    _start(name) {
      this._unwatch()
      const chat = getApp().startChat(name)
      this.setData({ busy: true, error: '' })
      const offs = [
        chat.on('status', (s) => {
          this.setData({ state: s.state, reason: s.reason || '' })
          if (s.state === 'open') {
            if (name) wx.setStorageSync(NAME_KEY, name)
            this._unwatch()
            this.setData({ busy: false })
            wx.redirectTo({ url: '/pages/rooms/rooms' })
          } else if (s.state === 'closed') {
            this._unwatch()
            this.setData({ busy: false, error: s.reason === 'name_taken' ? 'That name is taken' : 'Could not connect: ' + (s.reason || 'closed') })
          }
        }),
        chat.on('error', (e) => {
          if (e.code === 'name_taken' || e.code === 'bad_name') this.setData({ error: e.message || e.code })
        })
      ]
      this._offs = offs
    },
    _unwatch() {
      ;(this._offs || []).forEach((off) => off())
      this._offs = []
    }
  }
})
