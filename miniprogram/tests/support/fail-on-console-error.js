/**
 * exparser (miniprogram-simulate) swallows exceptions thrown in event
 * handlers and lifetimes and only passes them to console.error: make any
 * console.error fail the test that caused it.
 */
let errors = []
const original = console.error

beforeEach(() => {
  errors = []
  console.error = (...args) => {
    errors.push(args.map((a) => (a && a.stack) || String(a)).join(' '))
    original.apply(console, args)
  }
})

afterEach(() => {
  console.error = original
  if (errors.length) {
    const e = errors
    errors = []
    throw new Error('console.error was called:\n' + e.join('\n'))
  }
})
