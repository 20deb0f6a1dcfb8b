/**
 * @jest-environment node
 *
 * The SDK against two chatds: one with `--rate-limit 2 --rate-burst 2`, one
 * with `--jwt-secret S --max-rooms 2`:
 * Bearer-header tokens, rate_limited refusals resent with the same id (an
 * 80-DM burst still stored and delivered in send order),
 * forbidden / too_many_rooms surfaced as errors, and expired or refused
 * tokens (close 4401, handshake 401) ending in an `auth` event instead of a
 * reconnect loop.
 */
'use strict'
const { startChatd, liveDescribe } = require('./support/chatd-server')
const { waitFor, holdsFor, barrier, uniqueName, makeClient } = require('./support/helpers')
const { mintToken } = require('./support/jwt')

const SECRET = 'jwt-secret-for-miniprogram-tests-32b!'
let server // tokens, --max-rooms 2
let limited // --rate-limit 2 --rate-burst 2
const clients = []

function client(opts, url) {
  const c = makeClient(url || server.url, opts)
  clients.push(c.client)
  return c
}

async function online(opts, url) {
  const c = client(opts, url)
  c.client.connect()
  await waitFor(() => c.client.connected, 'welcomed')
  return c
}

liveDescribe('ChatClient against a chatd with tokens and limits', () => {
  beforeAll(async () => {
    ;[server, limited] = await Promise.all([
      startChatd(['--jwt-secret', SECRET, '--max-rooms', '2']),
      startChatd(['--rate-limit', '2', '--rate-burst', '2'])
    ])
  })
  afterEach(() => {
    clients.splice(0).forEach((c) => c.close())
  })
  afterAll(async () => {
    await Promise.all([server, limited].filter(Boolean).map((s) => s.stop()))
  })

  test('rate_limited: refused messages are resent later with the same id; each arrives once, nothing is closed', async () => {
    const room = uniqueName('r')
    const alice = await online({ name: uniqueName('alice') }, limited.url)
    await alice.client.join(room)
    const bob = await online({ name: uniqueName('bob') }, limited.url)
    await bob.client.join(room)
    const entries = []
    for (let i = 1; i <= 6; i++) entries.push(bob.client.send(room, 'burst ' + i))
    await waitFor(() => bob.log.error.some((e) => e.code === 'rate_limited'), 'a rate_limited refusal')
    const refused = bob.log.error.filter((e) => e.code === 'rate_limited').map((e) => e.ref)
    expect(refused.every((ref) => entries.some((e) => e.id === ref))).toBe(true)
    await waitFor(() => bob.client.outbox.length === 0, 'all six acked', 15000)
    await waitFor(() => alice.log.message.length === 6, 'alice has six', 5000)
    await barrier(alice) // every ack is in: a duplicate delivery would be at alice by now
    const ids = entries.map((e) => e.id)
    expect(alice.log.message.map((m) => m.id).sort()).toEqual(ids.slice().sort())
    expect(bob.log.ack.map((a) => a.id).sort()).toEqual(ids.slice().sort())
    // a refused id really was resent (and then stored under that same id)
    expect(alice.log.message.map((m) => m.id)).toContain(refused[0])
    expect(bob.log.failed).toEqual([])
    expect(bob.log.welcome.length).toBe(1) // never closed for flooding
    expect(bob.client.state).toBe('open')
  })

  test('an 80-DM burst over the rate limit is stored and delivered in send order, each once', async () => {
    // default limits (20 / s, burst 40): about half the burst is refused and resent
    const alice = await online({ token: mintToken(SECRET, { sub: uniqueName('u-burst') }) })
    const bob = await online({ token: mintToken(SECRET, { sub: uniqueName('u-peer') }) })
    const entries = []
    for (let i = 0; i < 80; i++) entries.push(alice.client.dm(bob.client.user, 'burst ' + i))
    await waitFor(() => alice.client.outbox.length === 0, 'all 80 acked', 20000)
    await waitFor(() => bob.log.dm.length === 80, 'bob has 80', 5000)
    await barrier(bob) // every ack is in: a duplicate delivery would be at bob by now
    expect(alice.log.error.some((e) => e.code === 'rate_limited')).toBe(true)
    expect(bob.log.dm.map((m) => m.id)).toEqual(entries.map((e) => e.id))
    expect(bob.log.dm.map((m) => m.seq)).toEqual(entries.map((e, i) => i + 1))
    expect(alice.log.ack.map((a) => a.seq)).toEqual(entries.map((e, i) => i + 1))
    expect(alice.log.failed).toEqual([])
    expect(alice.log.welcome.length).toBe(1) // never closed for flooding
  })

  test('a token in the Authorization header; forbidden rooms reject join, fail queued messages and history', async () => {
    const token = mintToken(SECRET, { sub: 'u-team', name: 'Teammate', rooms: ['team-*'] })
    const c = await online({ token })
    const task = c.wx.tasks[0]
    expect(task.url).not.toContain('token=')
    expect(task.header).toEqual({ Authorization: 'Bearer ' + token })
    expect(c.log.welcome[0]).toMatchObject({ user: 'u-team', name: 'Teammate', authenticated: true })
    expect(c.log.welcome[0].resume).toBeUndefined()
    await c.client.join('team-a')
    const queued = c.client.send('secret', 'not allowed')
    const err = await c.client.join('secret').catch((e) => e)
    expect(err.code).toBe('forbidden')
    expect(err.message).toBeTruthy()
    await waitFor(() => c.log.failed.length === 1, 'queued message failed')
    expect(c.log.failed[0]).toMatchObject({ id: queued.id, status: 'failed', error: 'forbidden', room: 'secret' })
    expect(c.client.outbox).toEqual([])
    expect(Array.from(c.client.rooms.keys())).toEqual(['team-a'])
    const h = await c.client.history('secret').catch((e) => e)
    expect(h.code).toBe('forbidden')
    expect(c.log.error.map((e) => e.code)).toEqual(['forbidden', 'forbidden'])
    expect(c.client.connected).toBe(true)
  })

  test('too_many_rooms: the third join is refused, the first two stay joined and usable', async () => {
    const c = await online({ name: uniqueName('rooms') })
    await c.client.join(uniqueName('r'))
    const keep = uniqueName('r')
    await c.client.join(keep)
    const err = await c.client.join(uniqueName('r')).catch((e) => e)
    expect(err.code).toBe('too_many_rooms')
    expect(c.client.rooms.size).toBe(2)
    c.client.send(keep, 'still fine')
    await waitFor(() => c.log.ack.length === 1, 'ack in a kept room')
    expect(c.client.connected).toBe(true)
  })

  test('close 4401 at the token expiry emits auth and does not reconnect; setToken + connect resumes the rooms', async () => {
    const room = uniqueName('r')
    const exp = Math.floor(Date.now() / 1000) + 2
    const c = await online({ token: mintToken(SECRET, { sub: 'u-exp', exp }) })
    await c.client.join(room)
    await waitFor(() => c.log.auth.length === 1, 'auth event', 5000)
    expect(c.log.auth[0]).toEqual({ code: 4401, reason: 'token_expired' })
    expect(c.client.state).toBe('closed')
    await holdsFor(() => c.wx.tasks.length === 1, 'no reconnect after 4401', 400) // backoff max 400 ms
    expect(c.wx.tasks.length).toBe(1) // no reconnect loop
    const other = await online({ name: uniqueName('alice') })
    await other.client.join(room)
    other.client.send(room, 'while logged out')
    await waitFor(() => other.log.ack.length === 1, 'ack')
    c.client.setToken(mintToken(SECRET, { sub: 'u-exp' }), Date.now() + 3600000)
    c.client.connect()
    await waitFor(() => c.client.connected && c.log.message.length === 1, 'back with the new token')
    expect(c.client.user).toBe('u-exp')
    expect(c.log.message[0].text).toBe('while logged out')
    // (the message may come first: the server subscribes a token user's rooms at welcome)
    await waitFor(() => c.log.joined.length === 2, 'the room joined again')
    expect(c.log.joined[1].since).toBe(c.log.joined[0].seq)
  })

  test('a refused token (handshake 401) emits auth once; a token known to be expired is not even dialled', async () => {
    const forged = mintToken('some-other-secret-entirely-32bytes', { sub: 'mallory' })
    const c = client({ token: forged })
    c.client.connect()
    await waitFor(() => c.log.auth.length === 1, 'auth event')
    expect(c.log.auth[0]).toEqual({ code: 401, reason: 'unauthorized' })
    await holdsFor(() => c.wx.tasks.length === 1, 'no reconnect after 401', 400) // backoff max 400 ms
    expect(c.wx.tasks.length).toBe(1)
    expect(c.client.state).toBe('closed')

    const d = client({ token: mintToken(SECRET, { sub: 'u-old' }), tokenExpiresAt: Date.now() - 1000 })
    d.client.connect()
    expect(d.log.auth).toEqual([{ code: 401, reason: 'token_expired' }])
    expect(d.wx.tasks.length).toBe(0)
  })
})
