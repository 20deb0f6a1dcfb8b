/**
 * @jest-environment node
 *
 * The SDK's conversation store (utils/chatd.js: sync, the list, unread, read
 * ticks, recall, edit, reactions, private rooms) against a real chatd with
 * token users (`--jwt-secret S --recall-window 3`).
 */
'use strict'
const { startChatd, liveDescribe } = require('./support/chatd-server')
const { waitFor, barrier, uniqueName } = require('./support/helpers')
const { tokenUsers } = require('./support/live-users')
const { createWx } = require('./support/wx-ws')

const fs = require('fs')
const os = require('os')
const path = require('path')
const { addUpload } = require('./support/wx-upload')
// a 2×2 red PNG
const PNG = Buffer.from(
  'iVBORw0KGgoAAAANSUhEUgAAAAIAAAACCAIAAAD91JpzAAAAFklEQVR4nGP8z8DAwMDAxMDAwMDAAAANHQEDasKb6QAAAABJRU5ErkJggg==',
  'base64'
)

const SECRET = 'jwt-secret-for-miniprogram-tests-32b!'
const WINDOW_S = 3
let server
const clients = []

const users = tokenUsers(SECRET, () => server, clients)
/** What these tests record besides makeClient's events. */
const LOG = ['conversations', 'timeline', 'removed', 'synced', 'unread', 'read', 'receipt', 'event']
const client = (sub, opts) => users.client(sub, Object.assign({ log: LOG }, opts))
const online = (sub, opts) => users.online(sub, Object.assign({ log: LOG }, opts))
const known = users.known

const mine = (c, key) => c.client.timeline(key).filter((m) => m.mine)

liveDescribe('conversations in the SDK against a live chatd', () => {
  beforeAll(async () => {
    server = await startChatd(['--jwt-secret', SECRET, '--recall-window', String(WINDOW_S), '--push-template', 'TPL-1', '--wechat-appid', 'wx-test', '--wechat-secret', 'not-used-here'])
  })

  afterEach(() => {
    clients.splice(0).forEach((c) => c.close())
  })

  afterAll(async () => {
    if (server) await server.stop()
  })

  test('a DM to offline bob: pending → sent; bob’s cold start shows it unread 1; he reads it and alice sees "read"', async () => {
    const { alice, bob } = await users.aliceAndKnownBob()
    const a = await online(alice)
    const entry = a.client.dm(bob, 'are you there?')
    expect(mine(a, 'd:' + bob).map((m) => m.status)).toEqual(['pending'])
    await waitFor(() => entry.status === 'sent', 'the ack')
    expect(mine(a, 'd:' + bob).map((m) => [m.text, m.status])).toEqual([['are you there?', 'sent']])
    expect(a.client.conversation('d:' + bob)).toMatchObject({ kind: 'dm', unread: 0, last: { text: 'are you there?' } })

    // bob's phone: a cold start with empty storage syncs the conversation in
    const wx = createWx()
    const b = await online(bob, { wx })
    const conv = b.client.conversation('d:' + alice)
    expect(conv).toMatchObject({ with: alice, kind: 'dm', unread: 1, last: { from: alice, text: 'are you there?' } })
    expect(b.client.totalUnread()).toBe(1)
    expect(b.client.timeline('d:' + alice).map((m) => [m.from, m.text])).toEqual([[alice, 'are you there?']])
    await waitFor(() => b.log.unread.some((u) => u.total === 1), 'the unread event')
    b.client.close()

    // the next cold start shows the cached list before any connection
    const cold = client(bob, { wx })
    expect(cold.client.conversations.map((c) => [c.key, c.unread])).toEqual([['d:' + alice, 1]])
    expect(cold.client.timeline('d:' + alice).map((m) => m.text)).toEqual(['are you there?'])
    cold.client.connect()
    await waitFor(() => cold.client.synced, 'the cold start synced')
    cold.client.markRead('d:' + alice)
    expect(cold.client.conversation('d:' + alice).unread).toBe(0) // at once, locally
    await waitFor(() => cold.log.read.some((r) => r.with === alice && r.unread === 0), "chatd's read")
    await waitFor(() => mine(a, 'd:' + bob)[0].status === 'read', 'alice sees read')
    expect(a.client.readBy('d:' + bob, entry.seq)).toEqual({ count: 1, users: [bob] })
  })

  test('markRead sends at most one read per conversation per second, the newest seq', async () => {
    const { alice, bob } = await users.aliceAndKnownBob()
    const a = await online(alice)
    const b = await online(bob)
    const sent = []
    for (let i = 0; i < 3; i++) sent.push(a.client.dm(bob, 'n' + i))
    await waitFor(() => b.client.timeline('d:' + alice).length === 3, 'three DMs at bob')
    const reads = []
    const task = b.wx.tasks[b.wx.tasks.length - 1]
    const send = task.send.bind(task)
    task.send = (o) => {
      const f = JSON.parse(o.data)
      if (f.type === 'read') reads.push(f)
      return send(o)
    }
    b.client.markRead('d:' + alice, sent[0].seq)
    b.client.markRead('d:' + alice, sent[1].seq)
    b.client.markRead('d:' + alice, sent[2].seq)
    expect(reads.map((f) => f.seq)).toEqual([sent[0].seq])
    await waitFor(() => reads.length === 2, 'the held-back read', 3000)
    expect(reads[1].seq).toBe(sent[2].seq)
    await waitFor(() => b.client.conversation('d:' + alice).unread === 0 && b.log.read.some((r) => r.seq === sent[2].seq), 'read up to the newest')
    await barrier(b)
    expect(reads.length).toBe(2)
  })

  test('recall within the window leaves a tombstone everywhere; after it, too_late; edit and reactions apply', async () => {
    const { alice, bob } = await users.aliceAndKnownBob()
    const a = await online(alice)
    const b = await online(bob)
    const m1 = a.client.dm(bob, 'oops')
    const m2 = a.client.dm(bob, 'typo hree')
    await waitFor(() => b.client.timeline('d:' + alice).length === 2, 'both at bob')
    a.client.recall('d:' + bob, m1.seq)
    a.client.edit('d:' + bob, m2.seq, 'typo here')
    b.client.react('d:' + alice, m2.seq, '👍')
    const at = (c, key, seq) => c.client.timeline(key).find((m) => m.seq === seq) || {}
    await waitFor(() => at(b, 'd:' + alice, m1.seq).recalled, 'the recall at bob')
    expect(at(b, 'd:' + alice, m1.seq).text).toBe('')
    expect(at(a, 'd:' + bob, m1.seq)).toMatchObject({ text: '', recalled: { by: alice } })
    await waitFor(() => at(b, 'd:' + alice, m2.seq).text === 'typo here' && at(a, 'd:' + bob, m2.seq).reactions, 'edit and reaction')
    expect(at(a, 'd:' + bob, m2.seq).reactions).toEqual([{ emoji: '👍', count: 1, me: false }])
    expect(at(b, 'd:' + alice, m2.seq).reactions).toEqual([{ emoji: '👍', count: 1, me: true }])
    expect(b.client.conversation('d:' + alice).last).toMatchObject({ seq: m2.seq, text: 'typo here' })

    // a third device of bob, synced from nothing, sees the same state
    const b2 = await online(bob)
    expect(at(b2, 'd:' + alice, m1.seq)).toMatchObject({ text: '', recalled: { by: alice } })
    expect(at(b2, 'd:' + alice, m2.seq)).toMatchObject({ text: 'typo here', reactions: [{ emoji: '👍', count: 1, me: true }] })

    // after the window: refused with too_late, the message stays
    await waitFor(() => Date.now() > m2.ts + WINDOW_S * 1000 + 200, 'the recall window to pass', WINDOW_S * 1000 + 3000)
    const late = a.client.recall('d:' + bob, m2.seq)
    await waitFor(() => late.status === 'failed', 'the refusal')
    expect(late.error).toBe('too_late')
    expect(at(a, 'd:' + bob, m2.seq).text).toBe('typo here')
  })

  test('a recall queued offline is sent exactly once after the reconnect', async () => {
    const { alice, bob } = await users.aliceAndKnownBob()
    const a = await online(alice)
    const m = a.client.dm(bob, 'take me back')
    await waitFor(() => m.status === 'sent', 'the ack')
    a.client.drop(200)
    const op = a.client.recall('d:' + bob, m.seq)
    expect(op.status).toBe('pending')
    await waitFor(() => op.status === 'sent', 'the recall acked after the reconnect')
    const b = await online(bob)
    const items = b.client.timeline('d:' + alice)
    expect(items.map((x) => [x.text, !!x.recalled])).toEqual([['', true]])
  })

  test('a private room: create with a member, invite, the list, kick stops the kicked user’s updates', async () => {
    const alice = uniqueName('alice')
    const bob = uniqueName('bob')
    const carol = uniqueName('carol')
    await known(bob)
    await known(carol)
    const a = await online(alice)
    const b = await online(bob)
    const c = await online(carol)
    const room = uniqueName('team')
    const info = await a.client.createRoom({ room, kind: 'private', title: 'Team', members: [bob] })
    expect(info).toMatchObject({ room, kind: 'private', title: 'Team', role: 'owner', members: 2 })
    await waitFor(() => b.client.conversation('r:' + room), 'the room in bob’s list')
    await a.client.invite(room, carol)
    await waitFor(() => c.client.conversation('r:' + room), 'the room in carol’s list')
    expect(c.client.conversation('r:' + room)).toMatchObject({ role: 'member' })
    a.client.send(room, 'welcome both')
    await waitFor(() => b.client.conversation('r:' + room).unread === 1 && c.client.conversation('r:' + room).unread === 1, 'unread 1 for both')
    expect(b.client.conversations[0].key).toBe('r:' + room)
    const events = b.client.timeline('r:' + room).filter((x) => x.event).map((x) => [x.event, x.user])
    expect(events).toEqual(expect.arrayContaining([['invited', carol]]))
    const members = await a.client.allMembers(room)
    expect(members.map((x) => [x.user, x.role]).sort()).toEqual([[alice, 'owner'], [bob, 'member'], [carol, 'member']].sort())

    await a.client.kick(room, carol)
    await waitFor(() => c.log.removed.some((r) => r.key === 'r:' + room && r.kind === 'kicked'), 'carol told she was kicked')
    expect(c.client.conversation('r:' + room)).toBeNull()
    const after = a.client.send(room, 'only for bob')
    await waitFor(() => b.client.timeline('r:' + room).some((x) => x.text === 'only for bob') && after.status === 'sent', 'bob has it')
    await barrier(c)
    expect(c.log.message.filter((x) => x.room === room).map((x) => x.text)).toEqual(['welcome both'])
    expect(c.client.conversation('r:' + room)).toBeNull()
    // in the room: "read by N" from the members' receipts
    b.client.markRead('r:' + room)
    await waitFor(() => (a.client.timeline('r:' + room).find((x) => x.seq === after.seq) || {}).readBy === 1, 'read by 1')
  })

  test('reply and mentions: the quote and the mention count reach the other side', async () => {
    const { alice, bob } = await users.aliceAndKnownBob()
    const a = await online(alice)
    const b = await online(bob)
    const room = uniqueName('grp')
    await a.client.createRoom({ room, kind: 'public', title: 'Group', members: [bob] })
    await waitFor(() => b.client.conversation('r:' + room), 'bob subscribed')
    const q = a.client.send(room, 'lunch?')
    await waitFor(() => q.status === 'sent', 'ack')
    b.client.send(room, '@' + alice + ' yes', { reply_to: q.seq, mentions: [alice] })
    await waitFor(() => a.client.conversation('r:' + room).mentions === 1, 'a mention for alice')
    const reply = a.client.timeline('r:' + room).find((x) => x.text === '@' + alice + ' yes')
    expect(reply).toMatchObject({ reply_to: q.seq, quote: { seq: q.seq, text: 'lunch?' }, mentions: [alice] })
  })

  test('alice uploads a picture with wx.uploadFile and DMs it to offline bob; bob gets it with URLs that serve it', async () => {
    const { alice, bob } = await users.aliceAndKnownBob()
    const wx = addUpload(createWx())
    const a = await online(alice, { wx })
    const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'chatd-up-')), 'red.png')
    fs.writeFileSync(file, PNG)
    const up = await a.client.upload(file)
    expect(up).toMatchObject({ kind: 'image', mime: 'image/png', width: 2, height: 2 })
    expect(wx.uploads[0].header.Authorization).toMatch(/^Bearer /)
    const entry = a.client.dm(bob, '', { attachments: [up] })
    expect(a.client.timeline('d:' + bob)[0].attachments[0].media_id).toBe(up.media_id)
    await waitFor(() => entry.status === 'sent', 'the ack')
    expect(a.client.conversation('d:' + bob).last).toMatchObject({ text: '', media: 'image' })

    const b = await online(bob)
    const [m] = b.client.timeline('d:' + alice)
    expect(m.attachments).toEqual([expect.objectContaining({ media_id: up.media_id, kind: 'image', width: 2, height: 2 })])
    const res = await fetch(b.client.mediaUrl(m.attachments[0].url))
    expect(res.status).toBe(200)
    expect(res.headers.get('content-type')).toBe('image/png')
    const thumb = await fetch(b.client.mediaUrl(m.attachments[0].thumb_url))
    expect(thumb.status).toBe(200)
    // bob may ask for fresh URLs of a picture posted to him (wx.request)
    const info = await b.client.mediaInfo(up.media_id)
    expect(info).toMatchObject({ media_id: up.media_id, kind: 'image' })
  })

  test('a refused upload rejects with chatd’s code; an unknown media id fails the send with bad_attachment', async () => {
    const { alice, bob } = await users.aliceAndKnownBob()
    const wx = addUpload(createWx())
    const a = await online(alice, { wx })
    const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'chatd-up-')), 'empty.bin')
    fs.writeFileSync(file, '')
    await expect(a.client.upload(file)).rejects.toMatchObject({ code: 'bad_request', status: 400 })
    const bad = a.client.dm(bob, 'see this', { attachments: [{ media_id: 'no-such-upload-0000000' }] })
    await waitFor(() => bad.status === 'failed', 'the refusal')
    expect(bad.error).toBe('bad_attachment')
    expect(a.client.timeline('d:' + bob).map((x) => [x.text, x.status])).toEqual([['see this', 'failed']])
  })
  test('room commands from a fresh client: a second page load creates another room, the invitee sees the title, leave ends it on every device', async () => {
    const { alice, bob } = await users.aliceAndKnownBob()
    const rooms = [uniqueName('first'), uniqueName('second')]
    for (const room of rooms) {
      const a = await online(alice) // a new client each time (a page load)
      const info = await a.client.createRoom({ room, kind: 'private', title: 'T ' + room })
      expect(info).toMatchObject({ room, role: 'owner', title: 'T ' + room })
      expect(a.client.conversation('r:' + room)).toMatchObject({ kind: 'private', title: 'T ' + room, role: 'owner' })
      await waitFor(() => a.client.timeline('r:' + room).some((x) => x.event === 'created'), 'the created event')
      a.client.close()
    }
    const a = await online(alice)
    const b = await online(bob)
    const b2 = await online(bob)
    await a.client.invite(rooms[1], bob)
    await waitFor(() => (b.client.conversation('r:' + rooms[1]) || {}).title === 'T ' + rooms[1], 'the title at bob')
    await waitFor(() => a.client.timeline('r:' + rooms[1]).some((x) => x.event === 'invited' && x.user === bob), 'alice has her own invited event')
    b.client.leave(rooms[1])
    await waitFor(() => !b.client.conversation('r:' + rooms[1]) && !b2.client.conversation('r:' + rooms[1]), 'gone on both devices')
    expect(b2.log.removed.map((r) => r.key)).toEqual(['r:' + rooms[1]])
    expect(a.client.canRecall('r:' + rooms[1], { seq: 1, from: bob, ts: 0 })).toBe(true) // the owner
    expect(b.client.welcome.recall_window).toBe(WINDOW_S)
  })
  test('pushSubscribe reports accepted templates and rooms; a foreign template is refused', async () => {
    const a = await online(uniqueName('alice'))
    const got = await a.client.pushSubscribe({ templates: [{ id: 'TPL-1', count: 2 }, { id: 'OTHER' }] })
    expect(got).toMatchObject({ templates: [{ id: 'TPL-1', count: 2 }], refused: ['OTHER'] })
    const again = await a.client.pushSubscribe({})
    expect(again.templates).toEqual([{ id: 'TPL-1', count: 2 }])
    await expect(a.client.pushSubscribe({ templates: 'nope' })).rejects.toMatchObject({ code: 'bad_request' })
  })
  test('moderation: an admin mutes a member (her send fails with muted), unmutes; a member reports a message', async () => {
    const { alice, bob } = await users.aliceAndKnownBob()
    const a = await online(alice)
    const b = await online(bob)
    const room = uniqueName('mod')
    await a.client.createRoom({ room, kind: 'private', title: 'Mod', members: [bob] })
    await waitFor(() => b.client.conversation('r:' + room), 'bob is in')
    const muted = await a.client.muteUser(room, bob, 600)
    expect(muted).toMatchObject({ room, user: bob })
    expect(muted.muted_until).toBeGreaterThan(Date.now())
    const refused = b.client.send(room, 'let me speak')
    await waitFor(() => refused.status === 'failed', 'the refusal')
    expect(refused.error).toBe('muted')
    expect(refused.muted_until).toBe(muted.muted_until)
    await waitFor(() => b.client.timeline('r:' + room).some((x) => x.event === 'muted' && x.user === bob), 'the muted event')
    expect((await a.client.unmuteUser(room, bob)).muted_until).toBe(0)
    const ok = b.client.send(room, 'thanks')
    await waitFor(() => ok.status === 'sent', 'sent after unmute')
    const filed = await a.client.report('r:' + room, ok.seq, 'rude')
    expect(typeof filed.report).not.toBe('undefined')
    await expect(b.client.muteUser(room, alice, 60)).rejects.toMatchObject({ code: 'forbidden' })
  })
})
