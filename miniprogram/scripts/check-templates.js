#!/usr/bin/env node
/**
 * Compiles every .wxml and .wxss of the mini-program with WeChat's own
 * compilers (wcc, wcsc from the npm package miniprogram-compiler) and checks
 * the project structure: every page in app.json and every component in a
 * usingComponents map has its .js/.json/.wxml/.wxss. Exits non-zero on the
 * first class of failure, printing file:line from the compiler.
 *
 * Usage: node scripts/check-templates.js [root]   (root defaults to miniprogram/)
 */
'use strict'
const fs = require('fs')
const path = require('path')
const { spawnSync } = require('child_process')

const BIN = path.join(path.dirname(require.resolve('miniprogram-compiler/package.json')), 'bin', 'linux')
const SKIP = new Set(['node_modules', 'tests', 'scripts', 'coverage', '.git'])

function walk(dir, out) {
  for (const ent of fs.readdirSync(dir, { withFileTypes: true })) {
    if (ent.isDirectory()) {
      if (!SKIP.has(ent.name)) walk(path.join(dir, ent.name), out)
    } else {
      out.push(path.join(dir, ent.name))
    }
  }
  return out
}

function tool(name) {
  const p = path.join(BIN, name)
  if (process.platform !== 'linux') throw new Error('the WeChat compilers here are Linux binaries')
  fs.chmodSync(p, 0o755) // npm installs them without the execute bit
  return p
}

/** Returns a list of problems (strings) for the mini-program under `root`. */
function check(root) {
  const problems = []
  const files = walk(root, [])
  const wcc = tool('wcc')
  const wcsc = tool('wcsc')
  for (const f of files.filter((x) => x.endsWith('.wxml'))) {
    const r = spawnSync(wcc, ['-d', path.relative(root, f)], { cwd: root, encoding: 'utf8' })
    if (r.status !== 0) problems.push(`${path.relative(root, f)}: wcc: ${(r.stderr || r.stdout || String(r.error)).trim()}`)
  }
  for (const f of files.filter((x) => x.endsWith('.wxss'))) {
    const r = spawnSync(wcsc, ['-db', '-pc', '0', path.relative(root, f)], { cwd: root, encoding: 'utf8' })
    if (r.status !== 0) problems.push(`${path.relative(root, f)}: wcsc: ${(r.stderr || r.stdout || String(r.error)).trim()}`)
  }
  // structure: pages and components are complete, JSON parses
  const need = (base, from) => {
    for (const ext of ['.js', '.json', '.wxml', '.wxss']) {
      if (!fs.existsSync(path.join(root, base + ext))) problems.push(`${from}: missing ${base}${ext}`)
    }
  }
  let app
  try {
    app = JSON.parse(fs.readFileSync(path.join(root, 'app.json'), 'utf8'))
  } catch (e) {
    problems.push('app.json: ' + e.message)
    return problems
  }
  ;(app.pages || []).forEach((p) => need(p, 'app.json'))
  for (const f of files.filter((x) => x.endsWith('.json') && !/package(-lock)?\.json$/.test(x))) {
    let j
    try {
      j = JSON.parse(fs.readFileSync(f, 'utf8'))
    } catch (e) {
      problems.push(`${path.relative(root, f)}: ${e.message}`)
      continue
    }
    const uses = j.usingComponents || {}
    Object.keys(uses).forEach((tag) => {
      const ref = uses[tag]
      const base = ref.startsWith('/') ? ref.slice(1) : path.relative(root, path.resolve(path.dirname(f), ref))
      need(base, path.relative(root, f))
    })
  }
  return problems
}

module.exports = { check }

if (require.main === module) {
  const root = path.resolve(process.argv[2] || path.join(__dirname, '..'))
  const problems = check(root)
  if (problems.length) {
    console.error(problems.join('\n'))
    console.error(`\n${problems.length} problem(s) in WXML/WXSS/structure`)
    process.exit(1)
  }
  const n = walk(root, []).filter((f) => /\.(wxml|wxss)$/.test(f)).length
  console.log(`check-templates: ${n} WXML/WXSS files compiled, structure OK`)
}
