/**
 * Group info page (`?room=NAME`): title, topic, kind, member count, my role
 * and the member grid (`roomInfo`, `allMembers`). Admins and the owner edit the
 * title and topic (`updateRoom`) and invite (private rooms; any member in a
 * public one) from the people I have DMs with or by user id; a tap on a member
 * offers what my role allows (utils/chatview.js memberActions: message,
 * make/remove admin, hand over, remove, ban). Anyone can leave (the owner
 * after handing the group over, as chatd requires). The page reloads on the
 * room's events and says so when I am no longer a member. "Notify me about
 * every message" (token users) adds the group to my offline-push rooms
 * (`pushSubscribe {rooms, notify}`); switched on it also shows WeChat's
 * subscribe prompt for `config.pushTemplates` (utils/push.js).
 */
const config = require('../../config')
const push = require('../../utils/push')
const { memberActions, mayManage, dmPeers, learnNames } = require('../../utils/chatview')
const { confirmLeave } = require('../../utils/groups')

const KINDS = { private: 'Private group · invite only', public: 'Public group · anyone can join' }

Component({
  data: {
    room: '',
    title: '',
    topic: '',
    kindText: '',
    count: 0,
    role: '',
    members: [],
    me: '',
    canEdit: false,
    canInvite: false,
    editTitle: '',
    editTopic: '',
    invitee: '',
    people: [],
    removed: '',
    error: '',
    notifyShown: false,
    notify: false
  },
  methods: {
    onLoad(options) {
      const chat = getApp().chat()
      if (!chat) {
        wx.redirectTo({ url: '/pages/login/login' })
        return
      }
      this.chat = chat
      this.room = decodeURIComponent((options && options.room) || '')
      this.setData({ room: this.room, me: chat.user || '' })
      const key = 'r:' + this.room
      this._offs = [
        chat.on('timeline', (e) => {
          // members and room changes are timeline events: reload on a new one
          if (e.key !== key) return
          if (this._eventCount() !== this._events) this.reload()
        }),
        chat.on('removed', (e) => {
          if (e.key === key) this.setData({ removed: 'You are no longer a member of this group.', canEdit: false, canInvite: false })
        })
      ]
      this._loadNotify()
      return this.reload()
    },
    /** The "notify me about every message" switch: shown to token users, on when chatd has the room. */
    _loadNotify() {
      const chat = this.chat
      const shown = !!(chat.welcome && chat.welcome.authenticated)
      this.setData({ notifyShown: shown })
      if (!shown) return null
      return push.report(chat, {}).then((s) => this._notified(s), () => {}) // offline: after the next welcome
    },
    _notified(subs) {
      this.setData({ notify: !!subs && (subs.rooms || []).indexOf(this.room) >= 0 })
      return subs
    },
    onNotify(e) {
      const on = !!e.detail.value
      const spec = { rooms: [this.room], notify: on }
      // switched on: WeChat's prompt too (inside this tap), each accept reported with the room
      const done = on ? push.subscribe(wx, this.chat, config.pushTemplates, spec) : push.report(this.chat, spec)
      return done.then(
        (subs) => this._notified(subs),
        (err) => {
          this.setData({ notify: !on })
          wx.showToast({ title: 'Refused: ' + (err.code || err.message), icon: 'none' })
        }
      )
    },
    /** How many membership/room events the group's timeline holds (a new one: reload). */
    _eventCount() {
      return this.chat.timeline('r:' + this.room).filter((x) => x.event).length
    },
    onUnload() {
      ;(this._offs || []).forEach((off) => off())
    },
    /** Loads room_info and the member list. */
    reload() {
      const chat = this.chat
      const room = this.room
      this._events = this._eventCount()
      return Promise.all([chat.roomInfo(room), chat.allMembers(room)]).then(
        ([info, members]) => {
          if (this.data.removed) return
          const role = info.role || ''
          const names = learnNames({}, chat.conversations)
          members.forEach((m) => {
            names[m.user] = m.name || m.user
          })
          const ids = members.map((m) => m.user)
          this.setData({
            title: info.title || room,
            topic: info.topic || '',
            kindText: KINDS[info.kind] || info.kind,
            count: info.members,
            role,
            members,
            canEdit: mayManage(role, info.kind, 'edit'),
            canInvite: mayManage(role, info.kind, 'invite'),
            editTitle: info.title || '',
            editTopic: info.topic || '',
            people: dmPeers(chat.conversations, names, ids).map((p) => Object.assign(p, { checked: false })),
            error: ''
          })
          this._kind = info.kind
          wx.setNavigationBarTitle({ title: (info.title || room) + ' (' + info.members + ')' })
        },
        (e) => this.setData({ error: 'Cannot load the group: ' + (e.code || e.message) })
      )
    },
    _run(p, done) {
      return p.then(
        () => {
          if (done) wx.showToast({ title: done, icon: 'success' })
          return this.reload()
        },
        (e) => wx.showToast({ title: 'Refused: ' + (e.code || e.message), icon: 'none' })
      )
    },
    onEditTitle(e) {
      this.setData({ editTitle: e.detail.value })
    },
    onEditTopic(e) {
      this.setData({ editTopic: e.detail.value })
    },
    onSave() {
      const changes = {}
      const title = this.data.editTitle.trim()
      if (title && title !== this.data.title) changes.title = title
      if (this.data.editTopic !== this.data.topic) changes.topic = this.data.editTopic
      if (!Object.keys(changes).length) return Promise.resolve()
      return this._run(this.chat.updateRoom(this.room, changes), 'Saved')
    },
    onInviteInput(e) {
      this.setData({ invitee: e.detail.value })
    },
    onInvite() {
      const user = (this.data.invitee || '').trim()
      if (!user) return Promise.resolve()
      this.setData({ invitee: '' })
      return this._run(this.chat.invite(this.room, user), 'Invited')
    },
    /** A tap on one of my DM peers in the invite list. */
    onInvitePeer(e) {
      return this._run(this.chat.invite(this.room, e.detail.user), 'Invited')
    },
    onMember(e) {
      const m = this.data.members.find((x) => x.user === e.detail.user)
      if (!m || this.data.removed) return
      const actions = memberActions(this.data.role, m, this.chat.user)
      if (!actions.length) return
      wx.showActionSheet({
        itemList: actions.map((a) => a.label),
        success: (res) => this._memberAct(actions[res.tapIndex].id, m),
        fail: () => {}
      })
    },
    _memberAct(action, m) {
      const chat = this.chat
      const room = this.room
      if (action === 'dm') return wx.navigateTo({ url: '/pages/chat/chat?key=' + encodeURIComponent('d:' + m.user) })
      if (action === 'admin' || action === 'member') return this._run(chat.setRole(room, m.user, action))
      if (action === 'kick') return this._run(chat.kick(room, m.user), 'Removed')
      if (action === 'ban') return this._run(chat.ban(room, m.user), 'Banned')
      if (action === 'owner') {
        wx.showModal({
          title: 'Hand the group over',
          content: (m.name || m.user) + ' becomes the owner; you stay an admin.',
          success: (res) => {
            if (res.confirm) this._run(chat.setRole(room, m.user, 'owner'))
          }
        })
      }
      return null
    },
    /** A new group picked from this group's members. */
    onNewGroup() {
      wx.navigateTo({ url: '/pages/group-create/group-create?room=' + encodeURIComponent(this.room) })
    },
    onLeave() {
      return confirmLeave(wx, this.chat, this.room, this.data.title, this.data.role).then((left) => {
        if (left) wx.switchTab({ url: '/pages/conversations/conversations' })
        return left
      })
    }
  }
})
