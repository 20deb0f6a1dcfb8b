/**
 * @jest-environment node
 *
 * The SDK (utils/chatd.js) against a real chatd over real WebSockets: the wx
 * shim's connectSocket is backed by the npm `ws` package, chatd is started by
 * the test with twistd, and dead networks are made with a TCP proxy that
 * stops forwarding.
 */
'use strict'
const { startChatd, liveDescribe } = require('./support/chatd-server')
const { startProxy } = require('./support/proxy')
const { waitFor, holdsFor, barrier, uniqueName, makeClient } = require('./support/helpers')
const { createWx } = require('./support/wx-ws')

let server
const clients = []

function client(name, opts, url) {
  const c = makeClient(url || server.url, Object.assign({ name }, opts))
  clients.push(c.client)
  return c
}

async function online(name, opts, url) {
  const c = client(name, opts, url)
  c.client.connect()
  await waitFor(() => c.client.connected, name + ' welcomed')
  return c
}

const texts = (msgs) => msgs.map((m) => m.text)

liveDescribe('ChatClient against a live chatd', () => {
  beforeAll(async () => {
    server = await startChatd()
  })

  afterEach(() => {
    clients.splice(0).forEach((c) => c.close())
  })

  afterAll(async () => {
    if (server) await server.stop()
  })

  test('connects offering chatd.v1, is welcomed under its name, status goes connecting → open', async () => {
    const name = uniqueName('alice')
    const a = await online(name)
    expect(a.wx.tasks[0].protocols).toEqual(['chatd.v1'])
    expect(a.wx.tasks[0]._ws.protocol).toBe('chatd.v1')
    expect(a.client.user).toBe(name)
    expect(a.log.welcome[0].protocol).toBe('chatd.v1')
    expect(a.log.status.map((s) => s.state)).toEqual(['connecting', 'open'])
  })

  test('offers permessage-deflate (chatd answers server_no_context_takeover); a long message reaches a compressing and a plain client alike', async () => {
    const room = uniqueName('z')
    const a = await online(uniqueName('alice'))
    const ws = a.wx.tasks[0]._ws
    expect(ws.extensions).toBe('permessage-deflate')
    // the parameters ws accepted from chatd's answer
    expect(ws._extensions['permessage-deflate'].params).toMatchObject({ server_no_context_takeover: true })
    // a wx whose connectSocket does not ask for compression (wx's own default)
    const plainWx = createWx()
    const connectSocket = plainWx.connectSocket
    plainWx.connectSocket = (opts) => connectSocket(Object.assign({}, opts, { perMessageDeflate: false }))
    const b = await online(uniqueName('bob'), { wx: plainWx })
    expect(b.wx.tasks[0]._ws.extensions).toBe('')
    await a.client.join(room)
    await b.client.join(room)
    const long = 'a long message that deflate shrinks, '.repeat(60)
    const c = await online(uniqueName('carol'))
    await c.client.join(room)
    c.client.send(room, long)
    c.client.send(room, 'short')
    await waitFor(() => a.log.message.length >= 2 && b.log.message.length >= 2, 'both messages at both')
    expect(texts(a.log.message)).toEqual([long, 'short'])
    expect(texts(b.log.message)).toEqual([long, 'short'])
  })

  test('join, send/ack and receive: pending → sent, the other member gets it once with the same id', async () => {
    const room = uniqueName('r')
    const a = await online(uniqueName('alice'))
    const b = await online(uniqueName('bob'))
    const ja = await a.client.join(room)
    expect(ja.members).toEqual([a.client.user])
    await b.client.join(room)
    await waitFor(() => a.log.presence.length, 'presence join')
    expect(a.log.presence[0]).toMatchObject({ room, user: b.client.user, event: 'join' })
    expect(a.client.members(room)).toEqual([a.client.user, b.client.user].sort())

    const entry = a.client.send(room, 'hello bob')
    expect(entry.status).toBe('pending')
    expect(a.client.outbox.map((e) => e.id)).toEqual([entry.id])
    await waitFor(() => a.log.ack.length, 'ack')
    expect(a.log.ack[0]).toMatchObject({ id: entry.id, status: 'sent', room, text: 'hello bob' })
    expect(typeof a.log.ack[0].seq).toBe('number')
    expect(a.client.outbox).toEqual([])
    await waitFor(() => b.log.message.length, 'message at bob')
    expect(b.log.message[0]).toMatchObject({ room, from: a.client.user, text: 'hello bob', id: entry.id, seq: a.log.ack[0].seq })
    await barrier(b)
    await barrier(a)
    expect(b.log.message.length).toBe(1)
    expect(a.log.message.length).toBe(0) // own message comes back as ack only
  })

  test('typing reaches the other member, presence leave follows a close', async () => {
    const room = uniqueName('r')
    const a = await online(uniqueName('alice'))
    const b = await online(uniqueName('bob'))
    await a.client.join(room)
    await b.client.join(room)
    b.client.typing(room)
    await waitFor(() => a.log.typing.length, 'typing')
    expect(a.log.typing[0]).toEqual({ room, from: b.client.user })
    b.client.close()
    await waitFor(() => a.log.presence.find((p) => p.event === 'leave'), 'presence leave')
    expect(a.client.members(room)).toEqual([a.client.user])
  })

  test('history pages oldest first and pages back with before', async () => {
    const room = uniqueName('r')
    const a = await online(uniqueName('alice'))
    await a.client.join(room)
    for (let i = 1; i <= 5; i++) a.client.send(room, 'm' + i)
    await waitFor(() => a.log.ack.length === 5, '5 acks')
    const p1 = await a.client.history(room, { limit: 2 })
    expect(texts(p1.messages)).toEqual(['m4', 'm5'])
    expect(p1.more).toBe(true)
    const p2 = await a.client.history(room, { limit: 2, before: p1.messages[0].seq })
    expect(texts(p2.messages)).toEqual(['m2', 'm3'])
    const p3 = await a.client.history(room, { limit: 2, before: p2.messages[0].seq })
    expect(texts(p3.messages)).toEqual(['m1'])
    expect(p3.more).toBe(false)
  })

  test('direct messages: ack to the sender, dm event at the peer, dm_history', async () => {
    const a = await online(uniqueName('alice'))
    const b = await online(uniqueName('bob'))
    const e = a.client.dm(b.client.user, 'psst')
    await waitFor(() => b.log.dm.length, 'dm')
    expect(b.log.dm[0]).toMatchObject({ from: a.client.user, to: b.client.user, text: 'psst', id: e.id, peer: a.client.user })
    await waitFor(() => a.log.ack.length, 'dm ack')
    expect(a.log.ack[0]).toMatchObject({ id: e.id, kind: 'dm', to: b.client.user, status: 'sent' })
    const page = await b.client.dmHistory(a.client.user, { limit: 10 })
    expect(texts(page.messages)).toEqual(['psst'])
  })

  test('a killed socket reconnects, resumes with since and resends the outbox: no loss, no duplicates', async () => {
    const room = uniqueName('r')
    const a = await online(uniqueName('alice'))
    const b = await online(uniqueName('bob'), { backoff: { initial: 300, max: 600, jitter: 0 } })
    await a.client.join(room)
    await b.client.join(room)
    a.client.send(room, 'before')
    await waitFor(() => b.log.message.length === 1, 'first message')

    b.wx.tasks[0]._kill() // TCP dropped with no close frame
    await waitFor(() => b.client.state === 'reconnecting', 'bob reconnecting')
    // while bob is away: alice keeps talking, bob types into his outbox
    for (let i = 1; i <= 5; i++) a.client.send(room, 'missed' + i)
    const queued = [b.client.send(room, 'offline1'), b.client.send(room, 'offline2')]
    expect(queued.map((q) => q.status)).toEqual(['pending', 'pending'])
    await waitFor(() => b.client.connected && b.client.outbox.length === 0, 'bob back, outbox drained', 10000)
    await waitFor(() => b.log.message.length === 6, 'bob has 6 messages')
    await waitFor(() => a.log.message.length === 2, 'alice has bob’s 2')
    await barrier(b) // (every send is acked: any duplicate would be here by now)
    await barrier(a)
    expect(texts(b.log.message)).toEqual(['before', 'missed1', 'missed2', 'missed3', 'missed4', 'missed5'])
    const seqs = b.log.message.map((m) => m.seq)
    expect(new Set(seqs).size).toBe(seqs.length)
    expect(texts(a.log.message)).toEqual(['offline1', 'offline2'])
    expect(b.log.ack.map((x) => x.id).sort()).toEqual(queued.map((q) => q.id).sort())
    expect(b.log.joined.length).toBe(2)
    expect(b.log.joined[1].since).toBe(b.log.message[0].seq)
  })

  test('a resend after a lost ack is delivered once (server dedupe by id) and settles once', async () => {
    const proxy = await startProxy(server.port)
    try {
      const room = uniqueName('r')
      const a = await online(uniqueName('alice'))
      const b = await online(uniqueName('bob'), { backoff: { initial: 100, max: 200, jitter: 0 } }, proxy.url)
      await a.client.join(room)
      await b.client.join(room)
      // the send reaches chatd but the ack never reaches bob
      proxy.blackholeDownstream()
      const e = b.client.send(room, 'exactly once')
      await waitFor(() => a.log.message.length === 1, 'alice got it')
      // chatd acks right after delivering: wait until the ack has gone into the hole
      await waitFor(() => proxy.droppedDownstream() > 0, 'the ack dropped by the proxy')
      expect(b.client.outbox.map((x) => x.status + ':' + x.id)).toEqual(['pending:' + e.id]) // ack lost
      expect(b.log.ack).toEqual([])
      proxy.heal()
      b.wx.tasks[0]._kill()
      await waitFor(() => b.client.connected && b.client.outbox.length === 0, 'bob settled', 10000)
      await barrier(a)
      await barrier(b)
      expect(texts(a.log.message)).toEqual(['exactly once'])
      expect(b.log.ack.map((x) => x.id)).toEqual([e.id])
      expect(b.log.message).toEqual([])
    } finally {
      await proxy.close()
    }
  })

  test('heartbeat: a black-holed socket is declared dead within interval + timeout, then reconnect resumes', async () => {
    const proxy = await startProxy(server.port)
    try {
      const room = uniqueName('r')
      const a = await online(uniqueName('alice'))
      const b = await online(uniqueName('bob'), { heartbeat: { interval: 300, timeout: 300 }, backoff: { initial: 100, max: 300, jitter: 0 } }, proxy.url)
      await a.client.join(room)
      await b.client.join(room)
      // idle but alive: pings are answered, nothing declared dead; three answered
      // heartbeats (about 900 ms) take it past interval + timeout more than once
      let pongs = 0
      b.wx.tasks[0].onMessage((m) => {
        if (typeof m.data === 'string' && JSON.parse(m.data).type === 'pong') pongs++
      })
      await waitFor(() => {
        if (b.client.state !== 'open') throw new Error('declared dead while idle: ' + b.client.state)
        return pongs >= 3
      }, 'three answered heartbeats', 5000)
      expect(b.client.state).toBe('open')
      const t0 = Date.now()
      proxy.blackhole()
      await waitFor(() => b.log.status.find((s) => s.reason === 'heartbeat timeout'), 'heartbeat timeout', 3000)
      const took = Date.now() - t0
      expect(took).toBeGreaterThanOrEqual(250)
      expect(took).toBeLessThan(1500) // interval + timeout = 600 ms, plus scheduling slack on a busy CI box
      a.client.send(room, 'while dead')
      proxy.heal()
      // chatd still holds bob's dead connection, but the reconnect presents
      // welcome.resume: it is welcomed under the same name at once
      await waitFor(() => b.client.connected && b.log.message.length === 1, 'bob resumed', 10000)
      expect(b.log.message[0]).toMatchObject({ text: 'while dead', room })
      expect(b.log.status.find((s) => s.code === 4409)).toBeUndefined()
      expect(b.wx.tasks[b.wx.tasks.length - 1].url).toContain('resume=' + encodeURIComponent(b.log.welcome[0].resume))
      expect(b.log.welcome.length).toBe(2)
      expect(b.log.welcome[1].user).toBe(b.log.welcome[0].user)
      proxy.reap()
    } finally {
      await proxy.close()
    }
  })

  test('resume secret: a second socket with welcome.resume shares the live name; without it name_taken', async () => {
    const name = uniqueName('dora')
    const a = await online(name)
    const secret = a.log.welcome[0].resume
    expect(typeof secret).toBe('string')
    expect(a.wx.tasks[0].url).not.toContain('resume=') // nothing to present before the first welcome
    // a wrong secret is refused like no secret
    const stranger = client(name)
    stranger.client.resumeSecret = 'not-' + secret
    stranger.client.connect()
    await waitFor(() => stranger.client.state === 'closed', 'stranger refused')
    expect(stranger.log.error[0].code).toBe('name_taken')
    // the same secret is welcomed while the first socket is still open
    const twin = client(name)
    twin.client.resumeSecret = secret
    twin.client.connect()
    await waitFor(() => twin.client.connected, 'twin welcomed')
    expect(twin.client.user).toBe(a.client.user)
    expect(a.client.connected).toBe(true)
  })

  test('fallback: without a usable resume secret a reconnect retries name_taken until chatd reaps the dead socket', async () => {
    const proxy = await startProxy(server.port)
    try {
      const room = uniqueName('r')
      const a = await online(uniqueName('alice'))
      const b = await online(uniqueName('bob'), { heartbeat: { interval: 300, timeout: 300 }, backoff: { initial: 100, max: 300, jitter: 0 } }, proxy.url)
      await a.client.join(room)
      await b.client.join(room)
      proxy.blackhole()
      await waitFor(() => b.log.status.find((s) => s.reason === 'heartbeat timeout'), 'heartbeat timeout', 3000)
      b.client.resumeSecret = 'lost' // e.g. an old app version that never stored it
      a.client.send(room, 'while dead')
      proxy.heal()
      await waitFor(() => b.log.status.find((s) => s.code === 4409), 'name_taken retry', 5000)
      expect(b.client.state).not.toBe('closed')
      proxy.reap()
      await waitFor(() => b.client.connected && b.log.message.length === 1, 'bob resumed', 10000)
      expect(b.log.message[0]).toMatchObject({ text: 'while dead', room })
    } finally {
      await proxy.close()
    }
  })

  test('persistence: queued messages and room seqs survive a cold start; the new instance resumes with since and resends once', async () => {
    const proxy = await startProxy(server.port)
    try {
      const room = uniqueName('r')
      const name = uniqueName('bob')
      const key = 'chatd.state:' + name
      const phone = new Map() // the phone's storage, shared by both app runs
      const a = await online(uniqueName('alice'))
      await a.client.join(room)
      const b = await online(name, { wx: createWx({ storage: phone }), storageKey: key, saveDelay: 20 }, proxy.url)
      await b.client.join(room)
      a.client.send(room, 'seen before the crash')
      await waitFor(() => b.log.message.length === 1, 'first message')
      const seenSeq = b.log.message[0].seq
      await waitFor(() => phone.get(key) && phone.get(key).rooms[room] === seenSeq, 'seq persisted')

      // the network dies; bob types two messages that cannot go out
      proxy.blackhole()
      b.wx.tasks[0]._kill()
      await waitFor(() => b.client.state === 'reconnecting', 'bob offline')
      const queued = [b.client.send(room, 'queued 1'), b.client.send(room, 'queued 2')]
      const saved = phone.get(key)
      expect(saved.outbox.map((e) => [e.id, e.text, e.room])).toEqual(queued.map((q) => [q.id, q.text, room]))
      expect(typeof saved.resume).toBe('string')
      a.client.send(room, 'missed while dead')
      await waitFor(() => a.log.ack.length === 2, 'alice acked')
      // the app is killed: the old instance writes nothing more
      b.client.storageKey = null
      b.client.close()

      // cold start on a new network: a fresh SDK reading the same storage
      const b2 = client(name, { wx: createWx({ storage: phone }), storageKey: key })
      expect(b2.client.outbox.map((e) => [e.id, e.status])).toEqual(queued.map((q) => [q.id, 'pending']))
      expect(Array.from(b2.client.rooms.keys())).toEqual([room])
      b2.client.connect()
      // chatd still holds the dead socket behind the proxy: the stored resume secret takes the name over
      await waitFor(() => b2.client.connected && b2.client.outbox.length === 0, 'b2 back, outbox drained', 10000)
      await waitFor(() => b2.log.message.length === 1 && a.log.message.length === 2, 'replay and resend')
      await barrier(b2)
      await barrier(a)
      expect(b2.log.status.find((s) => s.code === 4409)).toBeUndefined()
      expect(b2.log.joined[0].since).toBe(seenSeq)
      expect(texts(b2.log.message)).toEqual(['missed while dead'])
      expect(texts(a.log.message)).toEqual(['queued 1', 'queued 2'])
      expect(a.log.message.map((m) => m.id)).toEqual(queued.map((q) => q.id))
      expect(b2.log.ack.map((x) => x.id)).toEqual(queued.map((q) => q.id))
      await waitFor(() => phone.get(key).outbox.length === 0, 'outbox cleared in storage')
      b2.client.forget()
      expect(phone.has(key)).toBe(false)
    } finally {
      await proxy.close()
    }
  })

  test('pause (app hidden) closes the socket and stops retrying; resume catches up exactly once', async () => {
    const room = uniqueName('r')
    const a = await online(uniqueName('alice'))
    const b = await online(uniqueName('bob'))
    await a.client.join(room)
    await b.client.join(room)
    b.client.pause()
    expect(b.client.state).toBe('paused')
    await waitFor(() => a.log.presence.find((p) => p.event === 'leave'), 'bob left')
    a.client.send(room, 'x1')
    a.client.send(room, 'x2')
    await holdsFor(() => b.wx.tasks.length === 1, 'no reconnect while hidden', 300)
    expect(b.wx.tasks.length).toBe(1) // no reconnect while hidden
    b.client.resume()
    await waitFor(() => b.log.message.length === 2, 'caught up')
    await barrier(b)
    expect(texts(b.log.message)).toEqual(['x1', 'x2'])
  })

  test('a taken name on the first connect closes for good with reason name_taken', async () => {
    const name = uniqueName('carol')
    await online(name)
    const c = client(name)
    c.client.connect()
    await waitFor(() => c.client.state === 'closed', 'closed')
    expect(c.log.status[c.log.status.length - 1]).toMatchObject({ state: 'closed', code: 4409, reason: 'name_taken' })
    expect(c.log.error[0].code).toBe('name_taken')
  })
})

describe('ChatClient backoff against a refused port', () => {
  test('one retry per failure (onError + onClose), delays grow ×2 and are capped', async () => {
    const net = require('net')
    const srv = net.createServer()
    await new Promise((r) => srv.listen(0, '127.0.0.1', r))
    const port = srv.address().port
    await new Promise((r) => srv.close(r)) // nothing listens there now
    const c = makeClient(`ws://127.0.0.1:${port}/ws`, { backoff: { initial: 20, factor: 2, max: 80, jitter: 0 } })
    c.client.connect()
    await waitFor(() => c.log.status.filter((s) => s.state === 'reconnecting' && s.delay !== undefined).length >= 5, '5 retries')
    c.client.close()
    const delays = c.log.status.filter((s) => s.delay !== undefined).map((s) => s.delay)
    expect(delays.slice(0, 5)).toEqual([20, 40, 80, 80, 80])
    // every socket failure scheduled exactly one retry
    expect(c.wx.tasks.length).toBe(delays.length)
  })
})
