/**
 * Token users of a live chatd started with `--jwt-secret <secret>`, shared by
 * the live tests: their sessions, plain SDK clients of them, and launches of
 * the real app.js for them.
 */
'use strict'
const { waitFor, makeClient, uniqueName } = require('./helpers')
const { mintToken } = require('./jwt')
const { loadApp } = require('./app-runtime')

/**
 * `server()` is the running chatd; every client and launched app goes into
 * `clients`, for the test file's afterEach to close.
 */
function tokenUsers(secret, server, clients) {
  /** What the login hands to app.startChat for `sub` (extra token `claims`). */
  const session = (sub, claims) => ({ token: mintToken(secret, Object.assign({ sub, name: sub }, claims)), user: sub, name: sub, expiresAt: Date.now() + 3600000 })

  /**
   * A makeClient of `sub`, not connected; `opts.claims` go into the token,
   * `opts.log` names more event types to record in `log`, the rest goes to the ChatClient.
   */
  function client(sub, opts) {
    const o = Object.assign({}, opts)
    const claims = o.claims
    const more = o.log || []
    delete o.claims
    delete o.log
    const c = makeClient(server().url, Object.assign({ token: session(sub, claims).token, storageKey: 'chatd' }, o))
    more.forEach((t) => {
      c.log[t] = []
      c.client.on(t, (e) => c.log[t].push(e))
    })
    clients.push(c.client)
    return c
  }

  /** A client of `sub` (see `client`), welcomed and synced. */
  async function online(sub, opts) {
    const c = client(sub, opts)
    c.client.connect()
    await waitFor(() => c.client.connected && c.client.synced, sub + ' synced')
    return c
  }

  /** Connects `sub` once so chatd knows the user, then closes. */
  async function known(sub) {
    const c = await online(sub)
    c.client.close()
  }

  /** Fresh user ids `alice` and `bob` (unique per call), bob known to chatd. */
  async function aliceAndKnownBob() {
    const alice = uniqueName('alice')
    const bob = uniqueName('bob')
    await known(bob)
    return { alice, bob }
  }

  /** A launch of the real app.js for `sub` on the shim `wx`, which becomes the global one. */
  function launch(sub, wx) {
    Object.assign(global.wx, wx)
    const app = loadApp()
    const chat = app.startChat(session(sub))
    clients.push(chat)
    return { app, chat, wx }
  }

  /** `launch`, then waits until the app's client is welcomed and synced. */
  async function launched(sub, wx) {
    const l = launch(sub, wx)
    await waitFor(() => l.chat.connected && l.chat.synced, sub + ' launched and synced')
    return l
  }

  return { session, client, online, known, aliceAndKnownBob, launch, launched }
}

module.exports = { tokenUsers }
