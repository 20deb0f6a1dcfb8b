/**
 * <mention-picker>: the member list shown when "@" is typed in a room. Shows
 * `members` ({user, name}) whose name or id starts with `filter`; a tap fires
 * `pick` {user, name}, "Cancel" fires `cancel`.
 */
Component({
  properties: {
    members: { type: Array, value: [] },
    filter: { type: String, value: '' }
  },
  data: { shown: [] },
  observers: {
    'members, filter'(members, filter) {
      const f = (filter || '').toLowerCase()
      const match = (m) => !f || String(m.name || '').toLowerCase().indexOf(f) === 0 || m.user.toLowerCase().indexOf(f) === 0
      this.setData({ shown: members.filter(match) })
    }
  },
  methods: {
    onPick(e) {
      const m = this.data.shown[e.currentTarget.dataset.index]
      if (m) this.triggerEvent('pick', { user: m.user, name: m.name || m.user })
    },
    onCancel() {
      this.triggerEvent('cancel')
    }
  }
})
