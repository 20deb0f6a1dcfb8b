/**
 * Pictures, voice and files in the messenger pages, and the offline-push
 * prompt, on the real app.js and SDK against a real chatd (`twistd -n chatd
 * --jwt-secret S --max-file-bytes 4096 --push-template TPL --wechat-appid …`).
 * The pickers, the recorder, previewImage, the audio player, downloadFile /
 * openDocument and requestSubscribeMessage are the wx shim's recorded stubs
 * (tests/support/wx-ws.js); uploads (wx.uploadFile) and downloads are real
 * HTTP against chatd; the files are real (a PNG, an MP3: support/media-files.js).
 */
'use strict'
const fs = require('fs')
const simulate = require('miniprogram-simulate')
const { startChatd, liveDescribe } = require('./support/chatd-server')
const { createWx } = require('./support/wx-ws')
const { addUpload } = require('./support/wx-upload')
const { loadApp } = require('./support/app-runtime')
const { waitFor, holdsFor, barrier, uniqueName, httpGet } = require('./support/helpers')
const { tokenUsers } = require('./support/live-users')
const { loadPage, openPage, chatRows } = require('./support/pages')
const { png, mp3, tempFile } = require('./support/media-files')
const { shoot } = require('./support/screenshot')

const chatPage = loadPage('pages/chat/chat')
const conversationsPage = loadPage('pages/conversations/conversations')
const mePage = loadPage('pages/me/me')
const roomInfoPage = loadPage('pages/room-info/room-info')
const loginPage = loadPage('pages/login/login')
const { TOKEN_KEY } = require('../utils/login')

const config = require('../config')

const SECRET = 'jwt-secret-for-miniprogram-media-32b!!'
const TPL = 'TPL-media-1'
const MAX_FILE = 4096
// per user and day: two 3-second voice clips (48 KB each) pass, a third does not
const QUOTA = 120000

liveDescribe('pictures, voice, files and the push prompt in the pages against a live chatd', () => {
  let server
  const clients = []
  const pages = []

  beforeAll(async () => {
    server = await startChatd(['--jwt-secret', SECRET, '--max-file-bytes', String(MAX_FILE), '--media-quota-bytes', String(QUOTA), '--push-template', TPL, '--wechat-appid', 'wx-media-test', '--wechat-secret', 'not-used-here'])
    config.serverUrl = server.url
  })
  afterEach(() => {
    pages.splice(0).forEach((p) => p.instance.onUnload && p.instance.onUnload())
    clients.splice(0).forEach((c) => c.close())
    config.pushTemplates = []
    config.login = 'name'
    delete global.getApp
  })
  afterAll(async () => {
    if (server) await server.stop()
  })

  const users = tokenUsers(SECRET, () => server, clients)
  const { session, known } = users
  /** A launch of the real app.js for `sub`; its wx (with wx.uploadFile) is the global one. */
  const launch = (sub) => users.launched(sub, addUpload(createWx()))

  const open = (id, options) => openPage(pages, id, options)

  const withMedia = (page, kind) => chatRows(page).filter((r) => r.attachments && r.attachments.some((a) => a.kind === kind))
  /** My pending bubbles still uploading (SDK sendMedia entries) on `page`. */
  const uploading = (page) => page.data.pending.filter((r) => r.upload)
  /** Every list of uploading bubbles `page` showed, in order (after each setData). */
  function spyUploads(page) {
    const seen = []
    const orig = page.instance.setData.bind(page.instance)
    page.instance.setData = (p, cb) => {
      const r = orig(p, cb)
      const list = uploading(page)
      if (list.length) seen.push(JSON.parse(JSON.stringify(list)))
      return r
    }
    return seen
  }
  /** Taps an element of the chat page's composer (class `cls`). */
  async function tapComposer(page, cls, event, detail) {
    const composer = page.querySelector('#composer')
    composer.querySelector('.' + cls).dispatchEvent(event || 'tap', detail)
    await simulate.sleep(0)
    return composer
  }

  test('alice picks a photo from the "+" panel and DMs it to offline bob: pending bubble with progress, then sent; bob’s Chats shows [Image], his chat the thumbnail, a tap previews the original', async () => {
    const { alice, bob } = await users.aliceAndKnownBob()
    const { chat: a, wx } = await launch(alice)
    const page = open(chatPage, { key: 'd:' + bob })
    const uploads = spyUploads(page)
    const photo = tempFile('photo.png', png(64, 48))
    // as WeChat's chooseMedia: no width/height for a picture (the page asks getImageInfo)
    wx.mediaChoices.push([{ tempFilePath: photo, size: fs.statSync(photo).size, fileType: 'image' }])

    // the composer: "+" (the box is empty) opens the panel, Photo picks
    const composer = await tapComposer(page, 'plus')
    expect(composer.instance.data.panel).toBe(true)
    await tapComposer(page, 'photo')
    await waitFor(() => wx.chosen.length === 1, 'chooseMedia')
    expect(wx.chosen[0]).toMatchObject({ api: 'chooseMedia', count: 9, mediaType: ['image'], sourceType: ['album', 'camera'], sizeType: ['compressed'] })
    await waitFor(() => uploads.length, 'the pending bubble')
    // sized from getImageInfo before it is queued: no layout jump
    expect(uploads[0][0]).toMatchObject({ mine: true, tick: 'sending…', upload: { progress: 0, failed: false }, attachments: [{ kind: 'image', thumb: photo, w: 320, h: 240 }] })
    await waitFor(() => withMedia(page, 'image').some((r) => r.tick === 'sent') && !uploading(page).length, 'sent, the bubble gone')
    expect(uploads.some((list) => list[0].upload.progress === 100 && list[0].upload.label === 'Uploading 100%')).toBe(true) // the progress reached the page
    expect(uploads.some((list) => list[0].upload.deg === 360)).toBe(true) // and its ring
    // the SDK kept the temp file (saveFile), uploaded the kept one and removed it once sent
    expect(wx.saved.length).toBe(1)
    expect(wx.uploads.length).toBe(1)
    expect(wx.uploads[0]).toMatchObject({ filePath: wx.saved[0], name: 'file', header: { Authorization: expect.stringMatching(/^Bearer /) } })
    await waitFor(() => wx.removedSaved.length === 1, 'the kept file removed')
    expect(wx.removedSaved).toEqual(wx.saved)
    const [sent] = withMedia(page, 'image')
    expect(sent.attachments[0]).toMatchObject({ kind: 'image', w: 320, h: 240, thumb: expect.stringMatching(/^http:\/\/127\.0\.0\.1:\d+\/media\/.+\/thumb\?e=/) })
    expect(sent.bare).toBe(true)
    expect(a.conversation('d:' + bob).last).toMatchObject({ media: 'image', text: '' })
    page.instance.onUnload()
    pages.splice(0)
    a.close()

    // bob was offline: his cold start lists "[Image]"
    const { chat: b, wx: bwx } = await launch(bob)
    const list = open(conversationsPage)
    await waitFor(() => (list.data.rows || []).some((r) => r.key === 'd:' + alice), 'the row')
    expect(list.data.rows.find((r) => r.key === 'd:' + alice)).toMatchObject({ preview: '[Image]', badge: '1' })
    expect(list.dom.innerHTML).toContain('[Image]')

    const his = open(chatPage, { key: 'd:' + alice })
    const [row] = withMedia(his, 'image')
    const att = row.attachments[0]
    const m = b.timeline('d:' + alice).find((x) => x.attachments)
    expect(att.thumb).toBe(b.mediaUrl(m.attachments[0].thumb_url))
    expect(att).toMatchObject({ w: 320, h: 240 })
    const thumb = await httpGet(att.thumb)
    expect(thumb.status).toBe(200)
    expect(thumb.headers['content-type']).toMatch(/^image\//)
    expect(his.dom.querySelector('.main--thumb') || his.dom.innerHTML.includes('thumb')).toBeTruthy()

    // a tap previews the originals of the conversation's pictures
    his.instance.onMedia({ detail: { key: row.key, index: 0 } })
    await waitFor(() => bwx.previews.length === 1, 'previewImage')
    expect(bwx.previews[0]).toEqual({ current: att.url, urls: [att.url] })
    const original = await httpGet(att.url)
    expect(original.status).toBe(200)
    expect(original.headers['content-type']).toBe('image/png')

    // a thumbnail that did not load (an expired URL) asks chatd for fresh URLs, once
    const asked = () => bwx.requests.filter((r) => r.url.indexOf('/api/media/' + att.id) >= 0).length
    await his.instance.onMediaError({ detail: { key: row.key, index: 0 } })
    expect(asked()).toBe(1)
    expect(his.instance._fresh[att.id]).toMatchObject({ media_id: att.id, thumb_url: expect.stringContaining('/thumb?e=') })
    expect(withMedia(his, 'image')[0].attachments[0].thumb).toBe(b.mediaUrl(his.instance._fresh[att.id].thumb_url))
    await his.instance.onMediaError({ detail: { key: row.key, index: 0 } })
    expect(asked()).toBe(1)
    const png1 = shoot(his, 'miniprogram-chat-image', 500)
    if (png1) expect(fs.statSync(png1).size).toBeGreaterThan(1000)
  })

  test('hold to talk: a voice message with its duration at both ends, played and stopped on a tap; slid up it is cancelled; too short is not sent', async () => {
    const { alice, bob } = await users.aliceAndKnownBob()
    const { chat: a, wx } = await launch(alice)
    const page = open(chatPage, { key: 'd:' + bob })
    const clip = mp3(3)
    const file = tempFile('voice.mp3', clip.bytes)

    // "Voice" swaps the box for "Hold to talk"; slid up by 100 px and let go: cancelled
    await tapComposer(page, 'mode')
    wx.recordings.push({ tempFilePath: file, duration: 2000, fileSize: clip.bytes.length })
    let composer = await tapComposer(page, 'talk', 'touchstart', { touches: [{ x: 100, y: 600 }] })
    expect(composer.instance.data.recording).toBe(true)
    expect(wx.recorder.starts[0]).toMatchObject({ format: 'mp3', duration: 60000 })
    composer.querySelector('.talk').dispatchEvent('touchmove', { touches: [{ x: 100, y: 500 }] })
    await simulate.sleep(0)
    expect(composer.instance.data.cancelling).toBe(true)
    expect(page.dom.innerHTML).toContain('Release to cancel')
    composer.querySelector('.talk').dispatchEvent('touchend', { changedTouches: [{ x: 100, y: 500 }] })
    await waitFor(() => wx.recorder.stops === 1 && !wx.recordings.length, 'the recorder stopped')
    await simulate.sleep(20)
    expect(page.data.pending).toEqual([])
    expect(wx.uploads.length).toBe(0)

    // a tap-length recording: "Too short"
    wx.recordings.push({ tempFilePath: file, duration: 300, fileSize: clip.bytes.length })
    page.instance.onVoiceStart()
    page.instance.onVoiceEnd({ detail: { cancel: false } })
    await waitFor(() => wx.toasts.some((t) => t.title === 'Too short to send'), 'too short')
    expect(wx.uploads.length).toBe(0)

    // held and let go in place: uploaded and sent; chatd read the duration from the file
    wx.recordings.push({ tempFilePath: file, duration: 3004, fileSize: clip.bytes.length })
    composer = await tapComposer(page, 'talk', 'touchstart', { touches: [{ x: 100, y: 600 }] })
    composer.querySelector('.talk').dispatchEvent('touchend', { changedTouches: [{ x: 100, y: 590 }] })
    await waitFor(() => withMedia(page, 'voice').some((r) => r.tick === 'sent'), 'the voice message sent')
    expect(withMedia(page, 'voice')[0].attachments[0]).toMatchObject({ kind: 'voice', duration: '3"' })
    const entry = a.timeline('d:' + bob).find((x) => x.attachments)
    expect(entry.attachments[0]).toMatchObject({ kind: 'voice', mime: 'audio/mpeg' })
    expect(Math.abs(entry.attachments[0].duration_ms - clip.ms)).toBeLessThan(100)
    expect(a.conversation('d:' + bob).last.media).toBe('voice')
    a.close()
    pages.splice(0).forEach((p) => p.instance.onUnload())

    const { chat: b, wx: bwx } = await launch(bob)
    expect(b.conversation('d:' + alice).last).toMatchObject({ media: 'voice' })
    const list = open(conversationsPage)
    await waitFor(() => (list.data.rows || []).some((r) => r.key === 'd:' + alice && r.preview === '[Voice]'), '[Voice] in the list')
    const his = open(chatPage, { key: 'd:' + alice })
    const [row] = withMedia(his, 'voice')
    expect(row.attachments[0].duration).toBe('3"')
    expect(his.dom.innerHTML).toContain('3"')
    expect(row.attachments[0].unplayed).toBe(true)
    expect(his.dom.innerHTML).toMatch(/class="[^"]*unplayed/)
    his.instance.onMedia({ detail: { key: row.key, index: 0 } })
    expect(bwx.audios.length).toBe(1)
    expect(withMedia(his, 'voice')[0].attachments[0].unplayed).toBeUndefined() // played: the dot goes, on this phone for good
    expect(bwx.getStorageSync('chatd.voicePlayed')).toEqual([row.attachments[0].id])
    expect(bwx.audios[0]).toMatchObject({ src: row.attachments[0].url, played: 1 })
    expect(his.data.playing).toBe(row.attachments[0].id)
    const audio = await httpGet(row.attachments[0].url)
    expect(audio.status).toBe(200)
    expect(audio.headers['content-type']).toBe('audio/mpeg')
    // a second tap stops it; played to its end it stops by itself
    his.instance.onMedia({ detail: { key: row.key, index: 0 } })
    expect(bwx.audios[0]).toMatchObject({ stopped: 1, destroyed: true })
    expect(his.data.playing).toBe('')
    his.instance.onMedia({ detail: { key: row.key, index: 0 } })
    bwx.audios[1]._end()
    expect(his.data.playing).toBe('')
  })

  test('files: a file over --max-file-bytes is refused with a toast and a "not sent" bubble that Delete removes; a small one is sent with its name, bob downloads and opens it', async () => {
    const { alice, bob } = await users.aliceAndKnownBob()
    const { chat: a, wx } = await launch(alice)
    const page = open(chatPage, { key: 'd:' + bob })
    const big = tempFile('big.pdf', Buffer.alloc(MAX_FILE * 3, 0x41))
    wx.fileChoices.push([{ path: big, size: MAX_FILE * 3, name: 'big.pdf', type: 'file' }])
    page.instance.onPick({ detail: { type: 'file' } })
    await waitFor(() => wx.toasts.length, 'the toast')
    expect(wx.chosen[0]).toMatchObject({ api: 'chooseMessageFile', type: 'file' })
    expect(wx.toasts).toEqual([{ title: 'This file is too large to send', icon: 'none' }])
    // no retry of a refusal: the bubble says why, with Retry and Delete
    expect(wx.uploads.length).toBe(1)
    expect(wx.uploads[0].formData).toEqual({ name: 'big.pdf' }) // the original name, as a form field
    expect(uploading(page)).toEqual([expect.objectContaining({ tick: 'not sent', status: 'failed', upload: expect.objectContaining({ failed: true, error: 'This file is too large to send' }) })])
    expect(page.dom.innerHTML).toContain('Delete')
    page.instance.onDiscard({ detail: { key: uploading(page)[0].key } })
    expect(page.data.pending).toEqual([])
    expect(a.timeline('d:' + bob)).toEqual([])
    expect(a.failed).toEqual([])
    await waitFor(() => wx.removedSaved.length === 1, 'the kept file removed')

    const small = tempFile('notes.pdf', Buffer.from('%PDF-1.4 not really a pdf, a file\n'))
    wx.fileChoices.push([{ path: small, size: fs.statSync(small).size, name: 'notes.pdf', type: 'file' }])
    await tapComposer(page, 'plus')
    await tapComposer(page, 'file')
    await waitFor(() => withMedia(page, 'file').some((r) => r.tick === 'sent'), 'the file sent')
    expect(withMedia(page, 'file')[0].attachments[0]).toMatchObject({ kind: 'file', name: 'notes.pdf', size: '34 B' })
    expect(wx.uploads[1].formData).toEqual({ name: 'notes.pdf' })
    a.close()
    pages.splice(0).forEach((p) => p.instance.onUnload())

    const { chat: b, wx: bwx } = await launch(bob)
    await waitFor(() => b.conversation('d:' + alice), 'the DM at bob')
    expect(b.conversation('d:' + alice).last.media).toBe('file')
    const his = open(chatPage, { key: 'd:' + alice })
    const [row] = withMedia(his, 'file')
    expect(his.dom.innerHTML).toContain('notes.pdf')
    his.instance.onMedia({ detail: { key: row.key, index: 0 } })
    await waitFor(() => bwx.documents.length === 1, 'openDocument')
    expect(bwx.downloads[0]).toMatchObject({ url: row.attachments[0].url, statusCode: 200 })
    expect(bwx.documents[0]).toMatchObject({ fileType: 'pdf', showMenu: true })
    expect(fs.readFileSync(bwx.documents[0].filePath, 'utf8')).toBe('%PDF-1.4 not really a pdf, a file\n')
    expect(bwx.loading.map((l) => l.type)).toEqual(['show', 'hide'])
  })

  test('refusals and failures: an unreadable picture (bad_image) and the day’s quota (quota_exceeded) are toasts and "not sent" bubbles; a network failure is retried by the SDK; Retry uploads again', async () => {
    const { alice, bob } = await users.aliceAndKnownBob()
    const { chat: a, wx } = await launch(alice)
    const page = open(chatPage, { key: 'd:' + bob })
    // PNG magic, then junk: chatd sniffs an image and cannot decode it
    const broken = tempFile('broken.png', Buffer.concat([png(8, 8).subarray(0, 33), Buffer.alloc(200, 7)]))
    wx.mediaChoices.push([{ tempFilePath: broken, size: 233, width: 8, height: 8 }])
    page.instance.onPick({ detail: { type: 'photo' } })
    await waitFor(() => wx.toasts.length === 1, 'the bad_image toast')
    expect(wx.toasts[0]).toEqual({ title: 'This picture cannot be read', icon: 'none' })
    expect(uploading(page)).toEqual([expect.objectContaining({ tick: 'not sent', upload: expect.objectContaining({ failed: true, error: 'This picture cannot be read' }) })])
    // Retry: refused again (the file did not change)
    page.instance.onRetry({ detail: { key: uploading(page)[0].key } })
    await waitFor(() => wx.toasts.length === 2, 'refused again')
    expect(wx.uploads.length).toBe(2)
    page.instance.onDiscard({ detail: { key: uploading(page)[0].key } })
    expect(page.data.pending).toEqual([])

    // the network fails once: the SDK says so on the bubble and tries again by itself
    const clip = mp3(3)
    const file = tempFile('voice.mp3', clip.bytes)
    const upload = wx.uploadFile
    wx.uploadFile = global.wx.uploadFile = (opts) => {
      wx.uploadFile = global.wx.uploadFile = upload
      setTimeout(() => opts.fail({ errMsg: 'uploadFile:fail network down' }), 0)
      return { onProgressUpdate: () => {} }
    }
    wx.recordings.push({ tempFilePath: file, duration: 3004, fileSize: clip.bytes.length })
    page.instance.onVoiceStart()
    page.instance.onVoiceEnd({ detail: { cancel: false } })
    await waitFor(() => uploading(page).length === 1 && uploading(page)[0].upload.label === 'Upload failed, trying again…', 'the bubble waiting for a retry')
    expect(uploading(page)[0]).toMatchObject({ tick: 'sending…', upload: { failed: false } })
    await waitFor(() => withMedia(page, 'voice').some((r) => r.tick === 'sent') && !uploading(page).length, 'sent on the retry')
    expect(wx.toasts.length).toBe(2) // no toast for a failure the SDK retries

    // a second clip passes the quota, a third does not (each recording is a new temp file: the SDK keeps, i.e. moves, it)
    const again = () => ({ tempFilePath: tempFile('voice.mp3', clip.bytes), duration: 3004, fileSize: clip.bytes.length })
    wx.recordings.push(again(), again())
    page.instance.onVoiceStart()
    page.instance.onVoiceEnd({ detail: { cancel: false } })
    await waitFor(() => withMedia(page, 'voice').filter((r) => r.tick === 'sent').length === 2, 'the second clip sent')
    page.instance.onVoiceStart()
    page.instance.onVoiceEnd({ detail: { cancel: false } })
    await waitFor(() => wx.toasts.length === 3, 'the quota toast')
    expect(wx.toasts[2]).toEqual({ title: 'You have sent too much today. Try again later', icon: 'none' })
    expect(uploading(page)[0]).toMatchObject({ tick: 'not sent', upload: { failed: true } }) // may be retried later
    expect(a.timeline('d:' + bob).filter((x) => x.attachments && x.seq !== null).length).toBe(2)
  })

  test('killed mid-upload: after a restart (a new app on the storage that survived) the SDK uploads the kept file again and bob gets the voice message exactly once', async () => {
    const { alice, bob } = await users.aliceAndKnownBob()
    const { chat: a, wx } = await launch(alice)
    const page = open(chatPage, { key: 'd:' + bob })
    // 5 s: 80 KB, more than one 64 KiB piece of the shim's wx.uploadFile, so a progress below 100 % comes first
    const clip = mp3(5)
    const file = tempFile('voice.mp3', clip.bytes)
    let survived = null
    const upload = wx.uploadFile
    wx.uploadFile = global.wx.uploadFile = (opts) => {
      const task = upload(opts)
      task.onProgressUpdate((r) => {
        if (survived || r.progress >= 100) return
        // the process dies here: the request is cut, only what is in storage survives
        task.abort()
        survived = new Map(Array.from(wx.storage.entries()).map(([k, v]) => [k, JSON.parse(JSON.stringify(v))]))
      })
      return task
    }
    wx.recordings.push({ tempFilePath: file, duration: 5000, fileSize: clip.bytes.length })
    page.instance.onVoiceStart()
    page.instance.onVoiceEnd({ detail: { cancel: false } })
    await waitFor(() => survived, 'killed mid-upload')
    const [entry] = a.outbox
    expect(entry.upload).toMatchObject({ kind: 'voice', duration_ms: 5000 })
    expect(wx.saved.length).toBe(1)
    expect(fs.existsSync(file)).toBe(false) // moved by saveFile: only the kept file is left
    page.instance.onUnload()
    pages.splice(0)
    a.close()

    // the restart: a new app and SDK on the same phone (the storage as it was when killed)
    const wx2 = addUpload(createWx({ storage: survived }))
    const { chat: a2 } = users.launch(alice, wx2)
    // Chats lists the DM, which chatd does not know before this message, from the restored outbox
    const list = open(conversationsPage)
    expect(list.data.rows.map((r) => [r.key, r.preview])).toEqual([['d:' + bob, '[Voice]']])
    const again = open(chatPage, { key: 'd:' + bob })
    // the pending bubble comes from the SDK's restored outbox, before anything is sent
    expect(uploading(again)).toEqual([expect.objectContaining({ key: 'p' + entry.id, tick: 'sending…', attachments: [expect.objectContaining({ kind: 'voice', duration: '5"' })] })])
    await waitFor(() => withMedia(again, 'voice').some((r) => r.tick === 'sent') && !uploading(again).length, 'sent after the restart')
    expect(wx2.uploads.map((u) => u.filePath)).toEqual(wx.saved)
    expect(a2.timeline('d:' + bob).filter((x) => x.attachments).map((x) => x.id)).toEqual([entry.id])
    await waitFor(() => wx2.removedSaved.length === 1, 'the kept file removed')
    // chatd has the DM now: one row, the store's
    await waitFor(() => a2.conversation('d:' + bob), 'the DM in the store')
    expect(a2.conversations.filter((c) => c.key === 'd:' + bob)).toEqual([expect.objectContaining({ seq: expect.any(Number), last: expect.objectContaining({ media: 'voice' }) })])
    expect(list.data.rows.map((r) => [r.key, r.preview])).toEqual([['d:' + bob, '[Voice]']])

    // bob gets it once, with its attachment (a sync from scratch, then live frames; nothing more comes)
    const b = await users.online(bob, { log: ['dm'] })
    await waitFor(() => b.client.timeline('d:' + alice).some((x) => x.attachments), 'the voice message at bob')
    const got = () => b.client.timeline('d:' + alice).filter((x) => x.attachments)
    expect(got()).toEqual([expect.objectContaining({ id: entry.id, from: alice, attachments: [expect.objectContaining({ kind: 'voice', mime: 'audio/mpeg', size: clip.bytes.length })] })])
    await holdsFor(() => got().length === 1, 'one message', 300)
    const page1 = await b.client.dmHistory(alice, { limit: 10 })
    expect(page1.messages.filter((m) => m.attachments)).toEqual([expect.objectContaining({ id: entry.id })])
  })

  test('push prompt: after the first DM of the session WeChat’s prompt shows once, the accept reaches chatd; the Me and group info switches', async () => {
    config.pushTemplates = [TPL]
    const { alice, bob } = await users.aliceAndKnownBob()
    const { chat: a, wx } = await launch(alice)
    const page = open(chatPage, { key: 'd:' + bob })
    wx.subscribeAnswers.push({ [TPL]: 'accept' })
    page.instance.onSend({ detail: { text: 'hi bob' } })
    expect(wx.subscribePrompts).toEqual([{ tmplIds: [TPL] }]) // asked inside the send tap
    const count = async () => ((await a.pushSubscribe({})).templates.find((t) => t.id === TPL) || { count: 0 }).count
    // the report is an answered request: once the prompt's promise is through, chatd has it
    await waitFor(() => a.timeline('d:' + bob).some((x) => x.text === 'hi bob' && x.status === 'sent'), 'the DM acked')
    const http = async () => (await httpGet(server.httpUrl + '/api/push/subscriptions', { Authorization: 'Bearer ' + session(alice).token })).json()
    expect(getApp().globalData.pushAsked).toBe(true)
    let subs = null
    const deadline = Date.now() + 8000
    while (!(subs && subs.templates.length) && Date.now() < deadline) {
      subs = await http()
      if (!subs.templates.length) await new Promise((r) => setTimeout(r, 20))
    }
    expect(subs).toMatchObject({ templates: [{ id: TPL, count: 1 }], rooms: [] })
    // not again in this session
    page.instance.onSend({ detail: { text: 'second' } })
    await barrier({ wx })
    expect(wx.subscribePrompts.length).toBe(1)
    expect(await count()).toBe(1)

    // the Me page: "Notify me" shows what is left; switched on it asks again, a refusal adds nothing
    const me = open(mePage)
    await waitFor(() => me.data.notifyShown && me.data.notifyLeft === 1, 'Me: 1 left')
    expect(me.dom.innerHTML).toContain('1 notification left')
    wx.subscribeAnswers.push({ [TPL]: 'accept' })
    await me.instance.onNotify({ detail: { value: true } })
    expect(me.data.notifyLeft).toBe(2)
    wx.subscribeAnswers.push({ [TPL]: 'reject' })
    await me.instance.onNotify({ detail: { value: true } })
    expect(me.data.notifyLeft).toBe(2)
    expect(wx.subscribePrompts.length).toBe(3)
    expect(await count()).toBe(2)

    // group info: "Notify me about every message" chooses the room (and asks for one more message)
    const room = uniqueName('grp')
    await a.createRoom({ room, kind: 'private', title: 'Team', members: [bob] })
    const info = open(roomInfoPage, { room })
    await waitFor(() => info.data.notifyShown && info.data.role === 'owner', 'group info loaded')
    expect(info.data.notify).toBe(false)
    wx.subscribeAnswers.push({ [TPL]: 'accept' })
    await info.instance.onNotify({ detail: { value: true } })
    expect(info.data.notify).toBe(true)
    subs = await http()
    expect(subs).toMatchObject({ templates: [{ id: TPL, count: 3 }], rooms: [room] })
    await info.instance.onNotify({ detail: { value: false } })
    expect(info.data.notify).toBe(false)
    expect((await http()).rooms).toEqual([])
    expect(wx.subscribePrompts.length).toBe(4) // switching off does not ask
  })

  test('a notification’s page (?with=) opened before the app has a session: the login (a stored token) and then that conversation, on top of Chats', async () => {
    const alice = uniqueName('alice')
    const bob = uniqueName('bob')
    await known(alice)
    const wx = createWx()
    Object.assign(global.wx, wx)
    const app = loadApp() // a cold launch: no session yet
    config.login = 'wechat'
    wx.storage.set(TOKEN_KEY, session(bob))
    open(chatPage, { with: encodeURIComponent(alice) }) // what chatd puts after --push-page
    const next = '/pages/chat/chat?key=' + encodeURIComponent('d:' + alice)
    expect(wx.navigations).toEqual([{ type: 'redirectTo', url: '/pages/login/login?next=' + encodeURIComponent(next) }])
    open(loginPage, { next: encodeURIComponent(next) }) // WeChat hands the query over as it is in the URL
    clients.push(app.chat())
    await waitFor(() => wx.navigations.length === 3, 'Chats, then the conversation')
    expect(wx.navigations.slice(1)).toEqual([
      { type: 'switchTab', url: '/pages/conversations/conversations' },
      { type: 'navigateTo', url: next }
    ])
    const page = open(chatPage, { key: encodeURIComponent('d:' + alice) })
    expect(page.instance.key).toBe('d:' + alice)
    expect(page.data.dm).toBe(true)
  })
})
