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
    fetch(opts.url, { method: 'POST', headers: opts.header, body: form })
      .then((res) => res.text().then((data) => opts.success && opts.success({ statusCode: res.status, data })))
      .catch((e) => opts.fail && opts.fail({ errMsg: 'uploadFile:fail ' + e.message }))
  }
  return wx
}

module.exports = { addUpload }
