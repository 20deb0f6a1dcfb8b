/**
 * Starts a real chatd (`twistd -n chatd --listen tcp:0:interface=127.0.0.1`)
 * with PYTHONPATH at the repository root, reads the port from its
 * "chatd listening on ws://127.0.0.1:PORT/" log line, and stops it again.
 *
 * `liveDescribe` is `describe` when twistd is on PATH or CI=true (a missing
 * twistd then fails the tests), and `describe.skip` on a laptop without it.
 */
'use strict'
const { spawn, spawnSync } = require('child_process')
const fs = require('fs')
const os = require('os')
const path = require('path')

const REPO = path.resolve(__dirname, '..', '..', '..')
const TWISTD = process.env.TWISTD || 'twistd'

function haveTwistd() {
  const r = spawnSync(TWISTD, ['--version'], { encoding: 'utf8' })
  return r.status === 0
}

const liveDescribe = process.env.CI === 'true' || haveTwistd() ? describe : describe.skip

/**
 * Starts chatd with `extraArgs` (and `extraEnv` added to the environment, e.g.
 * CHATD_WECHAT_SECRET); resolves to {port, url, relayUrl, httpUrl, stop(), output()}.
 */
function startChatd(extraArgs, timeoutMs, extraEnv) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'chatd-mp-'))
  const args = ['-n', '--pidfile=', 'chatd', '--listen', 'tcp:0:interface=127.0.0.1'].concat(extraArgs || [])
  const env = Object.assign({}, process.env, extraEnv, {
    PYTHONPATH: REPO + (process.env.PYTHONPATH ? path.delimiter + process.env.PYTHONPATH : '')
  })
  const child = spawn(TWISTD, args, { cwd: dir, env, stdio: ['ignore', 'pipe', 'pipe'] })
  let out = ''
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL')
      reject(new Error('chatd did not report its port in time; output:\n' + out))
    }, timeoutMs || 20000)
    const onData = (buf) => {
      out += buf.toString()
      const m = /chatd listening on ws:\/\/127\.0\.0\.1:(\d+)\//.exec(out)
      if (m) {
        clearTimeout(timer)
        const port = Number(m[1])
        resolve({
          port,
          url: `ws://127.0.0.1:${port}/ws`,
          relayUrl: `ws://127.0.0.1:${port}/`,
          httpUrl: `http://127.0.0.1:${port}`,
          output: () => out,
          stop: () =>
            new Promise((res) => {
              if (child.exitCode !== null || child.signalCode !== null) return res()
              const kill = setTimeout(() => child.kill('SIGKILL'), 5000)
              child.once('exit', () => {
                clearTimeout(kill)
                fs.rmSync(dir, { recursive: true, force: true })
                res()
              })
              child.kill('SIGTERM')
            })
        })
      }
    }
    child.stdout.on('data', onData)
    child.stderr.on('data', onData)
    child.on('error', (e) => {
      clearTimeout(timer)
      reject(new Error('cannot run ' + TWISTD + ': ' + e.message))
    })
    child.on('exit', (code) => {
      clearTimeout(timer)
      reject(new Error(`chatd exited with ${code} before listening; output:\n${out}`))
    })
  })
}

module.exports = { startChatd, liveDescribe, REPO }
