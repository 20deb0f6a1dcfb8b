/**
 * Real media files for the mini-program's media tests, made in Node: a PNG
 * (zlib, a gradient, any size) and an MP3 (a CBR MPEG-1 layer III frame
 * sequence, the same bytes as tests/media_samples.py `mp3()`, whose duration
 * chatd reads with mutagen), written to temp files as wx pickers return them.
 */
'use strict'
const fs = require('fs')
const os = require('os')
const path = require('path')
const zlib = require('zlib')

function chunk(type, data) {
  const len = Buffer.alloc(4)
  len.writeUInt32BE(data.length)
  const body = Buffer.concat([Buffer.from(type, 'ascii'), data])
  const crc = Buffer.alloc(4)
  crc.writeUInt32BE(zlib.crc32(body) >>> 0)
  return Buffer.concat([len, body, crc])
}

/** An RGB PNG of `width` × `height` with a gradient. */
function png(width, height) {
  const ihdr = Buffer.alloc(13)
  ihdr.writeUInt32BE(width, 0)
  ihdr.writeUInt32BE(height, 4)
  ihdr[8] = 8 // bit depth
  ihdr[9] = 2 // RGB
  const raw = Buffer.alloc((width * 3 + 1) * height)
  for (let y = 0; y < height; y++) {
    const row = y * (width * 3 + 1)
    raw[row] = 0 // no filter
    for (let x = 0; x < width; x++) {
      raw[row + 1 + x * 3] = (x * 4) % 256
      raw[row + 2 + x * 3] = (y * 4) % 256
      raw[row + 3 + x * 3] = ((x + y) * 2) % 256
    }
  }
  return Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]), chunk('IHDR', ihdr), chunk('IDAT', zlib.deflateSync(raw)), chunk('IEND', Buffer.alloc(0))])
}

/** A 128 kb/s 44.1 kHz mono MP3 of `seconds`; returns {bytes, ms} (ms: its exact duration). */
function mp3(seconds) {
  const frameLen = Math.floor((144 * 128000) / 44100) // 417 bytes, no padding
  const count = Math.round((seconds * 44100) / 1152)
  const frame = Buffer.alloc(frameLen)
  Buffer.from([0xff, 0xfb, 0x90, 0xc0]).copy(frame)
  return { bytes: Buffer.concat(new Array(count).fill(frame)), ms: (count * 1152 * 1000) / 44100 }
}

/** Writes `bytes` to a fresh temp file named `name` (what a wx temp path stands for). */
function tempFile(name, bytes) {
  const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'wx-tmp-')), name)
  fs.writeFileSync(file, bytes)
  return file
}

module.exports = { png, mp3, tempFile }
