/**
 * A TCP proxy in front of chatd that can turn into a black hole: the
 * connections stay open but nothing is forwarded in either direction and no
 * FIN/RST is sent — what a mini-program sees when the phone changes network
 * or the app is frozen in the background.
 *
 *   blackhole()  every current and future connection stops forwarding
 *   blackholeDownstream()  current connections drop server → client bytes
 *   heal()       new connections are forwarded again (old ones stay dead)
 *   reap()       destroys the upstream side of dead connections (the server
 *                eventually notices a dead peer)
 *   droppedDownstream()  server → client bytes dropped so far (a test waits for
 *                it to know a frame really went into the hole)
 */
'use strict'
const net = require('net')

function startProxy(targetPort) {
  const conns = new Set()
  let dead = false
  let downOnly = false
  let droppedDown = 0
  const server = net.createServer((client) => {
    const c = { client, upstream: net.connect(targetPort, '127.0.0.1'), dead, down: downOnly }
    conns.add(c)
    const forward = (from, to, downstream) => {
      from.on('data', (d) => {
        if (!c.dead && !(downstream && c.down)) to.write(d)
        else if (downstream) droppedDown += d.length
      })
    }
    forward(client, c.upstream, false)
    forward(c.upstream, client, true)
    const end = () => {
      conns.delete(c)
      client.destroy()
      c.upstream.destroy()
    }
    // a dead network forwards no close either
    client.on('close', () => {
      if (!c.dead) end()
    })
    c.upstream.on('close', () => {
      if (!c.dead) end()
    })
    client.on('error', () => {})
    c.upstream.on('error', () => {})
  })
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () => {
      const port = server.address().port
      resolve({
        port,
        url: `ws://127.0.0.1:${port}/ws`,
        blackhole() {
          dead = true
          conns.forEach((c) => {
            c.dead = true
          })
        },
        /** Server → client bytes are dropped on current connections. */
        blackholeDownstream() {
          conns.forEach((c) => {
            c.down = true
          })
        },
        droppedDownstream() {
          return droppedDown
        },
        heal() {
          dead = false
          downOnly = false
        },
        reap() {
          conns.forEach((c) => {
            if (c.dead) {
              c.upstream.destroy()
              c.client.destroy()
              conns.delete(c)
            }
          })
        },
        close() {
          conns.forEach((c) => {
            c.client.destroy()
            c.upstream.destroy()
          })
          return new Promise((r) => server.close(() => r()))
        }
      })
    })
  })
}

module.exports = { startProxy }
