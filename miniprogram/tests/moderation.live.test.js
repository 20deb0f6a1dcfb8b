/**
 * The moderation screens (docs/miniprogram.md, "Moderation screens") rendered
 * with miniprogram-simulate on the real app.js and SDK, against a real chatd
 * (`twistd -n chatd --jwt-secret S --api-key K`) with token users: Report from
 * the chat page's long-press (checked in the queue of the HTTP API), a room mute
 * and unmute from group info (the muted member's composer), a global moderator
 * (a token with `"mod": true`) muting everywhere, lifting it from the Me page,
 * and banning: the banned user's app shows the suspended screen, and a banned
 * user's WeChat login (chatd's 403 `banned`) says so on the login page.
 */
'use strict'
const simulate = require('miniprogram-simulate')
const { startChatd, liveDescribe } = require('./support/chatd-server')
const { startWechat } = require('./support/wechat-standin')
const { createWx } = require('./support/wx-ws')
const { loadApp } = require('./support/app-runtime')
const { waitFor, holdsFor, uniqueName } = require('./support/helpers')
const { tokenUsers } = require('./support/live-users')
const { loadPage, openPage, chatRows, byText, choose } = require('./support/pages')
const { reportMessage } = require('../utils/moderation')

// the chat page first: shared components render only inside the page loaded first
const chatPage = loadPage('pages/chat/chat')
const roomInfoPage = loadPage('pages/room-info/room-info')
const mePage = loadPage('pages/me/me')
const suspendedPage = loadPage('pages/suspended/suspended')
const loginPage = loadPage('pages/login/login')

const config = require('../config')

const SECRET = 'jwt-secret-for-miniprogram-moderation-32b'
const API_KEY = 'api-key-for-miniprogram-moderation'
const APP_SECRET = 'app-secret-for-miniprogram-moderation'

liveDescribe('moderation screens against a live chatd', () => {
  let server
  let wechat
  const clients = []
  const pages = []

  beforeAll(async () => {
    wechat = await startWechat(APP_SECRET)
    server = await startChatd(['--jwt-secret', SECRET, '--api-key', API_KEY, '--wechat-appid', 'wx123', '--wechat-api', wechat.url], null, { CHATD_WECHAT_SECRET: APP_SECRET })
    config.serverUrl = server.url
  })
  afterEach(() => {
    pages.splice(0).forEach((p) => p.instance.onUnload && p.instance.onUnload())
    clients.splice(0).forEach((c) => c.close())
    delete global.getApp
  })
  afterAll(async () => {
    if (server) await server.stop()
    if (wechat) await wechat.close()
  })

  const users = tokenUsers(SECRET, () => server, clients)
  /** A plain SDK client of token user `sub` (extra token `claims`), welcomed and synced. */
  const online = async (sub, claims) => (await users.online(sub, { claims })).client
  /** A launch of the real app.js for `sub`; its wx (the shim) is the global one. */
  const launch = (sub) => users.launched(sub, createWx())

  const open = (id, options, chat) => openPage(pages, id, options, chat)

  /** The operator's HTTP API (`Authorization: apikey K`): GET `p` (POST with `data`) → parsed body. */
  function api(p, data) {
    return new Promise((resolve, reject) =>
      createWx().request({
        url: server.httpUrl + p,
        method: data ? 'POST' : 'GET',
        data,
        header: { Authorization: 'apikey ' + API_KEY },
        success: (r) => (r.statusCode === 200 ? resolve(r.data) : reject(new Error('HTTP ' + r.statusCode + ' ' + JSON.stringify(r.data)))),
        fail: (e) => reject(new Error(e.errMsg))
      })
    )
  }

  const lastSheet = (wx) => wx.sheets[wx.sheets.length - 1].itemList
  const toasted = (wx, title) => wx.toasts.some((t) => t.title === title)
  /** A private group of `owner` with `members`, seen by each of `clients`. */
  async function group(owner, members, seenBy) {
    const room = uniqueName('grp')
    await owner.createRoom({ room, kind: 'private', title: 'Mods', members })
    await waitFor(() => seenBy.every((c) => c.conversation('r:' + room)), 'the group everywhere')
    return room
  }

  test('report: bob long-presses alice’s message → Report → Spam; the queue has it; rate_limited and no_such_message toasts', async () => {
    const alice = uniqueName('alice')
    const bob = uniqueName('bob')
    const { chat, wx } = await launch(bob)
    const a = await online(alice)
    const room = await group(a, [bob], [chat])
    const key = 'r:' + room
    const sent = a.send(room, 'buy cheap pills')
    await waitFor(() => sent.status === 'sent', 'alice’s message stored')

    const his = open(chatPage, { key }, chat)
    await waitFor(() => byText(his, 'buy cheap pills'), 'the message on bob’s page')
    const row = byText(his, 'buy cheap pills')
    await choose(wx, ['Report', 'Spam'], () => his.instance.onRowAction({ detail: { key: row.key } }))
    expect(wx.sheets.slice(-2).map((s) => s.itemList)).toEqual([
      ['Reply', 'Copy', 'React', 'Report'],
      ['Spam', 'Abuse', 'Other']
    ])
    await waitFor(() => toasted(wx, 'Reported'), 'the Reported toast')

    // the operator sees it in the moderation queue
    const queue = await api('/api/moderation/queue')
    const entry = queue.entries.find((e) => e.reporter === bob && e.seq === sent.seq)
    expect(entry).toMatchObject({ state: 'open', source: 'report', room, sender: alice, reason: 'spam' })
    expect(entry.message).toMatchObject({ text: 'buy cheap pills', from: alice })

    // my own messages offer no Report
    const mine = chat.send(room, 'not me')
    await waitFor(() => mine.status === 'sent' && byText(his, 'not me') && byText(his, 'not me').seq, 'bob’s message')
    await choose(wx, ['Copy'], () => his.instance.onRowAction({ detail: { key: byText(his, 'not me').key } }))
    expect(lastSheet(wx)).not.toContain('Report')

    // 10 reports a minute: the 11th is refused with rate_limited, shown as a toast
    for (let i = 0; i < 9; i++) await chat.report(key, sent.seq, 'again ' + i)
    await choose(wx, ['Report', 'Other'], () => his.instance.onRowAction({ detail: { key: row.key } }))
    await waitFor(() => toasted(wx, 'Too many reports: try again in a minute'), 'the rate_limited toast')

    // a message that is not there: no_such_message
    const gone = reportMessage(wx, a, key, sent.seq + 1000)
    wx.sheetChoices.push('Abuse')
    expect(await gone).toBeNull()
    expect(toasted(wx, 'That message is gone')).toBe(true)
  })

  test('mute from group info: bob’s composer is off with "You are muted until", his send gets the muted toast; unmute re-enables', async () => {
    const alice = uniqueName('alice')
    const bob = uniqueName('bob')
    const { chat, wx } = await launch(bob)
    const a = await online(alice)
    const room = await group(a, [bob], [chat])
    const key = 'r:' + room

    const his = open(chatPage, { key }, chat)
    const composer = his.instance.selectComponent('#composer')
    expect(composer.data.disabled).toBe(false)
    const info = open(roomInfoPage, { room }, a)
    await waitFor(() => info.data.count === 2, 'room info')
    await choose(wx, ['Moderate…', 'Mute 10 min'], () => info.instance.onMember({ detail: { user: bob } }))
    expect(wx.sheets.slice(-2).map((s) => s.itemList)).toEqual([
      ['Send a message', 'Make admin', 'Make owner', 'Remove from group', 'Ban', 'Moderate…'],
      ['Mute 10 min', 'Mute 1 h', 'Mute 1 day']
    ])
    await waitFor(() => toasted(wx, 'Muted'), 'the Muted toast')
    const bobCell = () => info.data.members.find((m) => m.user === bob) || {}
    await waitFor(() => /^Muted until \d\d:\d\d$/.test(bobCell().muted), 'bob marked muted')
    expect(info.dom.innerHTML).toContain(bobCell().muted)

    // bob's page: the muted event turns the composer off
    await waitFor(() => his.data.muteNotice, 'the muted notice')
    expect(his.data.muteNotice).toMatch(/^You are muted until \d\d:\d\d$/)
    expect(his.data.muteNotice.slice(-5)).toBe(bobCell().muted.slice(-5))
    expect(composer.data.disabled).toBe(true)
    expect(his.dom.innerHTML).toContain(his.data.muteNotice)
    await waitFor(() => chatRows(his).some((r) => r.type === 'event' && r.text.indexOf(alice + ' muted you until ') === 0), 'the event line')
    // the disabled composer sends nothing
    composer.setText('let me speak')
    composer.onSend()
    expect(chat.outbox.length).toBe(0)

    // a send that raced the event: refused with muted → the toast says for how long
    his.instance.onSend({ detail: { text: 'raced' } })
    await waitFor(() => toasted(wx, 'You are muted for 10 min'), 'the muted toast')
    expect(byText(his, 'raced')).toMatchObject({ tick: 'not sent' })

    // a member's stale sheet: chatd says forbidden, shown as a toast
    const hisInfo = open(roomInfoPage, { room }, chat)
    await waitFor(() => hisInfo.data.count === 2, 'bob’s room info')
    await choose(wx, ['Send a message'], () => hisInfo.instance.onMember({ detail: { user: alice } }))
    expect(lastSheet(wx)).toEqual(['Send a message'])
    await hisInfo.instance._modAct('mute600', { user: alice, role: 'owner' })
    expect(toasted(wx, 'Refused: forbidden')).toBe(true)

    // unmute: the mark goes, bob's composer comes back, his send goes through
    await choose(wx, ['Moderate…', 'Unmute'], () => info.instance.onMember({ detail: { user: bob } }))
    expect(lastSheet(wx)).toEqual(['Unmute', 'Mute 10 min', 'Mute 1 h', 'Mute 1 day'])
    await waitFor(() => !his.data.muteNotice && !bobCell().muted, 'unmuted on both pages')
    expect(composer.data.disabled).toBe(false)
    composer.setText('thanks')
    composer.onSend()
    await waitFor(() => byText(his, 'thanks') && byText(his, 'thanks').tick === 'sent', 'sent after the unmute')

    // a mute ends by itself: the page's timer turns the composer back on at its until
    const short = await a.muteUser(room, bob, 1)
    await waitFor(() => his.data.muteNotice, 'the one-second mute')
    await waitFor(() => !his.data.muteNotice, 'the mute over at its until', 5000)
    expect(Date.now()).toBeGreaterThanOrEqual(short.muted_until)
    expect(composer.data.disabled).toBe(false)

    // a page opened while muted starts with the composer off
    await a.muteUser(room, bob, 3600)
    await waitFor(() => chat.timeline(key).filter((x) => x.event === 'muted').length === 3, 'the third mute at bob')
    const again = open(chatPage, { key }, chat)
    expect(again.data.muteNotice).toMatch(/^You are muted until /)
    expect(again.instance.selectComponent('#composer').data.disabled).toBe(true)
  })

  test('a global moderator: Mute everywhere stops bob’s DMs, the Me page lifts it; Ban everywhere shows bob the suspended screen', async () => {
    const alice = uniqueName('alice')
    const bob = uniqueName('bob')
    const anna = uniqueName('anna')
    const { app, chat, wx } = await launch(bob)
    const a = await online(alice)
    const mod = await online(anna, { mod: true })
    const room = await group(a, [bob, anna], [chat, mod])

    // the Me page: a Moderator section for anna only
    const bobMe = open(mePage, {}, chat)
    expect(bobMe.data.moderator).toBe(false)
    expect(bobMe.dom.innerHTML).not.toContain('Moderator')
    const me = open(mePage, {}, mod)
    expect(me.data.moderator).toBe(true)
    expect(me.dom.innerHTML).toContain('Moderator')

    // anna, a plain member of the group, moderates bob from group info
    const info = open(roomInfoPage, { room }, mod)
    await waitFor(() => info.data.count === 3, 'anna’s room info')
    await choose(wx, ['Moderate…', 'Mute everywhere…', 'Everywhere 10 min'], () => info.instance.onMember({ detail: { user: bob } }))
    expect(wx.sheets.slice(-3).map((s) => s.itemList)).toEqual([
      ['Send a message', 'Moderate…'],
      ['Mute 10 min', 'Mute 1 h', 'Mute 1 day', 'Mute everywhere…', 'Ban everywhere…'],
      ['Everywhere 10 min', 'Everywhere 1 h', 'Everywhere 1 day']
    ])
    await waitFor(() => toasted(wx, 'Muted everywhere'), 'the Muted everywhere toast')

    // bob's DM to alice is refused (a global mute has no event): toast, then the composer is off
    const dm = open(chatPage, { key: 'd:' + alice }, chat)
    dm.instance.onSend({ detail: { text: 'psst' } })
    await waitFor(() => dm.data.muteNotice, 'the muted notice in the DM')
    expect(toasted(wx, 'You are muted for 10 min')).toBe(true)
    expect(dm.instance.selectComponent('#composer').data.disabled).toBe(true)

    // anna lifts it on her Me page; bob taps the notice and writes again
    me.instance.onTarget({ detail: { value: bob } })
    expect(await me.instance.onUnmuteAll()).toMatchObject({ user: bob, muted_until: 0 })
    expect(toasted(wx, 'Unmuted')).toBe(true)
    dm.instance.onMutedTap()
    expect(dm.data.muteNotice).toBe('')
    dm.instance.onSend({ detail: { text: 'back' } })
    await waitFor(() => byText(dm, 'back') && byText(dm, 'back').tick === 'sent', 'the DM after the unmute')

    // Ban everywhere (1 day, confirmed): bob's app shows the suspended screen and stops dialling
    await choose(wx, ['Moderate…', 'Ban everywhere…', 'Ban 1 day'], () => info.instance.onMember({ detail: { user: bob } }))
    expect(lastSheet(wx)).toEqual(['Ban 1 day', 'Ban 7 days', 'Ban for good'])
    await waitFor(() => toasted(wx, 'Banned everywhere'), 'the Banned everywhere toast')
    expect(wx.modals[wx.modals.length - 1].title).toBe('Ban everywhere')
    await waitFor(() => chat.state === 'closed', 'bob’s connection closed')
    expect(wx.navigations.filter((n) => n.url === '/pages/suspended/suspended').length).toBe(1)
    const tasks = wx.tasks.length
    await holdsFor(() => wx.tasks.length === tasks && chat.state === 'closed', 'no reconnect', 1500)

    global.getApp = () => app
    const screen = open(suspendedPage)
    expect(screen.dom.innerHTML).toContain('Your account is suspended')
    // Try again while banned: still suspended, no second reLaunch
    screen.instance.onRetry()
    await waitFor(() => screen.data.still, 'still suspended')
    expect(screen.dom.innerHTML).toContain('Still suspended.')
    expect(wx.navigations.filter((n) => n.url === '/pages/suspended/suspended').length).toBe(1)
    expect(wx.navigations.some((n) => n.type === 'switchTab')).toBe(false) // the welcome before 4451 is no way back in

    // anna unbans from her Me page; Try again lets bob back in
    me.instance.onTarget({ detail: { value: bob } })
    expect(await me.instance.onUnban()).toMatchObject({ user: bob, banned_until: 0 })
    screen.instance.onRetry()
    await waitFor(() => wx.navigations.some((n) => n.type === 'switchTab' && n.url === '/pages/conversations/conversations'), 'back to Chats')
    expect(chat.connected).toBe(true)
    expect(app.globalData.suspended).toBe(false)
  })

  test('a banned user’s WeChat login: the login page says the account is suspended', async () => {
    const code = uniqueName('banned')
    expect(await api('/api/users/' + encodeURIComponent('wx:o-' + code) + '/ban', { seconds: 600, by: 'mod-test' })).toMatchObject({ user: 'wx:o-' + code })
    const mode = config.login
    config.login = 'wechat'
    try {
      const wx = createWx({ codes: [code] })
      Object.assign(global.wx, wx)
      loadApp()
      const page = simulate.render(loginPage)
      page.attach(document.createElement('parent-wrapper'))
      pages.push(page)
      page.instance.onLoad({})
      await page.instance.onWechat()
      expect(page.data.error).toBe('This account is suspended by a moderator.')
      expect(page.data.canRetry).toBe(false)
      expect(page.dom.innerHTML).toContain('This account is suspended by a moderator.')
      expect(wx.navigations.filter((n) => n.type === 'switchTab')).toEqual([])
    } finally {
      config.login = mode
    }
  })
})
