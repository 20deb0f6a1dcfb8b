/**
 * Chat page of WeChat-login users (`?key=r:<room>` or `?key=d:<user>`): renders
 * the SDK's `timeline(key)` and re-renders on its `timeline` events with a
 * `setData` of only the changed paths (utils/window.js: chunks by seq, never
 * the whole list). Only the newest `config.chatWindow` rows are rendered at
 * first; scrolling to the top shows more, fetching earlier pages with
 * `loadEarlier(key)` when the cache runs out. At most about `config.chatMax`
 * rows are rendered: scrolling far up empties the newest chunks (the window is
 * then "cut": new messages wait behind "Back to the newest", scrolling down
 * brings them back and empties the oldest).
 *
 * Under my messages: "sending…" → "sent" → "read" (DM) or "read by N" (rooms;
 * a tap lists the readers from `receipts`). Long-press a message → action
 * sheet: Reply (a quote bar above the composer, sent as `reply_to`), Copy,
 * React, and for my own messages inside the recall window Edit and Recall
 * (shown as "you recalled a message" with Re-edit). Typing "@" in a room opens
 * the member picker (`allMembers`); membership events are centred grey lines;
 * "N new messages" (from `config.jumpAfter` unread on) jumps to the first
 * unread one. Messages on screen are
 * marked read (`markRead`) on show and when new ones arrive while visible. A
 * kicked, banned or leaving user's page stops updating and says why. An unsent
 * text is kept as the conversation's draft when the page closes.
 *
 * Pictures, voice and files (the composer's "+" panel and hold-to-talk):
 * `wx.chooseMedia` (album or camera, compressed), `wx.getRecorderManager` (mp3,
 * at most 60 s; slid up: cancelled), `wx.chooseMessageFile` (its `name` is kept).
 * Each goes into the SDK's outbox (`chat.sendMedia`: uploaded in the order
 * picked, retried on network failures, sent with `attachments`, resumed after
 * a restart); its pending bubble shows a progress ring (`upload` events), a
 * refusal is a toast and a "not sent" bubble with Retry / Delete. Pictures
 * are thumbnails sized from width/height, a tap previews the conversation's
 * originals (`wx.previewImage`); voice plays with `wx.createInnerAudioContext`;
 * files open with `wx.downloadFile` + `wx.openDocument`. A thumbnail that fails
 * to load (its signed URL expired) gets fresh URLs once (`chat.mediaInfo`).
 * After the first DM I send in a session the page asks for offline
 * notifications (utils/push.js, `config.pushTemplates`).
 */
const config = require('../../config')
const { REACTIONS, nameOf, titleOf, messageRow, messageActions, mentionsIn, failureText, learnNames } = require('../../utils/chatview')
const { chunkOf, fromForLast, layout, diff } = require('../../utils/window')
const { typingTracker } = require('../../utils/typing')
const media = require('../../utils/media')
const push = require('../../utils/push')
const { reportMessage, muteTracker, mutedNotice } = require('../../utils/moderation')
const { requireChat } = require('../../utils/page')

/** How long "X is typing…" stays after the last typing frame (ms). */
const TYPING_MS = 4000

/** Seqs per chunk of the rendered list. */
const CHUNK = 20
/** Empty chunks kept before the first cached seq, so earlier pages fill existing paths. */
const PREPAD = 50

/** The most chunks rendered at once (config.chatMax rows). */
const maxChunks = () => Math.max(2, Math.ceil(config.chatMax / CHUNK))
/** Chunks added per scroll to the bottom of a cut window. */
const stepChunks = () => Math.max(1, Math.ceil(config.chatPage / CHUNK))
/** The newest chunk holding an item of `items`. */
function newestChunk(items) {
  for (let i = items.length - 1; i >= 0; i--) if (items[i].seq !== null) return chunkOf(items[i].seq, CHUNK)
  return 0
}

/** The conversation key of the page's query: `?key=r:<room>|d:<user>`, or a notification's `?with=` / `?room=`. */
function keyOf(q) {
  if (q.key) return decodeURIComponent(q.key)
  if (q.with) return 'd:' + decodeURIComponent(q.with)
  if (q.room) return 'r:' + decodeURIComponent(q.room)
  return ''
}

const REMOVED = {
  kicked: 'You were removed from this group.',
  banned: 'You were banned from this group.',
  left: 'You left this group.'
}

Component({
  data: {
    title: '',
    dm: false,
    chunks: [],
    pending: [],
    anchor: '',
    state: '',
    delay: 0,
    hasMore: false,
    loading: false,
    newCount: 0,
    cut: false,
    behind: 0,
    quote: null,
    editing: null,
    mention: null,
    typingUsers: [],
    removed: '',
    muteNotice: '',
    error: '',
    playing: ''
  },
  methods: {
    onLoad(options) {
      const key = keyOf(options || {})
      // opened before the app has a session (an offline notification): log in, then come back here
      const chat = requireChat(this, key ? '/pages/chat/chat?key=' + encodeURIComponent(key) : '')
      if (!chat) return
      this.key = key
      this.dm = key.charAt(0) === 'd'
      this.target = key.slice(2)
      this.names = {}
      this._reedit = {} // seq -> my text, for Re-edit after a recall from this page
      this._picked = [] // [{user, name}] from the @ picker
      this._text = ''
      this._visible = true
      this._rows = new Map()
      this._shownProgress = {} // outbox id -> the upload progress last rendered (a render every 5 %)
      this._fresh = {} // media id -> fields with fresh URLs (an expired thumbnail)
      this._refreshed = {} // media ids asked for once
      this._played = {} // voice messages played on this phone (storage: utils/media.js PLAYED_KEY)
      const played = wx.getStorageSync(media.PLAYED_KEY)
      if (Array.isArray(played)) played.forEach((id) => (this._played[id] = true))
      const c = chat.conversation(key)
      if (!this.dm && !c) {
        // a room I am not in yet (from the Rooms tab): join makes me a member; a sync then
        // brings the new conversation with its newest items (chatd pushes no `joined`
        // event for the rooms of chatd 0.1)
        chat
          .join(this.target)
          .then(() => (chat.conversation(key) ? null : chat.sync()))
          .catch((e) => this.setData({ error: 'Cannot open the group: ' + e.message }))
      }
      const items = chat.timeline(key)
      const first = items.find((m) => m.seq !== null)
      this._base = first ? Math.max(0, chunkOf(first.seq, CHUNK) - PREPAD) : 0
      this._from = fromForLast(items, config.chatWindow, CHUNK)
      this._to = null // the last rendered chunk; null: the window follows the newest
      this._layout = { chunks: [], pending: [] }
      this._readAtOpen = c ? c.read : 0
      this.setData({
        dm: this.dm,
        state: chat.state,
        newCount: c && c.unread >= config.jumpAfter ? c.unread : 0,
        hasMore: false
      })
      this._title(c)
      if (c && c.draft) {
        this._text = c.draft
        this._setText(c.draft)
      }
      this._typing = typingTracker((users) => this.setData({ typingUsers: users }), TYPING_MS)
      this._offs = [
        chat.on('typing', (t) => {
          if (!this.dm && t.room === this.target) this._typing.start(t.from)
        }),
        chat.on('message', (m) => {
          if (!this.dm && m.room === this.target) this._typing.stop(m.from)
        }),
        chat.on('timeline', (e) => {
          if (e.key === key) this._render()
        }),
        chat.on('upload', (e) => {
          // my file's upload progress (its state changes come as `timeline` events)
          if (e.key !== key || e.state !== 'uploading') return
          const shown = this._shownProgress[e.id] || 0
          if (e.progress - shown < 5 && e.progress < 100) return
          this._shownProgress[e.id] = e.progress
          this._render()
        }),
        chat.on('conversation', (e) => {
          if (e.key === key && e.conversation) this._title(e.conversation)
        }),
        chat.on('status', (s) => this.setData({ state: s.state, delay: s.delay || 0 })),
        chat.on('removed', (e) => {
          if (e.key === key) this._stop(e.kind)
        }),
        chat.on('failed', (e) => {
          // a refused recall/edit/reaction, or a message of mine refused (it stays as "not sent")
          const mine = e.kind === 'op' ? e.key === key : (e.kind === 'dm' ? 'd:' + e.to : 'r:' + e.room) === key
          if (!mine) return
          if (e.op === 'recall') delete this._reedit[e.seq]
          wx.showToast({ title: e.upload ? media.uploadErrorText({ code: e.error }) : failureText(e, Date.now()), icon: 'none' })
        })
      ]
      // muted by a moderator: the composer is off until the mute ends (utils/moderation.js)
      this._mute = muteTracker(chat, key, (until) => this.setData({ muteNotice: until ? mutedNotice(until, Date.now()) : '' }), { now: Date.now, setTimeout, clearTimeout })
      this._render()
      if (!items.length && chat.connected) this.onTop()
    },
    onShow() {
      this._visible = true
      this._markRead()
    },
    onHide() {
      this._visible = false
    },
    onUnload() {
      this._off()
      this._stopAudio()
      if (this._recording) {
        // closed while recording: the clip is thrown away
        this._recording.cancel = true
        wx.getRecorderManager().stop()
      }
      if (!this.chat || this.data.removed) return
      const c = this.chat.conversation(this.key)
      const text = this.data.editing ? '' : this._text.trim()
      if (c && (c.draft || '') !== text) this.chat.setDraft(this.key, text)
    },
    _off() {
      ;(this._offs || []).forEach((off) => off())
      this._offs = []
      if (this._typing) this._typing.clear()
      if (this._mute) this._mute.stop()
    },
    /** Puts `text` into the composer (a draft, a message to edit, an @mention). */
    _setText(text) {
      const composer = this.selectComponent('#composer')
      if (composer) composer.setText(text)
    },
    _title(c) {
      const s = c || Object.assign({ kind: this.dm ? 'dm' : 'public' }, this.dm ? { with: this.target } : { room: this.target })
      const title = titleOf(s, this.names)
      if (title !== this.data.title) {
        this.setData({ title })
        wx.setNavigationBarTitle({ title })
      }
    },
    /** The membership ended (kicked, banned, left): the page stops following the conversation. */
    _stop(kind) {
      this._off()
      this.setData({ removed: REMOVED[kind] || REMOVED.left, quote: null, editing: null, mention: null, typingUsers: [] })
    },

    // ---- the list ---------------------------------------------------------

    /** Lays the window out again and sets only what changed. */
    _render() {
      const chat = this.chat
      const items = chat.timeline(this.key)
      learnNames(this.names, items)
      const ctx = this._ctx()
      const shown = items.filter((m) => this._inWindow(m))
      const rows = shown.map((m) => messageRow(m, ctx))
      let next = layout(rows, { base: this._base, size: CHUNK, from: this._from, length: this._layout.chunks.length })
      let patch
      if (next.rebase) {
        // an item before the padded base: choose a new base and set the list once
        this._base = Math.max(0, chunkOf(rows.find((r) => r.seq !== null).seq, CHUNK) - PREPAD)
        next = layout(rows, { base: this._base, size: CHUNK, from: this._from })
        patch = { chunks: next.chunks, pending: next.pending }
      } else {
        patch = diff(this._layout, next)
      }
      this._layout = next
      this._rows = new Map(rows.map((r) => [r.key, r]))
      const last = rows.length ? rows[rows.length - 1] : null
      const lastKey = last ? last.key : ''
      if (lastKey !== this._lastKey) {
        // a new newest row: follow it (an earlier page prepends: no jump)
        this._lastKey = lastKey
        patch.anchor = lastKey
      }
      const more = this._earlier() || items.some((m) => m.seq !== null && chunkOf(m.seq, CHUNK) < this._from)
      if (more !== this.data.hasMore) patch.hasMore = more
      const cut = this._to !== null
      const behind = cut ? items.filter((m) => m.seq !== null && !m.event && chunkOf(m.seq, CHUNK) > this._to).length : 0
      if (cut !== this.data.cut) patch.cut = cut
      if (behind !== this.data.behind) patch.behind = behind
      // setData copies, as WeChat's does when it sends data to the view (the
      // layout objects stay the page's own, for the next diff)
      if (Object.keys(patch).length) this.setData(JSON.parse(JSON.stringify(patch)))
      this._markRead()
    },
    /** What utils/chatview.js messageRow needs to know. */
    _ctx() {
      const chat = this.chat
      return {
        me: chat.user,
        myName: (chat.welcome && chat.welcome.name) || chat.user,
        dm: this.dm,
        names: this.names,
        reedit: this._reedit,
        mediaUrl: (p) => chat.mediaUrl(p),
        fresh: this._fresh,
        played: this._played
      }
    },
    /** May chatd have items before the cached ones? (seqs start at 1) */
    _earlier() {
      const store = this.chat.store
      if (store.more(this.key) === false) return false
      const oldest = store.oldest(this.key)
      return oldest === null || oldest > 1
    },
    /** Is timeline item `m` in the rendered window? (my pending entries: only at the newest) */
    _inWindow(m) {
      if (m.seq === null) return this._to === null
      const c = chunkOf(m.seq, CHUNK)
      return c >= this._from && (this._to === null || c <= this._to)
    },
    /** Marks read what is on screen: everything, or up to the last rendered row of a cut window. */
    _markRead() {
      if (!this._visible || this.data.removed || !this.chat) return
      const c = this.chat.conversation(this.key)
      if (!c || c.seq <= c.read) return
      if (this._to === null) this.chat.markRead(this.key)
      else {
        const rows = Array.from(this._rows.values()).filter((r) => r.seq !== null)
        const seq = rows.length ? rows[rows.length - 1].seq : 0
        if (seq > c.read) this.chat.markRead(this.key, seq)
      }
    },
    /** Scrolled to the top: show more cached rows, or fetch the page before them. */
    onTop() {
      if (this.data.loading || this.data.removed) return Promise.resolve()
      const items = this.chat.timeline(this.key).filter((m) => m.seq !== null)
      const hidden = items.filter((m) => chunkOf(m.seq, CHUNK) < this._from)
      const topKey = this._firstKey()
      if (hidden.length) {
        this._showFrom(chunkOf(hidden[Math.max(0, hidden.length - config.chatPage)].seq, CHUNK), topKey)
        return Promise.resolve()
      }
      if (!this._earlier()) return Promise.resolve()
      this.setData({ loading: true })
      return this.chat.loadEarlier(this.key, config.chatPage).then(
        () => {
          this.setData({ loading: false })
          const all = this.chat.timeline(this.key).filter((m) => m.seq !== null)
          const older = all.filter((m) => chunkOf(m.seq, CHUNK) < this._from)
          if (older.length) this._showFrom(chunkOf(older[0].seq, CHUNK), topKey)
          else this._render()
        },
        (e) => {
          // offline: the sync after the reconnect brings the conversation; a refusal is shown
          this.setData({ loading: false })
          if (e.code) this.setData({ error: 'Earlier messages: ' + e.message })
        }
      )
    },
    _firstKey() {
      const c = this._layout.chunks.find((x) => x.rows.length)
      return c ? c.rows[0].key : ''
    },
    /** Renders from chunk `from` on; past config.chatMax rows the newest chunks are cut. */
    _showFrom(from, keepKey) {
      this._from = Math.min(this._from, from)
      const newest = newestChunk(this.chat.timeline(this.key))
      const top = this._to === null ? newest : this._to
      if (top - this._from + 1 > maxChunks()) this._to = this._from + maxChunks() - 1
      if (this._to !== null && this._to >= newest) this._to = null
      this._render()
      if (keepKey) this.setData({ anchor: keepKey }) // stay where the user was reading
    },
    _newestRenderedKey() {
      const rows = Array.from(this._rows.values())
      return rows.length ? rows[rows.length - 1].key : ''
    },
    /** Scrolled to the bottom of a cut window: newer chunks back, the oldest out. */
    onBottom() {
      if (this._to === null) return
      const keep = this._newestRenderedKey()
      const newest = newestChunk(this.chat.timeline(this.key))
      const to = this._to + stepChunks()
      this._to = to >= newest ? null : to
      const top = this._to === null ? newest : this._to
      if (top - this._from + 1 > maxChunks()) this._from = top - maxChunks() + 1
      this._render()
      if (keep) this.setData({ anchor: keep })
    },
    /** "Back to the newest": the window of a freshly opened page. */
    onLatest() {
      this._to = null
      this._from = fromForLast(this.chat.timeline(this.key), config.chatWindow, CHUNK)
      this._render()
      this.setData({ anchor: this._newestRenderedKey() })
    },
    /** "N new messages": show (and fetch) back to the first unread message and scroll to it. */
    onJump() {
      const target = () => this.chat.timeline(this.key).find((m) => m.seq !== null && !m.event && !m.mine && m.seq > this._readAtOpen)
      const go = () => {
        const m = target()
        const oldest = this.chat.store.oldest(this.key)
        if ((!m || m.seq === oldest) && oldest !== null && oldest > this._readAtOpen + 1 && this.chat.store.more(this.key) !== false) {
          return this.chat.loadEarlier(this.key, config.chatPage).then(go)
        }
        this.setData({ newCount: 0 })
        if (!m) return null
        this._showFrom(chunkOf(m.seq, CHUNK), null)
        this.setData({ anchor: 's' + m.seq })
        return m.seq
      }
      return Promise.resolve(go()).catch((e) => this.setData({ error: 'Earlier messages: ' + e.message }))
    },

    // ---- actions on a message -----------------------------------------------

    onRowAction(e) {
      const row = this._rows.get(e.detail.key)
      if (!row || this.data.removed) return
      const actions = messageActions(row, Date.now(), config.recallWindow * 1000)
      if (!actions.length) return
      wx.showActionSheet({
        itemList: actions.map((a) => a.label),
        success: (res) => this._act(actions[res.tapIndex].id, row),
        fail: () => {}
      })
    },
    _act(action, row) {
      const chat = this.chat
      if (action === 'reply') {
        const text = row.text || (row.attachments.length ? media.mediaPreview(row.attachments[0].kind) : '')
        this.setData({ quote: { seq: row.seq, name: row.name, text }, editing: null })
      } else if (action === 'copy') {
        wx.setClipboardData({ data: row.text })
      } else if (action === 'react') {
        wx.showActionSheet({
          itemList: REACTIONS,
          success: (res) => this.onReact({ detail: { seq: row.seq, emoji: REACTIONS[res.tapIndex] } }),
          fail: () => {}
        })
      } else if (action === 'edit') {
        this.setData({ editing: { seq: row.seq, text: row.text }, quote: null })
        this._setText(row.text)
      } else if (action === 'recall') {
        this._reedit[row.seq] = row.text
        chat.recall(this.key, row.seq)
      } else if (action === 'report') {
        return reportMessage(wx, chat, this.key, row.seq)
      }
      return null
    },
    /** The "You are muted" notice tapped: try sending again (a global unmute sends no event). */
    onMutedTap() {
      if (this._mute) this._mute.clear()
    },
    onReact(e) {
      this.chat.react(this.key, e.detail.seq, e.detail.emoji)
    },
    onReedit(e) {
      const text = this._reedit[e.detail.seq]
      if (text === undefined) return
      delete this._reedit[e.detail.seq]
      this._text = text
      this._setText(text)
      this._render()
    },
    /** "read by N" tapped: who read it (the list in small rooms, else the count). */
    onTicks(e) {
      return this.chat.receipts(this.key, e.detail.seq).then(
        (r) => {
          const who = Array.isArray(r.users) ? r.users.map((u) => nameOf(u, this.chat.user, this.names)).join(', ') : r.count + ' members'
          wx.showModal({ title: 'Read by ' + r.count, content: who, showCancel: false })
        },
        () => wx.showToast({ title: 'Not connected', icon: 'none' })
      )
    },
    onRetry(e) {
      const entry = this.chat.failed.find((x) => 'p' + x.id === e.detail.key)
      if (entry) {
        this.chat.retry(entry)
        this._render()
      }
    },
    /** Delete on a failed (or still uploading) picture, voice or file: gone from the outbox. */
    onDiscard(e) {
      const entry = this.chat.failed.concat(this.chat.outbox).find((x) => 'p' + x.id === e.detail.key)
      if (entry && this.chat.discard(entry)) this._render()
    },
    onCancelQuote() {
      this.setData({ quote: null })
    },
    onCancelEdit() {
      this.setData({ editing: null })
      this._text = ''
      this._setText('')
    },

    // ---- composing ------------------------------------------------------------

    onInput(e) {
      const value = e.detail.value
      const typedAt = value.length > this._text.length && value.charAt(value.length - 1) === '@'
      this._text = value
      if (typedAt && !this.dm) this._openPicker()
      else if (this.data.mention) this._filterPicker(value)
    },
    _openPicker() {
      this._atFrom = this._text.length
      if (!this._members) this._members = this.chat.allMembers(this.target)
      this._members.then(
        (list) => {
          const members = list.filter((m) => m.user !== this.chat.user).map((m) => ({ user: m.user, name: m.name || m.user }))
          members.forEach((m) => {
            this.names[m.user] = m.name
          })
          this.setData({ mention: { members, filter: '' } })
        },
        () => {
          this._members = null
        }
      )
    },
    _filterPicker(value) {
      if (value.length < this._atFrom || value.charAt(this._atFrom - 1) !== '@') {
        this.setData({ mention: null })
        return
      }
      this.setData({ 'mention.filter': value.slice(this._atFrom) })
    },
    onPickMention(e) {
      const { user, name } = e.detail
      this._picked.push({ user, name })
      const text = this._text.slice(0, this._atFrom) + name + ' '
      this._text = text
      this._setText(text)
      this.setData({ mention: null })
    },
    onCancelMention() {
      this.setData({ mention: null })
    },
    onTyping() {
      if (!this.dm) this.chat.typing(this.target)
    },
    onSend(e) {
      const text = e.detail.text
      const chat = this.chat
      try {
        if (this.data.editing) {
          chat.edit(this.key, this.data.editing.seq, text)
          this.setData({ editing: null })
        } else {
          const opts = {}
          if (this.data.quote) opts.reply_to = this.data.quote.seq
          const mentions = this.dm ? [] : mentionsIn(text, this._picked)
          if (mentions.length) opts.mentions = mentions
          if (this.dm) {
            chat.dm(this.target, text, opts)
            // a natural moment to ask for offline notifications: the first DM of the
            // session, inside the send tap (WeChat only asks from a user's tap)
            push.afterFirstDm(wx, chat, getApp(), config.pushTemplates)
          } else chat.send(this.target, text, opts)
          if (this.data.quote) this.setData({ quote: null })
        }
      } catch (err) {
        this.setData({ error: err.message })
        return
      }
      this._picked = []
      this._text = ''
      if (this._to !== null) this.onLatest() // sending shows the newest, as WeChat does
      const c = chat.conversation(this.key)
      if (c && c.draft) chat.setDraft(this.key, '')
      this._render()
    },
    // ---- pictures, voice, files ----------------------------------------------------

    /** The composer's "+" panel: Photo (album or camera) or File (from a chat). */
    onPick(e) {
      if (e.detail.type === 'photo') {
        wx.chooseMedia({
          count: 9,
          mediaType: ['image'],
          sourceType: ['album', 'camera'],
          sizeType: ['compressed'],
          success: (res) => (res.tempFiles || []).forEach((f) => this._queuePicture(f)),
          fail: () => {}
        })
      } else if (e.detail.type === 'file') {
        wx.chooseMessageFile({
          count: 1,
          type: 'file',
          success: (res) => (res.tempFiles || []).forEach((f) => this._queue({ kind: 'file', filePath: f.path, size: f.size, name: f.name })),
          fail: () => {}
        })
      }
    },
    /**
     * The app's one RecorderManager, whose onStop/onError this page takes over: it
     * has one listener each, and another chat page (a conversation opened from
     * this one) may have set them since.
     */
    _recorder() {
      const rec = wx.getRecorderManager()
      rec.onStop((res) => this._recorded(res))
      rec.onError((err) => {
        this._recording = null
        wx.showToast({ title: 'Cannot record: ' + ((err && err.errMsg) || 'error'), icon: 'none' })
      })
      return rec
    },
    /** Hold to talk: start recording (mp3, at most 60 s: the recorder stops by itself then). */
    onVoiceStart() {
      this._recording = { cancel: false }
      this._stopAudio()
      this._recorder().start({ duration: media.MAX_VOICE_MS, format: 'mp3', sampleRate: 16000, numberOfChannels: 1, encodeBitRate: 48000 })
    },
    /** Let go: stop; slid up (`cancel`): the recording is thrown away. */
    onVoiceEnd(e) {
      if (!this._recording) return // stopped by itself at 60 s, already sent
      this._recording.cancel = !!e.detail.cancel
      wx.getRecorderManager().stop()
    },
    _recorded(res) {
      const rec = this._recording
      this._recording = null
      if (!rec || rec.cancel) return
      if (!res || (res.duration || 0) < media.MIN_VOICE_MS) {
        wx.showToast({ title: 'Too short to send', icon: 'none' })
        return
      }
      this._queue({ kind: 'voice', filePath: res.tempFilePath, size: res.fileSize, duration_ms: res.duration })
    },
    /**
     * A picked picture: its size first (chooseMedia gives it for videos only), so
     * the pending bubble does not jump, and before the SDK keeps (moves) the temp
     * file; pictures picked together are queued in the order picked.
     */
    _queuePicture(f) {
      const spec = { kind: 'image', filePath: f.tempFilePath, size: f.size, width: f.width, height: f.height }
      const size = () =>
        new Promise((resolve) => {
          if (f.width && f.height) return resolve()
          wx.getImageInfo({
            src: f.tempFilePath,
            success: (info) => resolve(Object.assign(spec, { width: info.width, height: info.height })),
            fail: () => resolve()
          })
        })
      this._picking = (this._picking || Promise.resolve()).then(size).then(() => this._queue(spec))
      return this._picking
    },
    /**
     * A picked file into the SDK's outbox (`sendMedia`): the pending bubble is the
     * timeline's, the upload, its retries and the send are the SDK's, and a
     * restart of the mini-program resumes it. Returns the outbox entry.
     */
    _queue(file) {
      if (this.data.removed) return null
      const entry = this.chat.sendMedia(this.key, file)
      if (this._to !== null) this.onLatest()
      this._render()
      return entry
    },
    /** The attachment of a tapped row (a message, my pending entry or my upload). */
    _attachment(detail) {
      const row = this._rows.get(detail.key)
      return row && row.attachments ? row.attachments[detail.index] : null
    },
    onMedia(e) {
      const a = this._attachment(e.detail)
      if (!a || !a.url) return
      if (a.kind === 'image') {
        const urls = media.imageUrls(this.chat.timeline(this.key), (p) => this.chat.mediaUrl(p), this._fresh)
        wx.previewImage({ current: a.url, urls: urls.indexOf(a.url) >= 0 ? urls : [a.url] })
      } else if (a.kind === 'voice') {
        this._toggleVoice(a)
      } else {
        this._openFile(a)
      }
    },
    /** Plays a voice message; a second tap (or another voice) stops it. */
    _toggleVoice(a) {
      const playing = this.data.playing === a.id
      this._stopAudio()
      if (playing) return
      const audio = wx.createInnerAudioContext()
      this._audio = audio
      const done = () => {
        if (this._audio === audio) this._stopAudio()
      }
      audio.onEnded(done)
      audio.onError(() => {
        done()
        wx.showToast({ title: 'Cannot play this voice message', icon: 'none' })
      })
      audio.src = a.url
      audio.play()
      this.setData({ playing: a.id })
      if (!this._played[a.id]) {
        this._played[a.id] = true
        wx.setStorageSync(media.PLAYED_KEY, media.addPlayed(wx.getStorageSync(media.PLAYED_KEY), a.id))
        this._render() // the red dot goes
      }
    },
    _stopAudio() {
      const audio = this._audio
      this._audio = null
      if (audio) {
        audio.stop()
        audio.destroy()
      }
      if (this.data.playing) this.setData({ playing: '' })
    },
    _openFile(a) {
      wx.showLoading({ title: 'Opening…' })
      wx.downloadFile({
        url: a.url,
        success: (res) => {
          wx.hideLoading()
          if (res.statusCode !== 200) {
            wx.showToast({ title: 'Cannot download this file', icon: 'none' })
            return
          }
          const opts = { filePath: res.tempFilePath, showMenu: true, fail: () => wx.showToast({ title: 'Cannot open this file here', icon: 'none' }) }
          const type = media.documentType(a.name)
          if (type) opts.fileType = type
          wx.openDocument(opts)
        },
        fail: () => {
          wx.hideLoading()
          wx.showToast({ title: 'Cannot download this file', icon: 'none' })
        }
      })
    },
    /** A thumbnail did not load: its signed URL may have expired; ask for fresh ones once. */
    onMediaError(e) {
      const a = this._attachment(e.detail)
      if (!a || this._refreshed[a.id]) return null
      this._refreshed[a.id] = true
      return this.chat.mediaInfo(a.id).then(
        (info) => {
          this._fresh[a.id] = info
          this._render()
        },
        () => {} // removed, or no longer mine to see: the grey box stays
      )
    },
    onInfo() {
      if (!this.dm) wx.navigateTo({ url: '/pages/room-info/room-info?room=' + encodeURIComponent(this.target) })
    }
  }
})
