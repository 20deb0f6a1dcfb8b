/**
 * @jest-environment node
 *
 * scripts/check-templates.js: the real mini-program compiles clean, and a
 * broken tag, a stray wx:else, bad WXSS and a missing component file in a
 * copy of it are each reported (so CI fails on them).
 */
const fs = require('fs')
const os = require('os')
const path = require('path')
const { check } = require('../scripts/check-templates')

const ROOT = path.resolve(__dirname, '..')

function copyApp() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mp-check-'))
  for (const f of ['app.json', 'app.js', 'app.wxss', 'config.js', 'sitemap.json']) fs.copyFileSync(path.join(ROOT, f), path.join(dir, f))
  for (const d of ['pages', 'components', 'utils']) fs.cpSync(path.join(ROOT, d), path.join(dir, d), { recursive: true })
  return dir
}

test('every page and component of the mini-program compiles', () => {
  expect(check(ROOT)).toEqual([])
})

test('broken WXML, WXSS and missing component files are reported with their file', () => {
  const dir = copyApp()
  try {
    expect(check(dir)).toEqual([])
    fs.writeFileSync(path.join(dir, 'components/composer/composer.wxml'), '<view><input value="{{value}" /></view>\n')
    fs.writeFileSync(path.join(dir, 'pages/dm/dm.wxml'), '<view wx:else>x</view>\n')
    fs.writeFileSync(path.join(dir, 'pages/room/room.wxss'), '.body { flex: 1;\n')
    fs.rmSync(path.join(dir, 'components/typing-indicator/typing-indicator.js'))
    const problems = check(dir).join('\n')
    expect(problems).toMatch(/components\/composer\/composer\.wxml: wcc/)
    expect(problems).toMatch(/pages\/dm\/dm\.wxml: wcc.*wx:else/)
    expect(problems).toMatch(/pages\/room\/room\.wxss: wcsc/)
    expect(problems).toMatch(/missing components\/typing-indicator\/typing-indicator\.js/)
  } finally {
    fs.rmSync(dir, { recursive: true, force: true })
  }
})
