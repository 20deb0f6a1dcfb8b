/**
 * Loads the real app.js in Node: `App({...})` is captured and its object is
 * the app instance (what `getApp()` returns in WeChat), so pages under test
 * reach the real startChat / relogin. `global.getApp` is set to it. The
 * module is loaded once per test file (sharing `config` with the pages);
 * every call resets the app's state like a fresh launch.
 */
'use strict'
const path = require('path')

const APP_FILE = path.resolve(__dirname, '..', '..', 'app.js')
let def = null
let initialData = null

function loadApp() {
  if (!def) {
    const prev = global.App
    global.App = (d) => {
      def = d
    }
    try {
      require(APP_FILE)
    } finally {
      global.App = prev
    }
    if (!def) throw new Error('app.js did not call App()')
    initialData = JSON.stringify(def.globalData)
  }
  if (def.globalData.chat) def.globalData.chat.close()
  def.globalData = JSON.parse(initialData)
  def._relogging = null
  def._lastRelogin = 0
  global.getApp = () => def
  if (def.onLaunch) def.onLaunch({})
  return def
}

module.exports = { loadApp }
