/**
 * The rooms page rendered with miniprogram-simulate on a real ChatClient
 * talking to a real chatd: the room list (default and joined rooms), unread
 * counts from live messages, opening and joining rooms, starting a DM, the
 * connection banner, and the redirect to login without a session. (Its own
 * file: simulate cannot load <status-banner> a second time in one file.)
 */
'use strict'
const simulate = require('miniprogram-simulate')
const { loadPage } = require('./support/pages')
const { startChatd, liveDescribe } = require('./support/chatd-server')
const { createWx } = require('./support/wx-ws')
const { waitFor, uniqueName, makeClient } = require('./support/helpers')

const roomsPage = loadPage('pages/rooms/rooms')

liveDescribe('rooms page against a live chatd', () => {
  let server
  let pageWx = null
  const clients = []

  beforeAll(async () => {
    server = await startChatd()
  })
  afterEach(() => {
    clients.splice(0).forEach((c) => c.close())
    delete global.getApp
  })
  afterAll(async () => {
    if (server) await server.stop()
  })

  async function online(prefix) {
    const c = makeClient(server.url, { name: uniqueName(prefix) })
    clients.push(c.client)
    c.client.connect()
    await waitFor(() => c.client.connected, prefix + ' online')
    return c
  }

  function openPage(chat) {
    pageWx = createWx()
    Object.assign(global.wx, pageWx)
    global.getApp = () => ({ chat: () => chat })
    const page = simulate.render(roomsPage)
    page.attach(document.createElement('parent-wrapper'))
    page.instance.onLoad({})
    return page
  }

  test('rooms page: default and joined rooms, unread counts, open and join rooms, start a DM, the banner', async () => {
    const room = uniqueName('r')
    const alice = await online('alice')
    await alice.client.join(room)
    const bob = await online('bob')
    await bob.client.join(room)
    const page = openPage(alice.client)
    try {
      expect(page.data.rooms).toEqual([
        { room: 'lobby', unread: 0 },
        { room, unread: 0 }
      ])
      expect(page.data.me).toBe(alice.client.user)
      expect(page.dom.innerHTML).toContain('Signed in as ' + alice.client.user)
      const list = page.querySelector('#room-list')
      expect(list.querySelectorAll('.room-name').map((n) => n.dom.textContent)).toEqual(['#lobby', '#' + room])

      // live messages count as unread until the room is opened
      bob.client.send(room, 'one')
      bob.client.send(room, 'two')
      await waitFor(() => page.data.rooms[1].unread === 2, 'two unread')
      expect(list.querySelectorAll('.unread').map((n) => n.dom.textContent)).toEqual(['2'])
      list.querySelectorAll('.room')[1].dispatchEvent('tap')
      await simulate.sleep(0)
      expect(pageWx.navigations.pop()).toEqual({ type: 'navigateTo', url: '/pages/room/room?room=' + encodeURIComponent(room) })
      expect(page.data.rooms[1].unread).toBe(0)
      expect(list.querySelectorAll('.unread')).toEqual([])

      // the join box opens a typed room; a bad name is refused by the component
      const input = list.querySelector('.input')
      input.dispatchEvent('input', { detail: { value: 'bad room' } })
      await simulate.sleep(0)
      list.querySelector('.join-btn').dispatchEvent('tap')
      await simulate.sleep(0)
      expect(list.data.error).toContain('A room name is')
      expect(pageWx.navigations).toEqual([])
      input.dispatchEvent('input', { detail: { value: '设计-2' } })
      await simulate.sleep(0)
      list.querySelector('.join-btn').dispatchEvent('tap')
      await simulate.sleep(0)
      expect(pageWx.navigations.pop()).toEqual({ type: 'navigateTo', url: '/pages/room/room?room=' + encodeURIComponent('设计-2') })
      // a room joined elsewhere (e.g. on the room page) shows up on the list
      await alice.client.join('设计-2')
      page.instance.onShow()
      expect(page.data.rooms.map((r) => r.room)).toEqual(['lobby', room, '设计-2'])

      // direct messages: a bad peer name is explained, a good one opens the DM page
      page.instance.onPeerInput({ detail: { value: 'not a name' } })
      page.instance.onStartDm()
      expect(page.data.dmError).toBe('Enter the name of someone online')
      expect(page.dom.innerHTML).toContain('Enter the name of someone online')
      page.instance.onPeerInput({ detail: { value: bob.client.user } })
      expect(page.data.dmError).toBe('')
      page.instance.onStartDm()
      expect(pageWx.navigations.pop()).toEqual({ type: 'navigateTo', url: '/pages/dm/dm?with=' + encodeURIComponent(bob.client.user) })
      expect(page.data.peer).toBe('')

      // the connection drops: the banner shows it until the SDK is back
      alice.wx.tasks[alice.wx.tasks.length - 1]._kill()
      await waitFor(() => page.data.state === 'reconnecting', 'banner state')
      expect(page.dom.innerHTML).toContain('Reconnecting…')
      await waitFor(() => page.data.state === 'open', 'back')
      expect(page.dom.innerHTML).not.toContain('Reconnecting…')
    } finally {
      page.instance.onUnload()
    }
  })

  test('rooms page without a chat session sends the user to the login page', () => {
    const page = openPage(null)
    expect(pageWx.navigations).toEqual([{ type: 'redirectTo', url: '/pages/login/login' }])
    expect(page.data.rooms).toEqual([])
    page.instance.onUnload()
  })
})
