/**
 * Screenshots of pages rendered by miniprogram-simulate, as test artefacts
 * (looked at, never compared pixel by pixel): the page's DOM, the WXSS that
 * simulate injected into the document (class names prefixed like the DOM's),
 * app.wxss and a few defaults for WeChat's built-in tags, written to an HTML
 * file and shot with headless Chromium (`/usr/bin/chromium`, or $CHROMIUM).
 * 1 rpx is drawn as 1 px (as simulate converts it) in a 750 px wide window,
 * the width of a phone in rpx. Without Chromium nothing is shot and `shoot`
 * resolves to null.
 *
 * Files go to $SCREENSHOT_DIR or miniprogram/tests/artifacts/ (not committed).
 */
'use strict'
const fs = require('fs')
const path = require('path')
const { spawnSync } = require('child_process')

const ROOT = path.resolve(__dirname, '..', '..')
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium'
const OUT = process.env.SCREENSHOT_DIR || path.join(ROOT, 'tests', 'artifacts')

/** What WeChat's runtime gives its built-in tags, roughly. */
const BASE = `
body { margin: 0; width: 750px; }
wx-view, wx-scroll-view, wx-button, wx-input { display: block; }
wx-text { display: inline; }
wx-scroll-view { overflow: hidden; }
wx-input { box-sizing: border-box; }
wx-button { padding: 0 28px; line-height: 2.55; border-radius: 10px; text-align: center; background: #f2f2f2; font-size: 34px; }
`

/** app.wxss with its page-level classes as simulate prefixes them in a page ("main--"). */
function appCss() {
  const wxss = fs.readFileSync(path.join(ROOT, 'app.wxss'), 'utf8')
  return wxss
    .replace(/^page\s*\{/m, 'body {')
    .replace(/\.([a-zA-Z][\w-]*)/g, '.main--$1')
    .replace(/(\d+)rpx/g, '$1px')
}

/**
 * Shoots rendered page `page` (a simulate component) as `<name>.png`; resolves
 * to the file's path, or null without Chromium.
 */
function shoot(page, name, height) {
  if (!fs.existsSync(CHROMIUM)) return null
  fs.mkdirSync(OUT, { recursive: true })
  const styles = Array.from(document.querySelectorAll('style'))
    .map((s) => s.innerHTML)
    .join('\n')
  const html = `<!doctype html><html><head><meta charset="utf-8"><style>${BASE}</style><style>${appCss()}</style><style>${styles}</style></head><body>${page.dom.outerHTML}</body></html>`
  const htmlFile = path.join(OUT, name + '.html')
  const png = path.join(OUT, name + '.png')
  fs.writeFileSync(htmlFile, html)
  const r = spawnSync(
    CHROMIUM,
    ['--headless', '--no-sandbox', '--disable-gpu', '--hide-scrollbars', '--window-size=750,' + (height || 1100), '--screenshot=' + png, 'file://' + htmlFile],
    { encoding: 'utf8', timeout: 30000 }
  )
  if (r.status !== 0 || !fs.existsSync(png)) throw new Error('chromium could not take ' + name + ': ' + (r.stderr || r.error))
  return png
}

module.exports = { shoot }
