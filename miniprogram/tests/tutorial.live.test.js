/**
 * @jest-environment node
 *
 * The tutorial's own page (tests/fixtures/tutorial, no subprotocol, raw text)
 * against chatd's relay mode, side by side with a chatd.v1 SDK client in
 * `lobby`: relay ↔ relay verbatim, relay → lobby message, lobby send → bare
 * text at every relay page.
 */
'use strict'
const path = require('path')
const { startChatd, liveDescribe } = require('./support/chatd-server')
const { createWx } = require('./support/wx-ws')
const { loadPage } = require('./support/page-runtime')
const { waitFor, barrier, uniqueName, makeClient } = require('./support/helpers')

const PAGE = path.join(__dirname, 'fixtures', 'tutorial', 'index.js')

liveDescribe('the tutorial page against chatd relay mode', () => {
  let server
  let sdk
  const pages = []

  beforeAll(async () => {
    server = await startChatd()
  })

  afterAll(async () => {
    pages.forEach((p) => p.socketTask.close({}))
    if (sdk) sdk.client.close()
    if (server) await server.stop()
  })

  function openTutorialPage() {
    global.wx = createWx({ urlMap: { 'ws://host:8080': server.relayUrl.replace(/\/$/, '') } })
    const page = loadPage(PAGE)
    page.wx = global.wx
    delete global.wx
    pages.push(page)
    return page
  }

  test('relay pages exchange raw text and talk with a chatd.v1 client in lobby', async () => {
    sdk = makeClient(server.url, { name: uniqueName('v1') })
    sdk.client.connect()
    await sdk.client.join('lobby')
    const a = openTutorialPage()
    const b = openTutorialPage()
    expect(a.wx.tasks[0].protocols).toBeUndefined() // no subprotocol offered
    await waitFor(() => a.wx.tasks[0].readyState === 1 && b.wx.tasks[0].readyState === 1, 'relay sockets open')
    await waitFor(() => sdk.client.members('lobby').length === 3, 'relay guests in lobby members')
    const guests = sdk.client.members('lobby').filter((u) => u.indexOf('guest-') === 0)
    expect(guests.length).toBe(2)

    // tutorial A types and sends
    a.bindInput({ detail: { value: 'hi from the tutorial' } })
    a.sendMessage()
    await waitFor(() => b.data.messages.length === 1, 'relay B got it')
    expect(b.data.messages).toEqual(['hi from the tutorial'])
    await waitFor(() => sdk.log.message.length === 1, 'v1 client got it')
    expect(sdk.log.message[0]).toMatchObject({ room: 'lobby', text: 'hi from the tutorial' })
    expect(guests).toContain(sdk.log.message[0].from)

    // the chatd.v1 client answers in lobby: every relay page gets the bare text
    sdk.client.send('lobby', 'hello relay')
    await waitFor(() => a.data.messages.length === 1 && b.data.messages.length === 2, 'bare text at relays')
    expect(a.data.messages).toEqual(['hello relay'])
    expect(b.data.messages).toEqual(['hi from the tutorial', 'hello relay'])
    // never echoed back to the sender: the relays have it, so the barrier proves it
    await barrier(sdk)
    expect(sdk.log.message.length).toBe(1)
    // never JSON at a relay page either: a later text from B is the next thing A gets
    b.bindInput({ detail: { value: 'marker' } })
    b.sendMessage()
    await waitFor(() => a.data.messages.length === 2, 'the marker at relay A')
    expect(a.data.messages).toEqual(['hello relay', 'marker'])
  })
})
