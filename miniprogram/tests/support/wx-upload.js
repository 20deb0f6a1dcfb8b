/**
 * `wx.uploadFile` for the wx shim (whose `request` is real already), on Node's fetch: what the
 * mini-program runtime does with them (multipart/form-data with the file under
 * `name` and `formData` as fields; `success({statusCode, data})` with the body
 * as text), so SDK uploads run against a real chatd.
 */
'use strict'
const fs = require('fs')
const path = require('path')

function addUpload(wx) {
  wx.uploads = []
  wx.uploadFile = (opts) => {
    wx.uploads.push(opts)
    const form = new FormData()
    Object.keys(opts.formData || {}).forEach((k) => form.append(k, opts.formData[k]))
    form.append(opts.name, new Blob([fs.readFileSync(opts.filePath)]), path.basename(opts.filePath))
    // an UploadTask: fetch cannot tell how much went out, so progress is reported
    // once the whole body was sent (100 %), before `success` as in WeChat
    const progress = []
    const task = { progress: [], onProgressUpdate: (fn) => progress.push(fn), abort: () => {} }
    const size = fs.statSync(opts.filePath).size
    fetch(opts.url, { method: 'POST', headers: opts.header, body: form })
      .then((res) =>
        res.text().then((data) => {
          progress.forEach((fn) => fn({ progress: 100, totalBytesSent: size, totalBytesExpectedToSend: size }))
          task.progress.push(100)
          if (opts.success) opts.success({ statusCode: res.status, data })
        })
      )
      .catch((e) => opts.fail && opts.fail({ errMsg: 'uploadFile:fail ' + e.message }))
    wx.uploadTasks = (wx.uploadTasks || []).concat([task])
    return task
  }
  return wx
}

module.exports = { addUpload }
