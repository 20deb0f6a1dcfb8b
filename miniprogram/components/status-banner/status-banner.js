/**
 * <status-banner>: a banner for every connection state but `open`:
 * "Connecting…", "Reconnecting…" (with the wait when known), "Paused",
 * "Disconnected" (with the reason). Hidden while connected.
 */
function label(state, delay, reason) {
  switch (state) {
    case 'open':
    case '':
      return ''
    case 'connecting':
      return 'Connecting…'
    case 'reconnecting':
      return delay > 0 ? 'Reconnecting… (retry in ' + Math.ceil(delay / 1000) + ' s)' : 'Reconnecting…'
    case 'paused':
      return 'Paused'
    case 'closed':
      return reason ? 'Disconnected: ' + reason : 'Disconnected'
    default:
      return state
  }
}

Component({
  properties: {
    state: { type: String, value: '' },
    delay: { type: Number, value: 0 },
    reason: { type: String, value: '' }
  },
  data: { label: '' },
  observers: {
    'state, delay, reason'(state, delay, reason) {
      this.setData({ label: label(state, delay, reason) })
    }
  }
})
