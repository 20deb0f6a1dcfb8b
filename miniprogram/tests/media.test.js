/**
 * @jest-environment node
 *
 * The pure media helpers (utils/media.js) and what the messenger rows make of
 * attachments (utils/chatview.js): list previews "[Image]"/"[Voice]"/"[File]",
 * thumbnail boxes from width/height, voice durations, file sizes, refusal
 * toasts, fresh URLs replacing expired ones, the images previewImage pages
 * through, hold-to-talk's slide-up cancel; and the push prompt's pure part
 * (utils/push.js).
 */
'use strict'
const m = require('../utils/media')
const v = require('../utils/chatview')
const push = require('../utils/push')

const url = (p) => 'http://h' + p
const image = { media_id: 'img1', kind: 'image', mime: 'image/png', size: 2048, width: 1600, height: 1200, url: '/media/img1?e=1&s=a', thumb_url: '/media/img1/thumb?e=1&s=a' }
const voice = { media_id: 'v1', kind: 'voice', mime: 'audio/mpeg', size: 40000, duration_ms: 7400, url: '/media/v1?e=1&s=b' }
const file = { media_id: 'f1', kind: 'file', mime: 'application/octet-stream', size: 5 * 1024 * 1024 + 1, name: 'report.pdf', url: '/media/f1?e=1&s=c' }

test('list previews of a message of attachments: by the first one’s kind, in groups after the sender', () => {
  const c = (last, kind) => ({ key: 'r:g', room: 'g', kind: kind || 'dm', with: 'bob', last })
  expect(v.previewText(c({ from: 'bob', text: '', media: 'image' }), 'me', {})).toBe('[Image]')
  expect(v.previewText(c({ from: 'bob', text: '', media: 'voice' }), 'me', {})).toBe('[Voice]')
  expect(v.previewText(c({ from: 'bob', text: '', media: 'file' }), 'me', {})).toBe('[File]')
  expect(v.previewText(c({ from: 'bob', text: 'look', media: 'image' }), 'me', {})).toBe('[Image] look')
  expect(v.previewText(c({ from: 'bob', name: 'Bob', text: '', media: 'voice' }, 'private'), 'me', {})).toBe('Bob: [Voice]')
  expect(m.mediaPreview('something-new')).toBe('[File]')
})

test('thumbnail boxes keep the aspect ratio within 320 rpx, at least 80; unknown sizes are square', () => {
  expect(m.thumbBox(1600, 1200)).toEqual({ w: 320, h: 240 })
  expect(m.thumbBox(600, 1200)).toEqual({ w: 160, h: 320 })
  expect(m.thumbBox(4000, 100)).toEqual({ w: 320, h: 80 })
  expect(m.thumbBox(2, 2)).toEqual({ w: 320, h: 320 })
  expect(m.thumbBox(undefined, 5)).toEqual({ w: 320, h: 320 })
})

test('voice: whole seconds like WeChat (at least 1), a bubble that grows to 60 s; sizes', () => {
  expect([0, 400, 1499, 7400, 60000].map(m.durationText)).toEqual(['1"', '1"', '1"', '7"', '60"'])
  expect(m.voiceWidth(1000)).toBeLessThan(m.voiceWidth(30000))
  expect(m.voiceWidth(60000)).toBe(m.voiceWidth(90000))
  expect([850, 12595, 5 * 1024 * 1024].map(m.sizeText)).toEqual(['850 B', '12.3 KB', '5.0 MB'])
})

test('refused uploads have a sentence each; unknown codes name the code', () => {
  expect(m.uploadErrorText({ code: 'too_large' })).toBe('This file is too large to send')
  expect(m.uploadErrorText({ code: 'quota_exceeded' })).toMatch(/too much today/)
  expect(m.uploadErrorText({ code: 'bad_image' })).toBe('This picture cannot be read')
  expect(m.uploadErrorText({})).toMatch(/network/)
  expect(m.uploadErrorText({ code: 'teapot' })).toBe('Could not send the file (teapot)')
})

test('the upload line of my pending bubble: ring angle and percentage, trying again, or why it failed', () => {
  expect(m.uploadRow({ state: 'uploading', progress: 42.4 }, 'pending')).toEqual({ progress: 42, deg: 151, failed: false, label: 'Uploading 42%', error: '' })
  expect(m.uploadRow({ state: 'queued', progress: 0 }, 'pending')).toMatchObject({ label: 'Uploading 0%', deg: 0 })
  expect(m.uploadRow({ state: 'waiting', progress: 70, error: 'network' }, 'pending')).toMatchObject({ failed: false, label: 'Upload failed, trying again…', error: '' })
  expect(m.uploadRow({ state: 'failed', progress: 10, error: 'too_large' }, 'failed')).toMatchObject({ failed: true, label: '', error: 'This file is too large to send' })
  expect(m.uploadRow({ state: 'queued', progress: 0, error: 'quota_exceeded' }, 'failed').error).toMatch(/too much today/)
  // the SDK's timeline row of a sendMedia entry becomes a pending bubble with the local file
  const ctx = { me: 'me', dm: true, names: {}, mediaUrl: url }
  const row = v.messageRow({ seq: null, id: 'x1', from: 'me', mine: true, text: '', status: 'pending', attachments: [{ media_id: 'x1', kind: 'image', local: 'wxfile://store/a.png', width: 64, height: 48 }], upload: { state: 'uploading', progress: 50 } }, ctx)
  expect(row).toMatchObject({ key: 'px1', tick: 'sending…', upload: { progress: 50, label: 'Uploading 50%' }, attachments: [{ kind: 'image', thumb: 'wxfile://store/a.png', w: 320, h: 240 }] })
  expect(v.messageRow({ seq: 3, from: 'me', mine: true, text: 'hi' }, ctx).upload).toBeUndefined()
})

test('message rows carry their attachments: thumbnail and original URLs, voice, file; fresh URLs win', () => {
  const ctx = { me: 'me', dm: true, names: {}, mediaUrl: url, fresh: {} }
  const row = v.messageRow({ seq: 4, from: 'bob', name: 'Bob', text: '', ts: 1, attachments: [image, voice, file] }, ctx)
  expect(row.attachments).toEqual([
    { id: 'img1', kind: 'image', name: '', size: '2.0 KB', w: 320, h: 240, thumb: 'http://h/media/img1/thumb?e=1&s=a', url: 'http://h/media/img1?e=1&s=a' },
    { id: 'v1', kind: 'voice', name: '', size: '39.1 KB', duration: '7"', width: m.voiceWidth(7400), url: 'http://h/media/v1?e=1&s=b' },
    { id: 'f1', kind: 'file', name: 'report.pdf', size: '5.0 MB', url: 'http://h/media/f1?e=1&s=c' }
  ])
  expect(row.bare).toBe(false) // not pictures alone
  expect(v.messageRow({ seq: 5, from: 'bob', text: '', attachments: [image] }, ctx).bare).toBe(true)
  expect(v.messageRow({ seq: 6, from: 'bob', text: 'hi', attachments: [image] }, ctx).bare).toBe(false)
  ctx.fresh = { img1: { thumb_url: '/media/img1/thumb?e=2&s=new', url: '/media/img1?e=2&s=new' } }
  const again = v.messageRow({ seq: 4, from: 'bob', text: '', attachments: [image] }, ctx)
  expect(again.attachments[0]).toMatchObject({ thumb: 'http://h/media/img1/thumb?e=2&s=new', url: 'http://h/media/img1?e=2&s=new' })
  // a picture still uploading shows the local file
  expect(m.attachmentRow({ media_id: 'u1', kind: 'image', local: 'wxfile://tmp/a.png' }, url).thumb).toBe('wxfile://tmp/a.png')
})

test('voice messages of others are unplayed until played on this phone; mine never are; the played list is capped', () => {
  const ctx = { me: 'me', dm: true, names: {}, mediaUrl: url, played: {} }
  expect(v.messageRow({ seq: 7, from: 'bob', text: '', attachments: [voice] }, ctx).attachments[0].unplayed).toBe(true)
  expect(v.messageRow({ seq: 8, from: 'me', mine: true, text: '', attachments: [voice] }, ctx).attachments[0].unplayed).toBeUndefined()
  ctx.played = { v1: true }
  expect(v.messageRow({ seq: 7, from: 'bob', text: '', attachments: [voice] }, ctx).attachments[0].unplayed).toBeUndefined()
  expect(m.addPlayed(['a', 'b'], 'a')).toEqual(['b', 'a'])
  expect(m.addPlayed('', 'x')).toEqual(['x'])
  let ids = []
  for (let i = 0; i < m.PLAYED_MAX + 5; i++) ids = m.addPlayed(ids, 'id' + i)
  expect(ids.length).toBe(m.PLAYED_MAX)
  expect(ids[ids.length - 1]).toBe('id' + (m.PLAYED_MAX + 4))
})

test('previewImage pages through the conversation’s pictures (originals, oldest first); document types', () => {
  const items = [{ seq: 1, attachments: [image] }, { seq: 2, text: 'x' }, { seq: 3, attachments: [voice, Object.assign({}, image, { media_id: 'img2', url: '/media/img2?e=1&s=d' })] }]
  expect(m.imageUrls(items, url, {})).toEqual(['http://h/media/img1?e=1&s=a', 'http://h/media/img2?e=1&s=d'])
  expect(['a.PDF', 'b.docx', 'c.zip', '', undefined].map(m.documentType)).toEqual(['pdf', 'docx', '', '', ''])
})

test('hold to talk: sliding up more than 60 px cancels', () => {
  expect(m.slidToCancel(500, 480)).toBe(false)
  expect(m.slidToCancel(500, 439)).toBe(true)
  expect(m.slidToCancel(500, 600)).toBe(false)
})

test('push prompt: the accepted templates of a requestSubscribeMessage result; who may be asked; what is left', () => {
  expect(push.acceptedTemplates({ A: 'accept', B: 'reject', C: 'ban', errMsg: 'ok' }, ['A', 'B', 'C'])).toEqual(['A'])
  expect(push.acceptedTemplates(null, ['A'])).toEqual([])
  const wx = { requestSubscribeMessage() {} }
  const token = { welcome: { authenticated: true } }
  expect(push.canAsk(wx, token, ['A'])).toBe(true)
  expect(push.canAsk(wx, token, [])).toBe(false)
  expect(push.canAsk(wx, { welcome: { authenticated: false } }, ['A'])).toBe(false)
  expect(push.canAsk({}, token, ['A'])).toBe(false)
  expect(push.remaining({ templates: [{ id: 'A', count: 2 }, { id: 'B', count: 1 }] })).toBe(3)
  expect(push.remaining(null)).toBe(0)
})

test('push report: at once when connected, else after the next welcome; subscribe reports the accepted ids with the extra fields', async () => {
  const calls = []
  const listeners = {}
  const chat = {
    connected: false,
    welcome: { authenticated: true },
    pushSubscribe: (spec) => {
      calls.push(spec)
      return Promise.resolve({ templates: [], rooms: [] })
    },
    on: (type, fn) => {
      listeners[type] = fn
      return () => delete listeners[type]
    }
  }
  const later = push.report(chat, { templates: [{ id: 'A', count: 1 }] })
  expect(calls).toEqual([])
  listeners.welcome()
  await later
  expect(calls).toEqual([{ templates: [{ id: 'A', count: 1 }] }])
  expect(listeners.welcome).toBeUndefined()

  chat.connected = true
  const prompts = []
  const wx = {
    requestSubscribeMessage: (a) => {
      prompts.push(a)
      a.success({ A: 'accept', B: 'reject' })
    }
  }
  await push.subscribe(wx, chat, ['A', 'B'], { rooms: ['team'], notify: true })
  expect(prompts[0].tmplIds).toEqual(['A', 'B'])
  expect(calls[1]).toEqual({ rooms: ['team'], notify: true, templates: [{ id: 'A', count: 1 }] })
  // nothing accepted and nothing else: no report
  const none = { requestSubscribeMessage: (a) => a.fail({ errMsg: 'requestSubscribeMessage:fail cancel' }) }
  expect(await push.subscribe(none, chat, ['A'])).toBeNull()
  expect(calls.length).toBe(2)
  // once per session
  const app = { globalData: {} }
  await push.afterFirstDm(wx, chat, app, ['A'])
  expect(push.afterFirstDm(wx, chat, app, ['A'])).toBeNull()
  expect(prompts.length).toBe(2)
})
