/**
 * <member-grid>: a room's members as a WeChat-style grid of avatar initials
 * with names and role labels (Owner, Admin), a member's mute mark, and "(you)"
 * for the current user.
 * A tap fires `select` {user}.
 */
const { initialOf } = require('../../utils/chatview')

const ROLES = { owner: 'Owner', admin: 'Admin' }

Component({
  properties: {
    members: { type: Array, value: [] }, // [{user, name, role, online, muted}] (muted: a mark, "Muted until 15:40")
    me: { type: String, value: '' }
  },
  data: { cells: [] },
  observers: {
    'members, me'(members, me) {
      this.setData({
        cells: members.map((m) => ({
          user: m.user,
          name: (m.name || m.user) + (m.user === me ? ' (you)' : ''),
          initial: initialOf(m.name || m.user),
          role: ROLES[m.role] || '',
          muted: m.muted || '',
          online: !!m.online
        }))
      })
    }
  },
  methods: {
    onTap(e) {
      this.triggerEvent('select', { user: e.currentTarget.dataset.user })
    }
  }
})
