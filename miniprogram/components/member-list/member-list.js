/**
 * <member-list>: who is in the room. Shows the count and one chip per member
 * ("you" for the current user); tapping another member fires `select` with
 * `{user}` (the room page opens a DM).
 */
Component({
  properties: {
    members: { type: Array, value: [] },
    me: { type: String, value: '' }
  },
  methods: {
    onTap(e) {
      const user = e.currentTarget.dataset.user
      if (user && user !== this.data.me) this.triggerEvent('select', { user })
    }
  }
})
