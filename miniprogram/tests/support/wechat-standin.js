/**
 * A stand-in for WeChat's `GET /sns/jscode2session` on 127.0.0.1 (Node
 * `http`), answering like WeChat does by code: `bad` → 40029, `used` →
 * 40163, `busy` → -1, `limited` → 45011, `risky` → 40226, `garbage` → not
 * JSON; any other code → `{openid: "o-<code>", session_key}`. A wrong app
 * secret gets 40125; other paths get a bare 404. `seen` records each query.
 */
'use strict'
const http = require('http')

const REPLIES = {
  bad: { errcode: 40029, errmsg: 'invalid code' },
  used: { errcode: 40163, errmsg: 'code been used' },
  busy: { errcode: -1, errmsg: 'system error' },
  limited: { errcode: 45011, errmsg: 'api minute-quota reach limit' },
  risky: { errcode: 40226, errmsg: 'high risk user' }
}

function startWechat(appSecret) {
  const seen = []
  const server = http.createServer((req, res) => {
    const url = new URL(req.url, 'http://x')
    if (url.pathname !== '/sns/jscode2session') {
      res.writeHead(404, { 'content-type': 'text/plain' })
      res.end('not found')
      return
    }
    const q = Object.fromEntries(url.searchParams)
    seen.push(q)
    res.writeHead(200, { 'content-type': 'application/json' })
    if (q.secret !== appSecret) return res.end(JSON.stringify({ errcode: 40125, errmsg: 'invalid appsecret' }))
    if (q.js_code === 'garbage') return res.end('<html>oops</html>')
    res.end(JSON.stringify(REPLIES[q.js_code] || { openid: 'o-' + q.js_code, session_key: 'SESSION-KEY-NEVER-SENT' }))
  })
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () => {
      const port = server.address().port
      resolve({ port, url: 'http://127.0.0.1:' + port, seen, close: () => new Promise((r) => server.close(() => r())) })
    })
  })
}

module.exports = { startWechat }
