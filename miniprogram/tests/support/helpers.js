/** Small async helpers shared by the live tests. */
'use strict'
const { ChatClient } = require('../../utils/chatd')
const { createWx } = require('./wx-ws')

/** Polls `fn` until it returns truthy; rejects with `what` after `ms`. */
function waitFor(fn, what, ms) {
  const deadline = Date.now() + (ms || 8000)
  return new Promise((resolve, reject) => {
    const tick = () => {
      let v
      try {
        v = fn()
      } catch (e) {
        return reject(e)
      }
      if (v) return resolve(v)
      if (Date.now() > deadline) return reject(new Error('timed out waiting for ' + what))
      setTimeout(tick, 10)
    }
    tick()
  })
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms))

let n = 0
/** A unique display name per test run. */
function uniqueName(prefix) {
  n++
  return (prefix || 'u') + process.pid + 'x' + n
}

/**
 * A ChatClient on a fresh wx shim that records every event it emits in
 * `log[type]`. Close it with `client.close()`.
 */
function makeClient(url, opts) {
  const wx = (opts && opts.wx) || createWx()
  const client = new ChatClient(Object.assign({ url, wx, backoff: { initial: 50, max: 400 } }, opts))
  const log = {}
  ;['status', 'welcome', 'joined', 'message', 'dm', 'presence', 'typing', 'ack', 'failed', 'error', 'auth'].forEach((t) => {
    log[t] = []
    client.on(t, (e) => log[t].push(e))
  })
  return { client, log, wx }
}

module.exports = { waitFor, sleep, uniqueName, makeClient }
