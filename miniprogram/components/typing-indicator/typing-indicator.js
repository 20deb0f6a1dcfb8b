/** <typing-indicator>: "alice is typing…" for the users in `users`; empty when none. */
function label(users) {
  if (!users.length) return ''
  if (users.length === 1) return users[0] + ' is typing…'
  if (users.length === 2) return users[0] + ' and ' + users[1] + ' are typing…'
  return users.length + ' people are typing…'
}

Component({
  properties: {
    users: { type: Array, value: [] }
  },
  data: { label: '' },
  observers: {
    users(users) {
      this.setData({ label: label(users) })
    }
  }
})
