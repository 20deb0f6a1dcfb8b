/**
 * A minimal `Page()` runtime for Node: loads a page file written with
 * `Page({...})` (the tutorial's style), and returns an instance with `data`,
 * a synchronous `setData` and the page's methods, after calling `onLoad`.
 */
'use strict'

function loadPage(file, options) {
  let def = null
  const prev = global.Page
  global.Page = (d) => {
    def = d
  }
  try {
    jest.isolateModules(() => require(file))
  } finally {
    global.Page = prev
  }
  if (!def) throw new Error(file + ' did not call Page()')
  const page = {}
  Object.keys(def).forEach((k) => {
    page[k] = typeof def[k] === 'function' ? def[k].bind(page) : def[k]
  })
  page.data = JSON.parse(JSON.stringify(def.data || {}))
  page.setData = (patch) => Object.assign(page.data, patch)
  if (page.onLoad) page.onLoad(options || {})
  return page
}

module.exports = { loadPage }
