/**
 * The one place where the chatd server address lives.
 *
 * Development (WeChat DevTools, "不校验合法域名" / urlCheck off, or a phone on
 * the same LAN in preview with debugging on): plain ws:// to your machine works.
 *
 * Production: WeChat only allows wss:// to a domain listed under
 * 开发管理 → 开发设置 → 服务器域名 → socket合法域名 (no IP, no localhost, a valid
 * certificate, TLS >= 1.2). chatd serves TLS itself with an `ssl:` endpoint
 * (`twistd -n chatd --listen ssl:443:privateKey=key.pem:certKey=cert.pem`) or
 * sits behind nginx. See docs/miniprogram.md.
 */
module.exports = {
  // e.g. 'wss://chat.example.com/ws' in production
  serverUrl: 'ws://127.0.0.1:8080/ws',
  // 'name': pick a display name (anonymous); 'wechat': wx.login() → chatd's
  // POST /api/login/wechat → token (needs chatd --jwt-secret, --wechat-appid
  // and CHATD_WECHAT_SECRET; see docs/miniprogram.md)
  login: 'name',
  // http(s) origin of the login endpoint; default: derived from serverUrl
  // (ws → http, wss → https). Add it under request合法域名 too.
  apiBase: '',
  // room offered on the room list before the user joins any
  defaultRooms: ['lobby'],
  // messages fetched per "load earlier messages"
  historyPageSize: 30,
  // the chat page renders this many of the newest rows at first, and this many
  // more each time it is scrolled to the top (docs/miniprogram.md, "Chat page")
  chatWindow: 60,
  chatPage: 30,
  // at most about this many rows are rendered: scrolled far up, the newest are
  // dropped from the page until the user scrolls back down
  chatMax: 300,
  // "N new messages" (a jump to the first unread) from this many unread on
  jumpAfter: 10,
  // seconds after sending in which Edit and Recall are offered (chatd's
  // --recall-window; chatd refuses a later recall with too_late)
  recallWindow: 120,
  // WeChat subscribe-message template ids for offline notifications: the same id
  // as the server's --push-template (docs/operations.md, "Offline push"). Empty:
  // the app never asks. The chat page asks after the first DM of a session, the
  // Me page and group info have a "notify me" switch (docs/miniprogram.md).
  pushTemplates: []
}
