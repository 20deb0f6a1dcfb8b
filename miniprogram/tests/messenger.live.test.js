/**
 * The messenger pages (conversations, chat, group create, room info) rendered
 * with miniprogram-simulate, on the real app.js and SDK, against a real chatd
 * with token users (`twistd -n chatd --jwt-secret S --recall-window 2`). UI
 * calls (tab badge, action sheets, modals, toasts, clipboard) go to the
 * recording stubs of the wx shim.
 */
'use strict'
const path = require('path')
const simulate = require('miniprogram-simulate')
const { startChatd, liveDescribe } = require('./support/chatd-server')
const { createWx } = require('./support/wx-ws')
const { loadApp } = require('./support/app-runtime')
const { waitFor, barrier, uniqueName, makeClient } = require('./support/helpers')
const { mintToken } = require('./support/jwt')

const ROOT = path.resolve(__dirname, '..')
const load = (p) => simulate.load(path.join(ROOT, p), { rootPath: ROOT })
const conversationsPage = load('pages/conversations/conversations')

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
    pages.splice(0).forEach((p) => p.instance.onUnload())
    clients.splice(0).forEach((c) => c.close())
    delete global.getApp
  })
  afterAll(async () => {
    if (server) await server.stop()
  })

  const session = (sub) => ({ token: mintToken(SECRET, { sub, name: sub }), user: sub, name: sub, expiresAt: Date.now() + 3600000 })

  /** A plain SDK client of token user `sub`, welcomed and synced. */
  async function online(sub) {
    const c = makeClient(server.url, { token: session(sub).token, storageKey: 'chatd' })
    clients.push(c.client)
    c.client.connect()
    await waitFor(() => c.client.connected && c.client.synced, sub + ' synced')
    return c
  }

  /** Connects `sub` once so chatd knows the user, then closes. */
  async function known(sub) {
    const c = await online(sub)
    c.client.close()
  }

  /** A launch of the real app.js for `sub` on a phone whose storage is `storage`; its wx is the global one. */
  function launch(sub, storage) {
    const wx = createWx({ storage: storage || new Map() })
    Object.assign(global.wx, wx)
    const app = loadApp()
    const chat = app.startChat(session(sub))
    clients.push(chat)
    return { app, chat, wx }
  }

  /** Renders page `id` and calls onLoad; with `chat`, getApp() hands out that client. */
  function open(id, options, chat) {
    if (chat) global.getApp = () => ({ chat: () => chat, globalData: {} })
    const page = simulate.render(id)
    page.attach(document.createElement('parent-wrapper'))
    page.instance.onLoad(options || {})
    pages.push(page)
    return page
  }

  const rowOf = (page, key) => page.data.rows.find((r) => r.key === key)

  test('conversations: alice writes to offline bob; bob’s cold start lists it with unread 1 and tab badge 1; pull-down syncs', async () => {
    const alice = uniqueName('alice')
    const bob = uniqueName('bob')
    await known(bob)
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
    const alice = uniqueName('alice')
    const bob = uniqueName('bob')
    await known(bob)
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

    wx.sheetChoices.push('Leave group')
    page.instance.onAction({ detail: { key: 'r:' + room } })
    await waitFor(() => !rowOf(page, 'r:' + room), 'the group gone from the list')
    expect(wx.modals[0].title).toBe('Leave group')
    const members = await a.client.allMembers(room)
    expect(members.map((m) => m.user)).toEqual([alice])
  })
})
