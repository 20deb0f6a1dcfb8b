/**
 * A `wx` for Node whose connectSocket is backed by a real WebSocket (the npm
 * `ws` package), reproducing the SocketTask semantics the mini-program
 * runtime has (docs: /work/shared/MINIPROGRAM.md):
 *  - connectSocket returns the task at once; `success` fires before onOpen;
 *  - send before open fails; onMessage gets a string for text frames and an
 *    ArrayBuffer for binary ones; a refused connection gives onError then
 *    onClose(1006); at most 5 sockets are open at once;
 *  - storage is an in-memory map (pass `storage` to share one between two
 *    wx objects: a cold start of the app on the same phone);
 *  - `request` is a real HTTP request with Node's `http`: like WeChat it calls
 *    `success` for every HTTP status ({statusCode, data, header}, `data`
 *    parsed as JSON when it is JSON) and `fail` only when no answer came;
 *  - permessage-deflate is offered only with `perMessageDeflate: true` (its
 *    default in wx.connectSocket is false); `task._ws.extensions` shows the
 *    server's answer;
 *  - `login` hands out the next code of `codes` (an array, consumed in
 *    order, or a function), or fails with `loginError` when given;
 *  - navigation calls are recorded in `navigations` (`switchTab` too);
 *  - UI calls are recorded stubs: `setTabBarBadge`/`removeTabBarBadge` in
 *    `tabBar` (the badge now in `badges[index]`), `showActionSheet` in `sheets`
 *    (answered with the next label of `sheetChoices`, an array consumed in order
 *    — push to `wx.sheetChoices` later — or a function (itemList) → label; none
 *    → `fail` like a cancel), `showModal` in `modals` (confirmed unless the next
 *    of `modalAnswers` is false), `showToast` in `toasts`, `setClipboardData` in
 *    `clipboard`, `stopPullDownRefresh` in `pullDowns`;
 *  - media and push stubs (answered asynchronously, like WeChat): `chooseMedia`
 *    and `chooseMessageFile` answer with the next `tempFiles` list of
 *    `mediaChoices` / `fileChoices` (none: `fail` like a cancel; the options in
 *    `chosen`); `getRecorderManager()` is one recorder whose `start` is recorded
 *    in `recorder.starts` and whose `stop` calls its one `onStop` with the next of
 *    `recordings` ({tempFilePath, duration, fileSize}); `previewImage` in
 *    `previews`; `createInnerAudioContext()` contexts in `audios` (`played`,
 *    `stopped`, `destroyed`; `_end()` fires onEnded); `downloadFile` is a real
 *    HTTP GET into a temp file ({statusCode, tempFilePath}, in `downloads`);
 *    `openDocument` in `documents`; `getImageInfo` reads a PNG's size; `showLoading`/`hideLoading` in `loading`;
 *    `requestSubscribeMessage` in `subscribePrompts`, answered with the next of
 *    `subscribeAnswers` (e.g. `{TPL: 'accept'}`; none: every id 'reject');
 *    `getFileSystemManager()` `saveFile` (moves the temp file to a new dir, in
 *    `saved`) and `removeSavedFile` (in `removedSaved`).
 * `urlMap` rewrites URLs (so the tutorial's hard-coded `ws://host:8080` can
 * be pointed at the test's chatd); `tasks` lists every task made, `requests`
 * every request.
 */
'use strict'
const fs = require('fs')
const http = require('http')
const os = require('os')
const path = require('path')
const WebSocket = require('ws')

const MAX_SOCKETS = 5

function createWx(options) {
  const o = options || {}
  const urlMap = o.urlMap || {}
  const storage = o.storage || new Map()
  const tasks = []
  const requests = []
  const navigations = []
  let codeN = 0
  let openCount = 0

  function mapUrl(url) {
    for (const from of Object.keys(urlMap)) {
      if (url.startsWith(from)) return urlMap[from] + url.slice(from.length)
    }
    return url
  }

  function connectSocket(opts) {
    const listeners = { open: [], message: [], error: [], close: [] }
    const fire = (type, arg) => listeners[type].slice().forEach((fn) => fn(arg))
    const task = {
      url: opts.url,
      protocols: opts.protocols,
      header: opts.header,
      readyState: 0,
      onOpen: (fn) => listeners.open.push(fn),
      onMessage: (fn) => listeners.message.push(fn),
      onError: (fn) => listeners.error.push(fn),
      onClose: (fn) => listeners.close.push(fn),
      send(args) {
        if (!ws || ws.readyState !== WebSocket.OPEN) {
          const err = { errMsg: 'sendSocketMessage:fail WebSocket is not connected' }
          if (args.fail) args.fail(err)
          if (args.complete) args.complete(err)
          return
        }
        const binary = typeof args.data !== 'string'
        ws.send(binary ? Buffer.from(args.data) : args.data, { binary }, (err) => {
          const res = { errMsg: err ? 'sendSocketMessage:fail ' + err.message : 'sendSocketMessage:ok' }
          if (err && args.fail) args.fail(res)
          if (!err && args.success) args.success(res)
          if (args.complete) args.complete(res)
        })
      },
      close(args) {
        const a = args || {}
        if (ws && (ws.readyState === WebSocket.OPEN || ws.readyState === WebSocket.CONNECTING)) {
          try {
            if (ws.readyState === WebSocket.CONNECTING) ws.terminate()
            else ws.close(a.code || 1000, a.reason || '')
          } catch (e) {
            ws.terminate()
          }
        }
        if (a.success) a.success({ errMsg: 'closeSocket:ok' })
      },
      /** Test hook: drop the TCP connection with no close frame (like a dead network). */
      _kill() {
        if (ws) ws.terminate()
      },
      _ws: null
    }
    tasks.push(task)
    if (openCount >= MAX_SOCKETS) {
      setTimeout(() => {
        fire('error', { errMsg: 'connectSocket:fail exceed max task count' })
        fire('close', { code: 1006, reason: '' })
      }, 0)
      if (opts.fail) opts.fail({ errMsg: 'connectSocket:fail exceed max task count' })
      return task
    }
    openCount++
    let counted = true
    const uncount = () => {
      if (counted) {
        counted = false
        openCount--
      }
    }
    // like wx.connectSocket, permessage-deflate only when asked for (ws offers it by default)
    const ws = new WebSocket(mapUrl(opts.url), opts.protocols || [], {
      headers: opts.header || {},
      perMessageDeflate: opts.perMessageDeflate === true
    })
    task._ws = ws
    if (opts.success) opts.success({ errMsg: 'connectSocket:ok' })
    let errored = false
    ws.on('open', () => {
      task.readyState = 1
      fire('open', { header: {}, profile: {} })
    })
    ws.on('message', (data, isBinary) => {
      if (isBinary) {
        const b = Buffer.isBuffer(data) ? data : Buffer.concat(data)
        fire('message', { data: b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength) })
      } else {
        fire('message', { data: data.toString('utf8') })
      }
    })
    ws.on('error', (err) => {
      errored = true
      fire('error', { errMsg: 'WebSocket error: ' + err.message })
    })
    ws.on('unexpected-response', (req, res) => {
      errored = true
      fire('error', { errMsg: 'WebSocket handshake failed: HTTP ' + res.statusCode })
      ws.terminate()
    })
    ws.on('close', (code, reason) => {
      task.readyState = 3
      uncount()
      fire('close', { code: errored && code === 1005 ? 1006 : code, reason: reason.toString() })
    })
    return task
  }

  function request(opts) {
    const url = new URL(mapUrl(opts.url))
    const method = (opts.method || 'GET').toUpperCase()
    const header = Object.assign({}, opts.header)
    let body = null
    if (opts.data !== undefined && method !== 'GET') {
      body = typeof opts.data === 'string' ? opts.data : JSON.stringify(opts.data)
      if (!Object.keys(header).some((k) => k.toLowerCase() === 'content-type')) header['content-type'] = 'application/json'
    }
    requests.push({ url: opts.url, method, data: opts.data, header })
    const done = (res) => {
      if (opts.complete) opts.complete(res)
    }
    const req = http.request(url, { method, headers: header, timeout: opts.timeout || 60000 }, (res) => {
      const chunks = []
      res.on('data', (c) => chunks.push(c))
      res.on('end', () => {
        let data = Buffer.concat(chunks).toString('utf8')
        if ((opts.dataType || 'json') === 'json') {
          try {
            data = JSON.parse(data)
          } catch (e) {
            // WeChat leaves a body that is not JSON as a string
          }
        }
        const r = { statusCode: res.statusCode, data, header: res.headers, errMsg: 'request:ok' }
        if (opts.success) opts.success(r)
        done(r)
      })
    })
    req.on('timeout', () => req.destroy(new Error('timeout')))
    req.on('error', (e) => {
      const r = { errMsg: 'request:fail ' + e.message }
      if (opts.fail) opts.fail(r)
      done(r)
    })
    if (body !== null) req.write(body)
    req.end()
    return { abort: () => req.destroy(new Error('abort')) }
  }

  function login(opts) {
    const a = opts || {}
    setTimeout(() => {
      if (o.loginError) {
        const r = { errMsg: 'login:fail ' + o.loginError }
        if (a.fail) a.fail(r)
        if (a.complete) a.complete(r)
        return
      }
      let code
      if (typeof o.codes === 'function') code = o.codes()
      else if (Array.isArray(o.codes) && o.codes.length) code = o.codes.shift()
      else code = 'code' + ++codeN
      const r = { code, errMsg: 'login:ok' }
      if (a.success) a.success(r)
      if (a.complete) a.complete(r)
    }, 0)
  }

  const nav = (type) => (a) => {
    navigations.push({ type, url: a && a.url })
    if (a && a.success) a.success({ errMsg: type + ':ok' })
  }

  const ui = { tabBar: [], badges: {}, sheets: [], modals: [], toasts: [], clipboard: [], pullDowns: [] }
  const sheetChoices = o.sheetChoices || []
  const modalAnswers = o.modalAnswers || []
  const ok = (a, name, extra) => {
    const r = Object.assign({ errMsg: name + ':ok' }, extra)
    if (a && a.success) a.success(r)
    if (a && a.complete) a.complete(r)
  }
  const later = (fn) => setTimeout(fn, 0) // WeChat answers UI calls asynchronously

  function showActionSheet(a) {
    ui.sheets.push({ itemList: a.itemList.slice() })
    later(() => {
      const choices = sheetChoices
      let label
      if (typeof choices === 'function') label = choices(a.itemList)
      else if (Array.isArray(choices) && choices.length) label = choices.shift()
      const i = label === undefined ? -1 : a.itemList.indexOf(label)
      if (i < 0) {
        const r = { errMsg: 'showActionSheet:fail cancel' }
        if (a.fail) a.fail(r)
        if (a.complete) a.complete(r)
        return
      }
      ok(a, 'showActionSheet', { tapIndex: i })
    })
  }

  const media = {
    mediaChoices: o.mediaChoices || [],
    fileChoices: o.fileChoices || [],
    recordings: o.recordings || [],
    subscribeAnswers: o.subscribeAnswers || [],
    chosen: [],
    previews: [],
    audios: [],
    downloads: [],
    documents: [],
    loading: [],
    subscribePrompts: [],
    saved: [],
    removedSaved: []
  }
  /**
   * getFileSystemManager(): `saveFile` moves a temp file into a new user data dir
   * (as WeChat does: the temp path is gone afterwards) and
   * `removeSavedFile` deletes one; recorded in `saved` / `removedSaved`.
   */
  const fileSystem = {
    saveFile(a) {
      later(() => {
        try {
          const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'wx-store-'))
          // named as the temp file, like the shim's pickers' temp files (named as the originals)
          const dest = path.join(dir, path.basename(a.tempFilePath))
          fs.renameSync(a.tempFilePath, dest)
          media.saved.push(dest)
          ok(a, 'saveFile', { savedFilePath: dest })
        } catch (e) {
          if (a.fail) a.fail({ errMsg: 'saveFile:fail ' + e.message })
        }
      })
    },
    removeSavedFile(a) {
      later(() => {
        try {
          fs.unlinkSync(a.filePath)
          media.removedSaved.push(a.filePath)
          ok(a, 'removeSavedFile')
        } catch (e) {
          if (a.fail) a.fail({ errMsg: 'removeSavedFile:fail ' + e.message })
        }
      })
    }
  }
  /** A picker answered with the next `tempFiles` of `queue`, or cancelled. */
  const picker = (name, queue) => (a) => {
    media.chosen.push(Object.assign({ api: name }, a))
    later(() => {
      if (!queue.length) {
        const r = { errMsg: name + ':fail cancel' }
        if (a.fail) a.fail(r)
        if (a.complete) a.complete(r)
        return
      }
      ok(a, name, { tempFiles: queue.shift() })
    })
  }
  const recorder = {
    starts: [],
    stops: 0,
    _onStop: null,
    _onError: null,
    start(opts) {
      recorder.starts.push(opts || {})
    },
    stop() {
      recorder.stops++
      const rec = media.recordings.shift()
      later(() => {
        if (rec && recorder._onStop) recorder._onStop(rec)
        else if (!rec && recorder._onError) recorder._onError({ errMsg: 'operateRecorder:fail no recording' })
      })
    },
    pause() {},
    resume() {},
    // one listener each, as WeChat's RecorderManager has
    onStop: (fn) => (recorder._onStop = fn),
    onError: (fn) => (recorder._onError = fn),
    onStart: () => {},
    onFrameRecorded: () => {},
    onInterruptionBegin: () => {},
    onInterruptionEnd: () => {}
  }
  function createInnerAudioContext() {
    const l = { ended: [], error: [] }
    const audio = {
      src: '',
      played: 0,
      stopped: 0,
      destroyed: false,
      play: () => audio.played++,
      stop: () => audio.stopped++,
      pause: () => {},
      destroy: () => (audio.destroyed = true),
      onEnded: (fn) => l.ended.push(fn),
      onError: (fn) => l.error.push(fn),
      onPlay: () => {},
      onStop: () => {},
      _end: () => l.ended.forEach((fn) => fn()),
      _fail: (err) => l.error.forEach((fn) => fn(err || { errMsg: 'audio error', errCode: -1 }))
    }
    media.audios.push(audio)
    return audio
  }
  function downloadFile(a) {
    const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'wx-dl-')), 'download')
    const rec = { url: a.url }
    media.downloads.push(rec)
    http
      .get(mapUrl(a.url), (res) => {
        const out = fs.createWriteStream(file)
        res.pipe(out)
        out.on('finish', () => {
          rec.statusCode = res.statusCode
          rec.header = res.headers
          ok(a, 'downloadFile', { statusCode: res.statusCode, tempFilePath: file })
        })
      })
      .on('error', (e) => {
        const r = { errMsg: 'downloadFile:fail ' + e.message }
        if (a.fail) a.fail(r)
        if (a.complete) a.complete(r)
      })
    return { abort: () => {}, onProgressUpdate: () => {} }
  }
  function requestSubscribeMessage(a) {
    media.subscribePrompts.push({ tmplIds: a.tmplIds.slice() })
    later(() => {
      const answer = media.subscribeAnswers.length ? media.subscribeAnswers.shift() : {}
      const res = {}
      a.tmplIds.forEach((id) => (res[id] = answer[id] || 'reject'))
      ok(a, 'requestSubscribeMessage', res)
    })
  }

  function showModal(a) {
    ui.modals.push({ title: a.title, content: a.content })
    const confirm = modalAnswers.length ? modalAnswers.shift() !== false : true
    later(() => ok(a, 'showModal', { confirm, cancel: !confirm }))
  }

  return {
    tasks,
    requests,
    navigations,
    storage,
    connectSocket,
    request,
    login,
    getStorageSync: (k) => (storage.has(k) ? storage.get(k) : ''),
    setStorageSync: (k, v) => storage.set(k, v),
    removeStorageSync: (k) => storage.delete(k),
    onNetworkStatusChange: () => {},
    setNavigationBarTitle: () => {},
    navigateTo: nav('navigateTo'),
    redirectTo: nav('redirectTo'),
    reLaunch: nav('reLaunch'),
    navigateBack: nav('navigateBack'),
    switchTab: nav('switchTab'),
    tabBar: ui.tabBar,
    badges: ui.badges,
    sheets: ui.sheets,
    modals: ui.modals,
    toasts: ui.toasts,
    clipboard: ui.clipboard,
    pullDowns: ui.pullDowns,
    sheetChoices,
    modalAnswers,
    setTabBarBadge(a) {
      ui.tabBar.push({ type: 'set', index: a.index, text: a.text })
      ui.badges[a.index] = a.text
      later(() => ok(a, 'setTabBarBadge'))
    },
    removeTabBarBadge(a) {
      ui.tabBar.push({ type: 'remove', index: a.index })
      delete ui.badges[a.index]
      later(() => ok(a, 'removeTabBarBadge'))
    },
    showActionSheet,
    showModal,
    showToast(a) {
      ui.toasts.push({ title: a.title, icon: a.icon })
      later(() => ok(a, 'showToast'))
    },
    setClipboardData(a) {
      ui.clipboard.push(a.data)
      later(() => ok(a, 'setClipboardData'))
    },
    stopPullDownRefresh(a) {
      ui.pullDowns.push(Date.now())
      later(() => ok(a, 'stopPullDownRefresh'))
    },
    mediaChoices: media.mediaChoices,
    fileChoices: media.fileChoices,
    recordings: media.recordings,
    subscribeAnswers: media.subscribeAnswers,
    chosen: media.chosen,
    previews: media.previews,
    audios: media.audios,
    downloads: media.downloads,
    documents: media.documents,
    loading: media.loading,
    subscribePrompts: media.subscribePrompts,
    saved: media.saved,
    removedSaved: media.removedSaved,
    getFileSystemManager: () => fileSystem,
    recorder,
    chooseMedia: picker('chooseMedia', media.mediaChoices),
    chooseMessageFile: picker('chooseMessageFile', media.fileChoices),
    getRecorderManager: () => recorder,
    createInnerAudioContext,
    downloadFile,
    requestSubscribeMessage,
    /** The size of a PNG (from its IHDR), else `fail`. */
    getImageInfo(a) {
      later(() => {
        let b = null
        try {
          b = fs.readFileSync(a.src)
        } catch (e) {
          b = null
        }
        if (!b || b.length < 24 || b.toString('latin1', 12, 16) !== 'IHDR') {
          const r = { errMsg: 'getImageInfo:fail' }
          if (a.fail) a.fail(r)
          return
        }
        ok(a, 'getImageInfo', { width: b.readUInt32BE(16), height: b.readUInt32BE(20), path: a.src, type: 'png' })
      })
    },
    previewImage(a) {
      media.previews.push({ current: a.current, urls: a.urls.slice() })
      later(() => ok(a, 'previewImage'))
    },
    openDocument(a) {
      media.documents.push({ filePath: a.filePath, fileType: a.fileType, showMenu: a.showMenu })
      later(() => ok(a, 'openDocument'))
    },
    showLoading(a) {
      media.loading.push({ type: 'show', title: a.title })
      later(() => ok(a, 'showLoading'))
    },
    hideLoading(a) {
      media.loading.push({ type: 'hide' })
      later(() => ok(a, 'hideLoading'))
    }
  }
}

module.exports = { createWx }
