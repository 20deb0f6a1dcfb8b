/**
 * Group info page (`?room=NAME`): title, topic, kind, member count, my role
 * and the member grid (`roomInfo`, `allMembers`). Admins and the owner edit the
 * title and topic (`updateRoom`) and invite (private rooms; any member in a
 * public one) from the people I have DMs with or by user id; a tap on a member
 * offers what my role allows (utils/chatview.js memberActions: message,
 * make/remove admin, hand over, remove, ban, and "Moderate…": room mutes for
 * owners and admins, global mutes and bans for global moderators, see
 * utils/moderation.js). Muted members are marked "Muted until HH:MM" (from the
 * room's muted/unmuted events). Anyone can leave (the owner
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
const { moderateActions, mutedUsers, nextExpiry, mutedMark, isModerator, pick, MUTES, GLOBAL_MUTES, BANS } = require('../../utils/moderation')
const { requireChat } = require('../../utils/page')

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
      const chat = requireChat(this)
      if (!chat) return
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
      clearTimeout(this._expiry)
    },
    /** `{user: until}` of the members muted in the room now (its timeline's events). */
    _muted() {
      return mutedUsers(this.chat.timeline('r:' + this.room), Date.now())
    },
    /** `members` with the "Muted until …" marks; a timer takes a mark off when its mute ends. */
    _marked(members) {
      const now = Date.now()
      const muted = this._muted()
      clearTimeout(this._expiry)
      const next = nextExpiry(muted)
      if (next) this._expiry = setTimeout(() => this.setData({ members: this._marked(this.data.members) }), next - now + 50)
      return members.map((m) => Object.assign({}, m, { muted: muted[m.user] ? mutedMark(muted[m.user], now) : '' }))
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
            members: this._marked(members),
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
      if (this._moderate(m).length) actions.push({ id: 'moderate', label: 'Moderate…' })
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
      if (action === 'moderate') return pick(wx, this._moderate(m)).then((a) => a && this._modAct(a.id, m))
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
    /** The "Moderate…" sheet for member `m`. */
    _moderate(m) {
      return moderateActions(this.data.role, m, this.chat.user, { moderator: isModerator(this.chat.token), mutedUntil: this._muted()[m.user] || 0 })
    },
    /** A room mute or unmute, then a sync: chatd sends its event to the others, not to me. */
    _roomMute(p, done) {
      const chat = this.chat
      return this._run(p.then((r) => chat.sync().then(() => r, () => r)), done)
    },
    _modAct(action, m) {
      const chat = this.chat
      const mute = MUTES.find((x) => x.id === action)
      if (mute) return this._roomMute(chat.muteUser(this.room, m.user, mute.seconds), 'Muted')
      if (action === 'unmute') return this._roomMute(chat.unmuteUser(this.room, m.user), 'Unmuted')
      if (action === 'muteAll') return pick(wx, GLOBAL_MUTES).then((d) => d && this._run(chat.muteUser(null, m.user, d.seconds), 'Muted everywhere'))
      if (action === 'banAll') {
        return pick(wx, BANS).then(
          (d) =>
            d &&
            new Promise((resolve) => {
              wx.showModal({
                title: 'Ban everywhere',
                content: (m.name || m.user) + ' is logged out and cannot use chat (' + d.label.toLowerCase() + ').',
                success: (res) => resolve(res.confirm ? this._run(chat.banUser(m.user, d.seconds || undefined), 'Banned everywhere') : null),
                fail: () => resolve(null)
              })
            })
        )
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
