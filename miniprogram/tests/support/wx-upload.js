/**
 * `wx.uploadFile` for the wx shim (whose `request` is real already), on Node's
 * `http` (so it works inside jsdom, which has no fetch/FormData): what the
 * mini-program runtime does with it (multipart/form-data with the file under
 * `name`, its file name the temp path's, and `formData` as fields;
 * `success({statusCode, data})` with the body as text; an UploadTask with
 * `onProgressUpdate`), so SDK uploads run against a real chatd. `uploads`
 * records the options, `uploadTasks` the tasks. Progress is reported as the
 * body is written (64 KiB at a time), the last at 100 % before `success`.
 */
'use strict'
const crypto = require('crypto')
const fs = require('fs')
const http = require('http')
const path = require('path')

const PIECE = 64 * 1024

function multipart(opts) {
  const boundary = '----wxupload' + crypto.randomBytes(8).toString('hex')
  const parts = []
  Object.keys(opts.formData || {}).forEach((k) => {
    parts.push(Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="${k}"\r\n\r\n${opts.formData[k]}\r\n`))
  })
  const head = `--${boundary}\r\nContent-Disposition: form-data; name="${opts.name}"; filename="${path.basename(opts.filePath)}"\r\nContent-Type: application/octet-stream\r\n\r\n`
  parts.push(Buffer.from(head), fs.readFileSync(opts.filePath), Buffer.from(`\r\n--${boundary}--\r\n`))
  return { boundary, body: Buffer.concat(parts) }
}

function addUpload(wx) {
  wx.uploads = []
  wx.uploadTasks = []
  wx.uploadFile = (opts) => {
    wx.uploads.push(opts)
    const listeners = []
    const task = { progress: [], onProgressUpdate: (fn) => listeners.push(fn), abort: () => req.destroy(new Error('abort')) }
    wx.uploadTasks.push(task)
    const fail = (e) => opts.fail && opts.fail({ errMsg: 'uploadFile:fail ' + e.message })
    let body
    try {
      body = multipart(opts)
    } catch (e) {
      setTimeout(() => fail(e), 0)
      return task
    }
    const total = body.body.length
    const headers = Object.assign({}, opts.header, { 'Content-Type': 'multipart/form-data; boundary=' + body.boundary, 'Content-Length': total })
    const req = http.request(opts.url, { method: 'POST', headers }, (res) => {
      const chunks = []
      res.on('data', (c) => chunks.push(c))
      res.on('end', () => {
        if (task.progress[task.progress.length - 1] !== 100) report(total)
        if (opts.success) opts.success({ statusCode: res.statusCode, data: Buffer.concat(chunks).toString('utf8'), errMsg: 'uploadFile:ok' })
      })
    })
    const report = (sent) => {
      const progress = Math.floor((sent * 100) / total)
      task.progress.push(progress)
      listeners.forEach((fn) => fn({ progress, totalBytesSent: sent, totalBytesExpectedToSend: total }))
    }
    req.on('error', fail)
    let sent = 0
    const pump = () => {
      while (sent < total) {
        const piece = body.body.subarray(sent, sent + PIECE)
        sent += piece.length
        const more = req.write(piece)
        report(sent)
        if (!more) return req.once('drain', pump)
      }
      req.end()
      return null
    }
    setTimeout(pump, 0)
    return task
  }
  return wx
}

module.exports = { addUpload }
