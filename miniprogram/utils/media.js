/**
 * Pure helpers for pictures, voice and files in the chat page (docs/api.md,
 * "Media"; docs/protocol.md, "Attachments"): list previews, the thumbnail's
 * box from width/height (no layout jump when it loads), the voice bubble's
 * duration and width, file sizes, the toast for a refused upload, and the
 * hold-to-talk gesture. No wx, no I/O.
 */
'use strict'

/** The list preview of a message of attachments alone, by the first one's kind. */
const PREVIEWS = { image: '[Image]', voice: '[Voice]', video: '[Video]', file: '[File]' }

function mediaPreview(kind) {
  return PREVIEWS[kind] || PREVIEWS.file
}

/** The thumbnail box in rpx: the longer side THUMB_MAX, the shorter at least THUMB_MIN. */
const THUMB_MAX = 320
const THUMB_MIN = 80

function thumbBox(width, height) {
  const w = Number(width) || 0
  const h = Number(height) || 0
  if (w <= 0 || h <= 0) return { w: THUMB_MAX, h: THUMB_MAX }
  const scale = THUMB_MAX / Math.max(w, h)
  const fit = (v) => Math.max(THUMB_MIN, Math.round(v * scale))
  return w >= h ? { w: THUMB_MAX, h: fit(h) } : { w: fit(w), h: THUMB_MAX }
}

/** WeChat's voice duration: whole seconds, at least 1, as `7"`. */
function durationText(ms) {
  const s = Math.max(1, Math.round((Number(ms) || 0) / 1000))
  return s + '"'
}

/** The voice bubble grows with the duration, as WeChat's does (rpx). */
function voiceWidth(ms) {
  const s = Math.max(1, Math.min(60, Math.round((Number(ms) || 0) / 1000)))
  return 140 + Math.round((s / 60) * 300)
}

/** A file size for people: "850 B", "12.3 KB", "4.5 MB". */
function sizeText(bytes) {
  const n = Number(bytes) || 0
  if (n < 1024) return n + ' B'
  if (n < 1024 * 1024) return (n / 1024).toFixed(1) + ' KB'
  return (n / (1024 * 1024)).toFixed(1) + ' MB'
}

const REFUSALS = {
  too_large: 'This file is too large to send',
  too_many_pixels: 'This picture is too large to send',
  quota_exceeded: 'You have sent too much today. Try again later',
  bad_image: 'This picture cannot be read',
  bad_request: 'This file cannot be sent',
  unauthorized: 'Please log in again to send files',
  unavailable: 'The server cannot store files right now. Try again',
  network: 'Upload failed: check the network and try again'
}

/** The toast for an upload `upload()` rejected (`e.code` is chatd's error code). */
function uploadErrorText(e) {
  const code = (e && e.code) || 'network'
  return REFUSALS[code] || 'Could not send the file (' + code + ')'
}

/**
 * The upload line of my pending bubble (`row.upload`) from the SDK's
 * `upload` of a sendMedia entry (`{state, progress, error}`) and the entry's
 * status: the progress ring's angle and "Uploading N%", "Trying again…" while
 * waiting for a retry, or (failed) why, for the Retry / Delete actions.
 */
function uploadRow(up, status) {
  const failed = status === 'failed' || up.state === 'failed'
  const progress = Math.max(0, Math.min(100, Math.round(Number(up.progress) || 0)))
  let label = 'Uploading ' + progress + '%'
  if (failed) label = ''
  else if (up.state === 'waiting') label = 'Upload failed, trying again…'
  return { progress, deg: Math.round(progress * 3.6), failed, label, error: failed ? uploadErrorText({ code: up.error }) : '' }
}

/**
 * The row of one attachment for <chat-message>: `mediaUrl` turns chatd's paths into
 * absolute URLs, `fresh` maps media ids to refreshed fields (`GET /api/media/ID`)
 * that replace expired URLs.
 */
function attachmentRow(a, mediaUrl, fresh) {
  const f = Object.assign({}, a, (fresh && fresh[a.media_id]) || {})
  const row = { id: f.media_id, kind: f.kind || 'file', name: f.name || '', size: sizeText(f.size) }
  if (row.kind === 'image') {
    const box = thumbBox(f.width, f.height)
    row.w = box.w
    row.h = box.h
    row.thumb = f.thumb_url ? mediaUrl(f.thumb_url) : f.url ? mediaUrl(f.url) : f.local || ''
    row.url = f.url ? mediaUrl(f.url) : f.local || ''
  } else if (row.kind === 'voice') {
    row.duration = durationText(f.duration_ms)
    row.width = voiceWidth(f.duration_ms)
    row.url = f.url ? mediaUrl(f.url) : ''
  } else {
    row.url = f.url ? mediaUrl(f.url) : ''
    if (!row.name) row.name = row.kind === 'video' ? 'Video' : 'File'
  }
  return row
}

/**
 * The original URLs of every picture in timeline `items` (recalled ones have no
 * attachments), oldest first: what `wx.previewImage` pages through.
 */
function imageUrls(items, mediaUrl, fresh) {
  const out = []
  items.forEach((m) =>
    (m.attachments || []).forEach((a) => {
      if (a.kind !== 'image') return
      const url = attachmentRow(a, mediaUrl, fresh).url
      if (url) out.push(url)
    })
  )
  return out
}

/** The `fileType` wx.openDocument takes, from a file name's extension ('' when it has none it knows). */
const DOCUMENTS = ['doc', 'docx', 'xls', 'xlsx', 'ppt', 'pptx', 'pdf']

function documentType(name) {
  const m = /\.([A-Za-z0-9]+)$/.exec(name || '')
  const ext = m ? m[1].toLowerCase() : ''
  return DOCUMENTS.indexOf(ext) >= 0 ? ext : ''
}

/** The voice messages played on this phone are kept (media ids, newest last) under this storage key, at most PLAYED_MAX. */
const PLAYED_KEY = 'chatd.voicePlayed'
const PLAYED_MAX = 500

/** `ids` (a stored list, or anything else) with `id` added at the end, at most PLAYED_MAX. */
function addPlayed(ids, id) {
  const list = (Array.isArray(ids) ? ids : []).filter((x) => x !== id)
  list.push(id)
  return list.slice(-PLAYED_MAX)
}

/** Sliding this far up (px) from where hold-to-talk started cancels the recording. */
const CANCEL_PX = 60

/** Is a touch at `y` far enough above `startY` to cancel hold-to-talk? */
function slidToCancel(startY, y) {
  return startY - y > CANCEL_PX
}

/** Recordings shorter than this (ms) are not sent ("Too short"), as in WeChat. */
const MIN_VOICE_MS = 1000
/** The longest recording (ms): the recorder stops by itself then. */
const MAX_VOICE_MS = 60000

module.exports = {
  THUMB_MAX,
  THUMB_MIN,
  CANCEL_PX,
  MIN_VOICE_MS,
  MAX_VOICE_MS,
  PLAYED_KEY,
  PLAYED_MAX,
  addPlayed,
  mediaPreview,
  thumbBox,
  durationText,
  voiceWidth,
  sizeText,
  uploadErrorText,
  uploadRow,
  attachmentRow,
  imageUrls,
  documentType,
  slidToCancel
}
