/** Signs HS256 JWTs for tests (what a chatd deployment's own auth service would issue). */
'use strict'
const crypto = require('crypto')

const b64url = (buf) => Buffer.from(buf).toString('base64').replace(/=+$/, '').replace(/\+/g, '-').replace(/\//g, '_')

/** An HS256 token for `claims` (exp defaults to one hour from now). */
function mintToken(secret, claims) {
  const body = Object.assign({ iat: Math.floor(Date.now() / 1000), exp: Math.floor(Date.now() / 1000) + 3600 }, claims)
  const head = b64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' })) + '.' + b64url(JSON.stringify(body))
  return head + '.' + b64url(crypto.createHmac('sha256', secret).update(head).digest())
}

module.exports = { mintToken }
