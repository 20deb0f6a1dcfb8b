/**
 * New group page: a title, private (invite only) or public, and members
 * picked from the people I have DMs with and, with `?room=NAME` (from a
 * group's info page), that group's members (`?members=a,b` preselects). Create →
 * `createRoom` with a generated room id, then the new group's chat page.
 * Without a title the members' names are the title (as WeChat does).
 * `roomInfo` right after puts the group's title, kind and my role into the
 * conversation list before any event or sync brings them.
 */
const { makeId } = require('../../utils/chatd')
const { dmPeers, groupTitle, learnNames } = require('../../utils/chatview')
const { requireChat } = require('../../utils/page')

Component({
  data: { title: '', kind: 'private', people: [], busy: false, error: '' },
  methods: {
    onLoad(options) {
      const chat = requireChat(this)
      if (!chat) return
      const names = learnNames({}, chat.conversations)
      const pre = options && options.members ? decodeURIComponent(options.members).split(',') : []
      const people = dmPeers(chat.conversations, names, [chat.user]).map((p) => Object.assign(p, { checked: pre.indexOf(p.user) >= 0 }))
      this.setData({ people })
      const room = options && options.room ? decodeURIComponent(options.room) : ''
      if (!room) return null
      return chat.allMembers(room).then(
        (members) => {
          const known = new Set(this.data.people.map((p) => p.user).concat([chat.user]))
          const more = members.filter((m) => !known.has(m.user)).map((m) => ({ user: m.user, name: m.name || m.user, checked: pre.indexOf(m.user) >= 0 }))
          if (more.length) this.setData({ people: this.data.people.concat(more) })
        },
        () => {}
      )
    },
    onTitle(e) {
      this.setData({ title: e.detail.value, error: '' })
    },
    onKind(e) {
      this.setData({ kind: e.currentTarget.dataset.kind })
    },
    onToggle(e) {
      const i = this.data.people.findIndex((p) => p.user === e.detail.user)
      if (i >= 0) this.setData({ ['people[' + i + '].checked']: !this.data.people[i].checked })
    },
    onCreate() {
      if (this.data.busy) return Promise.resolve()
      const picked = this.data.people.filter((p) => p.checked)
      const title = (this.data.title || '').trim() || groupTitle(picked.map((p) => p.name))
      if (!title) {
        this.setData({ error: 'Give the group a name or pick its members' })
        return Promise.resolve()
      }
      const room = makeId(Math.random, 'g')
      this.setData({ busy: true, error: '' })
      const chat = this.chat
      return chat
        .createRoom({ room, kind: this.data.kind, title, members: picked.map((p) => p.user) })
        .then(() => chat.roomInfo(room)) // the list shows the group's title, kind and my role at once
        .then(
        () => {
          this.setData({ busy: false })
          wx.redirectTo({ url: '/pages/chat/chat?key=' + encodeURIComponent('r:' + room) })
        },
        (e) => this.setData({ busy: false, error: 'Could not create the group: ' + (e.code || e.message) })
      )
    }
  }
})
