/**
 * The messenger pages (conversations, chat, group create, room info) rendered
 * with miniprogram-simulate, on the real app.js and SDK, against a real chatd
 * with token users (`twistd -n chatd --jwt-secret S --recall-window 2`). UI
 * calls (tab badge, action sheets, modals, toasts, clipboard) go to the
 * recording stubs of the wx shim.
 */
'use strict'
const { startChatd, liveDescribe } = require('./support/chatd-server')
const { createWx } = require('./support/wx-ws')
const { waitFor, barrier, uniqueName } = require('./support/helpers')
const { tokenUsers } = require('./support/live-users')
const { loadPage, openPage, chatRows, byText, choose } = require('./support/pages')
const { shoot } = require('./support/screenshot')
const { TOKEN_KEY } = require('../utils/login')

// a component used by several pages (status-banner) renders only inside the page
// loaded first in a test file (miniprogram-simulate registers it once): the chat
// page, whose banner is asserted, comes first
const chatPage = loadPage('pages/chat/chat')
const conversationsPage = loadPage('pages/conversations/conversations')
const groupCreatePage = loadPage('pages/group-create/group-create')
const roomInfoPage = loadPage('pages/room-info/room-info')
const roomsPage = loadPage('pages/rooms/rooms')
const mePage = loadPage('pages/me/me')

const config = require('../config')

const SECRET = 'jwt-secret-for-miniprogram-pages-32b!!'
const WINDOW_S = 2

liveDescribe('messenger pages against a live chatd with token users', () => {
  let server
  const clients = []
  const pages = []

  beforeAll(async () => {
    server = await startChatd(['--jwt-secret', SECRET, '--recall-window', String(WINDOW_S)])
    config.serverUrl = server.url
  })
  afterEach(() => {
    pages.splice(0).forEach((p) => p.instance.onUnload && p.instance.onUnload())
    clients.splice(0).forEach((c) => c.close())
    delete global.getApp
  })
  afterAll(async () => {
    if (server) await server.stop()
  })

  const users = tokenUsers(SECRET, () => server, clients)
  const { session, online, known } = users
  /** A launch of the real app.js for `sub` on a phone whose storage is `storage`; its wx is the global one. */
  const launch = (sub, storage) => users.launch(sub, createWx({ storage: storage || new Map() }))

  const open = (id, options, chat) => openPage(pages, id, options, chat)

  const rowOf = (page, key) => page.data.rows.find((r) => r.key === key)
  /** Records the keys of every setData patch of `page`. */
  function spyPatches(page) {
    const patches = []
    const orig = page.instance.setData.bind(page.instance)
    page.instance.setData = (p, cb) => {
      patches.push(Object.keys(p))
      return orig(p, cb)
    }
    return patches
  }

  test('conversations: alice writes to offline bob; bob’s cold start lists it with unread 1 and tab badge 1; pull-down syncs', async () => {
    const { alice, bob } = await users.aliceAndKnownBob()
    const a = await online(alice)
    const sent = a.client.dm(bob, 'are you there?')
    await waitFor(() => sent.status === 'sent', 'the ack')

    const phone = new Map()
    const { chat, wx } = launch(bob, phone)
    const page = open(conversationsPage)
    await waitFor(() => rowOf(page, 'd:' + alice) && rowOf(page, 'd:' + alice).badge === '1', 'the row with unread 1')
    expect(rowOf(page, 'd:' + alice)).toMatchObject({ title: alice, preview: 'are you there?', badge: '1', mention: '', muted: false })
    expect(page.dom.innerHTML).toContain('are you there?')
    await waitFor(() => wx.badges[0] === '1', 'the tab badge')
    expect(wx.tabBar.filter((t) => t.type === 'set').map((t) => t.text)).toEqual(['1'])

    // pull down: sync, then the refresh animation stops
    await page.instance.onPullDownRefresh()
    expect(wx.pullDowns.length).toBe(1)

    // a second message while the page is open: the badge moves to 2
    a.client.dm(bob, 'hello?')
    await waitFor(() => rowOf(page, 'd:' + alice).badge === '2' && wx.badges[0] === '2', 'unread 2')
    expect(rowOf(page, 'd:' + alice).preview).toBe('hello?')

    // the next cold start of bob's phone shows the cached list before connecting
    chat.close()
    pages.splice(0).forEach((p) => p.instance.onUnload())
    const again = launch(bob, phone)
    const cold = open(conversationsPage)
    expect(again.chat.connected).toBe(false)
    expect(rowOf(cold, 'd:' + alice)).toMatchObject({ badge: '2', preview: 'hello?' })
  })

  test('conversations: long-press mutes (badge leaves the tab), marks read, leaves a group', async () => {
    const { alice, bob } = await users.aliceAndKnownBob()
    const a = await online(alice)
    const room = uniqueName('grp')
    await a.client.createRoom({ room, kind: 'private', title: 'Lunch', members: [bob] })
    a.client.send(room, 'noon?')
    a.client.dm(bob, 'ping')
    const { chat, wx } = launch(bob)
    const page = open(conversationsPage)
    await waitFor(() => chat.synced && rowOf(page, 'r:' + room) && rowOf(page, 'r:' + room).badge === '1' && rowOf(page, 'd:' + alice), 'both rows')
    expect(rowOf(page, 'r:' + room)).toMatchObject({ title: 'Lunch', initial: 'L', preview: alice + ': noon?' })
    await waitFor(() => wx.badges[0] === '2', 'tab badge 2')
    const png = shoot(page, 'conversations', 700)
    if (png) expect(require('fs').statSync(png).size).toBeGreaterThan(1000)

    wx.sheetChoices.push('Mute notifications')
    page.instance.onAction({ detail: { key: 'r:' + room } })
    await waitFor(() => rowOf(page, 'r:' + room).muted && wx.badges[0] === '1', 'muted, badge 1')
    expect(wx.sheets[0].itemList).toEqual(['Mute notifications', 'Mark as read', 'Leave group'])
    expect(rowOf(page, 'r:' + room)).toMatchObject({ badge: '', dot: true })
    await waitFor(() => chat.conversation('r:' + room).muted, 'muted in the store')

    wx.sheetChoices.push('Mark as read')
    page.instance.onAction({ detail: { key: 'd:' + alice } })
    await waitFor(() => rowOf(page, 'd:' + alice).badge === '' && wx.badges[0] === undefined, 'read: no tab badge')
    expect(wx.sheets[1].itemList).toEqual(['Mute notifications', 'Mark as read'])
    expect(wx.tabBar[wx.tabBar.length - 1]).toEqual({ type: 'remove', index: 0 })

    // the same from a swiped row's button: unmute brings the group's unread back to the tab
    page.instance.onSwipeAct({ detail: { key: 'r:' + room, action: 'unmute' } })
    await waitFor(() => !rowOf(page, 'r:' + room).muted && wx.badges[0] === '1', 'unmuted, badge 1')
    expect(rowOf(page, 'r:' + room).badge).toBe('1')

    wx.sheetChoices.push('Leave group')
    page.instance.onAction({ detail: { key: 'r:' + room } })
    await waitFor(() => !rowOf(page, 'r:' + room), 'the group gone from the list')
    expect(wx.modals[0].title).toBe('Leave group')
    const members = await a.client.allMembers(room)
    expect(members.map((m) => m.user)).toEqual([alice])
  })

  test('chat: my DM to offline bob goes sending… → sent; bob opens the chat and alice’s page shows "read"', async () => {
    const { alice, bob } = await users.aliceAndKnownBob()
    const a = await online(alice)
    const mine = open(chatPage, { key: 'd:' + bob }, a.client)
    expect(mine.data.dm).toBe(true)
    mine.instance.onSend({ detail: { text: 'are you there?' } })
    expect(byText(mine, 'are you there?')).toMatchObject({ mine: true, tick: 'sending…', seq: null })
    await waitFor(() => byText(mine, 'are you there?').tick === 'sent', 'sent')
    expect(chatRows(mine).filter((r) => r.text === 'are you there?').length).toBe(1)
    expect(mine.dom.innerHTML).toContain('sent')

    const { chat } = launch(bob)
    await waitFor(() => chat.synced, 'bob synced')
    expect(chat.conversation('d:' + alice).unread).toBe(1)
    const theirs = open(chatPage, { key: 'd:' + alice })
    expect(byText(theirs, 'are you there?')).toMatchObject({ mine: false, tick: '' })
    await waitFor(() => byText(mine, 'are you there?').tick === 'read', 'alice sees read')
    expect(chat.conversation('d:' + alice).unread).toBe(0)
    expect(mine.dom.innerHTML).toContain('read')

    // a reply from bob while alice's page is visible is marked read at once
    theirs.instance.onSend({ detail: { text: 'here' } })
    await waitFor(() => byText(mine, 'here'), 'bob’s reply at alice')
    await waitFor(() => byText(theirs, 'here').tick === 'read', 'bob sees read')
  })

  test('chat: the list stays right through a dead connection and background/foreground; a draft is kept on leaving', async () => {
    const { alice, bob } = await users.aliceAndKnownBob()
    const a = await online(alice)
    const b = await online(bob)
    const first = a.client.dm(bob, 'one')
    await waitFor(() => first.status === 'sent', 'sent')
    const page = open(chatPage, { key: 'd:' + alice }, b.client)
    await waitFor(() => byText(page, 'one'), 'one at bob')

    // the network dies without a close: messages sent meanwhile arrive once after the reconnect
    b.wx.tasks[b.wx.tasks.length - 1]._kill()
    await waitFor(() => page.data.state === 'reconnecting', 'the banner')
    expect(page.dom.innerHTML).toContain('Reconnecting…')
    a.client.dm(bob, 'two')
    a.client.dm(bob, 'three')
    await waitFor(() => byText(page, 'three') && page.data.state === 'open', 'caught up')

    // background (App.onHide → pause) and back (App.onShow → resume)
    b.client.pause()
    page.instance.onHide()
    a.client.dm(bob, 'four')
    await waitFor(() => a.client.timeline('d:' + bob).some((m) => m.text === 'four' && m.status === 'sent'), 'four sent')
    b.client.resume()
    page.instance.onShow()
    await waitFor(() => byText(page, 'four'), 'four after the foreground')
    const rows = chatRows(page)
    expect(rows.map((r) => r.text)).toEqual(['one', 'two', 'three', 'four'])
    expect(rows.map((r) => r.seq)).toEqual([1, 2, 3, 4])
    await waitFor(() => b.client.conversation('d:' + alice).unread === 0, 'read while visible')

    // leaving with text in the box keeps it as the draft: "[draft] …" in the list
    page.instance.onInput({ detail: { value: 'half a thought' } })
    page.instance.onUnload()
    pages.splice(pages.indexOf(page), 1)
    expect(b.client.conversation('d:' + alice).draft).toBe('half a thought')
    const list = open(conversationsPage, {}, b.client)
    expect(rowOf(list, 'd:' + alice)).toMatchObject({ preview: '[draft] half a thought', draft: true })
    const again = open(chatPage, { key: 'd:' + alice }, b.client)
    expect(again.instance.selectComponent('#composer').data.value).toBe('half a thought')
    again.instance.onSend({ detail: { text: 'half a thought, done' } })
    expect(b.client.conversation('d:' + alice).draft).toBe('')
  })

  test('chat: long-press → reply with a quote, copy, react; edit; @mention picker in a room', async () => {
    const { alice, bob } = await users.aliceAndKnownBob()
    const a = await online(alice)
    const room = uniqueName('grp')
    await a.client.createRoom({ room, kind: 'private', title: 'Lunch', members: [bob] })
    const { chat, wx } = launch(bob)
    await waitFor(() => chat.synced && chat.conversation('r:' + room), 'bob in the group')
    const hers = open(chatPage, { key: 'r:' + room }, a.client)
    await waitFor(() => chatRows(hers).some((r) => r.type === 'event'), 'the events')
    expect(chatRows(hers).filter((r) => r.type === 'event').map((r) => r.text)).toEqual(['You created the group', 'You invited ' + bob])
    hers.instance.onSend({ detail: { text: 'noon?' } })
    const his = open(chatPage, { key: 'r:' + room }, chat)
    await waitFor(() => byText(his, 'noon?'), 'noon? at bob')
    // bob types (his connection is subscribed to the group, never joined): "… is typing…" at alice until he sends
    his.instance.onTyping()
    await waitFor(() => hers.data.typingUsers.length === 1, 'typing at alice')
    expect(hers.data.typingUsers).toEqual([bob])
    expect(hers.dom.innerHTML).toContain(bob + ' is typing…')
    const q = byText(his, 'noon?')
    expect(q).toMatchObject({ name: alice, mine: false })

    await choose(wx, ['Copy'], () => his.instance.onRowAction({ detail: { key: q.key } }))
    expect(wx.sheets[wx.sheets.length - 1].itemList).toEqual(['Reply', 'Copy', 'React', 'Report'])
    await waitFor(() => wx.clipboard.includes('noon?'), 'copied')

    await choose(wx, ['Reply'], () => his.instance.onRowAction({ detail: { key: q.key } }))
    await waitFor(() => his.data.quote, 'the quote bar')
    expect(his.dom.innerHTML).toContain('Reply to ' + alice + ': noon?')
    his.instance.onSend({ detail: { text: 'yes' } })
    expect(his.data.quote).toBeNull()
    await waitFor(() => byText(hers, 'yes'), 'the reply at alice')
    expect(hers.data.typingUsers).toEqual([]) // his message ends it
    expect(byText(hers, 'yes').quote).toEqual({ name: 'you', text: 'noon?' })

    await choose(wx, ['React', '👍'], () => his.instance.onRowAction({ detail: { key: q.key } }))
    await waitFor(() => byText(hers, 'noon?').reactions.length === 1, 'the reaction at alice')
    expect(byText(hers, 'noon?').reactions).toEqual([{ emoji: '👍', count: 1, me: false }])
    // bob read it: his receipt reaches alice in the room's next receipts_batch (--receipt-window)
    await waitFor(() => byText(hers, 'noon?').tick === 'read by 1', 'read by 1 at alice')

    // "read by 1" tapped: the readers, from receipts
    await hers.instance.onTicks({ detail: { seq: byText(hers, 'noon?').seq } })
    await waitFor(() => wx.modals.length === 1, 'the readers modal')
    expect(wx.modals[0]).toEqual({ title: 'Read by 1', content: bob })

    // edit my own message
    const y = byText(his, 'yes')
    await choose(wx, ['Edit'], () => his.instance.onRowAction({ detail: { key: y.key } }))
    expect(wx.sheets[wx.sheets.length - 1].itemList).toEqual(['Reply', 'Copy', 'React', 'Edit', 'Recall'])
    await waitFor(() => his.data.editing, 'editing')
    expect(his.instance.selectComponent('#composer').data.value).toBe('yes')
    his.instance.onSend({ detail: { text: 'yes, noon' } })
    await waitFor(() => byText(hers, 'yes, noon'), 'the edit at alice')
    expect(byText(hers, 'yes, noon').edited).toBe(true)

    // typing @ opens the member picker; the pick becomes a mention
    his.instance.onInput({ detail: { value: 'see you @' } })
    await waitFor(() => his.data.mention, 'the picker')
    expect(his.data.mention.members).toEqual([{ user: alice, name: alice }])
    his.instance.onPickMention({ detail: { user: alice, name: alice } })
    expect(his.instance.selectComponent('#composer').data.value).toBe('see you @' + alice + ' ')
    his.instance.onSend({ detail: { text: 'see you @' + alice } })
    await waitFor(() => byText(hers, 'see you @' + alice), 'the mention at alice')
    expect(byText(hers, 'see you @' + alice).mentionsMe).toBe(true)
    const png = shoot(hers, 'chat', 1100)
    if (png) expect(require('fs').statSync(png).size).toBeGreaterThan(1000)
  })

  test('chat: recall inside the window (tombstone both sides, Re-edit); after it chatd refuses and a toast says so', async () => {
    const { alice, bob } = await users.aliceAndKnownBob()
    const a = await online(alice)
    const b = await online(bob)
    const wx = createWx()
    Object.assign(global.wx, wx)
    const hers = open(chatPage, { key: 'd:' + bob }, a.client)
    hers.instance.onSend({ detail: { text: 'oops' } })
    await waitFor(() => byText(hers, 'oops').tick === 'sent', 'sent')
    const his = open(chatPage, { key: 'd:' + alice }, b.client)
    await waitFor(() => byText(his, 'oops'), 'at bob')
    const seq = byText(hers, 'oops').seq
    await choose(wx, ['Recall'], () => hers.instance.onRowAction({ detail: { key: 's' + seq } }))
    await waitFor(() => chatRows(hers).find((r) => r.seq === seq).type === 'recalled', 'recalled at alice')
    expect(chatRows(hers).find((r) => r.seq === seq)).toMatchObject({ text: 'you recalled a message', reedit: true })
    await waitFor(() => chatRows(his).find((r) => r.seq === seq).type === 'recalled', 'recalled at bob')
    expect(chatRows(his).find((r) => r.seq === seq)).toMatchObject({ text: alice + ' recalled a message', reedit: false })
    expect(hers.dom.innerHTML).toContain('Re-edit')
    hers.instance.onReedit({ detail: { seq } })
    expect(hers.instance.selectComponent('#composer').data.value).toBe('oops')
    expect(chatRows(hers).find((r) => r.seq === seq).reedit).toBe(false)

    hers.instance.onSend({ detail: { text: 'too late' } })
    await waitFor(() => byText(hers, 'too late') && byText(hers, 'too late').tick !== 'sending…', 'sent')
    const late = byText(hers, 'too late')
    await waitFor(() => Date.now() > late.ts + WINDOW_S * 1000 + 300, 'the recall window to pass', WINDOW_S * 1000 + 3000)
    await choose(wx, ['Recall'], () => hers.instance.onRowAction({ detail: { key: late.key } }))
    await waitFor(() => wx.toasts.length === 1, 'the refusal')
    expect(wx.toasts[0].title).toBe('It is too late to recall this message')
    expect(byText(hers, 'too late')).toMatchObject({ type: 'message' })
    await barrier(b)
    expect(byText(his, 'too late')).toMatchObject({ type: 'message' })
  })

  test('chat: a long conversation renders a window that moves on scroll, cut at chatMax rows, with only changed paths set', async () => {
    const saved = { chatWindow: config.chatWindow, chatPage: config.chatPage, chatMax: config.chatMax }
    Object.assign(config, { chatWindow: 20, chatPage: 20, chatMax: 40 })
    try {
      const { alice, bob } = await users.aliceAndKnownBob()
      const a = await online(alice)
      let last
      for (let i = 1; i <= 80; i++) last = a.client.dm(bob, 'n' + i)
      await waitFor(() => last.status === 'sent', 'all sent', 20000)
      const b = await online(bob)
      const key = 'd:' + alice
      const page = open(chatPage, { key }, b.client)
      const first = chatRows(page).length
      expect(first).toBeGreaterThanOrEqual(20)
      expect(first).toBeLessThan(60)
      expect(chatRows(page)[first - 1].seq).toBe(80)
      expect(page.data.newCount).toBe(80)
      expect(page.dom.innerHTML).toContain('80 new messages')
      const patches = spyPatches(page)
      a.client.dm(bob, 'n81')
      await waitFor(() => byText(page, 'n81'), 'the live message')
      const flat = () => patches.reduce((x, p) => x.concat(p), [])
      expect(flat().every((k) => /^chunks\[\d+\](\.rows(\[\d+\])?)?$/.test(k) || k === 'anchor' || k === 'pending')).toBe(true)

      // rendered rows are the SDK's timeline items of their seqs, in seq order (under chatd's rate
      // limit a burst of sends may be stored in another order than sent: the seqs are the truth)
      const inOrder = () => {
        const bySeq = new Map(b.client.timeline(key).map((m) => [m.seq, m.text]))
        const rows = chatRows(page)
        rows.forEach((r, i) => {
          expect(r.text).toBe(bySeq.get(r.seq))
          if (i) expect(r.seq).toBe(rows[i - 1].seq + 1)
        })
      }
      // scrolled to the top: earlier rows (from chatd once the cache runs out); past chatMax the newest are cut
      const seen = new Set(chatRows(page).map((r) => r.seq))
      while (chatRows(page)[0].seq !== 1) {
        const top = chatRows(page)[0].seq
        await page.instance.onTop()
        expect(chatRows(page)[0].seq).toBeLessThan(top)
        expect(chatRows(page).length).toBeLessThanOrEqual(40)
        inOrder()
        chatRows(page).forEach((r) => seen.add(r.seq))
      }
      expect(page.data.hasMore).toBe(false)
      expect(page.data.cut).toBe(true)
      expect(byText(page, 'n81')).toBeUndefined()
      const behind = page.data.behind
      expect(behind).toBeGreaterThan(0)
      expect(page.dom.innerHTML).toContain('Back to the newest · ' + behind + ' newer')

      // a message while the window is cut waits behind it
      a.client.dm(bob, 'n82')
      await waitFor(() => page.data.behind === behind + 1, 'counted behind the cut')
      expect(byText(page, 'n82')).toBeUndefined()

      // scrolled back down: newer rows in, the oldest out, until the window follows the newest again
      while (page.data.cut) {
        const bottom = chatRows(page)[chatRows(page).length - 1].seq
        page.instance.onBottom()
        expect(chatRows(page)[chatRows(page).length - 1].seq).toBeGreaterThan(bottom)
        expect(chatRows(page).length).toBeLessThanOrEqual(40)
        inOrder()
        chatRows(page).forEach((r) => seen.add(r.seq))
      }
      expect(byText(page, 'n82')).toBeTruthy()
      expect(Array.from(seen).sort((x, y) => x - y)).toEqual(Array.from({ length: 82 }, (x, i) => i + 1))
      expect(flat()).not.toContain('chunks')

      // "80 new messages" jumps to the first unread one; "Back to the newest" returns
      expect(await page.instance.onJump()).toBe(1)
      expect(page.data).toMatchObject({ anchor: 's1', newCount: 0, cut: true })
      page.instance.onLatest()
      expect(page.data.cut).toBe(false)
      expect(page.data.anchor).toBe('s82')
      expect(flat()).not.toContain('chunks')
    } finally {
      Object.assign(config, saved)
    }
  })

  test('groups: create a private group from DM peers, invite, make admin, rename, kick — the kicked user’s page stops updating', async () => {
    const alice = uniqueName('alice')
    const bob = uniqueName('bob')
    const carol = uniqueName('carol')
    await known(bob)
    await known(carol)
    const a = await online(alice)
    const toBob = a.client.dm(bob, 'hi bob')
    const toCarol = a.client.dm(carol, 'hi carol')
    await waitFor(() => toBob.status === 'sent' && toCarol.status === 'sent', 'the DMs')
    const b = await online(bob)
    const { chat: carolChat, wx } = launch(carol)
    await waitFor(() => carolChat.synced, 'carol synced')

    // alice: New group → Team, private, with bob
    const create = open(groupCreatePage, {}, a.client)
    expect(create.data.people.map((p) => [p.user, p.checked]).sort()).toEqual([[bob, false], [carol, false]])
    create.instance.onTitle({ detail: { value: 'Team' } })
    create.instance.onToggle({ detail: { user: bob } })
    expect(create.data.people.find((p) => p.user === bob).checked).toBe(true)
    await create.instance.onCreate()
    const nav = wx.navigations.find((n) => n.type === 'redirectTo' && n.url.indexOf('/pages/chat/chat?key=') === 0)
    expect(nav).toBeTruthy()
    const key = decodeURIComponent(nav.url.split('key=')[1])
    const room = key.slice(2)
    expect(a.client.conversation(key)).toMatchObject({ kind: 'private', title: 'Team', role: 'owner' })
    await waitFor(() => b.client.conversation(key), 'the group at bob')
    expect(carolChat.conversation(key)).toBeNull()

    // the info page: owner, 2 members, carol offered for an invite
    const info = open(roomInfoPage, { room }, a.client)
    await waitFor(() => info.data.count === 2, 'room info')
    expect(info.data).toMatchObject({ title: 'Team', role: 'owner', canEdit: true, canInvite: true })
    expect(info.data.members.map((m) => [m.user, m.role]).sort()).toEqual([[alice, 'owner'], [bob, 'member']].sort())
    expect(info.data.people.map((p) => p.user)).toEqual([carol])
    expect(info.dom.innerHTML).toContain('Owner')
    await info.instance.onInvitePeer({ detail: { user: carol } })
    await waitFor(() => info.data.count === 3 && carolChat.conversation(key), 'carol invited')
    expect(info.data.people).toEqual([])

    // carol's phone: the group in her list, then its chat
    const list = open(conversationsPage, {}, carolChat)
    // invited live, carol's list knows the group by id; room_info brings its title
    await waitFor(() => rowOf(list, key) && rowOf(list, key).title === 'Team', 'the group in carol’s list')
    const carols = open(chatPage, { key }, carolChat)
    await waitFor(() => chatRows(carols).some((r) => r.text === alice + ' invited you'), 'the invite line')
    const hers = open(chatPage, { key }, a.client)
    hers.instance.onSend({ detail: { text: 'welcome carol' } })
    await waitFor(() => byText(carols, 'welcome carol'), 'carol’s page updates')

    // bob becomes admin; the group is renamed
    await choose(wx, ['Make admin'], () => info.instance.onMember({ detail: { user: bob } }))
    expect(wx.sheets[wx.sheets.length - 1].itemList).toEqual(['Send a message', 'Make admin', 'Make owner', 'Remove from group', 'Ban', 'Moderate…'])
    await waitFor(() => (info.data.members.find((m) => m.user === bob) || {}).role === 'admin', 'bob is admin')
    await waitFor(() => b.client.conversation(key).role === 'admin', 'bob knows')
    info.instance.onEditTitle({ detail: { value: 'Core team' } })
    await info.instance.onSave()
    await waitFor(() => info.data.title === 'Core team' && b.client.conversation(key).title === 'Core team', 'renamed')
    await waitFor(() => rowOf(list, key).title === 'Core team', 'renamed in carol’s list')

    // the owner cannot leave while others remain
    expect(await info.instance.onLeave()).toBe(false)
    expect(wx.modals[wx.modals.length - 1].content).toContain('Make someone else the owner first')
    // … also from the Chats list's long-press
    const aliceList = open(conversationsPage, {}, a.client)
    await waitFor(() => rowOf(aliceList, key), 'the group in alice’s list')
    await choose(wx, ['Leave group'], () => aliceList.instance.onAction({ detail: { key } }))
    expect(await aliceList.instance._acting).toBe(false)
    expect(wx.modals[wx.modals.length - 1].content).toContain('Make someone else the owner first')
    expect(a.client.conversation(key)).toBeTruthy()

    // a new group picked from this group's members (dave is no DM peer of alice's)
    const dave = uniqueName('dave')
    await known(dave)
    await info.instance._run(a.client.invite(room, dave))
    info.instance.onNewGroup()
    expect(wx.navigations[wx.navigations.length - 1]).toEqual({ type: 'navigateTo', url: '/pages/group-create/group-create?room=' + encodeURIComponent(room) })
    const fromRoom = open(groupCreatePage, { room }, a.client)
    await waitFor(() => fromRoom.data.people.length === 3, 'the group’s members offered')
    expect(fromRoom.data.people.map((p) => p.user).sort()).toEqual([bob, carol, dave].sort())

    // kick carol: her page says so and stops updating
    await choose(wx, ['Remove from group'], () => info.instance.onMember({ detail: { user: carol } }))
    await waitFor(() => carols.data.removed, 'carol’s page told')
    expect(carols.data.removed).toBe('You were removed from this group.')
    expect(carols.dom.innerHTML).toContain('You were removed from this group.')
    await waitFor(() => !rowOf(list, key), 'gone from carol’s list')
    await waitFor(() => info.data.count === 3, 'three members left')
    const rowsBefore = JSON.stringify(chatRows(carols))
    hers.instance.onSend({ detail: { text: 'only for bob' } })
    await waitFor(() => b.client.timeline(key).some((x) => x.text === 'only for bob'), 'bob has it')
    await barrier({ wx })
    expect(JSON.stringify(chatRows(carols))).toBe(rowsBefore)
    expect(byText(carols, 'only for bob')).toBeUndefined()
  })

  test('Rooms tab of a WeChat user: a public room and a first DM open in the chat page and join the Chats list', async () => {
    const { alice, bob } = await users.aliceAndKnownBob()
    const a = await online(alice)
    const wx = createWx()
    Object.assign(global.wx, wx)
    const rooms = open(roomsPage, {}, a.client)
    const room = uniqueName('pub')
    rooms.instance.onOpenRoom({ detail: { room } })
    expect(wx.navigations.pop()).toEqual({ type: 'navigateTo', url: '/pages/chat/chat?key=' + encodeURIComponent('r:' + room) })
    rooms.instance.onPeerInput({ detail: { value: bob } })
    rooms.instance.onStartDm()
    expect(wx.navigations.pop()).toEqual({ type: 'navigateTo', url: '/pages/chat/chat?key=' + encodeURIComponent('d:' + bob) })

    // the room (bob wrote in it before): joined, a member now, its messages shown, none unread
    const b = await online(bob)
    await b.client.join(room)
    const hello = b.client.send(room, 'hello room')
    await waitFor(() => hello.status === 'sent', 'bob’s message')
    const inRoom = open(chatPage, { key: 'r:' + room }, a.client)
    await waitFor(() => a.client.conversation('r:' + room) && byText(inRoom, 'hello room'), 'joined, with the history')
    expect(a.client.conversation('r:' + room).unread).toBe(0)
    inRoom.instance.onSend({ detail: { text: 'anyone here?' } })
    await waitFor(() => byText(inRoom, 'anyone here?') && byText(inRoom, 'anyone here?').tick === 'sent', 'sent to the room')
    expect(inRoom.data.error).toBe('')

    // a DM to nobody chatd knows: "not sent" and a toast
    const nobody = open(chatPage, { key: 'd:' + uniqueName('nobody') }, a.client)
    nobody.instance.onSend({ detail: { text: 'hello?' } })
    await waitFor(() => byText(nobody, 'hello?').tick === 'not sent', 'refused')
    expect(wx.toasts[wx.toasts.length - 1].title).toBe('There is no such user')
    // a tap on "not sent" retries with the same id (refused again here)
    const toasts = wx.toasts.length
    nobody.instance.onRetry({ detail: { key: byText(nobody, 'hello?').key } })
    expect(byText(nobody, 'hello?').tick).toBe('sending…')
    await waitFor(() => wx.toasts.length === toasts + 1 && byText(nobody, 'hello?').tick === 'not sent', 'refused again')
    expect(chatRows(nobody).filter((r) => r.text === 'hello?').length).toBe(1)

    // a first DM: nothing to show yet, no error; the message starts the conversation
    const dm = open(chatPage, { key: 'd:' + bob }, a.client)
    await waitFor(() => !dm.data.loading, 'the empty history')
    expect(chatRows(dm)).toEqual([])
    expect(dm.data.error).toBe('')
    dm.instance.onSend({ detail: { text: 'first words' } })
    await waitFor(() => byText(dm, 'first words').tick === 'sent', 'the first DM sent')
    const list = open(conversationsPage, {}, a.client)
    await waitFor(() => rowOf(list, 'd:' + bob) && rowOf(list, 'r:' + room), 'both in Chats')
    expect(list.data.rows.map((r) => r.key).slice(0, 2)).toEqual(['d:' + bob, 'r:' + room])
    expect(rowOf(list, 'd:' + bob).preview).toBe('first words')
  })

  test('Me tab: who I am; Log out forgets the session, the cached conversations and the token', async () => {
    const bob = uniqueName('bob')
    const phone = new Map()
    const { app, chat, wx } = launch(bob, phone)
    phone.set(TOKEN_KEY, session(bob))
    await waitFor(() => chat.synced, 'synced')
    chat.close() // writes the session and the conversation cache
    chat.connect()
    await waitFor(() => chat.synced, 'synced again')
    expect(phone.has('chatd.state:' + bob + '.conv')).toBe(true)
    const me = open(mePage)
    expect(me.data).toMatchObject({ name: bob, user: bob, authenticated: true })
    expect(me.dom.innerHTML).toContain('Logged in with WeChat')
    me.instance.onLogout()
    expect(wx.navigations.pop()).toEqual({ type: 'reLaunch', url: '/pages/login/login' })
    expect(app.chat()).toBeNull()
    expect(chat.connected).toBe(false)
    expect(Array.from(phone.keys()).filter((k) => k.indexOf(bob) >= 0 || k === TOKEN_KEY)).toEqual([])
  })
})
