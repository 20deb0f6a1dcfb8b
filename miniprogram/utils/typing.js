/**
 * Who is typing in a room: each user counts for `ms` after their last `typing`
 * frame, or until their message arrives. Shared by the room page and the chat
 * page; `onChange(users)` gets the sorted list after every change.
 */
'use strict'

function typingTracker(onChange, ms) {
  const timers = {}
  const changed = () => onChange(Object.keys(timers).sort())
  const tracker = {
    start(user) {
      clearTimeout(timers[user])
      timers[user] = setTimeout(() => tracker.stop(user), ms)
      changed()
    },
    stop(user) {
      if (!(user in timers)) return
      clearTimeout(timers[user])
      delete timers[user]
      changed()
    },
    clear() {
      Object.keys(timers).forEach((u) => {
        clearTimeout(timers[u])
        delete timers[u]
      })
    }
  }
  return tracker
}

module.exports = { typingTracker }
