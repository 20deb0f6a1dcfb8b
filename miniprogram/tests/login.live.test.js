/**
 * The login page and app.js against a real chatd started with WeChat login
 * (`--jwt-secret S --wechat-appid wx123 --wechat-api <stand-in>`, the app
 * secret in CHATD_WECHAT_SECRET) and a local stand-in for WeChat's
 * jscode2session. The test `wx` hands out login codes and does real HTTP
 * (`wx.request`) and real WebSockets (`wx.connectSocket`).
 */
'use strict'
const simulate = require('miniprogram-simulate')
const { loadPage } = require('./support/pages')
const { startChatd, liveDescribe } = require('./support/chatd-server')
const { startWechat } = require('./support/wechat-standin')
const { createWx } = require('./support/wx-ws')
const { loadApp } = require('./support/app-runtime')
const { waitFor, holdsFor, uniqueName, makeClient } = require('./support/helpers')
const { mintToken } = require('./support/jwt')
const { TOKEN_KEY } = require('../utils/login')

const config = require('../config')
const loginPage = loadPage('pages/login/login')

const APP_SECRET = 'app-secret-for-miniprogram-tests'
const JWT_SECRET = 'jwt-secret-for-miniprogram-login-32b!'

liveDescribe('login page and app against chatd with WeChat login', () => {
  let wechat
  let server
  let app
  const pages = []
  const saved = Object.assign({}, config)

  beforeAll(async () => {
    wechat = await startWechat(APP_SECRET)
    server = await startChatd(
      ['--jwt-secret', JWT_SECRET, '--wechat-appid', 'wx123', '--wechat-api', wechat.url],
      null,
      { CHATD_WECHAT_SECRET: APP_SECRET }
    )
  })
  afterEach(() => {
    pages.splice(0).forEach((p) => p.instance.onUnload())
    if (app && app.globalData.chat) app.globalData.chat.close()
    Object.assign(config, saved)
    delete global.getApp
  })
  afterAll(async () => {
    if (server) await server.stop()
    if (wechat) await wechat.close()
  })

  /** A launch of the app on a phone whose wx is `wxOpts` (storage survives via `storage`). */
  function launch(mode, wxOpts) {
    Object.assign(config, { serverUrl: server.url, login: mode, apiBase: '' })
    const wx = createWx(wxOpts)
    Object.assign(global.wx, wx)
    app = loadApp()
    const page = simulate.render(loginPage)
    page.attach(document.createElement('parent-wrapper'))
    pages.push(page)
    return { wx, page }
  }

  async function tap(page, selector) {
    page.querySelector(selector).dispatchEvent('tap')
    await simulate.sleep(0)
  }

  // tab pages are reached with switchTab: WeChat users go to Chats, anonymous users to Rooms
  const home = (wx, url) => wx.navigations.find((n) => n.type === 'switchTab' && n.url === url)
  const redirected = (wx) => home(wx, '/pages/conversations/conversations')
  const toRooms = (wx) => home(wx, '/pages/rooms/rooms')

  test('wx.login → POST /api/login/wechat → token stored → connects as wx:<openid> with a Bearer header', async () => {
    const phone = new Map()
    const { wx, page } = launch('wechat', { codes: ['alice1'], storage: phone })
    page.instance.onLoad({})
    expect(page.dom.innerHTML).toContain('Log in with WeChat')
    expect(page.dom.innerHTML).not.toContain('Continue as guest')
    page.instance.onInput({ detail: { value: 'Alice' } })
    await tap(page, '.wechat')
    await waitFor(() => redirected(wx), 'switch to the Chats tab')
    expect(wx.navigations.filter((n) => n.type === 'redirectTo')).toEqual([])
    const chat = app.chat()
    expect(chat.user).toBe('wx:o-alice1')
    expect(chat.welcome).toMatchObject({ name: 'Alice', authenticated: true })
    expect(wx.requests).toHaveLength(1)
    expect(wx.requests[0]).toMatchObject({ url: server.httpUrl + '/api/login/wechat', method: 'POST', data: { code: 'alice1', name: 'Alice' } })
    expect(wechat.seen[wechat.seen.length - 1]).toMatchObject({ appid: 'wx123', js_code: 'alice1', grant_type: 'authorization_code' })
    const stored = phone.get(TOKEN_KEY)
    expect(stored.user).toBe('wx:o-alice1')
    expect(Math.abs(stored.expiresAt - (Date.now() + 86400 * 1000))).toBeLessThan(60000)
    expect(JSON.stringify(stored)).not.toContain('SESSION-KEY')
    const task = wx.tasks[wx.tasks.length - 1]
    expect(task.header).toEqual({ Authorization: 'Bearer ' + stored.token })
    expect(task.url).toBe(server.url + '?features=receipts_batch')
    expect(page.data.error).toBe('')

    // a cold start on the same phone uses the stored token without a new wx.login
    chat.close()
    const again = launch('wechat', { codes: [], storage: phone })
    again.page.instance.onLoad({})
    await waitFor(() => redirected(again.wx), 'auto login')
    expect(again.wx.requests).toHaveLength(0)
    expect(app.chat().user).toBe('wx:o-alice1')
  })

  test.each([
    ['bad', 'WeChat did not accept the login code'],
    ['busy', 'WeChat is busy right now'],
    ['limited', 'Too many logins right now']
  ])('code %s: a clear message, the button stays usable, the next tap (fresh code) logs in', async (code, text) => {
    const good = uniqueName('ok')
    const { wx, page } = launch('wechat', { codes: [code, good] })
    page.instance.onLoad({})
    await tap(page, '.wechat')
    await waitFor(() => page.data.error, 'error shown')
    expect(page.data.error).toContain(text)
    expect(page.dom.innerHTML).toContain(text)
    expect(page.data.busy).toBe(false)
    expect(page.data.canRetry).toBe(true)
    expect(wx.tasks).toHaveLength(0) // no socket without a token
    await tap(page, '.wechat')
    await waitFor(() => redirected(wx), 'logged in on retry')
    expect(app.chat().user).toBe('wx:o-' + good)
    expect(wx.requests.map((r) => r.data.code)).toEqual([code, good])
    expect(page.data.error).toBe('')
  })

  test('a blocked user, an unreachable server and a server without WeChat login get their own messages', async () => {
    const { page } = launch('wechat', { codes: ['risky', 'x1', 'x2'] })
    page.instance.onLoad({})
    await page.instance.onWechat()
    expect(page.data.error).toContain('WeChat refused to log this account in')
    expect(page.data.canRetry).toBe(false)
    expect(page.dom.innerHTML).toContain('WeChat refused to log this account in')

    config.apiBase = wechat.url // answers 404 for /api/login/wechat
    await page.instance.onWechat()
    expect(page.data.error).toBe('WeChat login is not enabled on this chat server.')

    const net = require('net')
    const srv = net.createServer()
    await new Promise((r) => srv.listen(0, '127.0.0.1', r))
    const dead = srv.address().port
    await new Promise((r) => srv.close(r))
    config.apiBase = 'http://127.0.0.1:' + dead
    await page.instance.onWechat()
    expect(page.data.error).toMatch(/^Cannot reach the chat server \(request:fail .*ECONNREFUSED.*\)/)
    expect(page.data.canRetry).toBe(true)
  })

  test('a refused stored token: the app logs in again with a fresh wx.login instead of reconnect-looping', async () => {
    const phone = new Map()
    const forged = mintToken('not-the-server-secret-at-all-32bytes', { sub: 'wx:o-old' })
    phone.set(TOKEN_KEY, { token: forged, user: 'wx:o-old', name: 'Old', expiresAt: Date.now() + 3600000 })
    const fresh = uniqueName('re')
    const { wx, page } = launch('wechat', { codes: [fresh], storage: phone })
    page.instance.onLoad({})
    await waitFor(() => redirected(wx), 'logged in again')
    expect(app.chat().user).toBe('wx:o-' + fresh)
    expect(wx.tasks).toHaveLength(2) // the refused handshake, then the new token
    expect(wx.requests).toHaveLength(1)
    expect(phone.get(TOKEN_KEY).token).not.toBe(forged)
    await holdsFor(() => wx.tasks.length === 2, 'no reconnect loop after the new login', 300)
    expect(wx.tasks).toHaveLength(2)
    expect(page.data.error).toBe('')
  })

  test('name mode: enter a name, invalid names and taken names are explained', async () => {
    const { wx, page } = launch('name', {})
    page.instance.onLoad({})
    expect(page.dom.innerHTML).toContain('Continue as guest')
    page.instance.onInput({ detail: { value: 'guest-1' } })
    await tap(page, '.enter')
    expect(page.data.error).toContain('may not start with guest-')
    const taken = uniqueName('taken')
    const holder = makeClient(server.url, { name: taken })
    holder.client.connect()
    try {
      await waitFor(() => holder.client.connected, 'holder online')
      page.instance.onInput({ detail: { value: taken } })
      await tap(page, '.enter')
      await waitFor(() => page.data.error === 'That name is taken', 'taken shown')
      expect(page.data.busy).toBe(false)
      const mine = uniqueName('mine')
      page.instance.onInput({ detail: { value: mine } })
      await tap(page, '.enter')
      await waitFor(() => toRooms(wx), 'the Rooms tab')
      expect(redirected(wx)).toBeUndefined()
      expect(app.chat().user).toBe('~' + mine) // anonymous users are ~-prefixed while chatd accepts tokens
      expect(wx.getStorageSync('chatd.name')).toBe(mine)
    } finally {
      holder.client.close()
    }
  })
})
