/**
 * The room and DM pages rendered with miniprogram-simulate (pages are built
 * with Component(), as WeChat allows), wired to a real ChatClient talking to
 * a real chatd: history on open, live messages, own messages pending → sent,
 * members, typing, "load earlier messages", the reconnect banner.
 */
'use strict'
const simulate = require('miniprogram-simulate')
const { loadPage } = require('./support/pages')
const { startChatd, liveDescribe } = require('./support/chatd-server')
const { createWx } = require('./support/wx-ws')
const { waitFor, uniqueName, makeClient } = require('./support/helpers')

const roomPage = loadPage('pages/room/room')
const dmPage = loadPage('pages/dm/dm')

liveDescribe('pages against a live chatd', () => {
  let server
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

  async function online(prefix, opts) {
    const c = makeClient(server.url, Object.assign({ name: uniqueName(prefix) }, opts))
    clients.push(c.client)
    c.client.connect()
    await waitFor(() => c.client.connected, prefix + ' online')
    return c
  }

  function openPage(pageId, chat, options) {
    Object.assign(global.wx, createWx())
    global.getApp = () => ({ chat: () => chat })
    const page = simulate.render(pageId)
    page.attach(document.createElement('parent-wrapper'))
    page.instance.onLoad(options)
    return page
  }

  const rowsText = (page) => page.data.messages.map((r) => r.text)

  test('room page: history, live messages, send pending → sent, members, typing, load earlier', async () => {
    const room = uniqueName('r')
    const bob = await online('bob')
    await bob.client.join(room)
    for (let i = 1; i <= 35; i++) bob.client.send(room, 'old' + i)
    await waitFor(() => bob.log.ack.length === 35, '35 acks')
    const alice = await online('alice')
    const page = openPage(roomPage, alice.client, { room })
    try {
      // newest page of history (30), "load earlier" offered
      await waitFor(() => page.data.messages.length === 30, 'first history page')
      expect(rowsText(page)[0]).toBe('old6')
      expect(rowsText(page)[29]).toBe('old35')
      expect(page.data.hasMore).toBe(true)
      expect(page.data.members).toEqual([alice.client.user, bob.client.user].sort())
      const dom = page.dom.innerHTML
      expect(dom).toContain('old35')
      expect(dom).toContain('Load earlier messages')
      expect(dom).toContain('2 online')

      await page.instance.loadEarlier()
      expect(page.data.messages.length).toBe(35)
      expect(rowsText(page)[0]).toBe('old1')
      expect(page.data.hasMore).toBe(false)

      // live message and typing from bob
      bob.client.typing(room)
      await waitFor(() => page.data.typingUsers.length === 1, 'typing shown')
      expect(page.dom.innerHTML).toContain(bob.client.user + ' is typing…')
      bob.client.send(room, 'live!')
      await waitFor(() => rowsText(page).includes('live!'), 'live message')
      expect(page.data.typingUsers).toEqual([]) // a message ends the typing state

      // alice sends through the composer: pending first, then sent with a seq
      page.instance.onSend({ detail: { text: 'from the page' } })
      const mine = page.data.messages[page.data.messages.length - 1]
      expect(mine).toMatchObject({ text: 'from the page', mine: true })
      await waitFor(() => page.data.messages.find((r) => r.text === 'from the page' && r.status === 'sent'), 'sent')
      expect(page.data.messages.filter((r) => r.text === 'from the page').length).toBe(1)
      await waitFor(() => bob.log.message.find((m) => m.text === 'from the page'), 'bob got it')

      // the connection drops: banner, then back, nothing lost or doubled
      alice.wx.tasks[alice.wx.tasks.length - 1]._kill()
      await waitFor(() => page.data.state === 'reconnecting', 'banner state')
      expect(page.dom.innerHTML).toContain('Reconnecting…')
      bob.client.send(room, 'during the outage')
      await waitFor(() => rowsText(page).includes('during the outage') && page.data.state === 'open', 'resumed')
      const seqs = page.data.messages.map((r) => r.seq)
      expect(new Set(seqs).size).toBe(seqs.length)
      expect(seqs).toEqual(seqs.slice().sort((a, b) => a - b))
      expect(page.data.messages.length).toBe(38)
    } finally {
      page.instance.onUnload()
    }
  })

  test('dm page: conversation history and live DMs both ways', async () => {
    const bob = await online('bob')
    const alice = await online('alice')
    alice.client.dm(bob.client.user, 'earlier dm')
    await waitFor(() => alice.log.ack.length === 1, 'dm ack')
    const page = openPage(dmPage, bob.client, { with: alice.client.user })
    try {
      await waitFor(() => page.data.messages.length === 1, 'dm history')
      expect(page.data.messages[0]).toMatchObject({ text: 'earlier dm', mine: false, from: alice.client.user })
      alice.client.dm(bob.client.user, 'live dm')
      await waitFor(() => rowsText(page).includes('live dm'), 'live dm')
      page.instance.onSend({ detail: { text: 'reply' } })
      await waitFor(() => alice.log.dm.find((m) => m.text === 'reply'), 'alice got reply')
      await waitFor(() => page.data.messages.find((r) => r.text === 'reply' && r.status === 'sent'), 'reply sent')
      expect(rowsText(page)).toEqual(['earlier dm', 'live dm', 'reply'])
    } finally {
      page.instance.onUnload()
    }
  })
})
