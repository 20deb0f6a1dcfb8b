/**
 * <people-picker>: people to choose from (the peers of my DMs), each with a
 * check mark when `checked`. A tap fires `toggle` {user}; the page decides
 * what a pick means (a new group's members, someone to invite).
 */
Component({
  properties: {
    people: { type: Array, value: [] }, // [{user, name, checked}]
    emptyText: { type: String, value: 'No one to pick: start a chat first' }
  },
  methods: {
    onTap(e) {
      this.triggerEvent('toggle', { user: e.currentTarget.dataset.user })
    }
  }
})
