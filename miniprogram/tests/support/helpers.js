/** Small async helpers shared by the live tests. */
'use strict'
const http = require('http')
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

/**
 * A fixed wait. Tests wait for a condition (`waitFor`), prove absence with `barrier`
 * or a positive marker, and use `holdsFor` where neither can; this stays for
 * whatever still needs it.
 */
const sleep = (ms) => new Promise((r) => setTimeout(r, ms))

/**
 * A bounded negative wait, for what no barrier can prove (say, a reconnect timer
 * that must never fire): `fn` must stay truthy for `ms`; rejects as soon as it is not.
 */
function holdsFor(fn, what, ms) {
  const end = Date.now() + ms
  return new Promise((resolve, reject) => {
    const tick = () => {
      let v
      try {
        v = fn()
      } catch (e) {
        return reject(e)
      }
      if (!v) return reject(new Error('no longer true: ' + what))
      if (Date.now() >= end) return resolve()
      setTimeout(tick, 10)
    }
    tick()
  })
}

let barriers = 0
/**
 * An ordering barrier on the chatd.v1 socket of `c` (a `makeClient` result): sends
 * `ping` with a fresh id on its current socket task and resolves once the `pong` has
 * been handled. chatd writes a connection's frames in order and the SDK handles each
 * frame synchronously (its listener was added first), so every frame chatd sent
 * before it read the ping has then reached the SDK and its events are in `c.log`.
 * Whatever must not arrive has to have been handled by chatd first: wait for another
 * effect of it (an ack, a message at another client) before the barrier.
 */
function barrier(c, ms) {
  const task = c.wx.tasks[c.wx.tasks.length - 1]
  const id = 'barrier' + process.pid + 'x' + ++barriers
  return new Promise((resolve, reject) => {
    let done = false
    const finish = (err) => {
      if (done) return
      done = true
      clearTimeout(timer)
      if (err) reject(err)
      else resolve()
    }
    const timer = setTimeout(() => finish(new Error('no pong for ' + id)), ms || 8000)
    task.onMessage((m) => {
      if (typeof m.data !== 'string' || m.data.indexOf(id) < 0) return
      const f = JSON.parse(m.data)
      if (f.type === 'pong' && f.id === id) finish()
      else if (f.ref === id) finish(new Error('the barrier ping was refused: ' + m.data)) // e.g. rate_limited
    })
    task.send({ data: JSON.stringify({ type: 'ping', id }), fail: (e) => finish(new Error('ping not sent: ' + e.errMsg)) })
  })
}

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

/**
 * A GET with Node's http (jsdom test files have no fetch): resolves with
 * {status, headers, body (a Buffer), json()}.
 */
function httpGet(url, headers) {
  return new Promise((resolve, reject) => {
    http
      .get(url, { headers: headers || {} }, (res) => {
        const chunks = []
        res.on('data', (c) => chunks.push(c))
        res.on('end', () => {
          const body = Buffer.concat(chunks)
          resolve({ status: res.statusCode, headers: res.headers, body, json: () => JSON.parse(body.toString('utf8')) })
        })
      })
      .on('error', reject)
  })
}

module.exports = { waitFor, sleep, holdsFor, barrier, uniqueName, makeClient, httpGet }
