/**
 * A `wx` for Node whose connectSocket is backed by a real WebSocket (the npm
 * `ws` package), reproducing the SocketTask semantics the mini-program
 * runtime has (docs: /work/shared/MINIPROGRAM.md):
 *  - connectSocket returns the task at once; `success` fires before onOpen;
 *  - send before open fails; onMessage gets a string for text frames and an
 *    ArrayBuffer for binary ones; a refused connection gives onError then
 *    onClose(1006); at most 5 sockets are open at once;
 *  - storage is an in-memory map.
 * `urlMap` rewrites URLs (so the tutorial's hard-coded `ws://host:8080` can
 * be pointed at the test's chatd); `tasks` lists every task made.
 */
'use strict'
const WebSocket = require('ws')

const MAX_SOCKETS = 5

function createWx(options) {
  const o = options || {}
  const urlMap = o.urlMap || {}
  const storage = new Map()
  const tasks = []
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
    const ws = new WebSocket(mapUrl(opts.url), opts.protocols || [], { headers: opts.header || {} })
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

  return {
    tasks,
    connectSocket,
    getStorageSync: (k) => (storage.has(k) ? storage.get(k) : ''),
    setStorageSync: (k, v) => storage.set(k, v),
    removeStorageSync: (k) => storage.delete(k),
    onNetworkStatusChange: () => {},
    setNavigationBarTitle: () => {},
    navigateTo: () => {},
    redirectTo: () => {},
    navigateBack: () => {}
  }
}

module.exports = { createWx }
